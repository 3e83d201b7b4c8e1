//! Which tables and fields PromQL sees as metrics, and under which names.
//!
//! A table with a numeric `value` field is the metric named after the table (what remote
//! write and OTLP create); every other numeric field is the metric `<table>_<field>`, as
//! VictoriaMetrics names line protocol's fields, so the TSBS `cpu` table answers
//! `cpu_usage_user`. Tags are labels. String and boolean fields are not metrics.

use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};
use sluice_model::FieldType;
use sluice_storage::catalog::schema::{ColumnKind, DatabaseSchema, TableSchema};

use super::labels::METRIC_NAME;

/// One metric: a numeric field of a table.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub table: Arc<TableSchema>,
    pub field: Arc<str>,
}

/// The field a table's metric of its own name is kept in.
pub const VALUE_FIELD: &str = "value";

/// The metric name of `field` in `table`.
pub fn metric_name(table: &str, field: &str) -> String {
    if field == VALUE_FIELD {
        table.to_string()
    } else {
        format!("{table}_{field}")
    }
}

/// Every metric of database `db`, by table then field (stale-marker tables hold none).
pub fn metrics(db: &DatabaseSchema) -> impl Iterator<Item = Metric> + '_ {
    db.tables
        .values()
        .filter(|t| !sluice_model::staleness::is_stale_table(&t.name))
        .flat_map(|table| {
            table.columns().iter().filter_map(move |c| match c.kind {
                ColumnKind::Field(FieldType::Float | FieldType::Integer | FieldType::UInteger) => {
                    Some(Metric {
                        name: metric_name(&table.name, &c.name),
                        table: table.clone(),
                        field: c.name.clone(),
                    })
                }
                _ => None,
            })
        })
}

/// The tables a selector's matchers can match, each with the fields it reads: a metric
/// matches when every `__name__` matcher matches its name and every other matcher can match
/// some series of its table (a matcher on a label the table does not have sees `""`).
pub fn matching(
    db: &DatabaseSchema,
    matchers: &[Matcher],
) -> Vec<(Arc<TableSchema>, Vec<Arc<str>>)> {
    let mut out: Vec<(Arc<TableSchema>, Vec<Arc<str>>)> = Vec::new();
    // an equality on the name is a lookup, not a scan of every metric
    let exact = matchers
        .iter()
        .find(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal))
        .map(|m| m.value.as_str());
    for metric in metrics(db) {
        if exact.is_some_and(|n| n != metric.name) {
            continue;
        }
        let possible = matchers.iter().all(|m| {
            if m.name == METRIC_NAME {
                m.is_match(&metric.name)
            } else {
                metric
                    .table
                    .column(&m.name)
                    .is_some_and(|c| c.kind == ColumnKind::Tag)
                    || m.is_match("")
            }
        });
        if !possible {
            continue;
        }
        match out.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &metric.table)) {
            Some((_, fields)) => fields.push(metric.field),
            None => out.push((metric.table, vec![metric.field])),
        }
    }
    out
}
