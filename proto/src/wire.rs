//! Primitive wire encodings shared by [`crate::frame`] and [`crate::manifest::SignedManifest`]:
//! big-endian integers, `len:u32be bytes` strings, `0x00 | 0x01 value` options and
//! `count:u32be items` lists. Writers append to any [`Sink`]; [`Reader`] bounds every length by the
//! bytes actually left before it allocates anything.

use crate::error::DecodeError;
use crate::ids::{DatasetId, DeptId, VersionNo};
use bytes::{Bytes, BytesMut};

/// Something wire values can be appended to: a buffer, or a byte counter ([`Counter`]).
pub(crate) trait Sink {
    fn raw(&mut self, bytes: &[u8]);

    fn byte(&mut self, v: u8) {
        self.raw(&[v]);
    }

    fn be16(&mut self, v: u16) {
        self.raw(&v.to_be_bytes());
    }

    fn be32(&mut self, v: u32) {
        self.raw(&v.to_be_bytes());
    }

    fn be64(&mut self, v: u64) {
        self.raw(&v.to_be_bytes());
    }

    fn flag(&mut self, v: bool) {
        self.byte(u8::from(v));
    }

    /// A `u32be` length. Lengths over `u32::MAX` cannot occur in a frame within
    /// [`crate::frame::MAX_FRAME_LEN`]; they saturate, and the oversize frame is refused by the peer.
    fn len_prefix(&mut self, len: usize) {
        self.be32(u32::try_from(len).unwrap_or(u32::MAX));
    }

    /// `len:u32be bytes`.
    fn blob(&mut self, bytes: &[u8]) {
        self.len_prefix(bytes.len());
        self.raw(bytes);
    }

    fn text(&mut self, s: &str) {
        self.blob(s.as_bytes());
    }

    fn version(&mut self, v: VersionNo) {
        self.be64(v.get());
    }

    fn opt_version(&mut self, v: Option<VersionNo>) {
        match v {
            None => self.byte(0),
            Some(v) => {
                self.byte(1);
                self.version(v);
            }
        }
    }
}

impl Sink for BytesMut {
    fn raw(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Vec<u8> {
    fn raw(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink that only counts, so encoded sizes are computed by the encoder itself.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn raw(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

/// Reads wire values off the front of one frame body (or one stored signed manifest).
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    /// The `Bytes` that `rest` points into, when there is one: payloads are then sliced, not copied.
    owner: Option<&'a Bytes>,
    /// Tag of the message being read, for error reports.
    tag: u8,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(rest: &'a [u8], tag: u8) -> Self {
        Self { rest, owner: None, tag }
    }

    /// A reader over `rest`, which must lie inside `owner`; payloads share `owner`'s memory.
    pub(crate) fn with_owner(owner: &'a Bytes, rest: &'a [u8], tag: u8) -> Self {
        Self { rest, owner: Some(owner), tag }
    }

    pub(crate) fn tag(&self) -> u8 {
        self.tag
    }

    fn truncated(&self, field: &'static str, needed: usize) -> DecodeError {
        DecodeError::Truncated { tag: self.tag, field, needed }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(self.truncated(field, n - self.rest.len()));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn byte(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn be16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    pub(crate) fn be32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub(crate) fn be64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    pub(crate) fn hash(&mut self, field: &'static str) -> Result<[u8; 32], DecodeError> {
        self.array(field)
    }

    pub(crate) fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.byte(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(invalid(field, format!("boolean byte {other:#04x} is neither 0 nor 1"))),
        }
    }

    /// `len:u32be bytes`, the length checked against what is left before anything is taken.
    pub(crate) fn blob(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.be32(field)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.take(len, field)
    }

    /// Like [`Reader::blob`], as a `Bytes` sharing the frame's memory where the frame is `Bytes`.
    pub(crate) fn payload(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let slice = self.blob(field)?;
        Ok(match self.owner {
            Some(owner) => owner.slice_ref(slice),
            None => Bytes::copy_from_slice(slice),
        })
    }

    pub(crate) fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.blob(field)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| invalid(field, format!("not UTF-8: {e}")))
    }

    pub(crate) fn dept(&mut self, field: &'static str) -> Result<DeptId, DecodeError> {
        let s = self.text(field)?;
        DeptId::new(s).map_err(|e| invalid(field, e.to_string()))
    }

    pub(crate) fn dataset(&mut self, field: &'static str) -> Result<DatasetId, DecodeError> {
        let s = self.text(field)?;
        DatasetId::new(s).map_err(|e| invalid(field, e.to_string()))
    }

    pub(crate) fn version(&mut self, field: &'static str) -> Result<VersionNo, DecodeError> {
        let n = self.be64(field)?;
        VersionNo::new(n).map_err(|e| invalid(field, e.to_string()))
    }

    /// `0x00` (absent) or `0x01 value`; any other marker byte is invalid.
    pub(crate) fn option<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.byte(field)? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(invalid(field, format!("option marker {other:#04x} is neither 0 nor 1"))),
        }
    }

    pub(crate) fn opt_version(&mut self, field: &'static str) -> Result<Option<VersionNo>, DecodeError> {
        self.option(field, |r| r.version(field))
    }

    /// `count:u32be items`. Each item takes at least `min_item_len` bytes (at least 1), so a count
    /// the remaining bytes cannot hold is refused before the list is allocated.
    pub(crate) fn list<T>(
        &mut self,
        field: &'static str,
        min_item_len: usize,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = u64::from(self.be32(field)?);
        let min_total = count.saturating_mul(min_item_len.max(1) as u64);
        let left = self.rest.len() as u64;
        if min_total > left {
            let needed = usize::try_from(min_total - left).unwrap_or(usize::MAX);
            return Err(self.truncated(field, needed));
        }
        // Bounded above by the bytes left in the frame, checked just now.
        let mut items = Vec::with_capacity(count as usize);
        for _ in 0..count {
            items.push(read(self)?);
        }
        Ok(items)
    }

    /// Succeeds only if every byte was read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { tag: self.tag, extra: self.rest.len() })
        }
    }
}

