//! PromQL over Sluice, with Prometheus 3's semantics for float samples.
//!
//! A query is parsed by the `promql-parser` crate, its selectors are read from storage
//! through the SQL executor ([`select`]: the write buffer and the files, merged by primary key
//! as SQL sees them), and the expression is evaluated natively over per-series sample arrays
//! ([`eval`]), as Prometheus and VictoriaMetrics do. Which tables and fields are metrics is
//! [`metrics`]'s to say. [`response`] writes answers as Prometheus's HTTP API does.

pub mod aggregate;
pub mod binary;
pub mod error;
pub mod eval;
pub mod functions;
pub mod labels;
pub mod metrics;
pub mod response;
pub mod select;
pub mod value;
pub mod xor_chunk;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use promql_parser::label::Matcher;
use promql_parser::parser::Expr;
use promql_parser::parser::value::ValueType;

use crate::QueryError;
pub use error::PromError;
use eval::{Evaluator, Selection, matcher_sets, plan_selections, plan_windows};
pub use labels::Labels;
use select::{Budget, Request, Source, select, select_all, select_label_sets, select_windows};
pub use value::RawSeries;
pub use value::{Answer, Series, Steps, Value};

/// How PromQL queries are evaluated.
#[derive(Debug, Clone)]
pub struct PromConfig {
    /// How far back an instant selector looks for a sample (`--promql-lookback-delta`).
    pub lookback: Duration,
    /// Most samples one query may hold (`--promql-max-samples`).
    pub max_samples: usize,
    /// Longest a query may run, unless it asks for less.
    pub timeout: Duration,
    /// The step of subqueries that give none (Prometheus's evaluation interval).
    pub default_subquery_step: Duration,
    /// Most steps a range query may have (Prometheus refuses over 11,000).
    pub max_points_per_series: usize,
}

impl Default for PromConfig {
    fn default() -> Self {
        PromConfig {
            lookback: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step: Duration::from_secs(60),
            max_points_per_series: 11_000,
        }
    }
}

/// The parsed query, or Prometheus's parse error text.
pub fn parse(query: &str) -> Result<Expr, PromError> {
    promql_parser::parser::parse(query).map_err(|e| {
        PromError::BadData(format!(
            "invalid parameter \"query\": {}",
            parse_message(query, &e)
        ))
    })
}

/// The parser's message with the position Prometheus gives (`1:5: parse error: ...`) when
/// the parser does not say where.
fn parse_message(query: &str, message: &str) -> String {
    if message.starts_with(|c: char| c.is_ascii_digit()) {
        return message.to_string();
    }
    let line = query.lines().count().max(1);
    let col = query.lines().last().map_or(0, |l| l.chars().count()) + 1;
    if message.contains("parse error") {
        format!("{line}:{col}: {message}")
    } else {
        format!("{line}:{col}: parse error: {message}")
    }
}

/// Parsed queries by their text, so that a dashboard's repeated queries are parsed once and
/// their regular expressions keep what they have learnt (their lazy DFAs). Bounded: when
/// full, it starts over.
#[derive(Debug, Default)]
pub struct ParseCache {
    parsed: parking_lot::Mutex<HashMap<String, Arc<Expr>>>,
}

impl ParseCache {
    /// Texts kept at most.
    const ENTRIES: usize = 1024;

    /// `query` parsed, from the cache or now.
    pub fn parse(&self, query: &str) -> Result<Arc<Expr>, PromError> {
        if let Some(e) = self.parsed.lock().get(query) {
            return Ok(e.clone());
        }
        let expr = Arc::new(parse(query)?);
        let mut parsed = self.parsed.lock();
        if parsed.len() >= Self::ENTRIES {
            parsed.clear();
        }
        parsed.insert(query.to_string(), expr.clone());
        Ok(expr)
    }
}

/// The series of a selector's `or` alternatives, each label set once (the first one's),
/// in order. One alternative (the usual selector) is taken as it is.
fn each_once<T>(mut sets: Vec<Vec<T>>, labels: impl Fn(&T) -> &Labels) -> Vec<T> {
    if sets.len() <= 1 {
        return sets.pop().unwrap_or_default();
    }
    let mut seen: std::collections::HashSet<Labels> = std::collections::HashSet::new();
    sets.into_iter()
        .flatten()
        .filter(|s| seen.insert(labels(s).clone()))
        .collect()
}

