//! Runs one SQL statement against one database, within the query limits.
//!
//! Each query gets its own DataFusion session over a snapshot of the catalog, its own
//! memory pool (so one query cannot starve the others) and a timeout. Only reading statements
//! run: DDL, DML, `COPY` and session statements are refused when the plan is verified,
//! before anything executes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::table_provider::{OrderedColumns, SluiceTable};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::{SQLOptions, SessionConfig};
use sluice_storage::{CatalogSnapshot, ReadView};

use crate::catalog_provider::{CATALOG_NAME, SluiceCatalog};
use crate::last_cache::{LAST_CACHE_FUNCTION, LastCacheFunction};
use crate::lastpoint::NewestRowsRule;
use crate::parquet_reader::PageCache;
use crate::plan_cache::{PlanCache, PlanKey, Sources, template_reusable};
use crate::plan_template::{Template, bind, template};
use crate::profile::{Phase, PhaseTimer, QueryProfile, Unstarted};
use crate::run_aggregate::RunAggregation;
use crate::table_provider::LAKE_URL;
use datafusion::execution::object_store::ObjectStoreUrl;

/// Limits every query runs under.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Bytes of memory one query may hold in DataFusion's operators (sorts, aggregations,
    /// joins spill or fail past it).
    pub memory_limit: usize,
    /// Wall-clock time one query may take, planning included.
    pub timeout: Duration,
    /// A query whose table scans read at most about this many rows is planned in one
    /// partition: for small scans, repartitioning and merging cost more than they save.
    /// (Filtering and aggregating 100,000 buffered rows takes about 5 ms; a 432,000-row
    /// aggregation took 27 ms in one partition against 17 in two.)
    pub single_partition_rows: usize,
    /// Queries that run at once; a query past them waits up to `queue_timeout` for one to
    /// finish, then is refused ([`QueryError::Busy`]).
    pub max_concurrent: usize,
    pub queue_timeout: Duration,
    /// Whether Sluice's own plan rewrites run: lastpoint queries read the newest row kept
    /// per series instead of scanning ([`crate::lastpoint`]), and partial aggregates over
    /// grouped input work a run at a time ([`crate::run_aggregate`]). Off only to compare.
    pub rewrites: bool,
    /// Optimized plans of repeated query texts kept for reuse while the catalog is the
    /// same ([`crate::plan_cache`]); 0 keeps none.
    pub plan_cache_entries: usize,
    /// Bytes of Parquet pages kept in memory for the next query that reads them
    /// ([`crate::parquet_reader::PageCache`]); 0 keeps none.
    pub page_cache_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            memory_limit: 1 << 30,
            timeout: Duration::from_secs(60),
            single_partition_rows: 100_000,
            max_concurrent: 16,
            queue_timeout: Duration::from_secs(10),
            rewrites: true,
            plan_cache_entries: 1024,
            page_cache_bytes: 64 << 20,
        }
    }
}

/// Why a query did not answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("database '{0}' not found")]
    DatabaseNotFound(String),
    #[error("only reading statements run here: {0}")]
    NotAllowed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("query exceeded its memory limit of {limit} bytes (--query-memory-limit): {detail}")]
    MemoryLimit { limit: usize, detail: String },
    #[error("query did not finish within {0:?} (--query-timeout)")]
    Timeout(Duration),
    #[error(
        "{0} queries are running, the limit (--max-concurrent-queries), and none finished \
         in time to start this one; retry later"
    )]
    Busy(usize),
    #[error("internal error running the query: {0}")]
    Internal(String),
}

/// A finished query: its schema (known even when no row came back) and its batches.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    /// Total number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Runs queries over storage's read view.
#[derive(Debug)]
pub struct QueryExecutor {
    storage: ReadView,
    config: QueryConfig,
    runtime: Arc<RuntimeEnv>,
    /// A session with DataFusion's functions registered, copied for each query: registering
    /// them anew costs about a millisecond, a copy a fraction of that.
    base_state: SessionState,
    /// One permit per query running (`max_concurrent` in all).
    running: Arc<tokio::sync::Semaphore>,
    /// Where queries spent their time, for `GET /metrics`.
    profile: Arc<QueryProfile>,
    pub(crate) plans: PlanCache,
}

