//! Unit tests of the synthetic datasets: determinism, VIN validity, key uniqueness, plausible
//! values and the file writers.

use std::collections::HashSet;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int16Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch.column_by_name(name).expect("column exists");
    column.as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect()
}

#[test]
fn registry_is_deterministic_and_prefix_stable() {
    let a: Vec<RecordBatch> = vehicle_registry(7, 70_000).collect();
    let b: Vec<RecordBatch> = vehicle_registry(7, 70_000).collect();
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].num_rows(), BATCH_ROWS);
    assert_eq!(a[1].num_rows(), 70_000 - BATCH_ROWS);
    let prefix: Vec<RecordBatch> = vehicle_registry(7, 1_000).collect();
    assert_eq!(prefix[0], a[0].slice(0, 1_000));
    let other: Vec<RecordBatch> = vehicle_registry(8, 1_000).collect();
    assert_ne!(other[0], prefix[0]);
    assert_eq!(a[0].schema(), vehicle_registry_schema());
    assert_eq!(vehicle_registry(7, 0).count(), 0);
}

#[test]
fn vins_are_valid_and_unique_for_200k_rows() {
    let mut seen = HashSet::with_capacity(200_000);
    for batch in vehicle_registry(42, 200_000) {
        assert!(batch.num_rows() <= BATCH_ROWS);
        for vin in batch.column(0).as_string::<i32>().iter() {
            let vin = vin.expect("vin is never null");
            assert_eq!(vin.len(), 17, "{vin}");
            assert!(vin.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()), "{vin}");
            assert!(!vin.contains(['I', 'O', 'Q']), "{vin}");
            assert!(vin.starts_with('L'), "Chinese WMI: {vin}");
            assert_eq!(vin_check_digit(vin), vin.chars().nth(8), "{vin}");
            assert!(seen.insert(vin.to_owned()), "duplicate {vin}");
        }
    }
    assert_eq!(seen.len(), 200_000);
}

#[test]
fn registry_values_are_plausible() {
    let batch = vehicle_registry(3, 20_000).next().expect("one batch");
    let plates = strings(&batch, "plate");
    let fuels = strings(&batch, "fuel");
    let mut new_energy = 0;
    for (plate, fuel) in plates.iter().zip(&fuels) {
        let (plate, fuel) = (plate.as_deref().unwrap_or(""), fuel.as_deref().unwrap_or(""));
        let chars: Vec<char> = plate.chars().collect();
        assert!(!chars[0].is_ascii() && chars[1].is_ascii_uppercase(), "{plate}");
        assert!(!plate.contains(['I', 'O']), "{plate}");
        if fuel == "纯电动" || fuel == "插电混动" {
            new_energy += 1;
            assert_eq!(chars.len(), 8, "{plate} {fuel}");
            assert!(plate.contains(['D', 'F']), "{plate}");
        } else {
            assert_eq!(chars.len(), 7, "{plate} {fuel}");
        }
    }
    let share = new_energy as f64 / plates.len() as f64;
    assert!((0.02..0.09).contains(&share), "new-energy share {share}");
    let companies = strings(&batch, "company");
    let id_types = strings(&batch, "owner_id_type");
    let null_share = companies.iter().filter(|c| c.is_none()).count() as f64 / companies.len() as f64;
    assert!((0.5..0.7).contains(&null_share), "company null share {null_share}");
    for (company, id_type) in companies.iter().zip(&id_types) {
        match company {
            Some(name) => {
                assert!(name.ends_with("有限公司"), "{name}");
                assert_eq!(id_type.as_deref(), Some("统一社会信用代码"));
            }
            None => assert_eq!(id_type.as_deref(), Some("居民身份证")),
        }
    }
    let names = strings(&batch, "owner_name");
    assert!(names.iter().flatten().all(|n| (2..=3).contains(&n.chars().count())));
    let codes = strings(&batch, "province_code");
    assert!(codes.iter().flatten().all(|c| c.len() == 6 && c.ends_with("0000")));
    let seats = batch.column_by_name("seats").expect("seats").as_primitive::<Int16Type>();
    assert!(seats.values().iter().all(|&s| (2..=57).contains(&s)));
}

