//! Test helper: rewrites the footer of a valid Parquet file so that it lies about its row
//! count while the data pages stay as they were. The result is structurally valid Parquet (the
//! footer decodes, every offset points where it did) whose declared counts are wrong — what a
//! buggy exporter or a hand-edited file delivers.
//!
//! - [`Lie::FileRows`] changes only `FileMetaData.num_rows` (field 3 of the Thrift struct),
//!   patched in the compact-protocol bytes, since [`ParquetMetaDataWriter`] always recomputes
//!   the total from the row groups. The row groups stay truthful.
//! - [`Lie::RowGroupRows`] changes one `RowGroup.num_rows` and re-serializes the footer with
//!   [`ParquetMetaDataWriter`], so the file total (the sum of the row groups) lies consistently.

use std::fs;
use std::path::Path;

use parquet::file::metadata::{ParquetMetaDataReader, ParquetMetaDataWriter};

/// The lies told by the tests of every reader, about a file of 300 rows in three row groups of
/// 100 ([`THREE_GROUPS`]), with the error each must give: the part named, the count declared,
/// the count found, and how it was counted.
pub(crate) const LIES: [(Lie, &str, i64, i64, &str); 6] = [
    (Lie::FileRows(350), "the file", 350, 300, "rows in its row groups"),
    (Lie::FileRows(250), "the file", 250, 300, "rows in its row groups"),
    (Lie::RowGroupRows { group: 1, rows: 150 }, "row group 1", 150, 100, "values in column"),
    (Lie::RowGroupRows { group: 2, rows: 50 }, "row group 2", 50, 100, "values in column"),
    (Lie::RowGroupRowsAndValues { group: 0, rows: 150 }, "the file", 350, 300, "rows decoded"),
    (Lie::RowGroupRowsAndValues { group: 2, rows: 50 }, "the file", 250, 300, "rows decoded"),
];

/// Rows per row group, and row groups, of the files [`LIES`] are told about.
pub(crate) const THREE_GROUPS: (usize, usize) = (100, 3);

/// Which count of the footer to falsify, and its new value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lie {
    /// `FileMetaData.num_rows` becomes `rows`.
    FileRows(i64),
    /// `num_rows` of row group `group` becomes `rows`.
    RowGroupRows { group: usize, rows: i64 },
    /// Like `RowGroupRows`, and every column chunk of the group declares `rows` values too, so
    /// the footer agrees with itself and only the data pages tell the truth.
    RowGroupRowsAndValues { group: usize, rows: i64 },
}

/// Rewrites the footer of the Parquet file at `path` in place to tell `lie`.
pub(crate) fn lie_about_rows(path: &Path, lie: Lie) {
    let bytes = fs::read(path).expect("read parquet");
    let tail = bytes.len().checked_sub(8).expect("parquet tail");
    assert_eq!(&bytes[tail + 4..], b"PAR1", "not plain Parquet");
    let footer_len = u32::from_le_bytes(bytes[tail..tail + 4].try_into().expect("4 bytes")) as usize;
    let footer_start = tail - footer_len;
    let footer = &bytes[footer_start..tail];
    let mut out = bytes[..footer_start].to_vec();
    match lie {
        Lie::FileRows(rows) => {
            let patched = patch_file_num_rows(footer, rows);
            out.extend_from_slice(&patched);
            out.extend_from_slice(&u32::try_from(patched.len()).expect("footer size").to_le_bytes());
            out.extend_from_slice(b"PAR1");
        }
        Lie::RowGroupRows { group, rows } | Lie::RowGroupRowsAndValues { group, rows } => {
            let metadata = ParquetMetaDataReader::decode_metadata(footer).expect("decode footer");
            let mut builder = metadata.into_builder();
            let mut groups = builder.take_row_groups();
            let mut lying_group = groups[group].clone().into_builder().set_num_rows(rows);
            if matches!(lie, Lie::RowGroupRowsAndValues { .. }) {
                let columns = groups[group]
                    .columns()
                    .iter()
                    .map(|c| c.clone().into_builder().set_num_values(rows).build().expect("column chunk"))
                    .collect();
                lying_group = lying_group.set_column_metadata(columns);
            }
            groups[group] = lying_group.build().expect("row group");
            let lying = builder.set_row_groups(groups).build();
            // Writes the Thrift footer, its length and the magic; no page indexes, since none
            // were decoded (the column chunks still point at the original ones).
            ParquetMetaDataWriter::new(&mut out, &lying).finish().expect("write footer");
        }
    }
    fs::write(path, out).expect("write lying parquet");
    let check = ParquetMetaDataReader::new().parse_and_finish(&fs::File::open(path).expect("open"));
    let check = check.expect("the lying file still has a readable footer");
    match lie {
        Lie::FileRows(rows) => assert_eq!(check.file_metadata().num_rows(), rows),
        Lie::RowGroupRows { group, rows } | Lie::RowGroupRowsAndValues { group, rows } => {
            assert_eq!(check.row_group(group).num_rows(), rows)
        }
    }
}

