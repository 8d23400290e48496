//! Pruning never drops a row the filter passes, and it does skip: a key lookup keeps one row
//! group and one page of it; a key that is not there is refused by the bloom filter.

use std::fs::File;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::{concat_batches, sort_to_indices, take};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};

use super::*;
use crate::canonical::{CanonicalWriter, PAGE_ROWS, WriteOptions};
use crate::restrict::evaluate;
use crate::synth;

struct Written {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    table: RecordBatch,
    metadata: Arc<ParquetMetaData>,
}

fn written(rows: usize) -> Written {
    let batches: Vec<RecordBatch> = synth::vehicle_registry(11, rows).collect();
    let unsorted = concat_batches(&synth::vehicle_registry_schema(), &batches).expect("concat");
    let order = sort_to_indices(unsorted.column(0), None, None).expect("sort");
    let columns = unsorted.columns().iter().map(|c| take(c, &order, None).expect("take")).collect();
    let table = RecordBatch::try_new(unsorted.schema(), columns).expect("sorted");
    let dir = tempfile::tempdir().expect("dir");
    let opts = WriteOptions { row_group_rows: 20_000, rows_per_file: rows, ..WriteOptions::default() };
    let mut writer =
        CanonicalWriter::new(dir.path(), "part", table.schema(), &["vin".to_owned()], &opts).expect("writer");
    writer.write(&table).expect("write");
    let files = writer.finish().expect("finish");
    let path = files[0].path.clone();
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let metadata = ArrowReaderMetadata::load(&File::open(&path).expect("open"), options).expect("metadata");
    Written { _dir: dir, path, table, metadata: Arc::clone(metadata.metadata()) }
}

/// The global row numbers kept by pruning.
fn kept_rows(w: &Written, filter: &RowFilter) -> Vec<bool> {
    let schema = w.table.schema();
    let mut kept = vec![false; w.table.num_rows()];
    let groups = row_groups(filter, &w.metadata, &schema).expect("row groups");
    for group in groups {
        let start: usize = (0..group).map(|g| w.metadata.row_group(g).num_rows() as usize).sum();
        let rows = w.metadata.row_group(group).num_rows() as usize;
        match page_selection(filter, &w.metadata, &schema, group).expect("pages") {
            None => kept[start..start + rows].iter_mut().for_each(|k| *k = true),
            Some(selection) => {
                let mut at = start;
                for selector in selection.iter() {
                    if !selector.skip {
                        kept[at..at + selector.row_count].iter_mut().for_each(|k| *k = true);
                    }
                    at += selector.row_count;
                }
            }
        }
    }
    kept
}

#[test]
fn pruning_keeps_every_matching_row_and_skips_the_rest() {
    let w = written(100_000);
    let vins = w.table.column_by_name("vin").expect("vin").as_string::<i32>();
    let vin = vins.value(54_321).to_owned();
    let plates = w.table.column_by_name("plate").expect("plate").as_string::<i32>();
    let plate = plates.value(777).to_owned();
    let cases = [
        format!("vin = '{vin}'"),
        format!("vin IN ('{vin}', '{}')", vins.value(3)),
        format!("vin >= '{vin}' AND seats <= 5"),
        format!("vin BETWEEN '{}' AND '{vin}'", vins.value(50_000)),
        format!("plate = '{plate}'"),
        "company IS NULL".to_owned(),
        "inspection_valid_until IS NOT NULL AND gross_mass_kg > 20000".to_owned(),
        "seats != 5".to_owned(),
        "registered_on < DATE '2012-01-01'".to_owned(),
    ];
    for text in &cases {
        let filter = RowFilter::parse(text).expect("filter");
        let matching = evaluate(&filter, &w.table).expect("evaluate");
        let kept = kept_rows(&w, &filter);
        for (i, keep) in kept.iter().enumerate() {
            assert!(!matching.value(i) || *keep, "{text}: row {i} matches but was pruned");
        }
    }
    // A key lookup keeps one row group and at most one page's rows of it.
    let lookup = RowFilter::parse(&cases[0]).expect("filter");
    let kept = kept_rows(&w, &lookup).iter().filter(|k| **k).count();
    assert!(kept > 0 && kept <= PAGE_ROWS, "{kept} rows kept");
    assert_eq!(row_groups(&lookup, &w.metadata, &w.table.schema()).expect("groups"), vec![2]);
}

#[test]
fn the_key_columns_bloom_filter_refuses_absent_keys() {
    let w = written(30_000);
    let properties = ReaderProperties::builder().set_read_bloom_filter(true).build();
    let options = ReadOptionsBuilder::new().with_reader_properties(properties).build();
    let reader =
        SerializedFileReader::new_with_options(File::open(&w.path).expect("open"), options).expect("reader");
    let vins = w.table.column_by_name("vin").expect("vin").as_string::<i32>();
    let present = RowFilter::parse(&format!("vin = '{}'", vins.value(10))).expect("filter");
    let group = reader.get_row_group(0).expect("row group");
    let bloom = group.get_column_bloom_filter(0).expect("the key column has a bloom filter");
    assert!(bloom_may_match(&present.predicates()[0], &arrow::datatypes::DataType::Utf8, bloom));
    let refused = (0..100)
        .filter(|i| {
            let absent = RowFilter::parse(&format!("vin = 'LNOTAVIN{i:09}'")).expect("filter");
            !bloom_may_match(&absent.predicates()[0], &arrow::datatypes::DataType::Utf8, bloom)
        })
        .count();
    assert!(refused >= 95, "only {refused} of 100 absent keys refused");
    assert!(group.get_column_bloom_filter(1).is_none(), "plate is not a key column");
    let _ = ParquetRecordBatchReaderBuilder::try_new(File::open(&w.path).expect("open")).expect("readable");
}
