//! `last_cache('<table>')`: the newest row of every series of a table, from memory.
//!
//! InfluxDB 3 answers "latest value per series" from a last-value cache that users create per
//! table and read with the table function `last_cache('<table>')`. Sluice keeps the newest
//! row of every series of every table as points arrive (see `TableBuffer::last_rows`), so the
//! same function needs no setup:
//!
//! ```sql
//! SELECT DISTINCT ON (hostname) * FROM last_cache('cpu') ORDER BY hostname, time DESC
//! ```
//!
//! answers what the same query on `cpu` answers, without reading the table. The rows hold
//! every tag, `time` and every field of the table's schema; filters, projections and
//! aggregates apply to them as to any table.
//!
//! After a restart the rows only in Parquet files are not in memory yet: the first call for a
//! table scans it once and folds the result in.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, BooleanArray, TimestampNanosecondArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use sluice_storage::catalog::TIME_COLUMN;
use sluice_storage::{ReadView, TableSchema};

use crate::table_provider::{SluiceScanExec, SluiceTable};

/// Name the function is registered under.
pub const LAST_CACHE_FUNCTION: &str = "last_cache";

/// The `last_cache` table function.
#[derive(Debug)]
pub struct LastCacheFunction {
    storage: ReadView,
}

impl LastCacheFunction {
    pub fn new(storage: ReadView) -> Self {
        LastCacheFunction { storage }
    }
}

impl TableFunctionImpl for LastCacheFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let table = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(t)), _)] => t.clone(),
            _ => {
                return plan_err!(
                    "last_cache takes one argument, the table's name as a string: \
                     SELECT * FROM last_cache('cpu')"
                );
            }
        };
        let db = args
            .session()
            .config_options()
            .catalog
            .default_schema
            .clone();
        let snapshot = self.storage.catalog();
        let Some(schema) = snapshot
            .database(&db)
            .and_then(|d| d.tables.get(table.as_str()))
        else {
            return plan_err!("last_cache: table '{table}' not found in database '{db}'");
        };
        Ok(Arc::new(NewestRowsTable {
            db: db.into(),
            schema: schema.clone(),
            storage: self.storage.clone(),
        }))
    }
}

/// The newest row of each series of one table, as a table: what `last_cache('<table>')`
/// reads, and what lastpoint queries on the table read instead of it
/// ([`crate::lastpoint`]).
#[derive(Debug)]
pub(crate) struct NewestRowsTable {
    db: Arc<str>,
    schema: Arc<TableSchema>,
    storage: ReadView,
}

impl NewestRowsTable {
    /// The newest rows of `table`.
    pub(crate) fn of(table: &SluiceTable) -> Self {
        let (db, schema, storage) = table.parts();
        NewestRowsTable {
            db: db.clone(),
            schema: schema.clone(),
            storage: storage.clone(),
        }
    }

    pub(crate) fn table_schema(&self) -> &TableSchema {
        &self.schema
    }
}

#[async_trait]
impl TableProvider for NewestRowsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.arrow_schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    /// Filters are applied above the scan; rows here are few.
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
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = self
            .storage
            .table_buffer_or_create(&self.db, &self.schema.name);
        if !table.last_rows_complete() {
            // Once per table after start-up: fold the whole table (files and buffer) in.
            // Two queries doing this at once fold the same rows twice, which is harmless.
            let scan = SluiceTable::new(self.db.clone(), self.schema.clone(), self.storage.clone())
                .scan(state, None, &[], None)
                .await?;
            let mut stream = execute_stream(scan, state.task_ctx())?;
            while let Some(batch) = stream.next().await {
                table.merge_last_rows(&self.schema, &batch?);
            }
            table.set_last_rows_complete();
        }
        let mut rows = table.last_rows(&self.schema);
        if let Some(cutoff) = self.storage.retention_cutoff(&self.db) {
            // a series whose newest row is past the retention period has no row to show
            let time = rows
                .column_by_name(TIME_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>());
            if let Some(time) = time {
                let kept: BooleanArray = time.iter().map(|t| Some(t >= Some(cutoff))).collect();
                rows = filter_record_batch(&rows, &kept)?;
            }
        }
        let series = rows.num_rows();
        let input =
            MemorySourceConfig::try_new_exec(&[vec![rows]], self.schema(), projection.cloned())?;
        Ok(Arc::new(SluiceScanExec::newest_rows(
            &self.schema.name,
            series,
            input,
        )))
    }
}
