//! The synthetic vehicle registry: per-vehicle identity (maker, province, registration date and
//! a VIN with a valid ISO 3779 check digit, unique per row index) and the registry rows.
//!
//! A vehicle's identity depends only on `(seed, index)` (a SplitMix64 stream), so
//! [`super::gps`] finds the same VINs; the other fields come from a ChaCha8 stream per batch.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Int16Builder, Int32Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::vocab::{
    self, COMPANY_WORDS, Category, GIVEN_CHARS, MAKERS, Maker, PLATE_LETTERS, PROVINCES, Province, STATUSES,
    SURNAMES,
};
use super::{BATCH_ROWS, TIMEZONE, vehicle_registry_schema};

/// Characters allowed in a VIN: no I, O or Q.
const VIN_ALPHABET: &[u8; 33] = b"0123456789ABCDEFGHJKLMNPRSTUVWXYZ";
const VIN_LETTERS: &[u8; 23] = b"ABCDEFGHJKLMNPRSTUVWXYZ";
/// Model-year codes for 2001..=2030 (position 10).
const YEAR_CODES: &[u8; 30] = b"123456789ABCDEFGHJKLMNPRSTVWXY";
const VIN_WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];

/// Serials of the first tier: plant code (33) × six digits.
const TIER1: u64 = 33 * 1_000_000;
/// Serials of the second tier: plant (33) × letter (23) × character (33) × four digits.
const TIER2: u64 = 33 * 23 * 33 * 10_000;
/// Most vehicles with distinct VINs.
pub(crate) const MAX_VEHICLES: usize = (TIER1 + TIER2) as usize;
/// Prime multiplier that scrambles serials (coprime to both tier sizes, so `index * SCRAMBLE +
/// SHIFT` modulo a tier size is a bijection), and a shift so index 0 is not serial 000000.
const SCRAMBLE: u64 = 2_654_435_761;
const SHIFT: u64 = 12_345_679;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) const fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let year_of_era = (y - era * 400) as u32;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era as i32 - 719_468
}

/// Calendar year of a day count (inverse of [`days_from_civil`] for the year).
fn civil_year(days: i32) -> i32 {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    year_of_era + era * 400 + i32::from(month_index >= 10)
}

const FIRST_REGISTRATION: i32 = days_from_civil(2005, 1, 1);
const END_REGISTRATION: i32 = days_from_civil(2026, 1, 1);
/// "Today" of the synthetic registry.
const REFERENCE_DAY: i32 = days_from_civil(2025, 12, 31);
const OFFSET_MS: i64 = 8 * 3_600_000;

/// ISO 3779 transliteration of a VIN character.
fn transliterate(c: u8) -> Option<u32> {
    let value = match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'H' => c - b'A' + 1,
        b'J'..=b'N' => c - b'J' + 1,
        b'P' => 7,
        b'R' => 9,
        b'S'..=b'Z' => c - b'S' + 2,
        _ => return None,
    };
    Some(u32::from(value))
}

/// The check character (position 9) a VIN must carry, or `None` if it is not 17 VIN characters.
pub fn vin_check_digit(vin: &str) -> Option<char> {
    let bytes: &[u8; 17] = vin.as_bytes().try_into().ok()?;
    check_digit(bytes).map(char::from)
}

fn check_digit(vin: &[u8; 17]) -> Option<u8> {
    let mut sum = 0;
    for (&c, weight) in vin.iter().zip(VIN_WEIGHTS) {
        sum += transliterate(c)? * weight;
    }
    Some(match sum % 11 {
        10 => b'X',
        r => b'0' + r as u8,
    })
}

/// Plant code (position 11) and serial (positions 12–17), distinct for every `index` below
/// [`MAX_VEHICLES`]. Tier 1 serials are six digits; tier 2 serials start with a letter.
fn plant_and_serial(index: u64) -> [u8; 7] {
    let mut out = [b'0'; 7];
    if index < TIER1 {
        let n = (index * SCRAMBLE + SHIFT) % TIER1;
        out[0] = VIN_ALPHABET[(n / 1_000_000) as usize];
        write_digits(&mut out[1..], n % 1_000_000);
    } else {
        let n = ((index - TIER1) * SCRAMBLE + SHIFT) % TIER2;
        let rest = n / 10_000;
        write_digits(&mut out[3..], n % 10_000);
        out[2] = VIN_ALPHABET[(rest % 33) as usize];
        out[1] = VIN_LETTERS[(rest / 33 % 23) as usize];
        out[0] = VIN_ALPHABET[(rest / (33 * 23)) as usize % 33];
    }
    out
}

fn write_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// SplitMix64: a tiny, fast generator for per-vehicle identity.
struct SplitMix64(u64);

impl RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// What a vehicle is, independent of the batch it is generated in.
pub(crate) struct Identity {
    pub maker: &'static Maker,
    pub province: &'static Province,
    pub registered_on: i32,
    pub vin: [u8; 17],
}