/// An `InvalidField` error.
pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidField { field, reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_agree_on_length() {
        let mut vec = Vec::new();
        let mut counter = Counter::default();
        for sink in [&mut vec as &mut dyn Sink, &mut counter] {
            sink.be16(7);
            sink.text("héllo");
            sink.opt_version(VersionNo::new(3).ok());
            sink.opt_version(None);
            sink.flag(true);
        }
        assert_eq!(vec.len(), counter.0);
        assert_eq!(
            hex::encode(&vec),
            concat!("0007", "00000006", "68c3a96c6c6f", "01", "0000000000000003", "00", "01")
        );
    }

    #[test]
    fn blob_length_is_bounded_by_what_is_left() {
        let data = [0xff, 0xff, 0xff, 0xff, 1, 2];
        let mut r = Reader::new(&data, 0x41);
        let err = r.blob("data").unwrap_err();
        assert_eq!(err, DecodeError::Truncated { tag: 0x41, field: "data", needed: 0xffff_ffff - 2 });
    }

    #[test]
    fn list_count_is_bounded_before_allocation() {
        let data = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let mut r = Reader::new(&data, 0x11);
        let err = r.list("items", 16, |r| r.byte("x")).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { field: "items", .. }), "{err:?}");
    }

    #[test]
    fn option_and_flag_markers_are_strict() {
        let mut r = Reader::new(&[2], 0x20);
        assert!(matches!(r.opt_version("v"), Err(DecodeError::InvalidField { .. })));
        let mut r = Reader::new(&[2], 0x30);
        assert!(matches!(r.flag("b"), Err(DecodeError::InvalidField { .. })));
    }

    #[test]
    fn payload_shares_the_owner_memory() {
        let owner = Bytes::from_static(&[0, 0, 0, 2, 9, 8]);
        let mut r = Reader::with_owner(&owner, &owner, 0x41);
        let p = r.payload("data").unwrap();
        assert_eq!(&p[..], &[9, 8]);
        assert_eq!(p.as_ptr(), owner[4..].as_ptr());
        r.finish().unwrap();
    }
}
