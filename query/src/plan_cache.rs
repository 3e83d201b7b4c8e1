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
//! no parameters. Templates are kept beside them: a text with its timestamps made
//! placeholders, whose plan texts of that shape bind their own timestamps into
//! (`plan_template.rs`).
//!
//! Physical planning costs a short query as much again, and its plan holds what the scans
//! read. Beside the optimized plan an entry keeps the last physical plan made from it, with
//! the [`Sources`] it was made for: the files each table scan reads, when that is all they
//! read (no buffered rows in their time range, see [`SluiceTable::files_only`]). A query
//! whose scans would read the same files runs a copy of that plan with its state reset
//! (DataFusion's `reset_plan_states`) instead of planning it again. Plans with dynamic
//! filters (`ORDER BY .. LIMIT`, joins, `min`/`max` without groups) are not kept: a filter
//! pushed into a scan outlives the reset of the operator that fills it. A Parquet source
//! keeps the metrics of each file it opened; reset, a table's scan gives its copy sources of
//! its own (`SluiceScanExec`), so copies do not share them and they do not grow run after
//! run. A plan whose copy's scans would not show the same as its own (a scan that did not
//! copy whole) is not kept.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionConfig;
use parking_lot::Mutex;
use sluice_storage::CatalogSnapshot;

use crate::last_cache::NewestRowsTable;
use crate::table_provider::{SluiceScanExec, SluiceTable};

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

/// What a physical plan was made for besides its optimized plan: the ids of the files each
/// table scan reads (in the order the plan's scans are walked), and whether it runs in one
/// partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sources {
    pub(crate) single_partition: bool,
    pub(crate) files: Vec<Vec<u64>>,
}

impl Sources {
    /// The sources of `plan`'s scans, if they are all Sluice tables reading files only.
    pub(crate) fn of(plan: &LogicalPlan, single_partition: bool) -> Option<Self> {
        let mut files = Vec::new();
        let mut ok = true;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let ids = source_as_provider(&scan.source).ok().and_then(|p| {
                    p.downcast_ref::<SluiceTable>()
                        .and_then(|t| t.files_only(&scan.filters))
                });
                match ids {
                    Some(ids) => files.push(ids),
                    None => ok = false,
                }
            }
            Ok(if ok {
                TreeNodeRecursion::Continue
            } else {
                TreeNodeRecursion::Stop
            })
        });
        ok.then_some(Sources {
            single_partition,
            files,
        })
    }
}

struct Entry {
    catalog: Arc<CatalogSnapshot>,
    plan: LogicalPlan,
    /// The last physical plan made from `plan`, never executed itself: queries run copies.
    physical: Option<Physical>,
}

struct Physical {
    made_for: Sources,
    plan: Arc<dyn ExecutionPlan>,
    /// The configuration and session id of the session it was planned in: what a task
    /// context to run a copy needs, made without a session.
    config: SessionConfig,
    session_id: String,
}