#[test]
fn gps_is_deterministic_unique_and_inside_china() {
    let a: Vec<RecordBatch> = gps_positions(5, 200_000, 3_000).collect();
    assert_eq!(a, gps_positions(5, 200_000, 3_000).collect::<Vec<_>>());
    assert_eq!(a.iter().map(RecordBatch::num_rows).sum::<usize>(), 200_000);
    let registry_vins: HashSet<String> =
        vehicle_registry(5, 3_000).flat_map(|b| strings(&b, "vin")).flatten().collect();
    let mut keys = HashSet::with_capacity(200_000);
    for batch in &a {
        assert_eq!(batch.schema(), gps_positions_schema());
        let ts = batch.column(1).as_primitive::<TimestampMillisecondType>();
        let lon = batch.column(2).as_primitive::<Float64Type>();
        let lat = batch.column(3).as_primitive::<Float64Type>();
        let heading = batch.column(5).as_primitive::<Int16Type>();
        for (row, vin) in strings(batch, "vin").into_iter().enumerate() {
            let vin = vin.expect("vin");
            assert!(registry_vins.contains(&vin), "{vin} not in registry");
            assert!((73.0..135.5).contains(&lon.value(row)) && (18.0..54.0).contains(&lat.value(row)));
            assert!((0..360).contains(&heading.value(row)));
            assert!(keys.insert((vin, ts.value(row))), "duplicate (vin, ts)");
        }
    }
    let altitude_nulls: usize = a.iter().map(|b| b.column(6).null_count()).sum();
    assert!(altitude_nulls > 0 && altitude_nulls < 20_000);
}

#[test]
fn writers_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parquet_path = dir.path().join("vehicles.parquet");
    let rows = write_parquet(&parquet_path, vehicle_registry_schema(), vehicle_registry(1, 150_000))
        .expect("parquet written");
    assert_eq!(rows, 150_000);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(File::open(&parquet_path).expect("open")).expect("readable");
    assert_eq!(builder.metadata().num_row_groups(), 3);
    assert_eq!(builder.schema(), &vehicle_registry_schema());
    let csv_path = dir.path().join("gps.csv");
    let rows = write_csv(&csv_path, gps_positions(1, 1_000, 10)).expect("csv written");
    assert_eq!(rows, 1_000);
    let text = std::fs::read_to_string(&csv_path).expect("utf-8 csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("vin,ts,lon,lat,speed_kmh,heading,altitude_m"));
    let first = lines.next().expect("a data line");
    assert!(first.contains("+08:00"), "{first}");
    assert_eq!(text.lines().count(), 1_001);
}

#[test]
fn definitions_mention_every_column() {
    let text = vehicle_registry_definition("vehicle-registry", "ministry");
    for field in vehicle_registry_schema().fields() {
        assert!(text.contains(&format!("name = \"{}\"", field.name())), "{}", field.name());
    }
    assert!(text.contains("share-type = \"unconditional\"") && text.contains("update-cycle = \"daily\""));
    let gps = gps_positions_definition("gps-positions", "zhejiang");
    assert_eq!(gps.matches("key = true").count(), 2);
}

#[test]
fn registry_edits_are_deterministic_and_proportioned() {
    let day1: Vec<RecordBatch> = vehicle_registry(9, 100_000).collect();
    let a = edit_vehicle_registry(&day1, 1, 0.01).expect("edit");
    let b = edit_vehicle_registry(&day1, 1, 0.01).expect("edit");
    assert_eq!(a.batches, b.batches);
    assert_eq!((a.updated, a.inserted, a.deleted), (b.updated, b.inserted, b.deleted));
    let other = edit_vehicle_registry(&day1, 2, 0.01).expect("edit");
    assert_ne!(a.batches, other.batches);
    // 1% of 100 000 rows: ~800 updates, ~100 deletes, 100 inserts.
    assert!((650..950).contains(&a.updated), "{}", a.updated);
    assert!((50..160).contains(&a.deleted), "{}", a.deleted);
    assert_eq!(a.inserted, 100);
    let rows: usize = a.batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 100_000 - a.deleted + a.inserted);
    let mut vins = HashSet::new();
    for batch in &a.batches {
        assert_eq!(batch.schema(), vehicle_registry_schema());
        for vin in batch.column(0).as_string::<i32>().iter().flatten() {
            assert!(vins.insert(vin.to_owned()), "duplicate {vin}");
        }
    }
    let unchanged = edit_vehicle_registry(&day1, 3, 0.0).expect("edit");
    assert_eq!(unchanged.batches, day1);
    assert!(edit_vehicle_registry(&gps_positions(1, 10, 2).collect::<Vec<_>>(), 1, 0.5).is_err());
}
