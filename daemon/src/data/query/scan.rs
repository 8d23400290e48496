//! One query's run over the table files of one version: resolve what the asker may see into a
//! [`Plan`], then per file prune row groups (statistics, bloom filters) and pages (page index),
//! decode what is left batch by batch, test the predicate, and stream the encoded rows until
//! the limit or a bound stops it.

use super::QueryMetrics;
use super::head::HeadFile;
use super::output::{Encoder, pieces};
use super::reader::{ChunkCache, ReadCount, VerifiedFile};
use crate::config::QueryConfig;
use crate::data::service::Refusal;
use crate::data::store::{Store, StoredVersion};
use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use ferry_net::wire::FrameWriter;
use ferry_proto::authz::Access;
use ferry_proto::filter::RowFilter;
use ferry_proto::query::QuerySpec;
use ferry_proto::{ErrorCode, FileRole, Message};
use ferry_tables::prune;
use ferry_tables::restrict::{column_kind, evaluate};
use futures::StreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowGroupSelection};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::ParquetMetaData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Rows decoded per batch.
const BATCH_ROWS: usize = 8_192;

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Done {
    pub rows: u64,
    pub truncated: bool,
    pub bytes: u64,
}

/// What one query reads and sends, resolved against the table's schema and the asker's access.
struct Plan {
    schema: SchemaRef,
    filter: Option<RowFilter>,
    /// Schema indices of the columns decoded (output and filter), ascending.
    read: Vec<usize>,
    /// Position, in a decoded batch, of each output column.
    keep: Vec<usize>,
    output: SchemaRef,
}

impl Plan {
    fn new(schema: SchemaRef, spec: &QuerySpec, access: &Access) -> Result<Self, Refusal> {
        let restriction = match access {
            Access::Full => None,
            Access::Restricted { restriction, .. } => Some(restriction),
        };
        let permitted = restriction.and_then(|r| r.columns.as_ref());
        let visible: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|name| permitted.is_none_or(|p| p.contains(name)))
            .collect();
        let kinds = visible.iter().filter_map(|name| {
            let field = schema.field_with_name(name).ok()?;
            Some((name.as_str(), column_kind(field.data_type())))
        });
        spec.check_against(kinds).map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        let granted = match restriction.and_then(|r| r.rows.as_deref()) {
            Some(text) => Some(RowFilter::parse(text).map_err(|e| does_not_fit(&e.to_string()))?),
            None => None,
        };
        let filter = match (&spec.predicate, granted) {
            (Some(asked), Some(granted)) => Some(asked.and(&granted)),
            (asked, granted) => asked.clone().or(granted),
        };
        let index =
            |name: &str| schema.index_of(name).map_err(|_| does_not_fit(&format!("no column {name:?}")));
        let output_names = spec.projection(&visible);
        let output_indices = output_names.iter().map(|n| index(n)).collect::<Result<Vec<_>, _>>()?;
        let mut read = output_indices.clone();
        for name in filter.iter().flat_map(|f| f.columns()) {
            read.push(index(name)?);
        }
        read.sort_unstable();
        read.dedup();
        let keep = output_indices.iter().filter_map(|i| read.iter().position(|r| r == i)).collect();
        let output = Arc::new(schema.project(&output_indices).map_err(internal)?);
        Ok(Self { schema, filter, read, keep, output })
    }

    /// The rows of a decoded batch that pass the filter, projected to the output.
    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, Refusal> {
        let passed = match &self.filter {
            Some(filter) => {
                let mask = evaluate(filter, batch).map_err(internal)?;
                filter_record_batch(batch, &mask).map_err(internal)?
            }
            None => batch.clone(),
        };
        let projected = passed.project(&self.keep).map_err(internal)?;
        RecordBatch::try_new(Arc::clone(&self.output), projected.columns().to_vec()).map_err(internal)
    }
}

