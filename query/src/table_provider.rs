//! A DataFusion [`TableProvider`] over one table: its buffered rows and its Parquet files.
//!
//! A scan turns the query's predicates on `time` into a [`TimeRange`], keeps the buffer
//! partitions and the files (by the catalog's min/max time) that overlap it, and plans them:
//! sources that do not overlap any other are scanned plainly (Parquet with the query's
//! predicates for row-group and page pruning, done once as the scan is planned when the
//! files' footers are at hand, see `parquet_reader/pruning.rs`; the buffer from memory);
//! sources whose time ranges overlap are merged by primary key in a [`DeduplicateExec`].
//! Every predicate is reported as `Inexact`, so DataFusion still applies all of them to the
//! rows returned: pruning may only drop data that cannot match, never decide a row. The one
//! exception is made in physical planning: a scan of only files narrowed to the rows the
//! filters keep (`parquet_reader/pruning.rs`) takes those filters from the `FilterExec` above
//! it, which then goes away.
//!
//! The buffer is scanned before the file list is read. The persister publishes a file before
//! it drops the buffer rows the file holds, so in that order a scan never misses a row that is
//! moving from the buffer to a file; it may see such a row twice, and the two copies overlap in
//! time, so they are merged.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::config::{ConfigOptions, TableParquetOptions};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, FileSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{
    Between, BinaryExpr, Distinct, Expr, LogicalPlan, Operator, TableProviderFilterPushDown,
};
use datafusion::physical_expr::expressions::{Column, binary, col, lit};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
    PushedDown,
};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use parquet::file::metadata::ParquetMetaData;
use sluice_storage::catalog::TIME_COLUMN;
use sluice_storage::lake::deduplicate::KEY_ORDER;
use sluice_storage::{BufferChunk, ParquetFile, ReadView, TableBuffer, TableSchema, TimeRange};

use crate::deduplicate::DeduplicateExec;
use crate::narrowed_scan::{NarrowedFile, NarrowedParquetExec};
use crate::parquet_reader::{
    ExactFilters, FilePruning, NARROW_ROWS_AT_MOST, PageCache, PageIndexCachingReaderFactory,
    rows_left,
};

/// The URL under which the executor registers the object store with DataFusion.
pub const LAKE_URL: &str = "sluice://lake";

/// One table of one database, as DataFusion sees it.
#[derive(Debug)]
///
/// The table's buffer is looked up when a scan is planned, not when the table is resolved:
/// a plan reused for a repeated query text (`plan_cache.rs`) sees a buffer created since.
pub struct SluiceTable {
    db: Arc<str>,
    schema: Arc<TableSchema>,
    storage: ReadView,
}

impl SluiceTable {
    /// The table `schema` of `db`: rows from its buffer and from the files `storage` lists.
    pub fn new(db: Arc<str>, schema: Arc<TableSchema>, storage: ReadView) -> Self {
        SluiceTable {
            db,
            schema,
            storage,
        }
    }

    /// The table's buffer, if anything was buffered since start-up.
    fn buffer(&self) -> Option<Arc<TableBuffer>> {
        self.storage.table_buffer(&self.db, &self.schema.name)
    }

    /// The table's database, schema and storage.
    pub(crate) fn parts(&self) -> (&Arc<str>, &Arc<TableSchema>, &ReadView) {
        (&self.db, &self.schema, &self.storage)
    }

    /// The table's schema in the catalog.
    pub fn table_schema(&self) -> &TableSchema {
        &self.schema
    }

    /// The time range a scan with `filters` reads, past the retention cutoff (also returned)
    /// if the database has one.
    fn scan_range(&self, filters: &[Expr]) -> (TimeRange, Option<i64>) {
        let mut range = time_range(filters);
        let cutoff = self.storage.retention_cutoff(&self.db);
        if let Some(cutoff) = cutoff {
            range.min = range.min.max(cutoff);
        }
        (range, cutoff)
    }

    /// About how many rows a scan with `filters` reads: of each file and buffered partition
    /// whose time range overlaps the filters', the share of its rows in the overlap (rows
    /// spread evenly over its range).
    pub fn rows_to_scan(&self, filters: &[Expr]) -> usize {
        let (range, _) = self.scan_range(filters);
        let files: f64 = self
            .storage
            .lake()
            .table_files(&self.db, &self.schema.name)
            .iter()
            .map(|f| f.rows as f64 * range.share_of(f.min_time, f.max_time))
            .sum();
        files.ceil() as usize + self.buffer().map_or(0, |b| b.rows_in(range))
    }

