//! The `system` schema: Sluice's own state as tables, for the database being queried.
//!
//! - `system.parquet_files`: the live Parquet files (one row each) with their table, object
//!   store path, size, row count and time range, as the catalog lists them.
//! - `system.metric_metadata`: what Prometheus remote write said of each metric family
//!   (`metric`, `type`, `help`, `unit`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray, TimestampNanosecondArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::SchemaProvider;
use datafusion::common::Result;
use datafusion::datasource::{MemTable, TableProvider};
use sluice_model::MetricMetadata;
use sluice_storage::{CatalogSnapshot, ReadView};

/// The databases of `catalog` as rows: `iox::database` (the column name InfluxDB 3 lists them
/// under) and `retention_period` (`none` for a database that keeps rows forever).
pub fn database_list(catalog: &CatalogSnapshot) -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("iox::database", DataType::Utf8, false),
        Field::new("retention_period", DataType::Utf8, false),
    ]));
    let names = StringArray::from_iter_values(catalog.databases.keys().map(|k| &**k));
    let retention = StringArray::from_iter_values(catalog.databases.values().map(|d| {
        d.retention
            .as_ref()
            .map_or("none".into(), |r| r.to_string())
    }));
    let columns: Vec<ArrayRef> = vec![Arc::new(names), Arc::new(retention)];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match the schema");
    (schema, batch)
}

/// Name of the schema.
pub const SYSTEM_SCHEMA: &str = "system";

/// The `system` schema of one database.
#[derive(Debug)]
pub struct SystemSchema {
    db: Arc<str>,
    storage: ReadView,
}

impl SystemSchema {
    /// System tables of `db`.
    pub fn new(db: Arc<str>, storage: ReadView) -> Self {
        SystemSchema { db, storage }
    }
}

const TABLES: &[&str] = &["parquet_files", "metric_metadata"];

fn metric_metadata_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("metric", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("help", DataType::Utf8, false),
        Field::new("unit", DataType::Utf8, false),
    ]))
}

fn parquet_files_schema() -> SchemaRef {
    let time = DataType::Timestamp(TimeUnit::Nanosecond, None);
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("size_bytes", DataType::UInt64, false),
        Field::new("row_count", DataType::UInt64, false),
        Field::new("min_time", time.clone(), false),
        Field::new("max_time", time, false),
        Field::new("file_id", DataType::UInt64, false),
    ]))
}

impl SystemSchema {
    fn parquet_files(&self) -> Result<RecordBatch> {
        let lake = self.storage.lake();
        let files: Vec<_> = lake
            .all_files()
            .filter(|((db, _), _)| *db == self.db)
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|((_, t), _)| t.as_ref()),
            )),
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|(_, f)| f.path.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                files.iter().map(|(_, f)| f.size_bytes),
            )),
            Arc::new(UInt64Array::from_iter_values(
                files.iter().map(|(_, f)| f.rows),
            )),
            Arc::new(TimestampNanosecondArray::from_iter_values(
                files.iter().map(|(_, f)| f.min_time),
            )),
            Arc::new(TimestampNanosecondArray::from_iter_values(
                files.iter().map(|(_, f)| f.max_time),
            )),
            Arc::new(UInt64Array::from_iter_values(
                files.iter().map(|(_, f)| f.id),
            )),
        ];
        Ok(RecordBatch::try_new(parquet_files_schema(), columns)?)
    }
}

impl SystemSchema {
    fn metric_metadata(&self) -> Result<RecordBatch> {
        let catalog = self.storage.catalog();
        let entries: Vec<_> = catalog
            .database(&self.db)
            .map(|d| d.metric_metadata.iter().collect())
            .unwrap_or_default();
        let column = |get: fn(&MetricMetadata) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|(_, m)| get(m)),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|(name, _)| name.as_ref()),
            )),
            column(|m| m.metric_type.as_str()),
            column(|m| &m.help),
            column(|m| &m.unit),
        ];
        Ok(RecordBatch::try_new(metric_metadata_schema(), columns)?)
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let batch = match name {
            "parquet_files" => self.parquet_files()?,
            "metric_metadata" => self.metric_metadata()?,
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