/// Evaluates PromQL over one database.
pub struct PromQl<'a> {
    pub source: Source<'a>,
    pub config: &'a PromConfig,
    pub parsed: &'a ParseCache,
}

impl<'a> PromQl<'a> {
    /// A PromQL evaluator reading `db` through `executor`, as someone who may read only
    /// `readable` (`None`: everything).
    pub fn new(
        executor: &'a crate::QueryExecutor,
        db: &'a str,
        readable: Option<&'a [String]>,
        config: &'a PromConfig,
        parsed: &'a ParseCache,
    ) -> Self {
        PromQl {
            source: Source {
                executor,
                db,
                readable,
            },
            config,
            parsed,
        }
    }

    /// `query` at time `t` (ms).
    pub async fn instant(
        &self,
        query: &str,
        t: i64,
        timeout: Option<Duration>,
    ) -> Result<Answer, PromError> {
        let expr = self.parsed.parse(query)?;
        self.run(&expr, Steps::instant(t), timeout).await
    }

    /// `query` from `start` to `end` every `step` (ms).
    pub async fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        timeout: Option<Duration>,
    ) -> Result<Answer, PromError> {
        if end < start {
            return Err(PromError::BadData(
                "invalid parameter \"end\": end timestamp must not be before start time".into(),
            ));
        }
        if step <= 0 {
            return Err(PromError::BadData(
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        let count = (end - start) / step + 1;
        if count as u64 > self.config.max_points_per_series as u64 {
            return Err(PromError::BadData(format!(
                "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                self.config.max_points_per_series
            )));
        }
        let expr = self.parsed.parse(query)?;
        match expr.value_type() {
            ValueType::Scalar | ValueType::Vector => {}
            other => {
                return Err(PromError::BadData(format!(
                    "invalid parameter \"query\": invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    match other {
                        ValueType::Matrix => "range vector",
                        ValueType::String => "string",
                        _ => "unknown",
                    }
                )));
            }
        }
        let steps = Steps {
            start,
            step,
            count: count as usize,
        };
        self.run(&expr, steps, timeout).await
    }

    async fn run(
        &self,
        expr: &Expr,
        steps: Steps,
        timeout: Option<Duration>,
    ) -> Result<Answer, PromError> {
        let timeout = timeout.map_or(self.config.timeout, |t| t.min(self.config.timeout));
        let started = Instant::now();
        let lookback = eval::millis(&self.config.lookback);
        let default_step = eval::millis(&self.config.default_subquery_step);
        let work = async {
            let mut selections: Vec<Selection<'_>> = Vec::new();
            plan_selections(
                expr,
                (steps.start, steps.end()),
                (steps.start, steps.end()),
                lookback,
                default_step,
                &mut selections,
            );
            let mut budget = Budget {
                limit: self.config.max_samples,
                used: 0,
            };
            // windows the scans aggregate themselves; their selectors are not read raw
            let mut windowed = Vec::new();
            plan_windows(expr, steps, &mut windowed);
            let mut windows = HashMap::new();
            for w in &windowed {
                let mut sets = Vec::new();
                for set in matcher_sets(w.selector) {
                    sets.push(select_windows(self.source, &set, w.windows).await?);
                }
                let series = each_once(sets, |s: &Series| &s.labels);
                for s in &series {
                    budget.take(s.points.iter().filter(|p| p.is_some()).count())?;
                }
                windows.insert(eval::key(w.selector), series);
            }
            selections.retain(|s| !windows.contains_key(&eval::key(s.selector)));
            // every selector's `or` alternatives, read together: scans of one table that
            // would read the same rows are one scan
            let sets: Vec<(usize, Vec<Matcher>)> = selections
                .iter()
                .enumerate()
                .flat_map(|(i, s)| matcher_sets(s.selector).into_iter().map(move |m| (i, m)))
                .collect();
            let requests: Vec<Request<'_>> = sets
                .iter()
                .map(|(i, matchers)| Request {
                    matchers,
                    after: selections[*i].after,
                    until: selections[*i].until,
                })
                .collect();
            let mut read: Vec<Vec<Vec<RawSeries>>> =
                selections.iter().map(|_| Vec::new()).collect();
            let series = select_all(self.source, &requests, &mut budget).await?;
            for ((i, _), series) in sets.iter().zip(series) {
                read[*i].push(series);
            }
            let mut data: HashMap<usize, Vec<RawSeries>> = HashMap::new();
            for (s, sets) in selections.iter().zip(read) {
                data.insert(
                    eval::key(s.selector),
                    each_once(sets, |s: &RawSeries| &s.labels),
                );
            }
            let mut ev = Evaluator {
                data,
                windows,
                lookback,
                start: steps.start,
                end: steps.end(),
                default_step,
                budget,
                deadline: Some((started + timeout, timeout)),
            };
            let value = value::drop_names(ev.eval(expr, steps)?)?;
            Ok(Answer { value, steps })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r.map_err(|e| match e {
                PromError::Query(QueryError::Timeout(_)) => PromError::Timeout(timeout),
                e => e,
            }),
            Err(_) => Err(PromError::Timeout(timeout)),
        }
    }

    /// The samples (stale markers among them, as Prometheus keeps them) in `[start, end]`
    /// (ms) of each series matching all of `matchers`: what remote read answers.
    pub async fn samples(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<RawSeries>, PromError> {
        let mut budget = Budget {
            limit: self.config.max_samples,
            used: 0,
        };
        let mut series = select(self.source, matchers, start - 1, end, &mut budget).await?;
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(series)
    }

    /// The label sets of the series matching any of `selectors` with a sample in
    /// `[start, end]` (ms), sorted, at most `limit`.
    pub async fn series(
        &self,
        selectors: &[String],
        start: i64,
        end: i64,
        limit: Option<usize>,
    ) -> Result<Vec<Labels>, PromError> {
        let mut set: BTreeSet<Labels> = BTreeSet::new();
        for m in self.matcher_sets(selectors)? {
            set.extend(select_label_sets(self.source, &m, start - 1, end).await?);
        }
        Ok(set.into_iter().take(limit.unwrap_or(usize::MAX)).collect())
    }

    /// Label names: of the series matching `selectors` in `[start, end]` if any are given,
    /// else of every metric's table (with `__name__`).
    pub async fn label_names(
        &self,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, PromError> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        if selectors.is_empty() {
            if let Some(db) = self.source.schema() {
                for m in metrics::metrics(&db) {
                    names.insert(labels::METRIC_NAME.to_string());
                    for c in m.table.columns() {
                        if c.kind == sluice_storage::catalog::schema::ColumnKind::Tag {
                            names.insert(c.name.to_string());
                        }
                    }
                }
            }
        } else {
            for s in self.series(selectors, start, end, None).await? {
                for (k, _) in s.pairs() {
                    names.insert(k.to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// The values of label `name`: of the series matching `selectors` in `[start, end]`, or
    /// of all series there if none are given (metric names come from the catalog).
    pub async fn label_values(
        &self,
        name: &str,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, PromError> {
        let mut values: BTreeSet<String> = BTreeSet::new();
        if selectors.is_empty() && name == labels::METRIC_NAME {
            if let Some(db) = self.source.schema() {
                values.extend(metrics::metrics(&db).map(|m| m.name));
            }
            return Ok(values.into_iter().collect());
        }
        let selectors: Vec<String> = if selectors.is_empty() {
            vec![format!("{{{name}=~\".+\"}}")]
        } else {
            selectors.to_vec()
        };
        for s in self.series(&selectors, start, end, None).await? {
            let v = s.get(name);
            if !v.is_empty() {
                values.insert(v.to_string());
            }
        }
        Ok(values.into_iter().collect())
    }

    /// The matcher lists of series selectors (`match[]`), each `or` alternative a list.
    fn matcher_sets(&self, selectors: &[String]) -> Result<Vec<Vec<Matcher>>, PromError> {
        let mut out = Vec::new();
        for s in selectors {
            let expr = promql_parser::parser::parse(s).map_err(|e| {
                PromError::BadData(format!(
                    "invalid parameter \"match[]\": {}",
                    parse_message(s, &e)
                ))
            })?;
            match expr {
                Expr::VectorSelector(vs) => out.extend(matcher_sets(&vs)),
                _ => {
                    return Err(PromError::BadData(format!(
                        "invalid parameter \"match[]\": {s} is not a series selector"
                    )));
                }
            }
        }
        Ok(out)
    }
}