impl QueryExecutor {
    /// An executor over `storage` with `config`'s limits.
    pub fn new(storage: ReadView, config: QueryConfig) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let url =
            ObjectStoreUrl::parse(LAKE_URL).map_err(|e| QueryError::Internal(e.to_string()))?;
        runtime.register_object_store(url.as_ref(), storage.storage().inner().clone());
        let mut session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_extension(Arc::new(PageCache::new(config.page_cache_bytes)));
        let options = session_config.options_mut();
        // A file is scanned in byte ranges by several partitions only when it is large: each
        // range opens the file (footer, statistics, page index) and creates its decoders, which
        // costs more than a one-hour scan of a small file reads.
        options.optimizer.repartition_file_min_size = 32 << 20;
        let mut builder = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime.clone())
            .with_default_features();
        if config.rewrites {
            builder = builder
                .with_optimizer_rule(Arc::new(NewestRowsRule))
                .with_physical_optimizer_rule(Arc::new(RunAggregation));
        }
        let mut base_state = builder.build();
        base_state.register_udtf(
            LAST_CACHE_FUNCTION,
            Arc::new(LastCacheFunction::new(storage.clone())),
        );
        Ok(QueryExecutor {
            plans: PlanCache::new(config.plan_cache_entries),
            storage,
            running: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent.max(1))),
            config,
            runtime,
            base_state,
            profile: Arc::default(),
        })
    }

    /// Where queries spent their time since the server started.
    pub fn profile(&self) -> &QueryProfile {
        &self.profile
    }

    /// The scalar functions queries can call, by the section of DataFusion's documentation
    /// they are in (`Math Functions`, `String Functions`, `Time and Date Functions` ...;
    /// `Other Functions` for those without one), each list sorted.
    pub fn scalar_functions_by_section(
        &self,
    ) -> std::collections::BTreeMap<&'static str, Vec<String>> {
        let mut sections: std::collections::BTreeMap<&'static str, Vec<String>> =
            std::collections::BTreeMap::new();
        for (name, udf) in self.base_state.scalar_functions() {
            let section = udf
                .documentation()
                .map_or("Other Functions", |d| d.doc_section.label);
            sections.entry(section).or_default().push(name.clone());
        }
        for names in sections.values_mut() {
            names.sort();
            names.dedup();
        }
        sections
    }

    /// The storage queries read.
    pub fn storage(&self) -> &ReadView {
        &self.storage
    }

    /// The limits queries run under.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// What went wrong, for an error from a stream of [`QueryExecutor::query_stream`].
    pub fn error_of(&self, e: DataFusionError) -> QueryError {
        self.classify(e)
    }

    /// Runs `sql` in database `db`, binding `params` to `$name` placeholders.
    pub async fn query(
        &self,
        db: &str,
        sql: &str,
        params: HashMap<String, ScalarValue>,
    ) -> Result<QueryOutput, QueryError> {
        self.query_as(db, sql, params, None).await
    }

    /// [`QueryExecutor::query`] for someone who may read only the databases in `readable`
    /// (`None`: all): the others do not exist for the query, not even as `db.table`.
    pub async fn query_as(
        &self,
        db: &str,
        sql: &str,
        params: HashMap<String, ScalarValue>,
        readable: Option<&[String]>,
    ) -> Result<QueryOutput, QueryError> {
        let _running = self.admit().await?;
        self.within_timeout(self.run(db, sql, params, readable))
            .await
    }

    /// A permit to run a query: at once if fewer than `max_concurrent` run, else once one
    /// finishes, waiting at most `queue_timeout`.
    async fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, QueryError> {
        let acquire = self.running.clone().acquire_owned();
        match tokio::time::timeout(self.config.queue_timeout, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(QueryError::Busy(self.config.max_concurrent)),
        }
    }

    /// A session for one query in `db`: a copy of the base session whose only catalog is a
    /// snapshot of Sluice's, with `db` as the default schema so its tables resolve unqualified
    /// and other databases as `db.table`. The catalog list is the query's own, so queries in
    /// different databases at the same moment each see their own `system` tables.
    fn session(
        &self,
        db: &str,
        readable: Option<&[String]>,
        mut snapshot: Arc<CatalogSnapshot>,
    ) -> Result<SessionState, QueryError> {
        if let Some(readable) = readable {
            let mut only = (*snapshot).clone();
            only.databases
                .retain(|name, _| readable.iter().any(|r| **r == **name));
            snapshot = Arc::new(only);
        }
        if snapshot.database(db).is_none() {
            return Err(QueryError::DatabaseNotFound(db.to_string()));
        }
        let mut state = self.base_state.clone();
        let options = state.config_mut().options_mut();
        options.catalog.default_catalog = CATALOG_NAME.to_string();
        options.catalog.default_schema = db.to_string();
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(
            CATALOG_NAME.to_string(),
            Arc::new(SluiceCatalog::new(snapshot, self.storage.clone(), db)),
        );
        state.register_catalog_list(Arc::new(catalogs));
        // `now()` is the time the query started, the same in every part of the plan.
        state.mark_start_execution();
        Ok(state)
    }

    /// The schema of `sql`'s result, from planning it without running it.
    pub async fn schema_of(
        &self,
        db: &str,
        sql: &str,
        params: HashMap<String, ScalarValue>,
        readable: Option<&[String]>,
    ) -> Result<SchemaRef, QueryError> {
        let mut untimed = PhaseTimer::none();
        let plan = self.logical((db, sql, readable), params, None, &mut untimed);
        let (_, plan) = self.within_timeout(plan).await?;
        Ok(Arc::new(plan.schema().as_arrow().clone()))
    }

    /// Plans `sql` without running it, for a prepared statement: the result's schema, and
    /// its `$name` placeholders (`$1`, `$2`, ... for positional ones) with the types their
    /// use implies (`None` where it implies none), sorted by name.
    pub async fn prepare(
        &self,
        db: &str,
        sql: &str,
        readable: Option<&[String]>,
    ) -> Result<(SchemaRef, Vec<(String, Option<DataType>)>), QueryError> {
        let mut untimed = PhaseTimer::none();
        let plan = self.logical((db, sql, readable), HashMap::new(), None, &mut untimed);
        let (_, plan) = self.within_timeout(plan).await?;
        let mut params: Vec<(String, Option<DataType>)> = plan
            .get_parameter_types()
            .map_err(|e| self.classify(e))?
            .into_iter()
            .collect();
        params.sort_by_key(|p| natural(&p.0));
        Ok((Arc::new(plan.schema().as_arrow().clone()), params))
    }

    /// Plans `sql` and returns its schema and a stream of its batches, computed as they are
    /// read: nothing is collected in memory. The query timeout covers planning and the
    /// stream: past it, the stream ends with the timeout error.
    pub async fn query_stream(
        &self,
        db: &str,
        sql: &str,
        params: HashMap<String, ScalarValue>,
        readable: Option<&[String]>,
    ) -> Result<(SchemaRef, SendableRecordBatchStream), QueryError> {
        let running = self.admit().await?;
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let planned = async {
            let mut timer = PhaseTimer::start(&self.profile);
            if let Some(kept) = self.kept_physical(db, sql, &params, readable, &mut timer) {
                return kept;
            }
            let optimized = self
                .optimized(db, sql, params, readable, &mut timer)
                .await?;
            self.physical(optimized, &mut timer).await
        };
        let (schema, plan, task_ctx) = self.within_timeout(planned).await?;
        let stream = self.execute(plan, task_ctx)?;
        let stream = until(stream, deadline, self.config.timeout);
        // the query counts as running until its stream is read or dropped
        let held = stream.map(move |batch| {
            let _running = &running;
            batch
        });
        Ok((
            schema.clone(),
            Box::pin(RecordBatchStreamAdapter::new(schema, held)),
        ))
    }

    async fn within_timeout<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        match tokio::time::timeout(self.config.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(QueryError::Timeout(self.config.timeout)),
        }
    }

    /// Plans and runs `sql` on one copy of the base session. (DataFusion's `SessionContext`
    /// copies its session for each step of `sql()`, and the copies cost more than a small
    /// query's scan.)
    async fn run(
        &self,
        db: &str,
        sql: &str,
        params: HashMap<String, ScalarValue>,
        readable: Option<&[String]>,
    ) -> Result<QueryOutput, QueryError> {
        let mut timer = PhaseTimer::start(&self.profile);
        let (schema, plan, task_ctx) =
            match self.kept_physical(db, sql, &params, readable, &mut timer) {
                Some(kept) => kept?,
                None => {
                    let optimized = self
                        .optimized(db, sql, params, readable, &mut timer)
                        .await?;
                    self.physical(optimized, &mut timer).await?
                }
            };
        let batches = self
            .execute(plan, task_ctx)?
            .try_collect()
            .await
            .map_err(|e| self.classify(e))?;
        Ok(QueryOutput { schema, batches })
    }

    /// The stream of `plan`'s batches, profiled.
    fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream, QueryError> {
        let profiled = Unstarted::new(plan.clone(), self.profile.clone());
        let stream = execute_stream(plan, task_ctx).map_err(|e| self.classify(e))?;
        Ok(Box::pin(profiled.of(stream)))
    }

    /// The checked, parameter-bound logical plan of `sql` in a session for `db` over
    /// `catalog` (the current one if `None`).
    async fn logical(
        &self,
        (db, sql, readable): (&str, &str, Option<&[String]>),
        params: HashMap<String, ScalarValue>,
        catalog: Option<Arc<CatalogSnapshot>>,
        timer: &mut PhaseTimer<'_>,
    ) -> Result<(SessionState, LogicalPlan), QueryError> {
        let catalog = catalog.unwrap_or_else(|| self.storage.catalog());
        let state = self.session(db, readable, catalog)?;
        let mut plan = state
            .create_logical_plan(sql)
            .await
            .map_err(|e| self.classify(e))?;
        self.checked(&plan)?;
        if !params.is_empty() {
            let values: Vec<(String, ScalarValue)> = params.into_iter().collect();
            plan = plan
                .with_param_values(values)
                .map_err(|e| self.classify(e))?;
        }
        timer.finished(Phase::Plan);
        Ok((state, plan))
    }

    /// Refuses `plan` if it writes or is not a query.
    fn checked(&self, plan: &LogicalPlan) -> Result<(), QueryError> {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(plan)
            .map_err(|e| self.classify(e))
    }

    /// The optimized logical plan of `sql` in a session for `db`: the one kept for the same
    /// text while the catalog is unchanged ([`PlanCache`]), or the one kept for the same text
    /// but its timestamps with these bound into it (`plan_template.rs`), else planned and
    /// optimized now.
    async fn optimized(
        &self,
        db: &str,
        sql: &str,
        params: HashMap<String, ScalarValue>,
        readable: Option<&[String]>,
        timer: &mut PhaseTimer<'_>,
    ) -> Result<Optimized, QueryError> {
        let catalog = self.storage.catalog();
        let key = if params.is_empty() {
            PlanKey::new(db, sql, readable)
        } else {
            None
        };
        if let Some(key) = &key
            && let Some(plan) = self.plans.get(key, &catalog)
        {
            let state = self.session(db, readable, catalog.clone())?;
            timer.finished(Phase::Plan);
            return Ok(Optimized {
                state,
                plan,
                kept: Some((key.clone(), catalog)),
                reused: true,
            });
        }
        if let Some(key) = &key {
            let state = self.session(db, readable, catalog.clone())?;
            let dialect = state.config().options().sql_parser.dialect;
            let statement = state
                .sql_to_statement(sql, &dialect)
                .map_err(|e| self.classify(e))?;
            if let Some(t) = template(&statement)
                && let Some((plan, reused)) =
                    self.templated(&state, t, db, readable, &catalog).await
            {
                timer.finished(Phase::Plan);
                let kept = self
                    .plans
                    .insert(key.clone(), catalog.clone(), &plan, &plan);
                return Ok(Optimized {
                    state,
                    plan,
                    kept: kept.then(|| (key.clone(), catalog)),
                    reused,
                });
            }
            let planned = state
                .statement_to_plan(statement)
                .await
                .map_err(|e| self.classify(e))?;
            self.checked(&planned)?;
            timer.finished(Phase::Plan);
            return self.optimize(state, planned, Some(key.clone()), catalog, timer);
        }
        let query = (db, sql, readable);
        let (state, planned) = self
            .logical(query, params, Some(catalog.clone()), timer)
            .await?;
        self.optimize(state, planned, key, catalog, timer)
    }

    /// `t`'s template plan (kept, or planned, optimized and kept now) with its timestamps
    /// bound, and whether it was kept; `None` if the template cannot be planned or bound.
    async fn templated(
        &self,
        state: &SessionState,
        t: Template,
        db: &str,
        readable: Option<&[String]>,
        catalog: &Arc<CatalogSnapshot>,
    ) -> Option<(LogicalPlan, bool)> {
        let key = PlanKey::new(db, &t.text, readable)?;
        if let Some(plan) = self.plans.get(&key, catalog) {
            return bind(&plan, &t.values).map(|plan| (plan, true));
        }
        let planned = state.statement_to_plan(t.statement).await.ok()?;
        self.checked(&planned).ok()?;
        if !template_reusable(&planned) {
            return None;
        }
        let optimized = state.optimize(&planned).ok()?;
        // kept even if it does not bind: texts of its shape then try binding only
        self.plans.insert_template(key, catalog.clone(), &optimized);
        bind(&optimized, &t.values).map(|plan| (plan, false))
    }

    /// `planned`, optimized, and kept under `key` if it can be.
    fn optimize(
        &self,
        state: SessionState,
        planned: LogicalPlan,
        key: Option<PlanKey>,
        catalog: Arc<CatalogSnapshot>,
        timer: &mut PhaseTimer<'_>,
    ) -> Result<Optimized, QueryError> {
        let optimized = state.optimize(&planned).map_err(|e| self.classify(e))?;
        timer.finished(Phase::Optimize);
        let kept = key.filter(|key| {
            self.plans
                .insert(key.clone(), catalog.clone(), &planned, &optimized)
        });
        Ok(Optimized {
            state,
            plan: optimized,
            kept: kept.map(|key| (key, catalog)),
            reused: false,
        })
    }

    /// A copy of the physical plan kept for `sql` ([`PlanCache::physical`]), with a task
    /// context to run it in, if one was kept for the current catalog and for the files its
    /// scans would read now. No session is made for it: the task context is the kept plan's
    /// configuration and a runtime of the query's own. (Physical plans call the functions
    /// they hold; they never look one up by name in the task context.)
    fn kept_physical(
        &self,
        db: &str,
        sql: &str,
        params: &HashMap<String, ScalarValue>,
        readable: Option<&[String]>,
        timer: &mut PhaseTimer<'_>,
    ) -> Option<Result<Planned, QueryError>> {
        if !params.is_empty() {
            return None;
        }
        let key = PlanKey::new(db, sql, readable)?;
        let catalog = self.storage.catalog();
        let plan = self.plans.get_with_physical(&key, &catalog)?;
        let single_partition = rows_to_scan(&plan) <= self.config.single_partition_rows;
        let sources = Sources::of(&plan, single_partition)?;
        timer.finished(Phase::Plan);
        let copy = self.plans.physical(&key, &catalog, &sources)?;
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let task_ctx = self.query_runtime().map(|runtime| {
            Arc::new(TaskContext::new(
                None,
                copy.session_id,
                copy.config,
                HashMap::new(),
                HashMap::new(),
                HashMap::new(),
                HashMap::new(),
                runtime,
            ))
        });
        self.profile.reused(true);
        timer.finished(Phase::PhysicalPlan);
        Some(task_ctx.map(|task_ctx| (schema, copy.plan, task_ctx)))
    }

    /// A runtime of a query's own, for its memory pool. Setting it on the task context
    /// rather than on the session spares rebuilding the session (which registers every
    /// function anew) for each query.
    fn query_runtime(&self) -> Result<Arc<RuntimeEnv>, QueryError> {
        RuntimeEnvBuilder::from_runtime_env(&self.runtime)
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(self.config.memory_limit)))
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))
    }

    /// The physical plan of `plan` (optimized), with the task context (and its memory pool)
    /// to run it in, kept beside the optimized plan when that is a kept one
    /// ([`PlanCache::insert_physical`]; its copies run through [`Self::kept_physical`]).
    async fn physical(
        &self,
        optimized: Optimized,
        timer: &mut PhaseTimer<'_>,
    ) -> Result<Planned, QueryError> {
        let Optimized {
            mut state,
            plan,
            kept,
            reused,
        } = optimized;
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        // A query that reads few rows runs in one partition: planning and running the
        // repartitioning and merging of a parallel plan costs more than it saves there.
        let single_partition = rows_to_scan(&plan) <= self.config.single_partition_rows;
        if single_partition {
            state.config_mut().options_mut().execution.target_partitions = 1;
        }
        let kept = kept
            .and_then(|(key, catalog)| Some((key, catalog, Sources::of(&plan, single_partition)?)));
        state
            .config_mut()
            .set_extension(Arc::new(OrderedColumns::of(&plan)));
        let task_ctx = Arc::new(TaskContext::from(&state).with_runtime(self.query_runtime()?));
        if reused {
            self.profile.reused(false);
        }
        let plan = state
            .query_planner()
            .create_physical_plan(&plan, &state)
            .await
            .map_err(|e| self.classify(e))?;
        if let Some((key, catalog, sources)) = kept {
            let session = (state.config(), state.session_id().to_string());
            self.plans
                .insert_physical(&key, &catalog, sources, &plan, session);
        }
        timer.finished(Phase::PhysicalPlan);
        Ok((schema, plan, task_ctx))
    }

    fn classify(&self, e: DataFusionError) -> QueryError {
        let e = match e {
            DataFusionError::External(inner) => match inner.downcast::<QueryError>() {
                Ok(q) => return *q,
                Err(inner) => DataFusionError::External(inner),
            },
            e => e,
        };
        let root = e.find_root();
        match root {
            DataFusionError::Plan(m)
                if m.starts_with("DDL not supported")
                    || m.starts_with("DML not supported")
                    || m.starts_with("Statement not supported") =>
            {
                QueryError::NotAllowed(m.clone())
            }
            DataFusionError::ResourcesExhausted(m) => QueryError::MemoryLimit {
                limit: self.config.memory_limit,
                detail: m.clone(),
            },
            DataFusionError::Internal(_)
            | DataFusionError::IoError(_)
            | DataFusionError::ObjectStore(_) => QueryError::Internal(root.to_string()),
            _ => QueryError::Invalid(root.to_string()),
        }
    }
}

