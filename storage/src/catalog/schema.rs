//! The catalog: databases, their tables, and each table's columns with their types.
//!
//! The catalog is an immutable [`CatalogSnapshot`] behind an `Arc` that is replaced whole on
//! every change (copy on write). Readers (queries) take a snapshot and never block writers;
//! changes are rare (a new table or column) and are made only by the write path while it
//! holds the write lock, which is what keeps the catalog in the same order as the WAL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parking_lot::RwLock;
use sluice_model::{FieldType, MetricMetadata};

use super::retention::Retention;
use super::tokens::Tokens;

/// Name of the timestamp column every table has.
pub const TIME_COLUMN: &str = "time";

/// Arrow field metadata key holding a column's role (`tag`, `field` or `time`), so that
/// readers of the schema (and of Parquet files, later) can tell tags from fields.
pub const ROLE_METADATA_KEY: &str = "sluice::role";

/// What a column is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Part of the series key; stored as `Dictionary(Int32, Utf8)`.
    Tag,
    /// A value column of a fixed type.
    Field(FieldType),
    /// The `time` column, `Timestamp(Nanosecond, None)`.
    Time,
}

impl ColumnKind {
    /// The Arrow type of a column of this kind.
    pub fn data_type(self) -> DataType {
        match self {
            ColumnKind::Tag => {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            }
            ColumnKind::Field(t) => field_data_type(t),
            ColumnKind::Time => DataType::Timestamp(TimeUnit::Nanosecond, None),
        }
    }

    /// Words for errors: "tag", "float field", ...
    pub fn describe(self) -> String {
        match self {
            ColumnKind::Tag => "a tag".to_string(),
            ColumnKind::Field(t) => format!("a {} field", t.name()),
            ColumnKind::Time => "the time column".to_string(),
        }
    }

    fn role(self) -> &'static str {
        match self {
            ColumnKind::Tag => "tag",
            ColumnKind::Field(_) => "field",
            ColumnKind::Time => "time",
        }
    }
}

/// The Arrow type that stores values of a field type.
pub fn field_data_type(t: FieldType) -> DataType {
    match t {
        FieldType::Float => DataType::Float64,
        FieldType::Integer => DataType::Int64,
        FieldType::UInteger => DataType::UInt64,
        FieldType::Boolean => DataType::Boolean,
        FieldType::String => DataType::Utf8,
    }
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: Arc<str>,
    pub kind: ColumnKind,
}

/// A table's columns. Columns are only ever appended, so a column's index (its id) is stable
/// for the life of the table: the write buffer relies on that to address column storage.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub name: Arc<str>,
    columns: Vec<Column>,
    by_name: HashMap<Arc<str>, usize>,
    arrow: SchemaRef,
    /// For each position in the Arrow schema, the column id.
    arrow_order: Vec<usize>,
}

impl TableSchema {
    /// A new table with only its `time` column.
    pub fn new(name: &str) -> Self {
        let mut t = TableSchema {
            name: name.into(),
            columns: Vec::new(),
            by_name: HashMap::new(),
            arrow: Arc::new(Schema::empty()),
            arrow_order: Vec::new(),
        };
        t.push(TIME_COLUMN, ColumnKind::Time);
        t
    }

    /// Columns in creation order; the position is the column id.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The column id of `name`.
    pub fn column_id(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.column_id(name).map(|i| &self.columns[i])
    }

    /// The column id of `time`.
    pub fn time_column_id(&self) -> usize {
        0
    }

    /// The table's Arrow schema: columns sorted by name (as InfluxDB 3 shows them), each
    /// carrying its role in the field metadata.
    pub fn arrow_schema(&self) -> &SchemaRef {
        &self.arrow
    }

    /// Column ids in Arrow schema order.
    pub fn arrow_order(&self) -> &[usize] {
        &self.arrow_order
    }

    /// Adds a column, returning its id. The caller has checked that the name is free.
    pub fn push(&mut self, name: &str, kind: ColumnKind) -> usize {
        let id = self.columns.len();
        let name: Arc<str> = name.into();
        self.columns.push(Column {
            name: name.clone(),
            kind,
        });
        self.by_name.insert(name, id);
        self.rebuild_arrow();
        id
    }

