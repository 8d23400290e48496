//! Synthetic GPS positions: an append-only event feed of vehicles reporting every ~30 s while
//! they drive a random walk (heading drifts, speed wanders, occasional stops) inside China's
//! bounding box.
//!
//! Events come in time order: row `i` is step `i / n` of vehicle `i % n` (`n` vehicles). The
//! vehicles are the first `n` of [`super::vehicle_registry`] for the same seed (same VINs, tracks
//! start near their plate's province), so the two datasets join. `(vin, ts)` is unique: a
//! vehicle's reports are at least 25 s apart.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Builder, Float64Builder, Int16Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::vehicles::{days_from_civil, identity, push_ascii};
use super::vocab::Category;
use super::{BATCH_ROWS, TIMEZONE, gps_positions_schema};

/// China's bounding box, degrees.
const LON_RANGE: (f64, f64) = (73.6, 134.7);
const LAT_RANGE: (f64, f64) = (18.2, 53.5);
const STEP_MS: i64 = 30_000;
const KM_PER_DEGREE: f64 = 111.32;
/// 2025-06-01T00:00:00+08:00 in UTC milliseconds.
const START_MS: i64 = days_from_civil(2025, 6, 1) as i64 * 86_400_000 - 8 * 3_600_000;

struct Track {
    vin: [u8; 17],
    lon: f64,
    lat: f64,
    heading_deg: f64,
    speed_kmh: f32,
    max_speed_kmh: f32,
    altitude_m: f32,
    /// Offset of this vehicle's reports within each 30 s step, below 25 s.
    offset_ms: i64,
}

impl Track {
    fn new(rng: &mut impl Rng, seed: u64, index: u64) -> Self {
        let id = identity(seed, index);
        let max_speed_kmh = match id.maker.category {
            Category::Car => 120.0,
            Category::Truck => 90.0,
            Category::Bus => 100.0,
        };
        Self {
            vin: id.vin,
            lon: id.province.lon + rng.random_range(-1.2..1.2),
            lat: id.province.lat + rng.random_range(-1.0..1.0),
            heading_deg: rng.random_range(0.0..360.0),
            speed_kmh: rng.random_range(0.0..max_speed_kmh * 0.7),
            max_speed_kmh,
            altitude_m: (id.province.altitude_m + rng.random_range(-40.0..150.0)).max(-50.0),
            offset_ms: rng.random_range(0..25_000),
        }
    }

    /// Moves the vehicle by one reporting interval.
    fn advance(&mut self, rng: &mut impl Rng) {
        if self.speed_kmh == 0.0 {
            if rng.random_bool(0.3) {
                self.speed_kmh = rng.random_range(8.0..30.0);
            }
            return;
        }
        if rng.random_bool(0.02) {
            self.speed_kmh = 0.0;
            return;
        }
        self.speed_kmh = (self.speed_kmh + rng.random_range(-6.0..6.0)).clamp(3.0, self.max_speed_kmh);
        self.heading_deg = (self.heading_deg + rng.random_range(-12.0..12.0)).rem_euclid(360.0);
        let km = f64::from(self.speed_kmh) * (STEP_MS as f64 / 3_600_000.0);
        let radians = self.heading_deg.to_radians();
        self.lat += km * radians.cos() / KM_PER_DEGREE;
        self.lon += km * radians.sin() / (KM_PER_DEGREE * self.lat.to_radians().cos());
        let outside = !(LON_RANGE.0..=LON_RANGE.1).contains(&self.lon)
            || !(LAT_RANGE.0..=LAT_RANGE.1).contains(&self.lat);
        if outside {
            self.heading_deg = (self.heading_deg + 180.0).rem_euclid(360.0);
            self.lon = self.lon.clamp(LON_RANGE.0, LON_RANGE.1);
            self.lat = self.lat.clamp(LAT_RANGE.0, LAT_RANGE.1);
        }
        self.altitude_m = (self.altitude_m + rng.random_range(-3.0..3.0)).max(-50.0);
    }
}

/// Yields batches of at most [`BATCH_ROWS`] positions.
pub(crate) struct GpsGenerator {
    rng: ChaCha8Rng,
    tracks: Vec<Track>,
    next_row: usize,
    rows: usize,
}

impl GpsGenerator {
    pub(crate) fn new(seed: u64, rows: usize, vehicles: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(0);
        let count = vehicles.clamp(1, super::MAX_VEHICLES).min(rows.max(1));
        let tracks = (0..count as u64).map(|i| Track::new(&mut rng, seed, i)).collect();
        Self { rng, tracks, next_row: 0, rows }
    }
}

fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

impl Iterator for GpsGenerator {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        if self.next_row >= self.rows {
            return None;
        }
        let len = BATCH_ROWS.min(self.rows - self.next_row);
        let mut vin = StringBuilder::with_capacity(len, len * 17);
        let mut ts = TimestampMillisecondBuilder::with_capacity(len);
        let mut lon = Float64Builder::with_capacity(len);
        let mut lat = Float64Builder::with_capacity(len);
        let mut speed = Float32Builder::with_capacity(len);
        let mut heading = Int16Builder::with_capacity(len);
        let mut altitude = Float32Builder::with_capacity(len);
        let mut buf = String::with_capacity(17);
        let count = self.tracks.len();
        for row in self.next_row..self.next_row + len {
            let step = (row / count) as i64;
            let track = &mut self.tracks[row % count];
            buf.clear();
            push_ascii(&mut buf, &track.vin);
            vin.append_value(&buf);
            let jitter = self.rng.random_range(0..5_000);
            ts.append_value(START_MS + step * STEP_MS + track.offset_ms + jitter);
            lon.append_value(round6(track.lon));
            lat.append_value(round6(track.lat));
            speed.append_value((track.speed_kmh * 10.0).round() / 10.0);
            heading.append_value((track.heading_deg as i16).clamp(0, 359));
            if self.rng.random_bool(0.05) {
                altitude.append_null();
            } else {
                altitude.append_value(track.altitude_m.round());
            }
            track.advance(&mut self.rng);
        }
        self.next_row += len;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(vin.finish()),
            Arc::new(ts.finish().with_timezone(TIMEZONE)),
            Arc::new(lon.finish()),
            Arc::new(lat.finish()),
            Arc::new(speed.finish()),
            Arc::new(heading.finish()),
            Arc::new(altitude.finish()),
        ];
        // The columns above are built in the order and with the types of the schema.
        Some(
            RecordBatch::try_new(gps_positions_schema(), columns)
                .expect("gps builders match gps_positions_schema"),
        )
    }
}