/// A query ready to run: its result's schema, its physical plan and the task context to
/// run it in.
type Planned = (SchemaRef, Arc<dyn ExecutionPlan>, Arc<TaskContext>);

/// An optimized plan and the session to run it in.
struct Optimized {
    state: SessionState,
    plan: LogicalPlan,
    /// Where the plan is kept for reuse, and the catalog it was planned against, if it is.
    kept: Option<(PlanKey, Arc<CatalogSnapshot>)>,
    /// Whether the plan is one kept from an earlier query.
    reused: bool,
}

/// `stream`, ended by a timeout error (and dropped, which stops the query) once `deadline`
/// passes.
fn until(
    stream: SendableRecordBatchStream,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let sleep = Box::pin(tokio::time::sleep_until(deadline));
    let bounded = futures::stream::unfold(Some((stream, sleep)), move |state| async move {
        let (mut stream, mut sleep) = state?;
        let timed_out = || {
            let e = Box::new(QueryError::Timeout(timeout));
            Some((Err(DataFusionError::External(e)), None))
        };
        if tokio::time::Instant::now() >= deadline {
            return timed_out();
        }
        tokio::select! {
            biased;
            () = &mut sleep => timed_out(),
            item = stream.next() => item.map(|i| (i, Some((stream, sleep)))),
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, bounded))
}

/// A placeholder's sort key: `$2` before `$10`, names after numbers.
fn natural(name: &str) -> (u64, String) {
    let bare = name.trim_start_matches('$');
    (bare.parse().unwrap_or(u64::MAX), bare.to_string())
}

/// At most how many rows the table scans of `plan` (subqueries included) read.
fn rows_to_scan(plan: &LogicalPlan) -> usize {
    let mut rows = 0usize;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(table) = provider.downcast_ref::<SluiceTable>()
        {
            rows = rows.saturating_add(table.rows_to_scan(&scan.filters));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    rows
}

#[cfg(test)]
mod tests;