    /// The ids of the files a scan with `filters` reads, when they are all it reads: no
    /// buffered row in its time range, and no file straddling the retention cutoff (whose
    /// moving value the scan's plan would hold). A scan planned for the same files then
    /// reads the same rows, and can be run again (`plan_cache.rs`). The buffer is looked at
    /// before the files, as [`SluiceTable::scan`] does.
    pub(crate) fn files_only(&self, filters: &[Expr]) -> Option<Vec<u64>> {
        let (range, cutoff) = self.scan_range(filters);
        if self.buffer().is_some_and(|b| b.has_rows_in(range)) {
            return None;
        }
        let files = self.storage.lake().table_files(&self.db, &self.schema.name);
        let mut ids = Vec::new();
        for f in files
            .iter()
            .filter(|f| range.overlaps(f.min_time, f.max_time))
        {
            if cutoff.is_some_and(|c| f.min_time < c) {
                return None;
            }
            ids.push(f.id);
        }
        Some(ids)
    }
}

/// A place rows come from, with the time range it covers.
enum Source {
    File(ParquetFile),
    Chunk(BufferChunk),
}

impl Source {
    fn range(&self) -> (i64, i64) {
        match self {
            Source::File(f) => (f.min_time, f.max_time),
            Source::Chunk(c) => (c.min_time, c.max_time),
        }
    }

    /// Age: files by their order, then buffer chunks by theirs (all newer than any file).
    fn age(&self) -> (u8, u64, u64) {
        match self {
            Source::File(f) => (0, f.order, f.id),
            Source::Chunk(c) => (1, c.order, 0),
        }
    }
}

/// Groups `sources` into sets whose time ranges chain into each other; a source that overlaps
/// nothing is a set of one. Each set comes oldest first.
fn overlap_groups(mut sources: Vec<Source>) -> Vec<Vec<Source>> {
    sources.sort_by_key(|s| s.range());
    let mut groups: Vec<Vec<Source>> = Vec::new();
    let mut group_max = i64::MIN;
    for s in sources {
        let (min, max) = s.range();
        match groups.last_mut() {
            Some(g) if min <= group_max => {
                g.push(s);
                group_max = group_max.max(max);
            }
            _ => {
                groups.push(vec![s]);
                group_max = max;
            }
        }
    }
    for g in &mut groups {
        g.sort_by_key(|s| s.age());
    }
    groups
}