pub(crate) fn identity(seed: u64, index: u64) -> Identity {
    let mut rng = SplitMix64(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    rng.next_u64();
    let maker = vocab::pick_weighted(&mut rng, MAKERS, |m| m.weight);
    let province = vocab::pick_weighted(&mut rng, PROVINCES, |p| p.weight);
    let registered_on = rng.random_range(FIRST_REGISTRATION..END_REGISTRATION);
    let model_year = civil_year(registered_on) - i32::from(rng.random_bool(0.15));
    let mut vin = [b'0'; 17];
    vin[..3].copy_from_slice(maker.wmi);
    for slot in &mut vin[3..8] {
        *slot = *vocab::pick(&mut rng, VIN_ALPHABET);
    }
    vin[9] = YEAR_CODES[(model_year - 2001).clamp(0, 29) as usize];
    vin[10..].copy_from_slice(&plant_and_serial(index));
    // Every character comes from VIN_ALPHABET or a WMI of it, so the check digit exists.
    vin[8] = check_digit(&vin).unwrap_or(b'X');
    Identity { maker, province, registered_on, vin }
}

pub(crate) fn push_ascii(buf: &mut String, bytes: &[u8]) {
    buf.extend(bytes.iter().map(|&b| char::from(b)));
}

fn is_new_energy(fuel: &str) -> bool {
    fuel == "纯电动" || fuel == "插电混动"
}

fn digit(rng: &mut impl Rng) -> char {
    char::from(b'0' + rng.random_range(0..10u8))
}

fn plate(rng: &mut impl Rng, buf: &mut String, province: &Province, category: Category, fuel: &str) {
    buf.clear();
    buf.push_str(province.abbr);
    let letters = &PLATE_LETTERS[..province.city_letters.clamp(1, PLATE_LETTERS.len())];
    buf.push(char::from(if rng.random_bool(0.35) { b'A' } else { *vocab::pick(rng, letters) }));
    if is_new_energy(fuel) {
        let mark = if fuel == "纯电动" { 'D' } else { 'F' };
        if category == Category::Car {
            buf.push(mark);
            let second =
                if rng.random_bool(0.3) { char::from(*vocab::pick(rng, PLATE_LETTERS)) } else { digit(rng) };
            buf.push(second);
            (0..4).for_each(|_| buf.push(digit(rng)));
        } else {
            (0..5).for_each(|_| buf.push(digit(rng)));
            buf.push(mark);
        }
        return;
    }
    let mut serial = [0u8; 5];
    serial.iter_mut().for_each(|c| *c = b'0' + rng.random_range(0..10u8));
    let letter_count = match rng.random_range(0..10) {
        0..7 => 0,
        7..9 => 1,
        _ => 2,
    };
    for _ in 0..letter_count {
        serial[rng.random_range(0..5)] = *vocab::pick(rng, PLATE_LETTERS);
    }
    push_ascii(buf, &serial);
}

pub(super) fn person_name(rng: &mut impl Rng, buf: &mut String) {
    buf.clear();
    buf.push_str(vocab::pick_str(rng, SURNAMES));
    buf.push_str(vocab::pick_str(rng, GIVEN_CHARS));
    if rng.random_bool(0.7) {
        buf.push_str(vocab::pick_str(rng, GIVEN_CHARS));
    }
}

fn company_name(rng: &mut impl Rng, buf: &mut String, province: &Province, category: Category) {
    buf.clear();
    buf.push_str(vocab::pick_str(rng, province.cities));
    buf.push_str(vocab::pick_str(rng, COMPANY_WORDS));
    buf.push_str(vocab::pick_str(rng, vocab::industries(category)));
    buf.push_str("有限公司");
}

struct RegistryBuilders {
    vin: StringBuilder,
    plate: StringBuilder,
    owner_name: StringBuilder,
    owner_id_type: StringBuilder,
    company: StringBuilder,
    vehicle_type: StringBuilder,
    brand: StringBuilder,
    fuel: StringBuilder,
    seats: Int16Builder,
    gross_mass_kg: Int32Builder,
    registered_on: Date32Builder,
    inspection_valid_until: Date32Builder,
    province_code: StringBuilder,
    status: StringBuilder,
    updated_at: TimestampMillisecondBuilder,
}

impl RegistryBuilders {
    fn new(rows: usize) -> Self {
        let text = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        Self {
            vin: text(17),
            plate: text(12),
            owner_name: text(9),
            owner_id_type: text(24),
            company: text(16),
            vehicle_type: text(18),
            brand: text(9),
            fuel: text(12),
            seats: Int16Builder::with_capacity(rows),
            gross_mass_kg: Int32Builder::with_capacity(rows),
            registered_on: Date32Builder::with_capacity(rows),
            inspection_valid_until: Date32Builder::with_capacity(rows),
            province_code: text(6),
            status: text(6),
            updated_at: TimestampMillisecondBuilder::with_capacity(rows),
        }
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.vin.finish()),
            Arc::new(self.plate.finish()),
            Arc::new(self.owner_name.finish()),
            Arc::new(self.owner_id_type.finish()),
            Arc::new(self.company.finish()),
            Arc::new(self.vehicle_type.finish()),
            Arc::new(self.brand.finish()),
            Arc::new(self.fuel.finish()),
            Arc::new(self.seats.finish()),
            Arc::new(self.gross_mass_kg.finish()),
            Arc::new(self.registered_on.finish()),
            Arc::new(self.inspection_valid_until.finish()),
            Arc::new(self.province_code.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.updated_at.finish().with_timezone(TIMEZONE)),
        ]
    }
}

