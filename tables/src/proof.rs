//! Proving that a table a node rebuilt from a delta is the publisher's table, file by file,
//! against the manifest's table list.
//!
//! Two writers that are the same build write the same bytes for the same rows
//! ([`crate::canonical`]), so the file hash proves the table. Two writers that differ (another
//! parquet-rs or ferry version: the manifest's `writer` names the publisher's) write other bytes
//! for the same rows; for them the file's logical hash ([`crate::rows_hash`], the manifest's
//! `rows-blake3`) proves the rows instead, and the consumer keeps its own bytes. What cannot be
//! proven either way is refused, naming why.
//!
//! Neighbours: the client's sync (materializing a pulled delta) and the daemon's head rebuild
//! call [`check_table`] with the files [`crate::delta::apply`] wrote and their file hashes.

use ferry_proto::TableFile;

use crate::canonical::WrittenFile;

/// How a rebuilt table was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    /// Every file hashes to the publisher's bytes.
    Bytes,
    /// Some file's bytes differ, since the writers differ; its rows hash to the publisher's.
    Rows,
}

/// Why a rebuilt table is not the publisher's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("{written} files written, {expected} expected")]
    FileCount { written: usize, expected: usize },
    #[error("file {file}: {reason}")]
    File { file: String, reason: String },
}

/// Checks `written` (each with the BLAKE3 of its bytes) against the manifest's `expected` table
/// list. `publisher_writer` is the manifest's `writer` (`None` in manifests from before it was
/// recorded); `own_writer` is the writer that wrote `written`.
pub fn check_table(
    written: &[(WrittenFile, blake3::Hash)],
    expected: &[TableFile],
    publisher_writer: Option<&str>,
    own_writer: &str,
) -> Result<Proven, ProofError> {
    if written.len() != expected.len() {
        return Err(ProofError::FileCount { written: written.len(), expected: expected.len() });
    }
    let mut proven = Proven::Bytes;
    for ((file, hash), want) in written.iter().zip(expected) {
        let refuse = |reason: String| ProofError::File { file: want.name.to_string(), reason };
        if file.name != want.name || file.rows != want.rows {
            return Err(refuse(format!("{} with {} rows written instead", file.name, file.rows)));
        }
        if file.size == want.size && hash.as_bytes() == &want.blake3.0 {
            continue;
        }
        if publisher_writer == Some(own_writer) {
            return Err(refuse(format!("its bytes differ though both sides write with {own_writer}")));
        }
        let publisher = publisher_writer.unwrap_or("a writer the manifest does not name");
        match (want.rows_blake3, file.rows_blake3) {
            (Some(theirs), Some(ours)) if theirs.0 == *ours.as_bytes() => proven = Proven::Rows,
            (Some(_), Some(_)) => {
                return Err(refuse("its rows differ from the publisher's (rows hash)".to_owned()));
            }
            (None, _) => {
                return Err(refuse(format!(
                    "its bytes differ (the publisher wrote with {publisher}, this node with \
                     {own_writer}) and the manifest has no rows hash to compare"
                )));
            }
            (Some(_), None) => {
                return Err(refuse(format!(
                    "its bytes differ (the publisher wrote with {publisher}) and this node cannot \
                     hash its rows"
                )));
            }
        }
    }
    Ok(proven)
}

#[cfg(test)]
mod tests {
    use ferry_proto::{Hash32, RelPath};

    use super::*;

    fn written(bytes: u8, rows: Option<u8>) -> (WrittenFile, blake3::Hash) {
        let name = RelPath::parse("part-00000.parquet").expect("name");
        let file = WrittenFile {
            path: name.as_str().into(),
            name,
            rows: 3,
            size: 10,
            rows_blake3: rows.map(|r| blake3::Hash::from_bytes([r; 32])),
            hashes: crate::canonical::WrittenHashes {
                size: 10,
                blake3: blake3::Hash::from_bytes([bytes; 32]),
                chunks: None,
            },
        };
        (file, blake3::Hash::from_bytes([bytes; 32]))
    }

    fn expected(bytes: u8, rows: Option<u8>) -> TableFile {
        TableFile {
            name: RelPath::parse("part-00000.parquet").expect("name"),
            size: 10,
            rows: 3,
            blake3: Hash32([bytes; 32]),
            rows_blake3: rows.map(|r| Hash32([r; 32])),
        }
    }

    #[test]
    fn equal_bytes_prove_the_table_whatever_the_writers() {
        let got = check_table(&[written(1, Some(2))], &[expected(1, None)], None, "w/2");
        assert_eq!(got, Ok(Proven::Bytes));
    }

    #[test]
    fn another_writer_is_proven_by_rows_and_only_by_rows() {
        let ok = check_table(&[written(9, Some(2))], &[expected(1, Some(2))], Some("w/1"), "w/2");
        assert_eq!(ok, Ok(Proven::Rows));
        let rows_differ = check_table(&[written(9, Some(3))], &[expected(1, Some(2))], Some("w/1"), "w/2");
        assert!(matches!(rows_differ, Err(ProofError::File { .. })), "{rows_differ:?}");
        let old_manifest = check_table(&[written(9, Some(2))], &[expected(1, None)], None, "w/2");
        let err = old_manifest.expect_err("no rows hash");
        assert!(err.to_string().contains("no rows hash"), "{err}");
    }

    #[test]
    fn the_same_writer_must_write_the_same_bytes() {
        let got = check_table(&[written(9, Some(2))], &[expected(1, Some(2))], Some("w/2"), "w/2");
        assert!(got.expect_err("same writer").to_string().contains("both sides"));
    }

    #[test]
    fn file_count_and_rows_must_match() {
        let got = check_table(&[], &[expected(1, Some(2))], Some("w/1"), "w/2");
        assert_eq!(got, Err(ProofError::FileCount { written: 0, expected: 1 }));
        let (mut file, hash) = written(1, Some(2));
        file.rows = 4;
        assert!(check_table(&[(file, hash)], &[expected(1, Some(2))], None, "w/2").is_err());
    }
}
