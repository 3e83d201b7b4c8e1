//! SQL over Sluice through Apache DataFusion.
//!
//! [`QueryExecutor`] runs a statement against one database: the databases are schemas of one
//! DataFusion catalog ([`catalog_provider`]), each table is a [`SluiceTable`] over the write
//! buffer and the table's Parquet files, and [`Format`] turns results into the bytes of an HTTP response.

pub mod catalog_provider;
pub mod deduplicate;
pub mod executor;
pub mod format;
pub mod last_cache;
pub mod lastpoint;
pub mod narrowed_scan;
pub mod parquet_reader;
pub mod plan_cache;
pub mod plan_template;
pub mod profile;
pub mod promql;
pub mod run_aggregate;
pub mod system_tables;
pub mod table_provider;
#[cfg(test)]
mod testing;

/// Values bound to `$name` placeholders.
pub use datafusion::arrow::record_batch::RecordBatch;
pub use datafusion::common::{DataFusionError, ScalarValue};
pub use datafusion::physical_plan::SendableRecordBatchStream;
/// The words of the SQL dialect queries are parsed in.
pub use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS as SQL_KEYWORDS;
pub use executor::{QueryConfig, QueryError, QueryExecutor, QueryOutput};
pub use format::Format;
pub use table_provider::SluiceTable;