    fn rebuild_arrow(&mut self) {
        let mut order: Vec<usize> = (0..self.columns.len()).collect();
        order.sort_by(|&a, &b| self.columns[a].name.cmp(&self.columns[b].name));
        let fields: Vec<Field> = order
            .iter()
            .map(|&i| {
                let c = &self.columns[i];
                Field::new(
                    c.name.as_ref(),
                    c.kind.data_type(),
                    c.kind != ColumnKind::Time,
                )
                .with_metadata(HashMap::from([(
                    ROLE_METADATA_KEY.to_string(),
                    c.kind.role().to_string(),
                )]))
            })
            .collect();
        self.arrow = Arc::new(Schema::new(fields));
        self.arrow_order = order;
    }

    /// Number of tag columns.
    pub fn tag_count(&self) -> usize {
        self.columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Tag)
            .count()
    }
}

/// A database: a namespace of tables.
#[derive(Debug, Clone, Default)]
pub struct DatabaseSchema {
    pub name: Arc<str>,
    pub tables: BTreeMap<Arc<str>, Arc<TableSchema>>,
    /// How long the database keeps rows; `None` keeps them forever.
    pub retention: Option<Retention>,
    /// What Prometheus says of its metrics (type, help, unit), by metric family name. A
    /// family may name no table (a histogram's samples are in `<name>_bucket`, `_sum` and
    /// `_count`), or name one before any sample arrives.
    pub metric_metadata: BTreeMap<Arc<str>, MetricMetadata>,
}

/// One consistent state of the whole catalog.
#[derive(Debug, Clone, Default)]
pub struct CatalogSnapshot {
    pub databases: BTreeMap<Arc<str>, Arc<DatabaseSchema>>,
    /// Access tokens, hashed (see `tokens`).
    pub tokens: Tokens,
    /// The id the next token gets: ids are never reused.
    pub next_token_id: u64,
}

impl CatalogSnapshot {
    /// The database called `name`.
    pub fn database(&self, name: &str) -> Option<&Arc<DatabaseSchema>> {
        self.databases.get(name)
    }

    /// The schema of `db`.`table`.
    pub fn table(&self, db: &str, table: &str) -> Option<&Arc<TableSchema>> {
        self.databases.get(db)?.tables.get(table)
    }

    /// The earliest time (Unix nanoseconds) a row of `db` is kept at `now`, if the database
    /// has a retention period.
    pub fn retention_cutoff(&self, db: &str, now: i64) -> Option<i64> {
        let retention = self.databases.get(db)?.retention.as_ref()?;
        Some(retention.cutoff(now))
    }
}

/// The live catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    current: RwLock<Arc<CatalogSnapshot>>,
    /// What a delete in progress takes away: writes to it are refused until the delete is
    /// recorded (or failed), so that no write is acknowledged into what then disappears.
    deleting: RwLock<Option<Deleting>>,
}

/// A database (`table` is `None`) or a table being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleting {
    pub db: Arc<str>,
    pub table: Option<Arc<str>>,
}

impl std::fmt::Display for Deleting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.table {
            None => write!(f, "database '{}'", self.db),
            Some(t) => write!(f, "table '{t}' of database '{}'", self.db),
        }
    }
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current state; cheap, and stays consistent however long it is held.
    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.current.read().clone()
    }

    /// Replaces the state. Only the write path calls this, under its write lock.
    pub(crate) fn replace(&self, next: CatalogSnapshot) {
        *self.current.write() = Arc::new(next);
    }

    /// What a delete in progress takes away, if one is. Writers read it under the write
    /// lock; the delete sets and clears it under the same lock.
    pub(crate) fn deleting(&self) -> Option<Deleting> {
        self.deleting.read().clone()
    }

    pub(crate) fn set_deleting(&self, target: Option<Deleting>) {
        *self.deleting.write() = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_schema_is_sorted_by_name_with_roles() {
        let mut t = TableSchema::new("cpu");
        t.push("usage", ColumnKind::Field(FieldType::Float));
        t.push("host", ColumnKind::Tag);
        let names: Vec<_> = t
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, vec!["host", "time", "usage"]);
        assert_eq!(
            t.arrow_schema().field(0).metadata()[ROLE_METADATA_KEY],
            "tag"
        );
        assert_eq!(t.arrow_order(), &[2, 0, 1]);
        assert_eq!(t.column_id("host"), Some(2));
    }
}
