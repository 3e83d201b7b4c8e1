//! Schema on write: checks each point of a batch against the catalog and works out the
//! catalog changes (new database, tables, columns) that the accepted points need.
//!
//! Rules: a column's type is fixed by its first write; a name is a tag or a field, never both;
//! `time` is reserved; a tag key appears once per point; the per-table column limit and the
//! per-database table limit hold. A point that breaks a rule is rejected alone, with a message
//! naming the table, the column and both types. Nothing here touches the live catalog: the
//! caller installs [`Validated::catalog`] only if it goes on with the write.

use std::sync::Arc;

use sluice_model::{FieldValue, Sym, WriteBatch};

use super::schema::{CatalogSnapshot, ColumnKind, DatabaseSchema, TIME_COLUMN, TableSchema};

/// Limits that validation enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Columns per table, counting tags, fields and `time`.
    pub max_columns_per_table: usize,
    /// Tables per database.
    pub max_tables_per_database: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_columns_per_table: 500,
            max_tables_per_database: 10_000,
        }
    }
}

impl Limits {
    /// No limits: used when replaying the WAL, whose writes were accepted once already.
    pub fn unlimited() -> Self {
        Limits {
            max_columns_per_table: usize::MAX,
            max_tables_per_database: usize::MAX,
        }
    }
}

/// A point that validation rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The point's line (or series) number in the request.
    pub line: u32,
    /// Why, naming table, column and types.
    pub message: String,
}

/// The outcome of validating a batch.
#[derive(Debug)]
pub struct Validated {
    /// The catalog with the accepted points' new database, tables and columns, if any.
    pub catalog: Option<CatalogSnapshot>,
    /// For each point of the batch, whether it was accepted.
    pub keep: Vec<bool>,
    /// The rejected points, in batch order.
    pub rejected: Vec<Rejection>,
}

impl Validated {
    /// Number of accepted points.
    pub fn accepted(&self) -> usize {
        self.keep.iter().filter(|k| **k).count()
    }
}

const UNRESOLVED: u32 = u32::MAX;
const ABSENT: u32 = u32::MAX - 1;

struct TableState {
    name: Arc<str>,
    schema: Option<Arc<TableSchema>>,
    changed: bool,
    /// Batch symbol -> column id, `ABSENT` or `UNRESOLVED`.
    col_of_sym: Vec<u32>,
}

impl TableState {
    fn column(&mut self, batch: &WriteBatch, sym: Sym) -> Option<usize> {
        let slot = &mut self.col_of_sym[sym.index()];
        if *slot == UNRESOLVED {
            *slot = self
                .schema
                .as_ref()
                .and_then(|s| s.column_id(batch.str(sym)))
                .map_or(ABSENT, |id| id as u32);
        }
        (*slot != ABSENT).then_some(*slot as usize)
    }

    fn kind(&self, id: usize) -> ColumnKind {
        self.schema
            .as_ref()
            .expect("resolved column has a schema")
            .columns()[id]
            .kind
    }
}