/// `footer` (a Thrift compact `FileMetaData`) with field 3, `num_rows`, set to `rows`.
fn patch_file_num_rows(footer: &[u8], rows: i64) -> Vec<u8> {
    let mut pos = 0;
    let mut last_id = 0;
    while let Some((id, ty)) = field_header(footer, &mut pos, &mut last_id) {
        if id == 3 {
            assert_eq!(ty, I64, "num_rows is an i64");
            let start = pos;
            varint(footer, &mut pos);
            let mut out = footer[..start].to_vec();
            let mut zigzag = ((rows << 1) ^ (rows >> 63)) as u64;
            loop {
                let byte = (zigzag & 0x7f) as u8;
                zigzag >>= 7;
                if zigzag == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
            out.extend_from_slice(&footer[pos..]);
            return out;
        }
        skip(footer, &mut pos, ty);
    }
    panic!("FileMetaData without num_rows");
}

const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const I64: u8 = 6;

fn varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = buf[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// The next field's id and type, or `None` at the struct's stop byte.
fn field_header(buf: &[u8], pos: &mut usize, last_id: &mut i64) -> Option<(i64, u8)> {
    let byte = buf[*pos];
    *pos += 1;
    if byte == 0 {
        return None;
    }
    let delta = i64::from(byte >> 4);
    let id = if delta == 0 {
        let raw = varint(buf, pos);
        (raw >> 1) as i64 ^ -((raw & 1) as i64)
    } else {
        *last_id + delta
    };
    *last_id = id;
    Some((id, byte & 0x0f))
}

/// Skips a value of compact type `ty` (booleans of fields carry no payload).
fn skip(buf: &[u8], pos: &mut usize, ty: u8) {
    match ty {
        BOOL_TRUE | BOOL_FALSE => {}
        3 => *pos += 1,
        4..=I64 => {
            varint(buf, pos);
        }
        7 => *pos += 8,
        8 => {
            let len = varint(buf, pos) as usize;
            *pos += len;
        }
        9 | 10 => {
            let header = buf[*pos];
            *pos += 1;
            let mut len = u64::from(header >> 4);
            if len == 15 {
                len = varint(buf, pos);
            }
            for _ in 0..len {
                skip_element(buf, pos, header & 0x0f);
            }
        }
        11 => {
            let len = varint(buf, pos);
            if len > 0 {
                let types = buf[*pos];
                *pos += 1;
                for _ in 0..len {
                    skip_element(buf, pos, types >> 4);
                    skip_element(buf, pos, types & 0x0f);
                }
            }
        }
        12 => {
            let mut last_id = 0;
            while let Some((_, ty)) = field_header(buf, pos, &mut last_id) {
                skip(buf, pos, ty);
            }
        }
        other => panic!("unexpected Thrift compact type {other}"),
    }
}

/// Skips a list, set or map element (booleans there are one byte each).
fn skip_element(buf: &[u8], pos: &mut usize, ty: u8) {
    if ty == BOOL_TRUE || ty == BOOL_FALSE {
        *pos += 1;
    } else {
        skip(buf, pos, ty);
    }
}
