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
    /// Bytes in a table or column name.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_columns_per_table: 500,
            max_tables_per_database: 10_000,
            max_name_bytes: 256,
        }
    }
}

impl Limits {
    /// No limits: used when replaying the WAL, whose writes were accepted once already.
    pub fn unlimited() -> Self {
        Limits {
            max_columns_per_table: usize::MAX,
            max_tables_per_database: usize::MAX,
            max_name_bytes: usize::MAX,
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

/// What a (table, name) of the batch resolves to: a column id below `NEW`, a column the point
/// being checked would add (`NEW | index into new_cols`), or `ABSENT`.
const NEW: u32 = 1 << 31;
const ABSENT: u32 = u32::MAX;

/// A (table, name) of the batch: the column it resolved to, and the number (plus one) of the
/// last point that used it as a tag, which finds a tag written twice in one point.
#[derive(Clone, Copy)]
struct Resolved {
    column: u32,
    tag_of_point: u32,
}

/// Columns of the batch's tables by (table slot, batch symbol). One map for every table, so
/// that what it holds grows with the names the batch uses, never with tables x symbols.
type ColumnMap = hashbrown::HashMap<u64, Resolved, foldhash::fast::FixedState>;

/// The [`ColumnMap`] key of name `sym` in the table at `slot`.
fn key(slot: u32, sym: Sym) -> u64 {
    (u64::from(slot) << 32) | sym.index() as u64
}

struct TableState {
    name: Arc<str>,
    /// The position of this table among the batch's tables.
    slot: u32,
    schema: Option<Arc<TableSchema>>,
    changed: bool,
    /// Why the table's name breaks the naming rule, if it does: every point of it is refused.
    bad_name: Option<String>,
}

impl TableState {
    /// What `sym` names in this table, resolving it against the schema on first use.
    fn resolve<'m>(
        &self,
        columns: &'m mut ColumnMap,
        batch: &WriteBatch,
        sym: Sym,
    ) -> &'m mut Resolved {
        columns.entry(self.key(sym)).or_insert_with(|| Resolved {
            column: self
                .schema
                .as_ref()
                .and_then(|s| s.column_id(batch.str(sym)))
                .map_or(ABSENT, |id| id as u32),
            tag_of_point: 0,
        })
    }

    /// Where `sym`, a name in this table, is in the [`ColumnMap`].
    fn key(&self, sym: Sym) -> u64 {
        key(self.slot, sym)
    }

    fn kind(&self, id: u32) -> ColumnKind {
        self.schema
            .as_ref()
            .expect("resolved column has a schema")
            .columns()[id as usize]
            .kind
    }

    fn column_count(&self) -> usize {
        self.schema.as_ref().map_or(1, |s| s.columns().len())
    }
}

/// Validates `batch` for database `db`. `create_database` says whether a missing database
/// may be created; if not, `None` is returned for a missing one.
///
/// What it allocates grows with the batch (its points, and the distinct names each table
/// uses), and every per-point check is linear in the point's size.
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
    // the tables of the batch, and by table symbol the position of its state
    let mut tables: Vec<TableState> = Vec::new();
    let mut table_of_sym: Vec<u32> = vec![u32::MAX; batch.symbols.len()];
    let mut columns = ColumnMap::default();
    let mut keep = Vec::with_capacity(batch.len());
    let mut rejected = Vec::new();
    let mut new_cols: Vec<(Sym, ColumnKind)> = Vec::new();

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
    for (n, point) in batch.points().iter().enumerate() {
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
                slot: *slot,
                schema: existing_db.and_then(|d| d.tables.get(name)).cloned(),
                changed: false,
                bad_name: check_name("table", name, limits.max_name_bytes).err(),
            });
        }
        let slot = *slot;
        let state = &mut tables[slot as usize];
        new_cols.clear();
        let result = if let Some(why) = &state.bad_name {
            Err(why.clone())
        } else if state.schema.is_none() && table_count >= limits.max_tables_per_database {
            Err(format!(
                "database '{db}' already has {table_count} tables, the limit \
                 (--max-tables-per-database); table '{}' was not created",
                state.name
            ))
        } else {
            let check = Check {
                state,
                batch,
                limits,
                point_no: n as u32 + 1,
            };
            check.point(&mut columns, point, !same_series, &mut new_cols)
        };
        match result {
            Ok(()) => {
                if state.schema.is_none() {
                    state.schema = Some(Arc::new(TableSchema::new(&state.name)));
                    state.changed = true;
                    table_count += 1;
                }
                if !new_cols.is_empty() {
                    let slot = state.slot;
                    let schema = Arc::make_mut(state.schema.as_mut().expect("set above"));
                    for &(sym, kind) in &new_cols {
                        let id = schema.push(batch.str(sym), kind);
                        columns.get_mut(&key(slot, sym)).expect("resolved").column = id as u32;
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
                // what the point would have added is absent again for the next point
                for &(sym, _) in &new_cols {
                    columns.get_mut(&state.key(sym)).expect("resolved").column = ABSENT;
                }
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

/// Checks a table or column name against the naming rule: not empty, at most `max_bytes`
/// bytes of UTF-8, no control characters. Any such name round-trips through the object store
/// (see `lake::files::path_segment`).
pub fn check_name(what: &str, name: &str, max_bytes: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name is empty; name the {what}"));
    }
    let shown = || {
        let cut: String = name.chars().take(40).collect();
        let more = if cut.len() < name.len() { "…" } else { "" };
        format!("{cut:?}{more}")
    };
    if name.len() > max_bytes {
        return Err(format!(
            "{what} name {} is {} bytes long, over the limit of {max_bytes} \
             (--max-name-bytes); use a shorter name",
            shown(),
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{what} name {} contains the control character U+{:04X}; names may not hold \
             control characters",
            shown(),
            c as u32
        ));
    }
    Ok(())
}

/// The checks of one point against its table.
struct Check<'a> {
    state: &'a TableState,
    batch: &'a WriteBatch,
    limits: &'a Limits,
    /// The point's position in the batch, plus one.
    point_no: u32,
}

impl Check<'_> {
    /// Checks `point`'s tags (unless `check_tags` is false: the same tags passed just before)
    /// and fields, listing the columns it would add in `new_cols` (and resolving them in
    /// `columns` to `NEW | index`; the caller sets them back).
    fn point(
        &self,
        columns: &mut ColumnMap,
        point: &sluice_model::Point,
        check_tags: bool,
        new_cols: &mut Vec<(Sym, ColumnKind)>,
    ) -> Result<(), String> {
        let (state, batch) = (self.state, self.batch);
        let tags = if check_tags {
            batch.tags_of(point)
        } else {
            &[]
        };
        for tag in tags {
            let resolved = state.resolve(columns, batch, tag.key);
            if resolved.tag_of_point == self.point_no {
                return Err(format!(
                    "tag '{}' appears twice in this point of table '{}'; a series has one \
                     value per tag",
                    batch.str(tag.key),
                    state.name
                ));
            }
            resolved.tag_of_point = self.point_no;
            let column = resolved.column;
            // an existing tag column is never `time` (that column is the timestamp): only
            // other names need the name checked
            if column < NEW && state.kind(column) == ColumnKind::Tag {
                continue;
            }
            let name = batch.str(tag.key);
            if name == TIME_COLUMN {
                return Err(format!(
                    "tag 'time' in table '{}': 'time' is reserved for the timestamp; rename \
                     the tag",
                    state.name
                ));
            }
            if column < NEW {
                return Err(format!(
                    "column '{name}' of table '{}' is {}; it cannot also be a tag",
                    state.name,
                    state.kind(column).describe()
                ));
            }
            self.add(columns, new_cols, tag.key, ColumnKind::Tag)?;
        }
        let tag_cols = new_cols.len();
        for field in batch.fields_of(point) {
            let wrote = field.value.field_type();
            let column = state.resolve(columns, batch, field.key).column;
            let kind = match column {
                ABSENT => None,
                c if c & NEW != 0 => Some(new_cols[(c & !NEW) as usize].1),
                c => Some(state.kind(c)),
            };
            match kind {
                None => {
                    // an existing field column is never `time`: only new names need the check
                    if batch.str(field.key) == TIME_COLUMN {
                        return Err(format!(
                            "field 'time' in table '{}': 'time' is reserved for the timestamp; \
                             rename the field",
                            state.name
                        ));
                    }
                    self.add(columns, new_cols, field.key, ColumnKind::Field(wrote))?;
                }
                Some(ColumnKind::Field(t)) if t == wrote => {}
                Some(ColumnKind::Field(t)) => {
                    let name = batch.str(field.key);
                    let earlier = if column & NEW != 0 && (column & !NEW) as usize >= tag_cols {
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

    /// Lists `sym` as a column the point adds, after the column limit and the naming rule.
    fn add(
        &self,
        columns: &mut ColumnMap,
        new_cols: &mut Vec<(Sym, ColumnKind)>,
        sym: Sym,
        kind: ColumnKind,
    ) -> Result<(), String> {
        let state = self.state;
        let count = state.column_count() + new_cols.len() + 1;
        if count > self.limits.max_columns_per_table {
            return Err(format!(
                "table '{}' would have {count} columns, over the limit of {} \
                 (--max-columns-per-table); write fewer distinct tag and field names",
                state.name, self.limits.max_columns_per_table
            ));
        }
        check_name("column", self.batch.str(sym), self.limits.max_name_bytes)?;
        state.resolve(columns, self.batch, sym).column = NEW | new_cols.len() as u32;
        new_cols.push((sym, kind));
        Ok(())
    }
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
