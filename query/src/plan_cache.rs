//! Optimized logical plans of query texts seen before, reused while the catalog is the same.
//!
//! Parsing, resolving and optimizing a short query costs DataFusion about as much as
//! reading an hour of one series (`sluice_query_phase_seconds_total`), and dashboards and
//! alerting send the same texts again and again. A plan is kept for its database, text and
//! readable databases, with the catalog snapshot it was planned against: any change to the
//! catalog (a table, a column, a database) makes it stale, and it is planned anew.
//!
//! Only plans that mean the same whenever they run are kept: they read Sluice tables (whose
//! rows, buffer and files are looked up when the scan is planned, after the cache) and call
//! no function whose value depends on when it is called (`now()`, `random()`), and they have
//! no parameters. Everything from physical planning on is done for each query.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use parking_lot::Mutex;
use sluice_storage::CatalogSnapshot;

use crate::last_cache::NewestRowsTable;
use crate::table_provider::SluiceTable;

/// Query texts longer than this are not kept: the cache's memory stays bounded by its
/// entries.
const MAX_TEXT_BYTES: usize = 16 << 10;

/// What a plan is kept under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PlanKey {
    db: String,
    sql: String,
    readable: Option<Vec<String>>,
}

impl PlanKey {
    /// The key of `sql` in `db` for someone who may read `readable`, if a text that long is
    /// kept at all.
    pub(crate) fn new(db: &str, sql: &str, readable: Option<&[String]>) -> Option<Self> {
        (sql.len() <= MAX_TEXT_BYTES).then(|| PlanKey {
            db: db.to_string(),
            sql: sql.to_string(),
            readable: readable.map(<[String]>::to_vec),
        })
    }
}

struct Entry {
    catalog: Arc<CatalogSnapshot>,
    plan: LogicalPlan,
}

/// Optimized plans by [`PlanKey`], at most `capacity` of them.
pub(crate) struct PlanCache {
    entries: Mutex<HashMap<PlanKey, Entry>>,
    capacity: usize,
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlanCache({} plans)", self.entries.lock().len())
    }
}

impl PlanCache {
    pub(crate) fn new(capacity: usize) -> Self {
        PlanCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The optimized plan kept for `key`, if it was planned against `catalog`.
    pub(crate) fn get(&self, key: &PlanKey, catalog: &Arc<CatalogSnapshot>) -> Option<LogicalPlan> {
        let entries = self.entries.lock();
        let entry = entries.get(key)?;
        Arc::ptr_eq(&entry.catalog, catalog).then(|| entry.plan.clone())
    }

    /// Keeps `optimized`, planned from `planned` against `catalog`, if `planned` means the
    /// same whenever it runs ([`reusable`]). When full, an arbitrary plan makes room: texts
    /// that repeat come back at once.
    pub(crate) fn insert(
        &self,
        key: PlanKey,
        catalog: Arc<CatalogSnapshot>,
        planned: &LogicalPlan,
        optimized: &LogicalPlan,
    ) {
        if self.capacity == 0 || !reusable(planned) {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let stale: Vec<PlanKey> = entries
                .iter()
                .filter(|(_, e)| !Arc::ptr_eq(&e.catalog, &catalog))
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                entries.remove(&k);
            }
            if entries.len() >= self.capacity
                && let Some(k) = entries.keys().next().cloned()
            {
                entries.remove(&k);
            }
        }
        let plan = optimized.clone();
        entries.insert(key, Entry { catalog, plan });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

/// Whether `plan` (as planned, before optimization) gives the same plan whenever it runs:
/// it reads at least one table, only Sluice tables and their newest rows, calls only
/// immutable functions, has no parameters, and is not an `EXPLAIN`.
fn reusable(plan: &LogicalPlan) -> bool {
    let mut tables = 0;
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                let sluice = source_as_provider(&scan.source).is_ok_and(|p| {
                    p.downcast_ref::<SluiceTable>().is_some()
                        || p.downcast_ref::<NewestRowsTable>().is_some()
                });
                tables += 1;
                ok &= sluice;
            }
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::Statement(_) => {
                ok = false
            }
            _ => {}
        }
        let _ = node.apply_expressions(|e| {
            let _ = e.apply(|e| {
                ok &= immutable(e);
                Ok(if ok {
                    TreeNodeRecursion::Continue
                } else {
                    TreeNodeRecursion::Stop
                })
            });
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    ok && tables > 0
}

/// Whether `e` itself (not its children) gives the same value whenever it is evaluated.
fn immutable(e: &Expr) -> bool {
    match e {
        Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Immutable,
        Expr::AggregateFunction(f) => f.func.signature().volatility == Volatility::Immutable,
        Expr::WindowFunction(w) => w.fun.signature().volatility == Volatility::Immutable,
        Expr::Placeholder(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests;