#[async_trait]
impl TableProvider for SluiceTable {
    fn schema(&self) -> SchemaRef {
        self.schema.arrow_schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table_schema = self.schema();
        // Rows past the database's retention period are never returned: sources entirely
        // older than the cutoff are left out, and rows of those that straddle it are
        // filtered out below.
        let (range, cutoff) = self.scan_range(filters);
        // the buffer first, then the files: see the module documentation
        let scan = match self.buffer() {
            Some(b) => b.scan(&self.schema, range),
            None => Default::default(),
        };
        let files = self.storage.lake().table_files(&self.db, &self.schema.name);
        let mut stats = ScanStats {
            table: self.schema.name.to_string(),
            files_total: files.len(),
            buffer_partitions_total: scan.partitions_total,
            buffer_partitions_scanned: scan.partitions_scanned,
            ..ScanStats::default()
        };
        let mut sources: Vec<Source> = files
            .iter()
            .filter(|f| range.overlaps(f.min_time, f.max_time))
            .cloned()
            .map(Source::File)
            .collect();
        stats.files_scanned = sources.len();
        sources.extend(scan.chunks.into_iter().map(Source::Chunk));
        let straddled = cutoff.filter(|&c| sources.iter().any(|s| s.range().0 < c));
        // with rows to filter by time, the scans read `time` even where the query does not
        let time_id = table_schema.index_of(TIME_COLUMN)?;
        let (with_time, keep) = match (straddled, projection) {
            (Some(_), Some(p)) if !p.contains(&time_id) => {
                let mut with_time = p.clone();
                with_time.push(time_id);
                (Some(with_time), Some((0..p.len()).collect::<Vec<_>>()))
            }
            _ => (projection.cloned(), None),
        };
        let projection = with_time.as_ref();

        let mut plain_files = Vec::new();
        let mut plain_chunks = Vec::new();
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for group in overlap_groups(sources) {
            if group.len() == 1 {
                match group.into_iter().next() {
                    Some(Source::File(f)) => plain_files.push(f),
                    Some(Source::Chunk(c)) => plain_chunks.push(c.batch),
                    None => {}
                }
                continue;
            }
            stats.deduplicated_groups += 1;
            let mut file_scans = Vec::new();
            let mut chunks = Vec::new();
            for s in group {
                match s {
                    Source::File(f) => file_scans.push(
                        parquet_scan(
                            state,
                            &table_schema,
                            vec![vec![f]],
                            None,
                            None,
                            None,
                            &mut stats,
                        )
                        .await?,
                    ),
                    Source::Chunk(c) => chunks.push(c.batch),
                }
            }
            plans.push(Arc::new(DeduplicateExec::try_new(
                table_schema.clone(),
                projection.cloned(),
                file_scans,
                chunks,
            )?));
        }
        let target = state.config().target_partitions().max(1);
        // Plain files overlap nothing: every filter may prune their row groups and pages.
        let pruning = if plain_files.is_empty() {
            None
        } else {
            FilePruning::new(state, &table_schema, filters)
        };
        // Plain files that all share one sort key, with nothing else to scan and no more
        // files than partitions, are read one file per partition and declare that order, so
        // that DataFusion can skip sorting by it (or merge instead of sorting).
        // Only for a query that can use it: working out what a declared order implies costs
        // DataFusion a fraction of a millisecond at each step of planning for a wide table.
        let wanted = state.config().get_extension::<OrderedColumns>();
        let useful = match (wanted, plain_files.first().and_then(|f| f.sort_key.first())) {
            (Some(w), Some(first)) => w.contains(first),
            _ => true,
        };
        let ordering = if useful && plans.is_empty() && plain_chunks.is_empty() {
            shared_ordering(&plain_files, &table_schema, ordered_files_at_most(target))
        } else {
            None
        };
        // with their order: a file per partition; else spread over the partitions
        let file_groups = match ordering {
            Some(ordering) => Some((
                plain_files.into_iter().map(|f| vec![f]).collect(),
                Some(ordering),
            )),
            None if !plain_files.is_empty() => {
                let n = target.min(plain_files.len());
                let mut groups: Vec<Vec<ParquetFile>> = vec![Vec::new(); n];
                for (i, f) in plain_files.into_iter().enumerate() {
                    groups[i % n].push(f);
                }
                Some((groups, None))
            }
            None => None,
        };
        if let Some((groups, ordering)) = file_groups {
            plans.push(
                parquet_scan(
                    state,
                    &table_schema,
                    groups,
                    projection.cloned(),
                    ordering,
                    pruning.as_ref(),
                    &mut stats,
                )
                .await?,
            );
        }
        // narrowed files, and nothing else, return exactly the rows the filters keep
        let exact = match &pruning {
            Some(p) if stats.narrowed && plans.len() == 1 && plain_chunks.is_empty() => {
                Some(Arc::new(p.exact()))
            }
            _ => None,
        };
        if !plain_chunks.is_empty() {
            // Spread the chunks over the session's target partitions so that DataFusion can
            // work on them in parallel.
            let n = target.min(plain_chunks.len());
            let mut partitions: Vec<Vec<_>> = vec![Vec::new(); n];
            for (i, b) in plain_chunks.into_iter().enumerate() {
                partitions[i % n].push(b);
            }
            plans.push(MemorySourceConfig::try_new_exec(
                &partitions,
                table_schema.clone(),
                projection.cloned(),
            )?);
        }
        let input = if plans.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(table_schema.project(p)?),
                None => table_schema.clone(),
            };
            Arc::new(EmptyExec::new(projected)) as Arc<dyn ExecutionPlan>
        } else {
            UnionExec::try_new(plans)?
        };
        let input = match straddled {
            Some(cutoff) => retention_filter(input, cutoff, keep)?,
            None => input,
        };
        Ok(Arc::new(SluiceScanExec::new(input, stats, exact)))
    }
}