/// A copy of a kept physical plan, ready to run, with what a task context for it needs.
pub(crate) struct PhysicalCopy {
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    pub(crate) config: SessionConfig,
    pub(crate) session_id: String,
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
        self.get_if(key, catalog, |_| true)
    }

    /// The optimized plan kept for `key` against `catalog`, if a physical plan made from it
    /// is kept too: only then is it worth working out the sources [`PlanCache::physical`]
    /// needs (a plan over buffered rows never has one).
    pub(crate) fn get_with_physical(
        &self,
        key: &PlanKey,
        catalog: &Arc<CatalogSnapshot>,
    ) -> Option<LogicalPlan> {
        self.get_if(key, catalog, |e| e.physical.is_some())
    }

    fn get_if(
        &self,
        key: &PlanKey,
        catalog: &Arc<CatalogSnapshot>,
        wanted: impl Fn(&Entry) -> bool,
    ) -> Option<LogicalPlan> {
        let entries = self.entries.lock();
        let entry = entries.get(key)?;
        (Arc::ptr_eq(&entry.catalog, catalog) && wanted(entry)).then(|| entry.plan.clone())
    }

    /// Keeps `optimized`, planned from `planned` against `catalog`, if `planned` means the
    /// same whenever it runs ([`reusable`]); whether it was kept. When full, an arbitrary
    /// plan makes room: texts that repeat come back at once.
    pub(crate) fn insert(
        &self,
        key: PlanKey,
        catalog: Arc<CatalogSnapshot>,
        planned: &LogicalPlan,
        optimized: &LogicalPlan,
    ) -> bool {
        if !reusable(planned, false) {
            return false;
        }
        self.keep(key, catalog, optimized)
    }

    /// Keeps `optimized`, the plan of a template (`plan_template.rs`) whose placeholders
    /// stand for timestamps, for texts that differ from it only in those. Check it first
    /// with [`template_reusable`].
    pub(crate) fn insert_template(
        &self,
        key: PlanKey,
        catalog: Arc<CatalogSnapshot>,
        optimized: &LogicalPlan,
    ) -> bool {
        self.keep(key, catalog, optimized)
    }

    fn keep(&self, key: PlanKey, catalog: Arc<CatalogSnapshot>, optimized: &LogicalPlan) -> bool {
        if self.capacity == 0 {
            return false;
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
        entries.insert(
            key,
            Entry {
                catalog,
                plan,
                physical: None,
            },
        );
        true
    }

    /// A copy, ready to run, of the physical plan kept for `key` if it was made for
    /// `sources` against `catalog`.
    pub(crate) fn physical(
        &self,
        key: &PlanKey,
        catalog: &Arc<CatalogSnapshot>,
        sources: &Sources,
    ) -> Option<PhysicalCopy> {
        let (kept, config, session_id) = {
            let mut entries = self.entries.lock();
            let entry = entries.get_mut(key)?;
            if !Arc::ptr_eq(&entry.catalog, catalog) {
                return None;
            }
            let physical = entry.physical.as_ref()?;
            if physical.made_for != *sources {
                entry.physical = None;
                return None;
            }
            (
                physical.plan.clone(),
                physical.config.clone(),
                physical.session_id.clone(),
            )
        };
        let plan = datafusion::physical_plan::execution_plan::reset_plan_states(kept).ok()?;
        Some(PhysicalCopy {
            plan,
            config,
            session_id,
        })
    }

    /// Keeps `plan`, made for `sources` from the optimized plan kept for `key` against
    /// `catalog` in a session with `config` and `session_id`, if it can run again
    /// ([`rerunnable`]). Call before `plan` runs: what is kept is never run itself.
    pub(crate) fn insert_physical(
        &self,
        key: &PlanKey,
        catalog: &Arc<CatalogSnapshot>,
        sources: Sources,
        plan: &Arc<dyn ExecutionPlan>,
        (config, session_id): (&SessionConfig, String),
    ) {
        if !rerunnable(plan) {
            return;
        }
        let Ok(kept) = datafusion::physical_plan::execution_plan::reset_plan_states(plan.clone())
        else {
            return;
        };
        if scans_shown(&kept) != scans_shown(plan) {
            return;
        }
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get_mut(key)
            && Arc::ptr_eq(&entry.catalog, catalog)
        {
            entry.physical = Some(Physical {
                made_for: sources,
                plan: kept,
                config: config.clone(),
                session_id,
            });
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

/// Whether `plan`, a template as planned (`plan_template.rs`), may be kept: as
/// [`reusable`], its placeholders aside.
pub(crate) fn template_reusable(plan: &LogicalPlan) -> bool {
    reusable(plan, true)
}

/// Whether `plan` (as planned, before optimization) gives the same plan whenever it runs:
/// it reads at least one table, only Sluice tables and their newest rows, calls only
/// immutable functions, has no parameters (a template's placeholders with `placeholders`),
/// and is not an `EXPLAIN`.
fn reusable(plan: &LogicalPlan, placeholders: bool) -> bool {
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
                ok &= immutable(e) || (placeholders && matches!(e, Expr::Placeholder(_)));
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

/// Whether `plan` gives the same rows when its copies run again (no operator in it makes a
/// dynamic filter, and no expression in it is one), and would be planned no better next time
/// (its scans' files were pruned when it was planned).
fn rerunnable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut stack = vec![plan];
    while let Some(node) = stack.pop() {
        if !node.dynamic_expressions_produced().is_empty() {
            return false;
        }
        if node
            .downcast_ref::<SluiceScanExec>()
            .is_some_and(SluiceScanExec::better_planned_again)
        {
            return false;
        }
        let mut dynamic = false;
        let _ = node.apply_expressions(&mut |e| {
            e.apply(|e| {
                dynamic |= e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some();
                Ok(if dynamic {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        });
        if dynamic {
            return false;
        }
        stack.extend(node.children());
    }
    true
}

/// How `plan`'s data source scans show in `EXPLAIN` (their files, projection, predicate and
/// order): what a copy with new Parquet sources must show the same.
fn scans_shown(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut shown = Vec::new();
    let mut stack = vec![plan];
    while let Some(node) = stack.pop() {
        if node.downcast_ref::<DataSourceExec>().is_some() {
            shown.push(displayable(node.as_ref()).one_line().to_string());
        }
        stack.extend(node.children());
    }
    shown
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
