//! The catalog: what exists (databases, tables, columns with their types, retention periods,
//! metric metadata, access tokens) and the rules a write must keep to change it.
//!
//! - [`schema`]: the catalog itself, an immutable snapshot replaced whole on each change.
//! - [`validator`]: schema on write, checking a batch against a snapshot.
//! - [`names`], [`retention`], [`tokens`]: the rules for database names, retention periods
//!   and access tokens.
//!
//! Nothing here does I/O: the catalog is written to the object store by the lake
//! (`lake/catalog_file.rs`), and changed by the write path and by administration.

pub mod names;
pub mod retention;
pub mod schema;
pub mod tokens;
pub mod validator;

pub use names::{NameError, RESERVED_DATABASE_NAMES, validate_database_name};
pub use retention::{PeriodError, Retention, parse_period};
pub use schema::{
    Catalog, CatalogSnapshot, Column, ColumnKind, DatabaseSchema, Deleting, ROLE_METADATA_KEY,
    TIME_COLUMN, TableSchema, field_data_type,
};
pub use tokens::{
    ANY_DATABASE, TOKEN_PREFIX, TokenError, TokenRecord, TokenSpec, Tokens, hash_token,
};
pub use validator::{Limits, Rejection, Validated, validate};