/// `input` without its rows before `cutoff` (a retention period's), then only the columns
/// `keep` (all if `None`).
fn retention_filter(
    input: Arc<dyn ExecutionPlan>,
    cutoff: i64,
    keep: Option<Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = input.schema();
    let predicate = binary(
        col(TIME_COLUMN, &schema)?,
        Operator::GtEq,
        lit(ScalarValue::TimestampNanosecond(Some(cutoff), None)),
        &schema,
    )?;
    Ok(Arc::new(
        FilterExecBuilder::new(predicate, input)
            .apply_projection(keep)?
            .build()?,
    ))
}

/// A Parquet scan of `groups` (one output partition per group) in the table's schema: columns
/// a file lacks (added to the table after it was written) read as nulls.
/// File footers and page indexes, and the byte ranges read, are cached across queries (files
/// never change once written, and their names are never reused while the server runs).
/// With `pruning`, and every file's footer at hand, the files' row groups and pages are
/// pruned here, once, instead of each time a file is opened (`parquet_reader/pruning.rs`).
async fn parquet_scan(
    state: &dyn Session,
    table_schema: &SchemaRef,
    groups: Vec<Vec<ParquetFile>>,
    projection: Option<Vec<usize>>,
    ordering: Option<LexOrdering>,
    pruning: Option<&FilePruning>,
    stats: &mut ScanStats,
) -> Result<Arc<dyn ExecutionPlan>> {
    let url = ObjectStoreUrl::parse(LAKE_URL)?;
    let store = state.runtime_env().object_store(&url)?;
    let metadata_cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    // the executor's, set on every session; none in a session without it
    let pages = state
        .config()
        .get_extension::<PageCache>()
        .unwrap_or_else(|| Arc::new(PageCache::new(0)));
    let reader = Arc::new(PageIndexCachingReaderFactory::new(
        store,
        metadata_cache,
        pages,
    ));
    // the files' pruning, if all their footers are at hand and their columns the table's
    let mut footer_missing = false;
    let mut plans: Option<Vec<(ParquetAccessPlan, Arc<ParquetMetaData>, SchemaRef)>> = pruning
        .and_then(|pruning| {
            groups
                .iter()
                .flatten()
                .map(|f| match reader.footer_at_hand(&f.path, f.size_bytes) {
                    Some(footer) => {
                        let (plan, schema) = pruning.plan(&f.path, &footer)?;
                        Some((plan, footer, schema))
                    }
                    None => {
                        footer_missing = true;
                        None
                    }
                })
                .collect()
        });
    stats.pruned_when_opened |= footer_missing;
    // few rows left: narrowed to those the filters keep, by evaluating them now
    let mut narrowings = Vec::new();
    if let (Some(pruning), Some(found)) = (pruning, plans.as_mut())
        && found
            .iter()
            .map(|(p, footer, _)| rows_left(p, footer))
            .sum::<usize>()
            <= NARROW_ROWS_AT_MOST
    {
        for (f, (plan, footer, schema)) in groups.iter().flatten().zip(found.iter_mut()) {
            let file = PartitionedFile::new(f.path.clone(), f.size_bytes);
            let file_reader =
                reader.create_reader(0, file, None, &ExecutionPlanMetricsSet::new())?;
            // a file that cannot be narrowed keeps its plan; the scan is then not narrowed
            if let Some(narrowed) = pruning
                .narrow(plan.clone(), footer, schema, file_reader)
                .await
            {
                *plan = narrowed.plan.clone();
                narrowings.push(narrowed);
            }
        }
        stats.narrowed = narrowings.len() == found.len();
    }
    for (plan, _, _) in plans.iter().flatten() {
        stats.row_groups_read += plan.row_group_index_iter().count();
        stats.row_groups_total += plan.len();
    }
    // narrowed: read by a scan of its own, with the groups, and the properties DataFusion
    // gives the Parquet scan below
    let in_time_order = narrowings.iter().all(|n| n.in_time_order);
    let narrowed = if stats.narrowed {
        let mut narrowings = narrowings.into_iter();
        let mut narrowed = Vec::with_capacity(groups.len());
        for files in &groups {
            let mut group = Vec::with_capacity(files.len());
            for (f, n) in files.iter().zip(narrowings.by_ref()) {
                let file = NarrowedFile::new(f.path.clone(), f.size_bytes, n)?;
                group.extend(file.map(Arc::new));
            }
            narrowed.push(group);
        }
        Some(narrowed)
    } else {
        None
    };
    // No predicate here: DataFusion's physical filter pushdown hands the query's filters to
    // the source (through `SluiceScanExec`, which passes them on unless the files were
    // narrowed), where they prune row groups and pages, unless the files' pruning was done
    // above and is handed to them, and, with `pushdown_filters`, filter rows while decoding.
    // Sluice writes no bloom filters: looking for them only costs time.
    let mut options = TableParquetOptions::default();
    options.global.bloom_filter_on_read = false;
    options.global.pushdown_filters = true;
    options.global.enable_page_index = plans.is_none();
    options.global.pruning = plans.is_none();
    let source = ParquetSource::new(table_schema.clone())
        .with_table_parquet_options(options)
        .with_parquet_file_reader_factory(reader.clone());
    let mut plans = plans.map(|p| p.into_iter().map(|(plan, _, schema)| (plan, schema)));
    let groups = groups
        .into_iter()
        .map(|files| {
            FileGroup::new(
                files
                    .into_iter()
                    .map(|f| {
                        let file = PartitionedFile::new(f.path, f.size_bytes);
                        match plans.as_mut().and_then(Iterator::next) {
                            // its columns are the table's, some float fields perhaps
                            // stored as whole numbers (`FilePruning::plan`)
                            Some((plan, schema)) => {
                                file.with_extension(plan).with_arrow_schema(schema)
                            }
                            None => file,
                        }
                    })
                    .collect(),
            )
        })
        .collect();
    let config = FileScanConfigBuilder::new(url, Arc::new(source))
        .with_file_groups(groups)
        .with_output_ordering(ordering.into_iter().collect())
        .with_projection_indices(projection.clone())?
        .build();
    let scan = DataSourceExec::from_data_source(config);
    let Some(groups) = narrowed else {
        return Ok(scan);
    };
    // Each partition reads at most one file, whose kept rows are in time order: the scan
    // returns them in time order (DataFusion can then drop a sort by time, or by a time
    // bucket, above it).
    let mut properties = scan.properties().clone();
    if in_time_order
        && groups.iter().all(|g| g.len() <= 1)
        && let Ok(time) = scan.schema().index_of(TIME_COLUMN)
    {
        let mut eq = properties.eq_properties.clone();
        eq.add_ordering([PhysicalSortExpr::new(
            Arc::new(Column::new(TIME_COLUMN, time)),
            SortOptions {
                descending: false,
                nulls_first: false,
            },
        )]);
        properties = Arc::new(properties.as_ref().clone().with_eq_properties(eq));
    }
    Ok(Arc::new(NarrowedParquetExec::new(
        groups,
        reader,
        table_schema.clone(),
        projection,
        properties,
    )?))
}