/// Validates `batch` for database `db`. `create_database` says whether a missing database
/// may be created; if not, `None` is returned for a missing one.
pub fn validate(
    catalog: &CatalogSnapshot,
    db: &str,
    batch: &WriteBatch,
    limits: &Limits,
    create_database: bool,
) -> Option<Validated> {
    let existing_db = catalog.database(db);
    if existing_db.is_none() && !create_database {
        return None;
    }
    let mut table_count = existing_db.map_or(0, |d| d.tables.len());
    // the tables of the batch, and by table symbol the position of its state (or u32::MAX)
    let mut tables: Vec<TableState> = Vec::new();
    let mut table_of_sym: Vec<u32> = vec![u32::MAX; batch.symbols.len()];
    let mut keep = Vec::with_capacity(batch.len());
    let mut rejected = Vec::new();
    let mut new_cols: Vec<(Sym, ColumnKind)> = Vec::new();
    let n_syms = batch.symbols.len();

    // The tables and tag ranges of points that passed: a later point of the same series
    // (decoders share one tag range among a series' points) needs only its fields checked.
    let mut passed: hashbrown::HashSet<(Sym, usize, usize), foldhash::fast::FixedState> =
        Default::default();
    let mut last_passed: Option<(Sym, usize, usize)> = None;
    // The last point that passed, if it was of the last series that passed: a point of the
    // same series with the same field names and types passes too (what it would add, that
    // point added), without the checks. Metric rows, one value each, come in such runs.
    let mut last_point: Option<&sluice_model::Point> = None;
    let same_fields = |a: &sluice_model::Point, b: &sluice_model::Point| {
        let (fa, fb) = (batch.fields_of(a), batch.fields_of(b));
        fa.len() == fb.len()
            && fa
                .iter()
                .zip(fb)
                .all(|(x, y)| x.key == y.key && x.value.field_type() == y.value.field_type())
    };
    for point in batch.points() {
        let range = point.tag_range();
        let series = (point.table, range.start, range.end);
        if let Some(last) = last_point
            && last.table == point.table
            && last.tag_range() == range
            && same_fields(last, point)
        {
            keep.push(true);
            continue;
        }
        last_point = None;
        let same_series = last_passed == Some(series) || passed.contains(&series);
        let slot = &mut table_of_sym[point.table.index()];
        if *slot == u32::MAX {
            *slot = tables.len() as u32;
            let name = batch.str(point.table);
            tables.push(TableState {
                name: name.into(),
                schema: existing_db.and_then(|d| d.tables.get(name)).cloned(),
                changed: false,
                col_of_sym: vec![UNRESOLVED; n_syms],
            });
        }
        let state = &mut tables[*slot as usize];
        new_cols.clear();
        let result = check_point(state, batch, point, !same_series, &mut new_cols).and_then(|()| {
            let existing = state.schema.as_ref().map_or(1, |s| s.columns().len());
            if existing + new_cols.len() > limits.max_columns_per_table {
                return Err(format!(
                    "table '{}' would have {} columns, over the limit of {} \
                     (--max-columns-per-table); write fewer distinct tag and field names",
                    state.name,
                    existing + new_cols.len(),
                    limits.max_columns_per_table
                ));
            }
            if state.schema.is_none() && table_count >= limits.max_tables_per_database {
                return Err(format!(
                    "database '{db}' already has {table_count} tables, the limit \
                     (--max-tables-per-database); table '{}' was not created",
                    state.name
                ));
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                if state.schema.is_none() {
                    state.schema = Some(Arc::new(TableSchema::new(&state.name)));
                    state.changed = true;
                    table_count += 1;
                }
                if !new_cols.is_empty() {
                    let schema = Arc::make_mut(state.schema.as_mut().expect("set above"));
                    for &(sym, kind) in &new_cols {
                        let id = schema.push(batch.str(sym), kind);
                        state.col_of_sym[sym.index()] = id as u32;
                    }
                    state.changed = true;
                }
                keep.push(true);
                if last_passed != Some(series) {
                    passed.insert(series);
                    last_passed = Some(series);
                }
                last_point = Some(point);
            }
            Err(message) => {
                keep.push(false);
                rejected.push(Rejection {
                    line: point.line,
                    message,
                });
            }
        }
    }

    let any_accepted = keep.iter().any(|k| *k);
    let changed = tables.iter().any(|t| t.changed);
    let catalog = (any_accepted && (changed || existing_db.is_none())).then(|| {
        let mut next = catalog.clone();
        let db_entry = next.databases.entry(db.into()).or_insert_with(|| {
            Arc::new(DatabaseSchema {
                name: db.into(),
                ..Default::default()
            })
        });
        let db_schema = Arc::make_mut(db_entry);
        for t in tables.into_iter().filter(|t| t.changed) {
            let schema = t.schema.expect("changed table has a schema");
            db_schema.tables.insert(t.name, schema);
        }
        next
    });
    Some(Validated {
        catalog,
        keep,
        rejected,
    })
}

/// Checks `point`'s tags (unless `check_tags` is false: the same tags passed just before) and
/// fields against `state`'s table, listing the columns it would add in `new_cols`.
fn check_point(
    state: &mut TableState,
    batch: &WriteBatch,
    point: &sluice_model::Point,
    check_tags: bool,
    new_cols: &mut Vec<(Sym, ColumnKind)>,
) -> Result<(), String> {
    let tags = if check_tags {
        batch.tags_of(point)
    } else {
        &[]
    };
    for (i, tag) in tags.iter().enumerate() {
        if tags[..i].iter().any(|t| t.key == tag.key) {
            return Err(format!(
                "tag '{}' appears twice in this point of table '{}'; a series has one value \
                 per tag",
                batch.str(tag.key),
                state.name
            ));
        }
        // an existing tag column is never `time` (that column is the timestamp): only other
        // names need the name checked
        match state.column(batch, tag.key) {
            Some(id) if state.kind(id) == ColumnKind::Tag => {}
            column => {
                let name = batch.str(tag.key);
                if name == TIME_COLUMN {
                    return Err(format!(
                        "tag 'time' in table '{}': 'time' is reserved for the timestamp; \
                         rename the tag",
                        state.name
                    ));
                }
                match column {
                    Some(id) => {
                        return Err(format!(
                            "column '{name}' of table '{}' is {}; it cannot also be a tag",
                            state.name,
                            state.kind(id).describe()
                        ));
                    }
                    None => new_cols.push((tag.key, ColumnKind::Tag)),
                }
            }
        }
    }
    let tag_cols = new_cols.len();
    for field in batch.fields_of(point) {
        let wrote = field.value.field_type();
        let column = state.column(batch, field.key);
        // an existing field column is never `time`: only new names need the check
        if !matches!(column.map(|id| state.kind(id)), Some(ColumnKind::Field(_)))
            && batch.str(field.key) == TIME_COLUMN
        {
            return Err(format!(
                "field 'time' in table '{}': 'time' is reserved for the timestamp; rename the \
                 field",
                state.name
            ));
        }
        let kind = match column {
            Some(id) => Some(state.kind(id)),
            None => new_cols
                .iter()
                .find(|(s, _)| *s == field.key)
                .map(|(_, k)| *k),
        };
        match kind {
            None => new_cols.push((field.key, ColumnKind::Field(wrote))),
            Some(ColumnKind::Field(t)) if t == wrote => {}
            Some(ColumnKind::Field(t)) => {
                let name = batch.str(field.key);
                let earlier = if new_cols[tag_cols..].iter().any(|(s, _)| *s == field.key) {
                    "earlier in this point"
                } else {
                    "already"
                };
                return Err(format!(
                    "field '{name}' of table '{}' is {earlier} of type {}, but this point \
                     writes a {} ({}); a column's type is fixed by its first write",
                    state.name,
                    t.name(),
                    wrote.name(),
                    show_value(batch, &field.value),
                ));
            }
            Some(other) => {
                let name = batch.str(field.key);
                return Err(format!(
                    "column '{name}' of table '{}' is {}; it cannot also be a field",
                    state.name,
                    other.describe()
                ));
            }
        }
    }
    Ok(())
}

fn show_value(batch: &WriteBatch, v: &FieldValue) -> String {
    match v {
        FieldValue::F64(x) => format!("{x:?}"),
        FieldValue::I64(x) => format!("{x}i"),
        FieldValue::U64(x) => format!("{x}u"),
        FieldValue::Bool(x) => x.to_string(),
        FieldValue::Str(s) => {
            let s = batch.str(*s);
            let cut: String = s.chars().take(40).collect();
            format!("\"{cut}{}\"", if cut.len() < s.len() { "…" } else { "" })
        }
    }
}

#[cfg(test)]
mod tests;
