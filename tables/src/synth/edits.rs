//! Day-to-day churn of a synthetic vehicle registry ([`super::edit_vehicle_registry`]): the
//! "tomorrow's export" of demos, delta tests and benchmarks. Each existing row changes with
//! probability `fraction`: 8 in 9 of those are updated and 1 in 9 deleted, and about
//! `rows × fraction / 10` new vehicles are added, so roughly 80% / 10% / 10% of the changed rows
//! are updates, deletes and inserts.
//!
//! An update bumps `updated_at` (by 1 to 30 days) and does one of: change the status, renew the
//! inspection (a null date becomes a value), transfer ownership (a new owner; companies become
//! private owners, private owners may become companies: nulls turn into values and back), or
//! re-plate the vehicle. Output is deterministic for `(input rows in order, seed, fraction)`.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Date32Type, TimestampMillisecondType};
use arrow::error::ArrowError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::vocab::{self, COMPANY_WORDS, STATUSES};
use super::{BATCH_ROWS, MAX_VEHICLES, TIMEZONE, vehicle_registry_schema, vehicles};

/// Mixed into the seed for the identities of inserted vehicles.
const INSERT_SEED: u64 = 0x1A5E_27ED_0F0E_2025;
const DAY_MS: i64 = 86_400_000;
const INSPECTION_DAYS: i32 = 730;

/// A registry after one round of edits (see [`super::edit_vehicle_registry`]).
#[derive(Debug, Clone)]
pub struct EditedRegistry {
    /// Surviving rows in input order (updated in place), then the inserted rows.
    pub batches: Vec<RecordBatch>,
    pub updated: usize,
    pub inserted: usize,
    pub deleted: usize,
}

/// Column positions in [`vehicle_registry_schema`].
const PLATE: usize = 1;
const OWNER_NAME: usize = 2;
const OWNER_ID_TYPE: usize = 3;
const COMPANY: usize = 4;
const INSPECTION: usize = 11;
const STATUS: usize = 13;
const UPDATED_AT: usize = 14;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Keep,
    Delete,
    Status,
    Inspection,
    Transfer,
    Replate,
}

fn draw_action(rng: &mut impl Rng, fraction: f64) -> Action {
    let u: f64 = rng.random();
    if u >= fraction {
        return Action::Keep;
    }
    match rng.random_range(0..9) {
        0 => Action::Delete,
        1..=3 => Action::Status,
        4..=5 => Action::Inspection,
        6..=7 => Action::Transfer,
        _ => Action::Replate,
    }
}