/// The columns a query sorts, groups, partitions windows or picks `DISTINCT ON` by, anywhere
/// in its plan. Set on the session as an extension before physical planning, it tells scans
/// whether declaring their files' order can help: only where the order's first column is one
/// of these. (A scan of a session without it declares the order whenever it can.)
#[derive(Debug, Default)]
pub struct OrderedColumns(HashSet<String>);

impl OrderedColumns {
    /// The columns `plan` (subqueries included) orders or groups by.
    pub fn of(plan: &LogicalPlan) -> Self {
        let mut names = HashSet::new();
        let mut add = |e: &Expr| {
            names.extend(e.column_refs().into_iter().map(|c| c.name.clone()));
        };
        let _ = plan.apply_with_subqueries(|node| {
            match node {
                LogicalPlan::Sort(s) => s.expr.iter().for_each(|e| add(&e.expr)),
                LogicalPlan::Aggregate(a) => a.group_expr.iter().for_each(&mut add),
                LogicalPlan::Window(w) => w.window_expr.iter().for_each(&mut add),
                LogicalPlan::Distinct(Distinct::On(d)) => {
                    d.on_expr.iter().for_each(&mut add);
                    d.sort_expr.iter().flatten().for_each(|e| add(&e.expr));
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        OrderedColumns(names)
    }

    pub fn contains(&self, column: &str) -> bool {
        self.0.contains(column)
    }
}

/// How many files a scan reads one per partition to declare their order, for a session of
/// `target` partitions: at least twice the cores. A query planned in one partition (a small
/// scan) that groups or sorts by the files' order then still reads its few files side by
/// side, each in order: the aggregation streams per file and the cores share it (the TSBS
/// twelve-hour, all-host query reads three files of a compacted day so). Past this many,
/// the streams and their merge cost more than a sort saves.
fn ordered_files_at_most(target: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    target.max(2 * cores)
}

/// The order `files` are sorted in, if they all have the same recorded sort key (each file
/// sorted by it in [`KEY_ORDER`], as the persister writes them), its columns are
/// all in `schema`, and there are at most `partitions` files (see
/// [`ordered_files_at_most`]).
fn shared_ordering(
    files: &[ParquetFile],
    schema: &SchemaRef,
    partitions: usize,
) -> Option<LexOrdering> {
    let key = &files.first()?.sort_key;
    if key.is_empty() || files.len() > partitions || files.iter().any(|f| &f.sort_key != key) {
        return None;
    }
    let options = KEY_ORDER;
    let exprs = key
        .iter()
        .map(|name| {
            let index = schema.index_of(name).ok()?;
            Some(PhysicalSortExpr::new(
                Arc::new(Column::new(name, index)),
                options,
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    LexOrdering::new(exprs)
}

/// What a scan kept and dropped, for `EXPLAIN`.
#[derive(Debug, Default, Clone)]
struct ScanStats {
    table: String,
    files_scanned: usize,
    files_total: usize,
    buffer_partitions_scanned: usize,
    buffer_partitions_total: usize,
    deduplicated_groups: usize,
    /// For a scan of the newest row of each series instead: how many series.
    newest_rows: Option<usize>,
    /// Plain files the filters could prune whose footers were not at hand when the scan
    /// was planned: DataFusion's opener prunes them each time it opens them, where a plan
    /// made now that they are read would have pruned them once.
    pruned_when_opened: bool,
    /// The plain files read only the rows the filters keep ([`FilePruning::narrow`]): the
    /// filters are not pushed into their scan. `EXPLAIN` shows `narrowed=exact` where they
    /// are all the scan reads (the filters are not applied again), else `narrowed=files`.
    narrowed: bool,
    /// Of the plain files' row groups, pruned when the scan was planned: how many are
    /// read, of how many.
    row_groups_read: usize,
    row_groups_total: usize,
}

/// The root of a table's scan: runs its input unchanged and shows in `EXPLAIN` how much the
/// time range pruned (`files=1/24` reads one file of 24), how many of the plain files' row
/// groups the filters left when their pruning was done in planning (`row_groups=1/2`), whether
/// the files were narrowed to the rows the filters keep (`narrowed=exact`), or that the
/// newest rows were read instead (`newest_rows_of_series=100`).
///
/// Its state reset (a copy of a kept physical plan, `plan_cache.rs`), it gives the Parquet
/// scans under it sources of their own ([`with_fresh_parquet_sources`]): a Parquet source
/// keeps the metrics of every file it opened, and copies would otherwise share and grow
/// them run after run. Its properties stay those it had, so the operators above it need not
/// work theirs out again.
#[derive(Debug)]
pub struct SluiceScanExec {
    input: Arc<dyn ExecutionPlan>,
    stats: ScanStats,
    /// For a scan of narrowed files alone: the filters they applied exactly, which a filter
    /// above the scan need not apply again.
    exact: Option<Arc<ExactFilters>>,
    properties: Arc<PlanProperties>,
}

impl SluiceScanExec {
    /// Whether the scan would be planned better now: see `ScanStats::pruned_when_opened`.
    pub(crate) fn better_planned_again(&self) -> bool {
        self.stats.pruned_when_opened
    }

    fn new(
        input: Arc<dyn ExecutionPlan>,
        stats: ScanStats,
        exact: Option<Arc<ExactFilters>>,
    ) -> Self {
        let properties = input.properties().clone();
        SluiceScanExec {
            input,
            stats,
            exact,
            properties,
        }
    }

    /// The root of a scan of `table`'s newest row per series (`input`, one row for each of
    /// `series`).
    pub(crate) fn newest_rows(table: &str, series: usize, input: Arc<dyn ExecutionPlan>) -> Self {
        let stats = ScanStats {
            table: table.to_string(),
            newest_rows: Some(series),
            ..ScanStats::default()
        };
        SluiceScanExec::new(input, stats, None)
    }
}

/// `plan` with each Parquet scan in it given a source of its own: the same options, reader,
/// predicate and projection, and metrics that start empty.
fn with_fresh_parquet_sources(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        let Some(source) = config.file_source.downcast_ref::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        let mut fresh = ParquetSource::new(source.table_schema().clone())
            .with_table_parquet_options(source.table_parquet_options().clone());
        if let Some(reader) = source.parquet_file_reader_factory() {
            fresh = fresh.with_parquet_file_reader_factory(reader.clone());
        }
        if let Some(predicate) = source.filter() {
            fresh = fresh.with_predicate(predicate);
        }
        // a fresh source projects nothing away: pushing the kept projection into it gives
        // that projection
        let fresh: Arc<dyn FileSource> = match source.projection() {
            Some(p) => match fresh.try_pushdown_projection(p)? {
                Some(projected) => projected,
                None => return Ok(Transformed::no(node)),
            },
            None => Arc::new(fresh),
        };
        let mut config = config.clone();
        config.file_source = fresh;
        let exec = exec.clone().with_data_source(Arc::new(config));
        Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

impl DisplayAs for SluiceScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.stats;
        if let Some(series) = s.newest_rows {
            return write!(
                f,
                "SluiceScanExec: table={}, newest_rows_of_series={series}",
                s.table
            );
        }
        write!(
            f,
            "SluiceScanExec: table={}, files={}/{}, buffer_partitions={}/{}, deduplicated_groups={}",
            s.table,
            s.files_scanned,
            s.files_total,
            s.buffer_partitions_scanned,
            s.buffer_partitions_total,
            s.deduplicated_groups
        )?;
        if s.row_groups_total > 0 {
            write!(
                f,
                ", row_groups={}/{}",
                s.row_groups_read, s.row_groups_total
            )?;
        }
        // files narrowed to the rows the filters keep; `exact`: nothing else is scanned, so
        // those filters need not be applied again above the scan
        match (s.narrowed, &self.exact) {
            (true, Some(_)) => write!(f, ", narrowed=exact")?,
            (true, None) => write!(f, ", narrowed=files")?,
            _ => {}
        }
        Ok(())
    }
}

impl ExecutionPlan for SluiceScanExec {
    fn name(&self) -> &str {
        "SluiceScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    /// Transparent to filters: whatever its input can take (a Parquet scan, dynamic filters
    /// of a join) goes through. A [`DeduplicateExec`] in the input takes none, so filters
    /// stay above it, after the merge. Nor do files narrowed to the rows the filters keep:
    /// their scan (`NarrowedParquetExec`) takes no predicate, and the filters were applied
    /// already (see `handle_child_pushdown_result`), or are applied above the scan to those
    /// few rows and the others scanned.
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        if self.stats.narrowed {
            return Ok(FilterDescription::all_unsupported(
                &parent_filters,
                &self.children(),
            ));
        }
        FilterDescription::from_children(parent_filters, &self.children())
    }

    /// The filters its narrowed files applied exactly are taken (and a `FilterExec` of only
    /// those goes away); others as its input took them.
    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let exact = match (&self.exact, phase) {
            (Some(exact), FilterPushdownPhase::Pre) => exact,
            _ => return Ok(FilterPushdownPropagation::if_all(child_pushdown_result)),
        };
        let taken = child_pushdown_result
            .parent_filters
            .iter()
            .map(|f| match exact.cover(&f.filter) {
                true => PushedDown::Yes,
                false => f.all(),
            })
            .collect();
        Ok(FilterPushdownPropagation::with_parent_pushdown_result(
            taken,
        ))
    }

    /// A projection of its columns (not renamed) goes into its Parquet or memory scan, which
    /// then reads only those: a filter above a narrowed scan that went away leaves one.
    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let plain = projection.expr().iter().all(|p| {
            p.expr
                .downcast_ref::<Column>()
                .is_some_and(|c| c.name() == p.alias)
        });
        let scan = self.input.downcast_ref::<DataSourceExec>().is_some()
            || self.input.downcast_ref::<NarrowedParquetExec>().is_some();
        if !plain || !scan {
            return Ok(None);
        }
        Ok(self
            .input
            .try_swapping_with_projection(projection)?
            .map(|input| {
                let scan = SluiceScanExec::new(input, self.stats.clone(), self.exact.clone());
                Arc::new(scan) as Arc<dyn ExecutionPlan>
            }))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => {
                let same = options.children_properties == ChildrenPropertiesMode::Keep
                    || Arc::ptr_eq(input.properties(), self.input.properties());
                let properties = if same {
                    self.properties.clone()
                } else {
                    input.properties().clone()
                };
                Ok(Arc::new(SluiceScanExec {
                    input,
                    stats: self.stats.clone(),
                    exact: self.exact.clone(),
                    properties,
                }))
            }
            _ => Err(datafusion::common::DataFusionError::Internal(
                "SluiceScanExec takes exactly one child".into(),
            )),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    /// Its input, whose state is reset already, with Parquet sources of its own; the same
    /// properties.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(SluiceScanExec {
            input: with_fresh_parquet_sources(self.input.clone())?,
            stats: self.stats.clone(),
            exact: self.exact.clone(),
            properties: self.properties.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

/// The range of `time` that rows must fall in to satisfy every filter (each filter is one
/// conjunct). Filters that do not bound `time` leave the range open.
pub fn time_range(filters: &[Expr]) -> TimeRange {
    let mut range = TimeRange::ALL;
    for f in filters {
        narrow(&mut range, f);
    }
    range
}

fn narrow(range: &mut TimeRange, expr: &Expr) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                narrow(range, left);
                narrow(range, right);
                return;
            }
            let (op, value) = match (is_time(left), is_time(right)) {
                (true, false) => match nanos(right) {
                    Some(v) => (*op, v),
                    None => return,
                },
                (false, true) => match (op.swap(), nanos(left)) {
                    (Some(op), Some(v)) => (op, v),
                    _ => return,
                },
                _ => return,
            };
            match op {
                Operator::Gt => range.min = range.min.max(value.saturating_add(1)),
                Operator::GtEq => range.min = range.min.max(value),
                Operator::Lt => range.max = range.max.min(value.saturating_sub(1)),
                Operator::LtEq => range.max = range.max.min(value),
                Operator::Eq => {
                    range.min = range.min.max(value);
                    range.max = range.max.min(value);
                }
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time(expr) => {
            if let Some(lo) = nanos(low) {
                range.min = range.min.max(lo);
            }
            if let Some(hi) = nanos(high) {
                range.max = range.max.min(hi);
            }
        }
        _ => {}
    }
}

fn is_time(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => c.name == TIME_COLUMN,
        // the planner may wrap the column in a cast to the literal's timestamp type
        Expr::Cast(c) => is_time(&c.expr),
        _ => false,
    }
}

fn nanos(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    match v {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(v), None))
    }

    #[test]
    fn time_bounds_come_from_comparisons_and_between() {
        let r = time_range(&[col("time").gt_eq(ts(10)), col("time").lt(ts(20))]);
        assert_eq!(r, TimeRange { min: 10, max: 19 });
        let r = time_range(&[ts(10).lt(col("time")).and(col("host").eq(lit("a")))]);
        assert_eq!(
            r,
            TimeRange {
                min: 11,
                max: i64::MAX
            }
        );
        let r = time_range(&[col("time").between(ts(5), ts(7))]);
        assert_eq!(r, TimeRange { min: 5, max: 7 });
        let r = time_range(&[col("time").eq(ts(5))]);
        assert_eq!(r, TimeRange { min: 5, max: 5 });
        let ms = lit(ScalarValue::TimestampMillisecond(Some(2), None));
        assert_eq!(time_range(&[col("time").lt_eq(ms)]).max, 2_000_000);
    }

    #[test]
    fn other_predicates_leave_the_range_open() {
        assert_eq!(time_range(&[col("usage").gt(lit(5.0))]), TimeRange::ALL);
        // OR cannot narrow: either side may hold
        let either = col("time").gt(ts(10)).or(col("time").lt(ts(5)));
        assert_eq!(time_range(&[either]), TimeRange::ALL);
        assert_eq!(
            time_range(&[col("time").not_between(ts(5), ts(7))]),
            TimeRange::ALL
        );
    }
}
