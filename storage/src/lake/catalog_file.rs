//! The catalog as it is kept on the object store: one JSON document, `catalog.json`, holding
//! the databases, tables and columns, the live Parquet files and the WAL bookkeeping.
//!
//! It is replaced whole with one atomic put, after the files it lists are durable, so that a
//! crash at any moment leaves either the old or the new catalog: never a listed file that does
//! not exist. Columns are listed in id order, which is what the write buffer addresses them by.
//! JSON keeps the files readable by people and by tools other than Sluice.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sluice_model::{FieldType, MetricMetadata, MetricType};

use super::files::{Dropped, LakeState, ParquetFile, PendingDelete};
use crate::catalog::TokenRecord;
use crate::catalog::{CatalogSnapshot, ColumnKind, DatabaseSchema, Retention, TableSchema};

/// Where the catalog lives in the object store.
pub fn catalog_path() -> Path {
    Path::from("catalog.json")
}

/// The format version written; readers refuse newer ones.
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct CatalogDoc {
    format_version: u32,
    next_file_id: u64,
    databases: Vec<DatabaseDoc>,
    /// Files replaced by compaction and not yet deleted.
    #[serde(default)]
    pending_deletes: Vec<PendingDelete>,
    /// Databases and tables deleted whose writes are still in WAL segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dropped: Vec<Dropped>,
    /// Access tokens, hashed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tokens: Vec<TokenRecord>,
    /// The id the next token gets (absent in catalogs from before it was kept).
    #[serde(default, skip_serializing_if = "is_zero")]
    next_token_id: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, Deserialize)]
struct DatabaseDoc {
    name: String,
    /// `30d` and the like; absent keeps rows forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_period: Option<String>,
    tables: Vec<TableDoc>,
    /// Prometheus metric metadata, by metric family name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metric_metadata: BTreeMap<String, MetricMetadataDoc>,
}