/// One query over one version's files.
pub(super) struct Scan<'a> {
    pub store: &'a Arc<Store>,
    pub version: &'a Arc<StoredVersion>,
    pub cache: &'a Arc<ChunkCache>,
    /// The version's table as verified head files, when the version is stored as a delta only.
    pub head: Option<&'a [Arc<HeadFile>]>,
    pub config: &'a QueryConfig,
    pub metrics: &'a QueryMetrics,
    /// When the query must stop (checked between batches, so no frame is cut).
    pub deadline: Instant,
}

/// What was sent so far.
struct Progress {
    rows: u64,
    bytes: u64,
    limit: u64,
    /// The limit was reached; one more matching row means the result is truncated.
    full: bool,
    truncated: bool,
}

impl Scan<'_> {
    pub async fn run(
        &self,
        spec: &QuerySpec,
        access: &Access,
        writer: &mut FrameWriter,
    ) -> Result<Done, Refusal> {
        let read = Arc::new(ReadCount::default());
        let mut files = self.table_files(&read)?;
        let Some(first) = files.first_mut() else {
            return Err(Refusal::new(ErrorCode::NotFound, "the version has no table file"));
        };
        let metadata = first.metadata().await.map_err(internal)?;
        let schema = Arc::clone(reader_metadata(&metadata)?.schema());
        let plan = Plan::new(schema, spec, access)?;
        let mut encoder = Encoder::new(spec.format, &plan.output).map_err(internal)?;
        let limit = spec.limit.unwrap_or(u64::MAX).min(self.config.max_rows);
        let mut progress = Progress { rows: 0, bytes: 0, limit, full: false, truncated: false };
        for file in files {
            self.check_deadline()?;
            self.scan_file(file, &plan, &mut encoder, &mut progress, writer).await?;
            if progress.truncated {
                break;
            }
        }
        let tail = encoder.finish(&plan.output, progress.rows > 0).map_err(internal)?;
        send(writer, tail, &mut progress.bytes).await?;
        self.metrics.rows.inc_by(progress.rows);
        self.metrics.read_bytes.inc_by(read.bytes.load(Ordering::Relaxed));
        Ok(Done { rows: progress.rows, truncated: progress.truncated, bytes: progress.bytes })
    }

    fn check_deadline(&self) -> Result<(), Refusal> {
        if Instant::now() < self.deadline {
            return Ok(());
        }
        Err(Refusal::new(
            ErrorCode::Unavailable,
            format!(
                "the query ran longer than {} and was stopped; narrow it (a key, a range, a limit)",
                humantime::format_duration(self.config.timeout)
            ),
        ))
    }

    /// The version's table files, in order, as verified readers.
    fn table_files(&self, read: &Arc<ReadCount>) -> Result<Vec<VerifiedFile>, Refusal> {
        if let Some(head) = self.head {
            let open = |f: &Arc<HeadFile>| {
                VerifiedFile::head(Arc::clone(f), Arc::clone(self.cache), Arc::clone(read))
            };
            return Ok(head.iter().map(open).collect());
        }
        let m = &self.version.manifest;
        m.table
            .iter()
            .map(|t| {
                let index = m.files.iter().position(|f| f.role == FileRole::Snapshot && f.name == t.name);
                let index = index.ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::NotFound,
                        format!("{} {} does not store {}", m.dataset, m.version, t.name),
                    )
                })?;
                let (store, version) = (Arc::clone(self.store), Arc::clone(self.version));
                Ok(VerifiedFile::new(store, version, index as u32, Arc::clone(self.cache), Arc::clone(read)))
            })
            .collect()
    }

    async fn scan_file(
        &self,
        mut file: VerifiedFile,
        plan: &Plan,
        encoder: &mut Encoder,
        progress: &mut Progress,
        writer: &mut FrameWriter,
    ) -> Result<(), Refusal> {
        let metadata = file.metadata().await.map_err(internal)?;
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(file, reader_metadata(&metadata)?);
        let selections = self.prune(&mut builder, plan, &metadata).await?;
        if selections.is_empty() {
            return Ok(());
        }
        self.metrics.row_groups_read.inc_by(selections.len() as u64);
        let mask = ProjectionMask::roots(metadata.file_metadata().schema_descr(), plan.read.iter().copied());
        let mut stream = builder
            .with_projection(mask)
            .with_row_group_selections(selections)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(internal)?;
        while let Some(batch) = stream.next().await {
            self.check_deadline()?;
            let rows = plan.apply(&batch.map_err(internal)?)?;
            if rows.num_rows() == 0 {
                continue;
            }
            if progress.full {
                progress.truncated = true;
                return Ok(());
            }
            let room = (progress.limit - progress.rows).min(rows.num_rows() as u64) as usize;
            let sent = rows.slice(0, room);
            let encoded = encoder.write(&sent).map_err(internal)?;
            send(writer, encoded, &mut progress.bytes).await?;
            progress.rows += room as u64;
            if room < rows.num_rows() || progress.bytes >= self.config.max_result {
                progress.truncated = true;
                return Ok(());
            }
            progress.full = progress.rows == progress.limit;
        }
        Ok(())
    }

    /// The row groups of one file left after statistics and bloom filters, each with the pages
    /// the page index leaves.
    async fn prune(
        &self,
        builder: &mut ParquetRecordBatchStreamBuilder<VerifiedFile>,
        plan: &Plan,
        metadata: &ParquetMetaData,
    ) -> Result<Vec<RowGroupSelection>, Refusal> {
        let all = metadata.num_row_groups();
        let Some(filter) = &plan.filter else {
            return Ok((0..all).map(|g| RowGroupSelection::new(g, None)).collect());
        };
        let groups = prune::row_groups(filter, metadata, &plan.schema).map_err(internal)?;
        self.metrics
            .row_groups_pruned
            .get_or_create(&super::metrics::PrunedLabel { by: "statistics" })
            .inc_by((all - groups.len()) as u64);
        let mut selections = Vec::with_capacity(groups.len());
        for group in groups {
            if self.bloom_rules_out(builder, filter, &plan.schema, metadata, group).await? {
                self.metrics
                    .row_groups_pruned
                    .get_or_create(&super::metrics::PrunedLabel { by: "bloom" })
                    .inc();
                continue;
            }
            let pages = prune::page_selection(filter, metadata, &plan.schema, group).map_err(internal)?;
            selections.push(RowGroupSelection::new(group, pages));
        }
        Ok(selections)
    }

    /// Whether a bloom filter of the row group proves no row passes an `=` or `IN` of `filter`.
    async fn bloom_rules_out(
        &self,
        builder: &mut ParquetRecordBatchStreamBuilder<VerifiedFile>,
        filter: &RowFilter,
        schema: &Schema,
        metadata: &ParquetMetaData,
        group: usize,
    ) -> Result<bool, Refusal> {
        for predicate in filter.predicates() {
            let Ok(column) = schema.index_of(&predicate.column) else { continue };
            let chunk = metadata.row_group(group).column(column);
            if chunk.bloom_filter_offset().is_none() {
                continue;
            }
            let Some(bloom) =
                builder.get_row_group_column_bloom_filter(group, column).await.map_err(internal)?
            else {
                continue;
            };
            if !prune::bloom_may_match(predicate, schema.field(column).data_type(), &bloom) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn reader_metadata(metadata: &Arc<ParquetMetaData>) -> Result<ArrowReaderMetadata, Refusal> {
    ArrowReaderMetadata::try_new(Arc::clone(metadata), ArrowReaderOptions::new()).map_err(internal)
}

async fn send(writer: &mut FrameWriter, bytes: Vec<u8>, sent: &mut u64) -> Result<(), Refusal> {
    for data in pieces(bytes) {
        *sent += data.len() as u64;
        writer.send(&Message::QueryData { data }).await?;
    }
    Ok(())
}

/// The grant's restriction does not fit the version: the reader's grant needs a review.
fn does_not_fit(detail: &str) -> Refusal {
    Refusal::new(
        ErrorCode::PermissionDenied,
        format!(
            "the grant's restriction does not fit this version ({detail}); ask the provider to review the grant"
        ),
    )
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::internal("answering a query", &e)
}
