//! DataFusion's view of the Sluice catalog: one catalog whose schemas are the databases.
//!
//! A query runs with its database as the default schema, so its tables resolve unqualified,
//! and every other database is reachable as `db.table`; the `system` schema shows Sluice's own
//! state for the query's database, and `iox` is the query's database again (InfluxDB 3 keeps
//! every table in a schema of that name, so SQL written for it says `iox.cpu`). The
//! providers read a [`CatalogSnapshot`] taken when the
//! query started, so a query sees one consistent set of tables and columns however long it
//! runs.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::common::Result;
use datafusion::datasource::TableProvider;
use sluice_storage::{CatalogSnapshot, DatabaseSchema, ReadView};

use crate::system_tables::{SYSTEM_SCHEMA, SystemSchema};
use crate::table_provider::SluiceTable;

/// Name of the DataFusion catalog holding the databases.
pub const CATALOG_NAME: &str = "public";

/// The schema InfluxDB 3 keeps its tables in: here another name for the query's database
/// (unless a database of that name exists, which only a catalog from before the name was
/// reserved can hold). Not listed among the schemas (it would show every
/// table twice in `information_schema`).
pub const IOX_SCHEMA: &str = "iox";

/// All databases, as schemas of one DataFusion catalog.
#[derive(Debug)]
pub struct SluiceCatalog {
    snapshot: Arc<CatalogSnapshot>,
    storage: ReadView,
    /// The database the query runs in: the one `system` describes.
    current_db: Arc<str>,
}

impl SluiceCatalog {
    /// The catalog as it is in `snapshot`, with rows from `storage`, for a query in
    /// `current_db`.
    pub fn new(snapshot: Arc<CatalogSnapshot>, storage: ReadView, current_db: &str) -> Self {
        SluiceCatalog {
            snapshot,
            storage,
            current_db: current_db.into(),
        }
    }
}

impl CatalogProvider for SluiceCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.snapshot
            .databases
            .keys()
            .map(|k| k.to_string())
            .chain(std::iter::once(SYSTEM_SCHEMA.to_string()))
            .collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SYSTEM_SCHEMA {
            return Some(Arc::new(SystemSchema::new(
                self.current_db.clone(),
                self.storage.clone(),
            )));
        }
        let db = match self.snapshot.database(name) {
            Some(db) => db.clone(),
            None if name == IOX_SCHEMA => self.snapshot.database(&self.current_db)?.clone(),
            None => return None,
        };
        Some(Arc::new(DatabaseSchemaProvider {
            db,
            storage: self.storage.clone(),
        }))
    }
}

/// The tables of one database.
#[derive(Debug)]
pub struct DatabaseSchemaProvider {
    db: Arc<DatabaseSchema>,
    storage: ReadView,
}

#[async_trait]
impl SchemaProvider for DatabaseSchemaProvider {
    /// The tables SQL lists: not those keeping Prometheus's stale markers (they can still be
    /// read by name).
    fn table_names(&self) -> Vec<String> {
        self.db
            .tables
            .keys()
            .filter(|k| !sluice_model::staleness::is_stale_table(k))
            .map(|k| k.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(schema) = self.db.tables.get(name) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(SluiceTable::new(
            self.db.name.clone(),
            schema.clone(),
            self.storage.clone(),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.tables.contains_key(name)
    }
}
