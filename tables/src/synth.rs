//! Synthetic transport datasets for tests, demos and benchmarks: a vehicle registry (机动车登记)
//! and a GPS position feed (车辆定位), as Arrow batches of at most [`BATCH_ROWS`] rows, with
//! their dataset definitions (the TOML that `ferry_tables::definition` parses) and
//! writers that produce the files a province would upload.
//!
//! Output is deterministic for `(seed, rows)`; the first rows do not depend on `rows`. Each
//! registry batch draws from its own ChaCha8 stream (`seed_from_u64(seed)` + stream = batch
//! number + 1), and a vehicle's identity (VIN, maker, province, registration date) is a pure
//! function of `(seed, row index)`, so GPS tracks reuse the registry's VINs.
//!
//! Realism, roughly: VINs with World Manufacturer Identifiers of Chinese plants, valid ISO 3779
//! check digits and model-year codes; plates `粤B3K8Z9`-style, new-energy plates (`沪AD12345`)
//! for electric and plug-in hybrid vehicles (~5%); owners with common Chinese names; ~40%
//! company-owned (most trucks and buses). Distributions are plausible, not statistics.

mod edits;
mod gps;
mod vehicles;
mod vocab;

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

pub use edits::EditedRegistry;
pub use vehicles::vin_check_digit;

/// Most rows in one generated batch.
pub const BATCH_ROWS: usize = 65_536;
/// Most vehicles with distinct VINs (33 000 000 six-digit serials, then serials with letters);
/// larger `rows` / `vehicles` arguments are capped to it.
pub const MAX_VEHICLES: usize = vehicles::MAX_VEHICLES;
/// Time zone of every timestamp column.
pub const TIMEZONE: &str = "+08:00";

/// One column of a synthetic dataset: its Arrow field and its definition entry.
struct ColumnSpec {
    name: &'static str,
    data_type: DataType,
    type_text: &'static str,
    key: bool,
    nullable: bool,
    description: &'static str,
}

fn col(
    name: &'static str,
    data_type: DataType,
    type_text: &'static str,
    description: &'static str,
) -> ColumnSpec {
    ColumnSpec { name, data_type, type_text, key: false, nullable: false, description }
}

fn key(spec: ColumnSpec) -> ColumnSpec {
    ColumnSpec { key: true, ..spec }
}

fn nullable(spec: ColumnSpec) -> ColumnSpec {
    ColumnSpec { nullable: true, ..spec }
}

fn utf8(name: &'static str, description: &'static str) -> ColumnSpec {
    col(name, DataType::Utf8, "utf8", description)
}

fn timestamp(name: &'static str, description: &'static str) -> ColumnSpec {
    let data_type = DataType::Timestamp(TimeUnit::Millisecond, Some(TIMEZONE.into()));
    col(name, data_type, "timestamp(ms, +08:00)", description)
}

fn vehicle_columns() -> Vec<ColumnSpec> {
    vec![
        key(utf8("vin", "车辆识别代号 Vehicle identification number (ISO 3779, 17 characters)")),
        utf8("plate", "号牌号码 Licence plate number"),
        utf8("owner_name", "所有人姓名 Registered owner (person or company representative)"),
        utf8("owner_id_type", "所有人证件类型 Owner identity document type"),
        nullable(utf8("company", "所属企业 Owning company, empty for private owners")),
        utf8("vehicle_type", "车辆类型 Vehicle type (GA 802 classification)"),
        utf8("brand", "品牌 Brand"),
        utf8("fuel", "燃料种类 Fuel type"),
        col("seats", DataType::Int16, "int16", "核定载客 Approved number of seats"),
        col("gross_mass_kg", DataType::Int32, "int32", "总质量(千克) Gross vehicle mass, kg"),
        col("registered_on", DataType::Date32, "date32", "初次登记日期 First registration date"),
        nullable(col(
            "inspection_valid_until",
            DataType::Date32,
            "date32",
            "检验有效期止 Inspection valid until",
        )),
        utf8("province_code", "省级行政区划代码 Province administrative division code"),
        utf8("status", "机动车状态 Registration status"),
        timestamp("updated_at", "更新时间 Last update of the record (UTC+8)"),
    ]
}

fn gps_columns() -> Vec<ColumnSpec> {
    vec![
        key(utf8("vin", "车辆识别代号 Vehicle identification number")),
        key(timestamp("ts", "定位时间 Position time (UTC+8)")),
        col("lon", DataType::Float64, "float64", "经度 Longitude, degrees (WGS 84)"),
        col("lat", DataType::Float64, "float64", "纬度 Latitude, degrees (WGS 84)"),
        col("speed_kmh", DataType::Float32, "float32", "速度(千米/小时) Speed, km/h"),
        col("heading", DataType::Int16, "int16", "方向(度) Heading, degrees clockwise from north, 0..359"),
        nullable(col("altitude_m", DataType::Float32, "float32", "海拔(米) Altitude, m, empty without fix")),
    ]
}

fn schema_of(columns: &[ColumnSpec]) -> SchemaRef {
    let fields: Vec<Field> =
        columns.iter().map(|c| Field::new(c.name, c.data_type.clone(), c.nullable)).collect();
    Arc::new(Schema::new(fields))
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

struct DefinitionText<'a> {
    dataset_id: &'a str,
    provider: &'a str,
    name: &'a str,
    description: &'a str,
    update_cycle: &'a str,
    source_system: &'a str,
}