/// Rows `start..start + len` of the registry for `seed`.
pub(crate) fn registry_batch(seed: u64, start: usize, len: usize) -> RecordBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1 + (start / BATCH_ROWS) as u64);
    let mut b = RegistryBuilders::new(len);
    let mut buf = String::with_capacity(64);
    for index in start..start + len {
        let id = identity(seed, index as u64);
        let category = id.maker.category;
        buf.clear();
        push_ascii(&mut buf, &id.vin);
        b.vin.append_value(&buf);
        let fuels = if id.maker.fuels.is_empty() { vocab::fuels(category) } else { id.maker.fuels };
        let fuel = vocab::pick_weighted(&mut rng, fuels, |f| f.1).0;
        plate(&mut rng, &mut buf, id.province, category, fuel);
        b.plate.append_value(&buf);
        person_name(&mut rng, &mut buf);
        b.owner_name.append_value(&buf);
        let company_share = match category {
            Category::Car => 0.3,
            Category::Truck => 0.9,
            Category::Bus => 0.95,
        };
        if rng.random_bool(company_share) {
            company_name(&mut rng, &mut buf, id.province, category);
            b.company.append_value(&buf);
            b.owner_id_type.append_value("统一社会信用代码");
        } else {
            b.company.append_null();
            b.owner_id_type.append_value("居民身份证");
        }
        let kind = vocab::pick_weighted(&mut rng, vocab::vehicle_types(category), |t| t.weight);
        b.vehicle_type.append_value(kind.name);
        b.brand.append_value(id.maker.brand);
        b.fuel.append_value(fuel);
        b.seats.append_value(rng.random_range(kind.seats.0..=kind.seats.1));
        b.gross_mass_kg.append_value(rng.random_range(kind.mass_kg.0..=kind.mass_kg.1) / 10 * 10);
        b.registered_on.append_value(id.registered_on);
        if rng.random_bool(0.03) {
            b.inspection_valid_until.append_null();
        } else {
            let next = REFERENCE_DAY + rng.random_range(-120..=730);
            b.inspection_valid_until.append_value(next.max(id.registered_on + 730));
        }
        b.province_code.append_value(id.province.code);
        b.status.append_value(vocab::pick_weighted(&mut rng, STATUSES, |s| s.1).0);
        let day = i64::from(rng.random_range(id.registered_on..=REFERENCE_DAY));
        let local_ms = rng.random_range(8 * 3_600_000..20 * 3_600_000);
        b.updated_at.append_value(day * 86_400_000 + local_ms - OFFSET_MS);
    }
    // The builders above are declared in the order and with the types of the schema.
    RecordBatch::try_new(vehicle_registry_schema(), b.finish())
        .expect("registry builders match vehicle_registry_schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vins_have_their_check_digit() {
        // Published examples: a Honda (US) and a GB 16735 sample.
        assert_eq!(vin_check_digit("1HGCM82633A004352"), Some('3'));
        assert_eq!(vin_check_digit("11111111111111111"), Some('1'));
        assert_eq!(vin_check_digit("1M8GDM9AXKP042788"), Some('X'));
        assert_eq!(vin_check_digit("1HGCM82633A00435"), None);
        assert_eq!(vin_check_digit("IHGCM82633A004352"), None);
    }

    #[test]
    fn calendar_helpers_agree() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for day in [0, 59, 60, 10_956, 11_016, 11_017, 20_453, 20_454] {
            let year = civil_year(day);
            assert!(days_from_civil(year, 1, 1) <= day && day < days_from_civil(year + 1, 1, 1));
        }
    }

    #[test]
    fn serials_are_distinct_across_tier_edges() {
        let indices = [0, 1, 2, TIER1 - 1, TIER1, TIER1 + 1, TIER1 + TIER2 - 1];
        let serials: std::collections::HashSet<[u8; 7]> =
            indices.iter().map(|&i| plant_and_serial(i)).collect();
        assert_eq!(serials.len(), indices.len());
        assert!(plant_and_serial(TIER1)[1].is_ascii_uppercase());
    }
}