/// What a sender said of a metric family.
#[derive(Debug, Serialize, Deserialize)]
struct MetricMetadataDoc {
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`, `stateset` or
    /// `unknown`.
    #[serde(rename = "type")]
    metric_type: String,
    help: String,
    unit: String,
}

impl From<&MetricMetadata> for MetricMetadataDoc {
    fn from(m: &MetricMetadata) -> Self {
        MetricMetadataDoc {
            metric_type: m.metric_type.as_str().to_string(),
            help: m.help.clone(),
            unit: m.unit.clone(),
        }
    }
}

impl From<MetricMetadataDoc> for MetricMetadata {
    fn from(m: MetricMetadataDoc) -> Self {
        MetricMetadata {
            metric_type: MetricType::from_name(&m.metric_type),
            help: m.help,
            unit: m.unit,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TableDoc {
    name: String,
    /// In column-id order; the first is `time`.
    columns: Vec<ColumnDoc>,
    #[serde(default)]
    files: Vec<ParquetFile>,
    /// (buffer partition, last WAL segment persisted) pairs.
    #[serde(default)]
    persisted_through: Vec<(i64, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ColumnDoc {
    name: String,
    /// `time`, `tag`, or the field type: `float`, `integer`, `unsigned`, `boolean`, `string`.
    kind: String,
}

fn kind_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Time => "time",
        ColumnKind::Tag => "tag",
        ColumnKind::Field(FieldType::Float) => "float",
        ColumnKind::Field(FieldType::Integer) => "integer",
        ColumnKind::Field(FieldType::UInteger) => "unsigned",
        ColumnKind::Field(FieldType::Boolean) => "boolean",
        ColumnKind::Field(FieldType::String) => "string",
    }
}

fn kind_from_name(name: &str) -> Option<ColumnKind> {
    Some(match name {
        "time" => ColumnKind::Time,
        "tag" => ColumnKind::Tag,
        "float" => ColumnKind::Field(FieldType::Float),
        "integer" => ColumnKind::Field(FieldType::Integer),
        "unsigned" => ColumnKind::Field(FieldType::UInteger),
        "boolean" => ColumnKind::Field(FieldType::Boolean),
        "string" => ColumnKind::Field(FieldType::String),
        _ => return None,
    })
}

/// Encodes the catalog and the lake state as the JSON document.
pub fn encode(catalog: &CatalogSnapshot, lake: &LakeState) -> Vec<u8> {
    let mut databases = Vec::new();
    for (db_name, db) in &catalog.databases {
        let mut tables = Vec::new();
        for (table_name, table) in &db.tables {
            let key = (db_name.clone(), table_name.clone());
            let persisted_through = lake
                .persisted_through
                .range((db_name.clone(), table_name.clone(), i64::MIN)..)
                .take_while(|((d, t, _), _)| d == db_name && t == table_name)
                .map(|((_, _, p), s)| (*p, *s))
                .collect();
            tables.push(TableDoc {
                name: table_name.to_string(),
                columns: table
                    .columns()
                    .iter()
                    .map(|c| ColumnDoc {
                        name: c.name.to_string(),
                        kind: kind_name(c.kind).to_string(),
                    })
                    .collect(),
                files: lake.files.get(&key).map(|f| f.to_vec()).unwrap_or_default(),
                persisted_through,
            });
        }
        databases.push(DatabaseDoc {
            name: db_name.to_string(),
            retention_period: db.retention.as_ref().map(|r| r.to_string()),
            tables,
            metric_metadata: db
                .metric_metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect(),
        });
    }
    let doc = CatalogDoc {
        format_version: FORMAT_VERSION,
        next_file_id: lake.next_file_id,
        databases,
        pending_deletes: lake.pending_deletes.clone(),
        dropped: lake.dropped.clone(),
        tokens: catalog.tokens.to_vec(),
        next_token_id: catalog.next_token_id,
    };
    serde_json::to_vec_pretty(&doc).expect("the catalog document serializes")
}

/// A catalog document Sluice cannot read: start-up stops rather than guess.
#[derive(Debug, thiserror::Error)]
pub enum CatalogFileError {
    #[error("catalog.json is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "catalog.json has format version {0}, newer than this Sluice understands \
         ({FORMAT_VERSION}); run a newer Sluice"
    )]
    Newer(u32),
    #[error("catalog.json: {0}")]
    Content(String),
}

/// Decodes the JSON document.
pub fn decode(bytes: &[u8]) -> Result<(CatalogSnapshot, LakeState), CatalogFileError> {
    let doc: CatalogDoc = serde_json::from_slice(bytes)?;
    if doc.format_version > FORMAT_VERSION {
        return Err(CatalogFileError::Newer(doc.format_version));
    }
    let mut catalog = CatalogSnapshot {
        tokens: doc.tokens.into(),
        next_token_id: doc.next_token_id,
        ..CatalogSnapshot::default()
    };
    let mut lake = LakeState {
        next_file_id: doc.next_file_id,
        pending_deletes: doc.pending_deletes,
        dropped: doc.dropped,
        ..LakeState::default()
    };
    for db in doc.databases {
        let db_name: Arc<str> = db.name.as_str().into();
        let retention = match &db.retention_period {
            Some(text) => Retention::parse(text)
                .map_err(|e| CatalogFileError::Content(format!("database '{}': {e}", db.name)))?,
            None => None,
        };
        let mut tables = BTreeMap::new();
        for t in db.tables {
            let table_name: Arc<str> = t.name.as_str().into();
            let mut schema = TableSchema::new(&t.name);
            for (i, c) in t.columns.iter().enumerate() {
                let kind = kind_from_name(&c.kind).ok_or_else(|| {
                    CatalogFileError::Content(format!(
                        "column '{}' of table '{}' has unknown kind '{}'",
                        c.name, t.name, c.kind
                    ))
                })?;
                match (i, kind) {
                    (0, ColumnKind::Time) => {}
                    (0, _) | (_, ColumnKind::Time) => {
                        return Err(CatalogFileError::Content(format!(
                            "table '{}' must list 'time' first, and only once",
                            t.name
                        )));
                    }
                    _ => {
                        schema.push(&c.name, kind);
                    }
                }
            }
            if !t.files.is_empty() {
                let mut files = t.files;
                files.sort_by_key(|f| f.id);
                lake.files
                    .insert((db_name.clone(), table_name.clone()), files.into());
            }
            for (p, s) in t.persisted_through {
                lake.persisted_through
                    .insert((db_name.clone(), table_name.clone(), p), s);
            }
            tables.insert(table_name, Arc::new(schema));
        }
        catalog.databases.insert(
            db_name.clone(),
            Arc::new(DatabaseSchema {
                name: db_name,
                tables,
                retention,
                metric_metadata: db
                    .metric_metadata
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            }),
        );
    }
    Ok((catalog, lake))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_column_ids_files_and_markers() {
        let mut t = TableSchema::new("cpu");
        t.push("usage", ColumnKind::Field(FieldType::Float));
        t.push("host", ColumnKind::Tag);
        t.push("n", ColumnKind::Field(FieldType::UInteger));
        let mut catalog = CatalogSnapshot::default();
        catalog.databases.insert(
            "db".into(),
            Arc::new(DatabaseSchema {
                name: "db".into(),
                tables: BTreeMap::from([("cpu".into(), Arc::new(t))]),
                retention: Retention::parse("30d").unwrap(),
                metric_metadata: BTreeMap::from([(
                    "http_requests".into(),
                    MetricMetadata {
                        metric_type: MetricType::Counter,
                        help: "Requests served.".into(),
                        unit: String::new(),
                    },
                )]),
            }),
        );
        let mut lake = LakeState {
            next_file_id: 9,
            ..LakeState::default()
        };
        let file = ParquetFile {
            id: 3,
            order: 3,
            path: "dbs/db/cpu/2026-01-01/00000000000000000003.parquet".into(),
            min_time: 1,
            max_time: 2,
            rows: 10,
            size_bytes: 1234,
            sort_key: vec!["host".into(), "time".into()],
        };
        lake.files
            .insert(("db".into(), "cpu".into()), vec![file.clone()].into());
        lake.persisted_through
            .insert(("db".into(), "cpu".into(), 490_896), 4);
        let bytes = encode(&catalog, &lake);
        let (c2, l2) = decode(&bytes).unwrap();
        let t2 = c2.table("db", "cpu").unwrap();
        assert_eq!(t2.column_id("host"), Some(2));
        assert_eq!(
            t2.column("n").unwrap().kind,
            ColumnKind::Field(FieldType::UInteger)
        );
        assert_eq!(&*l2.table_files("db", "cpu"), &[file]);
        assert!(l2.is_persisted("db", "cpu", 490_896, 4));
        assert!(!l2.is_persisted("db", "cpu", 490_896, 5));
        assert_eq!(l2.next_file_id, 9);
        assert_eq!(
            c2.database("db").unwrap().retention,
            Retention::parse("30d").unwrap()
        );
        assert_eq!(
            c2.database("db").unwrap().metric_metadata,
            catalog.database("db").unwrap().metric_metadata
        );
        assert!(decode(b"{").unwrap_err().to_string().contains("not valid"));
    }
}