fn definition_toml(text: &DefinitionText<'_>, columns: &[ColumnSpec]) -> String {
    let mut out = format!(
        "id = {}\nname = {}\nprovider = {}\ndescription = {}\ndefinition-version = 1\n\
         share-type = \"unconditional\"\nupdate-cycle = {}\nsecurity-level = \"internal\"\n\
         source-system = {}\n",
        quoted(text.dataset_id),
        quoted(text.name),
        quoted(text.provider),
        quoted(text.description),
        quoted(text.update_cycle),
        quoted(text.source_system),
    );
    for c in columns {
        out.push_str(&format!(
            "\n[[columns]]\nname = {}\ntype = {}\nkey = {}\nnullable = {}\ndescription = {}\n",
            quoted(c.name),
            quoted(c.type_text),
            c.key,
            c.nullable,
            quoted(c.description),
        ));
    }
    out
}

/// Arrow schema of [`vehicle_registry`] batches.
pub fn vehicle_registry_schema() -> SchemaRef {
    schema_of(&vehicle_columns())
}

/// `rows` vehicles (capped at [`MAX_VEHICLES`]) in batches of at most [`BATCH_ROWS`], unique by
/// `vin`, in row-index order (not key order).
pub fn vehicle_registry(seed: u64, rows: usize) -> impl Iterator<Item = RecordBatch> {
    let rows = rows.min(MAX_VEHICLES);
    (0..rows.div_ceil(BATCH_ROWS)).map(move |batch| {
        let start = batch * BATCH_ROWS;
        vehicles::registry_batch(seed, start, BATCH_ROWS.min(rows - start))
    })
}

/// The next day's export of a registry: `batches` (rows of [`vehicle_registry_schema`], e.g.
/// from [`vehicle_registry`] or a previous edit) with about `fraction` (0.0..=1.0) of the rows
/// changed — ~80% of the changes updates, ~10% deletes, ~10% inserts of new vehicles whose VINs
/// are not in `batches`. Updates touch status, inspection date, owner (nulls become values and
/// back), plate, and always `updated_at`. Deterministic for `(batches, seed, fraction)`; rows
/// keep their input order and inserted rows come last, so sort by `vin` before writing a
/// snapshot. Fails only if the batches are not registry rows.
pub fn edit_vehicle_registry(
    batches: &[RecordBatch],
    seed: u64,
    fraction: f64,
) -> Result<EditedRegistry, ArrowError> {
    edits::edit(batches, seed, fraction)
}

/// Dataset definition (TOML) of the vehicle registry: key `vin`, unconditional, daily.
pub fn vehicle_registry_definition(dataset_id: &str, provider: &str) -> String {
    let text = DefinitionText {
        dataset_id,
        provider,
        name: "机动车登记信息 Vehicle registry",
        description: "机动车登记基础数据(无条件共享) Registered motor vehicles, base data shared unconditionally",
        update_cycle: "daily",
        source_system: "机动车登记管理系统 Vehicle registration system",
    };
    definition_toml(&text, &vehicle_columns())
}

/// Arrow schema of [`gps_positions`] batches.
pub fn gps_positions_schema() -> SchemaRef {
    schema_of(&gps_columns())
}

/// `rows` position reports of `vehicles` vehicles (at least 1), in time order, unique by
/// `(vin, ts)`; see the `gps` submodule for the movement model.
pub fn gps_positions(seed: u64, rows: usize, vehicles: usize) -> impl Iterator<Item = RecordBatch> {
    gps::GpsGenerator::new(seed, rows, vehicles)
}

/// Dataset definition (TOML) of the GPS feed: key `(vin, ts)`, unconditional, hourly.
pub fn gps_positions_definition(dataset_id: &str, provider: &str) -> String {
    let text = DefinitionText {
        dataset_id,
        provider,
        name: "重点营运车辆动态定位 Vehicle GPS positions",
        description: "车辆卫星定位数据,追加写入 Satellite positions reported by vehicles, append-only",
        update_cycle: "hourly",
        source_system: "重点营运车辆联网联控系统 Commercial vehicle monitoring platform",
    };
    definition_toml(&text, &gps_columns())
}

/// Writes batches as one zstd Parquet file, one row group per batch, rows in the given order
/// (like a province's export). Returns the number of rows written.
pub fn write_parquet(
    path: &Path,
    schema: SchemaRef,
    batches: impl IntoIterator<Item = RecordBatch>,
) -> Result<u64, ParquetError> {
    let props =
        WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?)).build();
    let mut writer = ArrowWriter::try_new(File::create(path)?, schema, Some(props))?;
    let mut rows = 0u64;
    for batch in batches {
        writer.write(&batch)?;
        writer.flush()?;
        rows += batch.num_rows() as u64;
    }
    writer.close()?;
    Ok(rows)
}

/// Writes batches as one UTF-8 CSV file with a header row; timestamps in RFC 3339 with offset,
/// nulls as empty fields. Returns the number of rows written.
pub fn write_csv(path: &Path, batches: impl IntoIterator<Item = RecordBatch>) -> Result<u64, ArrowError> {
    let mut writer =
        arrow::csv::WriterBuilder::new().with_header(true).build(BufWriter::new(File::create(path)?));
    let mut rows = 0u64;
    for batch in batches {
        writer.write(&batch)?;
        rows += batch.num_rows() as u64;
    }
    let mut inner = writer.into_inner();
    std::io::Write::flush(&mut inner)?;
    Ok(rows)
}

#[cfg(test)]
mod tests;
