//! Encoding a query's result batch by batch in the format it asked for (Arrow IPC stream, CSV
//! with a header, JSON lines); the encoded bytes are taken after each batch and sent as
//! `QueryData` frames of at most [`PIECE`] bytes, so no frame nears the frame bound and the
//! result is never held whole.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use bytes::Bytes;
use ferry_proto::query::QueryFormat;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Most bytes in one `QueryData` frame.
pub const PIECE: usize = 256 * 1024;

/// A `Write` whose bytes the encoder's owner takes out between batches.
#[derive(Debug, Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Writer {
    Ipc(arrow::ipc::writer::StreamWriter<Sink>),
    Csv(Box<arrow::csv::Writer<Sink>>),
    Json(arrow::json::LineDelimitedWriter<Sink>),
}

/// Encodes the batches of one result.
pub struct Encoder {
    sink: Sink,
    writer: Writer,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder of batches of `schema` in `format`; an Arrow IPC stream starts with its schema.
    pub fn new(format: QueryFormat, schema: &SchemaRef) -> Result<Self, ArrowError> {
        let sink = Sink::default();
        let writer = match format {
            QueryFormat::ArrowIpc => {
                Writer::Ipc(arrow::ipc::writer::StreamWriter::try_new(sink.clone(), schema)?)
            }
            QueryFormat::Csv => {
                Writer::Csv(Box::new(arrow::csv::WriterBuilder::new().with_header(true).build(sink.clone())))
            }
            QueryFormat::Json => Writer::Json(arrow::json::LineDelimitedWriter::new(sink.clone())),
        };
        Ok(Self { sink, writer })
    }

    /// Encodes one batch; returns the bytes encoded since the last call.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        match &mut self.writer {
            Writer::Ipc(w) => w.write(batch)?,
            Writer::Csv(w) => w.write(batch)?,
            Writer::Json(w) => w.write(batch)?,
        }
        Ok(self.sink.take())
    }

    /// Ends the result (an empty CSV result still gets its header); returns the last bytes.
    pub fn finish(mut self, schema: &SchemaRef, wrote_rows: bool) -> Result<Vec<u8>, ArrowError> {
        match &mut self.writer {
            Writer::Ipc(w) => w.finish()?,
            Writer::Csv(w) if !wrote_rows => w.write(&RecordBatch::new_empty(Arc::clone(schema)))?,
            Writer::Csv(_) => {}
            Writer::Json(w) => w.finish()?,
        }
        Ok(self.sink.take())
    }
}

/// `bytes` cut into pieces of at most [`PIECE`] bytes.
pub fn pieces(bytes: Vec<u8>) -> impl Iterator<Item = Bytes> {
    let bytes = Bytes::from(bytes);
    let count = bytes.len().div_ceil(PIECE);
    (0..count).map(move |i| bytes.slice(i * PIECE..((i + 1) * PIECE).min(bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("plate", DataType::Utf8, true),
        ]));
        let columns: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec![Some("京A1"), None])),
        ];
        RecordBatch::try_new(schema, columns).expect("batch")
    }

    #[test]
    fn each_format_encodes_what_its_reader_reads_back() {
        let b = batch();
        let mut csv = Encoder::new(QueryFormat::Csv, &b.schema()).expect("csv");
        let mut text = csv.write(&b).expect("write");
        text.extend(csv.finish(&b.schema(), true).expect("finish"));
        assert_eq!(String::from_utf8(text).expect("utf8"), "id,plate\n1,京A1\n2,\n");
        let mut json = Encoder::new(QueryFormat::Json, &b.schema()).expect("json");
        let mut text = json.write(&b).expect("write");
        text.extend(json.finish(&b.schema(), true).expect("finish"));
        assert_eq!(String::from_utf8(text).expect("utf8"), "{\"id\":1,\"plate\":\"京A1\"}\n{\"id\":2}\n");
        let mut ipc = Encoder::new(QueryFormat::ArrowIpc, &b.schema()).expect("ipc");
        let mut bytes = ipc.write(&b).expect("write");
        bytes.extend(ipc.finish(&b.schema(), true).expect("finish"));
        let read: Vec<RecordBatch> = arrow::ipc::reader::StreamReader::try_new(&bytes[..], None)
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("batches");
        assert_eq!(read, vec![b]);
    }

    #[test]
    fn an_empty_csv_result_has_its_header_and_pieces_cover_the_bytes() {
        let b = batch();
        let csv = Encoder::new(QueryFormat::Csv, &b.schema()).expect("csv");
        assert_eq!(csv.finish(&b.schema(), false).expect("finish"), b"id,plate\n");
        let cut: Vec<Bytes> = pieces(vec![7; 2 * PIECE + 1]).collect();
        assert_eq!(cut.iter().map(Bytes::len).collect::<Vec<_>>(), vec![PIECE, PIECE, 1]);
        assert_eq!(pieces(Vec::new()).count(), 0);
    }
}