/// Edits one batch: rebuilds the editable columns and drops deleted rows.
fn edit_batch(
    batch: &RecordBatch,
    rng: &mut ChaCha8Rng,
    fraction: f64,
    counts: &mut (usize, usize),
) -> Result<RecordBatch, ArrowError> {
    let rows = batch.num_rows();
    let text = |i: usize| batch.column(i).as_string::<i32>();
    let (plate, owner, id_type, company, status) =
        (text(PLATE), text(OWNER_NAME), text(OWNER_ID_TYPE), text(COMPANY), text(STATUS));
    let inspection = batch.column(INSPECTION).as_primitive::<Date32Type>();
    let updated_at = batch.column(UPDATED_AT).as_primitive::<TimestampMillisecondType>();
    let mut b_plate = StringBuilder::with_capacity(rows, plate.value_data().len());
    let mut b_owner = StringBuilder::with_capacity(rows, owner.value_data().len());
    let mut b_id_type = StringBuilder::with_capacity(rows, id_type.value_data().len());
    let mut b_company = StringBuilder::with_capacity(rows, company.value_data().len());
    let mut b_status = StringBuilder::with_capacity(rows, status.value_data().len());
    let mut b_inspection = Date32Builder::with_capacity(rows);
    let mut b_updated = TimestampMillisecondBuilder::with_capacity(rows);
    let mut keep = Vec::with_capacity(rows);
    let mut buf = String::with_capacity(64);
    for row in 0..rows {
        let action = draw_action(rng, fraction);
        keep.push(action != Action::Delete);
        match action {
            Action::Keep => {}
            Action::Delete => counts.1 += 1,
            _ => counts.0 += 1,
        }
        let value = |a: &arrow::array::StringArray| a.is_valid(row).then(|| a.value(row).to_owned());
        let (mut p, mut o, mut t, mut c, mut s) =
            (value(plate), value(owner), value(id_type), value(company), value(status));
        let mut inspect = inspection.is_valid(row).then(|| inspection.value(row));
        let mut stamp = updated_at.is_valid(row).then(|| updated_at.value(row));
        if !matches!(action, Action::Keep | Action::Delete) {
            stamp = Some(stamp.unwrap_or(0) + rng.random_range(1..=30) * DAY_MS);
        }
        match action {
            Action::Status => {
                let current = s.clone().unwrap_or_default();
                let others: Vec<&str> = STATUSES.iter().map(|s| s.0).filter(|&v| v != current).collect();
                s = Some(vocab::pick(rng, &others).to_string());
            }
            Action::Inspection => {
                inspect = Some(inspect.map_or(INSPECTION_DAYS, |d| d + INSPECTION_DAYS));
            }
            Action::Transfer => {
                vehicles::person_name(rng, &mut buf);
                o = Some(buf.clone());
                if c.is_none() && rng.random_bool(0.5) {
                    c = Some(format!("{}运输有限公司", vocab::pick_str(rng, COMPANY_WORDS)));
                    t = Some("统一社会信用代码".to_owned());
                } else {
                    c = None;
                    t = Some("居民身份证".to_owned());
                }
            }
            Action::Replate => {
                let prefix: String = p.as_deref().unwrap_or("").chars().take(2).collect();
                let digits: String = (0..5).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect();
                p = Some(prefix + &digits);
            }
            Action::Keep | Action::Delete => {}
        }
        b_plate.append_option(p);
        b_owner.append_option(o);
        b_id_type.append_option(t);
        b_company.append_option(c);
        b_status.append_option(s);
        b_inspection.append_option(inspect);
        b_updated.append_option(stamp);
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[PLATE] = Arc::new(b_plate.finish());
    columns[OWNER_NAME] = Arc::new(b_owner.finish());
    columns[OWNER_ID_TYPE] = Arc::new(b_id_type.finish());
    columns[COMPANY] = Arc::new(b_company.finish());
    columns[STATUS] = Arc::new(b_status.finish());
    columns[INSPECTION] = Arc::new(b_inspection.finish());
    columns[UPDATED_AT] = Arc::new(b_updated.finish().with_timezone(TIMEZONE));
    let edited = RecordBatch::try_new(vehicle_registry_schema(), columns)?;
    filter_record_batch(&edited, &BooleanArray::from(keep))
}

/// New vehicles whose VINs are not in `existing`.
fn inserted_rows(seed: u64, count: usize, existing: &HashSet<String>) -> Vec<RecordBatch> {
    let seed = seed ^ INSERT_SEED;
    let mut out = Vec::new();
    let (mut found, mut start) = (0, 0);
    while found < count && start < MAX_VEHICLES {
        let len = BATCH_ROWS.min(count - found).min(MAX_VEHICLES - start);
        let batch = vehicles::registry_batch(seed, start, len);
        start += len;
        let vins = batch.column(0).as_string::<i32>();
        let fresh: BooleanArray = vins.iter().map(|v| Some(!existing.contains(v.unwrap_or("")))).collect();
        let Ok(batch) = filter_record_batch(&batch, &fresh) else { continue };
        found += batch.num_rows();
        if batch.num_rows() > 0 {
            out.push(batch);
        }
    }
    out
}

pub(super) fn edit(batches: &[RecordBatch], seed: u64, fraction: f64) -> Result<EditedRegistry, ArrowError> {
    let schema = vehicle_registry_schema();
    let fraction = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = (0, 0);
    let mut out = Vec::with_capacity(batches.len() + 1);
    let mut existing = HashSet::new();
    let mut rows = 0usize;
    for batch in batches {
        if batch.schema().fields() != schema.fields() {
            return Err(ArrowError::SchemaError("batches are not vehicle registry rows".to_owned()));
        }
        rows += batch.num_rows();
        existing.extend(batch.column(0).as_string::<i32>().iter().flatten().map(str::to_owned));
        out.push(edit_batch(batch, &mut rng, fraction, &mut counts)?);
    }
    let want = (rows as f64 * fraction / 10.0).round() as usize;
    let inserts = inserted_rows(seed, want, &existing);
    let inserted = inserts.iter().map(RecordBatch::num_rows).sum();
    out.extend(inserts);
    let (updated, deleted) = counts;
    Ok(EditedRegistry { batches: out, updated, inserted, deleted })
}
