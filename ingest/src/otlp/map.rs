//! An OTLP export request -> the points of a [`WriteBatch`], as DESIGN.md's mapping says:
//!
//! - gauges and sums: table `<name>` with field `value`; ints and doubles both as Float64;
//! - explicit-bucket histograms: `<name>_bucket` (tag `le`, cumulative counts, ending at
//!   `+Inf`), `<name>_sum` (when the point has a sum) and `<name>_count`;
//! - summaries: `<name>` (tag `quantile`), `<name>_sum`, `<name>_count`;
//! - tags: the point's attributes; `job` (`service.namespace/service.name`) and `instance`
//!   (`service.instance.id`) from the resource; `otel_scope_name`, `otel_scope_version`; the
//!   resource attributes named in [`Options::promote`];
//! - each resource with other attributes also gets a `target_info` row (value 1, at its newest
//!   point's time) holding them as tags, beside `job` and `instance`.
//!
//! What Prometheus cannot represent is not stored, and counted with a reason, for the
//! response's `partial_success`: delta or unspecified temporality (Prometheus series are
//! cumulative), exponential histograms (they would be native histograms), points without a
//! time. Points flagged "no recorded value" are the OTLP form of a stale marker: skipped, and
//! not counted as rejected.

use std::collections::HashMap;

use sluice_proto::otlp::{
    AggregationTemporality, AnyValue, ExportMetricsServiceRequest, KeyValue, Metric,
    NumberDataPoint,
};

use super::names::{MetricKind, label_name, metric_name};
use crate::write::{FieldValue, Sym, WriteBatch};

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

/// How the mapping is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Resource attributes copied onto every series of their resource as tags
    /// (`--otlp-promote-resource-attributes`).
    pub promote: Vec<String>,
}

/// What a request maps to.
#[derive(Debug, Default)]
pub struct Mapped {
    pub batch: WriteBatch,
    /// Data points not stored, with the reasons (each reason once, with its count).
    pub rejected_points: u64,
    pub reasons: Vec<(String, u64)>,
    /// Data points flagged as having no recorded value, skipped.
    pub no_recorded_value: u64,
}

impl Mapped {
    fn reject(&mut self, points: usize, reason: String) {
        if points == 0 {
            return;
        }
        self.rejected_points += points as u64;
        match self.reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += points as u64,
            None => self.reasons.push((reason, points as u64)),
        }
    }

    /// The `partial_success.error_message` for what was rejected, empty when nothing was.
    pub fn error_message(&self) -> String {
        self.reasons
            .iter()
            .map(|(r, n)| format!("{n} data point(s): {r}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Maps `request`; see the module documentation.
pub fn map(request: &ExportMetricsServiceRequest, options: &Options) -> Mapped {
    let mut m = Mapper {
        out: Mapped::default(),
        value: Sym(0),
        tags: Vec::new(),
        syms: Vec::new(),
        key: Vec::new(),
        ranges: HashMap::new(),
    };
    m.value = m.out.batch.symbols.intern("value");
    for (i, rm) in request.resource_metrics.iter().enumerate() {
        let attributes = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let resource = ResourceTags::new(attributes, options);
        let mut newest = None;
        for sm in &rm.scope_metrics {
            let mut scope = resource.tags.clone();
            if let Some(s) = &sm.scope {
                if !s.name.is_empty() {
                    scope.push(("otel_scope_name".into(), s.name.clone()));
                }
                if !s.version.is_empty() {
                    scope.push(("otel_scope_version".into(), s.version.clone()));
                }
            }
            for metric in &sm.metrics {
                if let Some(t) = m.metric(metric, &scope, i as u32 + 1) {
                    newest = newest.max(Some(t));
                }
            }
        }
        if let Some(time) = newest
            && !resource.info.is_empty()
        {
            m.tags.clear();
            m.tags.extend(resource.identity.iter().cloned());
            m.tags.extend(resource.info.iter().cloned());
            m.intern_tags();
            let table = m.intern("target_info");
            m.row(table, None, 1.0, time, i as u32 + 1);
        }
    }
    m.out
}

/// What a resource contributes to its series' tags.
struct ResourceTags {
    /// `job`, `instance`.
    identity: Vec<(String, String)>,
    /// `identity` plus the promoted attributes: every series of the resource carries them.
    tags: Vec<(String, String)>,
    /// The attributes for `target_info`: all but the ones `job` and `instance` come from.
    info: Vec<(String, String)>,
}

impl ResourceTags {
    fn new(attributes: &[KeyValue], options: &Options) -> Self {
        let get = |key: &str| {
            attributes
                .iter()
                .find(|a| a.key == key)
                .map(|a| value_string(a.value.as_ref()))
                .filter(|v| !v.is_empty())
        };
        let mut identity = Vec::new();
        if let Some(name) = get("service.name") {
            let job = match get("service.namespace") {
                Some(ns) => format!("{ns}/{name}"),
                None => name,
            };
            identity.push(("job".to_string(), job));
        }
        if let Some(instance) = get("service.instance.id") {
            identity.push(("instance".to_string(), instance));
        }
        let mut tags = identity.clone();
        for key in &options.promote {
            if let Some(v) = get(key) {
                tags.push((label_name(key), v));
            }
        }
        let info = attributes
            .iter()
            .filter(|a| {
                !matches!(
                    a.key.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            })
            .map(|a| (label_name(&a.key), value_string(a.value.as_ref())))
            .collect();
        ResourceTags {
            identity,
            tags,
            info,
        }
    }
}

struct Mapper {
    out: Mapped,
    value: Sym,
    /// Scratch: the tags of the data point being added.
    tags: Vec<(String, String)>,
    /// Scratch: the same, interned (empty values left out), for all the point's rows.
    syms: Vec<(Sym, Sym)>,
    /// Scratch: the tags of one row (`syms` and its `le` or `quantile`).
    key: Vec<(Sym, Sym)>,
    /// The tag range of each distinct tag set so far: the metrics of one resource share
    /// attribute sets, and storage checks and resolves each tag range of a batch once.
    ranges: HashMap<Vec<(Sym, Sym)>, (u32, u32)>,
}

impl Mapper {
    /// Adds the points of `metric`; returns the newest time stored.
    fn metric(&mut self, metric: &Metric, scope: &[(String, String)], line: u32) -> Option<i64> {
        let mut newest = None;
        let cumulative = |t: i32| t == AggregationTemporality::Cumulative as i32;
        let not_cumulative = |t: i32| {
            format!(
                "metric '{}' has {} temporality; Prometheus series are cumulative: configure \
                 the exporter for cumulative temporality \
                 (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative)",
                metric.name,
                if t == AggregationTemporality::Delta as i32 {
                    "delta"
                } else {
                    "unspecified"
                }
            )
        };
        if let Some(g) = &metric.gauge {
            let name = metric_name(&metric.name, &metric.unit, MetricKind::Gauge);
            newest = self.numbers(&name, &g.data_points, scope, line);
        } else if let Some(s) = &metric.sum {
            if !cumulative(s.aggregation_temporality) {
                self.out.reject(
                    s.data_points.len(),
                    not_cumulative(s.aggregation_temporality),
                );
                return None;
            }
            let kind = if s.is_monotonic {
                MetricKind::Counter
            } else {
                MetricKind::UpDownSum
            };
            let name = metric_name(&metric.name, &metric.unit, kind);
            newest = self.numbers(&name, &s.data_points, scope, line);
        } else if let Some(h) = &metric.histogram {
            if !cumulative(h.aggregation_temporality) {
                self.out.reject(
                    h.data_points.len(),
                    not_cumulative(h.aggregation_temporality),
                );
                return None;
            }
            let name = metric_name(&metric.name, &metric.unit, MetricKind::Histogram);
            let bucket = self.intern(&format!("{name}_bucket"));
            let sum = self.intern(&format!("{name}_sum"));
            let count = self.intern(&format!("{name}_count"));
            for p in &h.data_points {
                let Some(time) = self.time(&metric.name, p.time_unix_nano, p.flags) else {
                    continue;
                };
                if !p.bucket_counts.is_empty()
                    && p.bucket_counts.len() != p.explicit_bounds.len() + 1
                {
                    self.out.reject(
                        1,
                        format!(
                            "histogram '{}' has {} bucket counts for {} bounds (it needs one \
                             more count than bounds)",
                            metric.name,
                            p.bucket_counts.len(),
                            p.explicit_bounds.len()
                        ),
                    );
                    continue;
                }
                self.point_tags(scope, &p.attributes);
                let mut cumulative_count = 0u64;
                for (i, n) in p.bucket_counts.iter().enumerate() {
                    cumulative_count = cumulative_count.saturating_add(*n);
                    let le = match p.explicit_bounds.get(i) {
                        Some(b) => float_label(*b),
                        None => "+Inf".to_string(),
                    };
                    let le = Some(("le", le.as_str()));
                    self.row(bucket, le, cumulative_count as f64, time, line);
                }
                if p.bucket_counts.is_empty() {
                    // no buckets: the +Inf bucket is the count
                    self.row(bucket, Some(("le", "+Inf")), p.count as f64, time, line);
                }
                if let Some(s) = p.sum {
                    self.row(sum, None, s, time, line);
                }
                self.row(count, None, p.count as f64, time, line);
                newest = newest.max(Some(time));
            }
        } else if let Some(e) = &metric.exponential_histogram {
            self.out.reject(
                e.data_points.len(),
                format!(
                    "metric '{}' is an exponential histogram, which Sluice does not store yet (it \
                     would be a Prometheus native histogram); configure the SDK's view for \
                     explicit buckets",
                    metric.name
                ),
            );
        } else if let Some(s) = &metric.summary {
            let name = metric_name(&metric.name, &metric.unit, MetricKind::Summary);
            let sum = self.intern(&format!("{name}_sum"));
            let count = self.intern(&format!("{name}_count"));
            let name = self.intern(&name);
            for p in &s.data_points {
                let Some(time) = self.time(&metric.name, p.time_unix_nano, p.flags) else {
                    continue;
                };
                self.point_tags(scope, &p.attributes);
                for q in &p.quantile_values {
                    let quantile = float_label(q.quantile);
                    let quantile = Some(("quantile", quantile.as_str()));
                    self.row(name, quantile, q.value, time, line);
                }
                self.row(sum, None, p.sum, time, line);
                self.row(count, None, p.count as f64, time, line);
                newest = newest.max(Some(time));
            }
        }
        newest
    }

    /// The points of a gauge or sum stored as table `table`; returns the newest time stored.
    fn numbers(
        &mut self,
        table: &str,
        points: &[NumberDataPoint],
        scope: &[(String, String)],
        line: u32,
    ) -> Option<i64> {
        let table_sym = self.intern(table);
        let mut newest = None;
        for p in points {
            let Some(time) = self.time(table, p.time_unix_nano, p.flags) else {
                continue;
            };
            let Some(value) = p.as_double.or(p.as_int.map(|v| v as f64)) else {
                self.out.reject(
                    1,
                    format!("a data point of '{table}' has neither as_double nor as_int"),
                );
                continue;
            };
            self.point_tags(scope, &p.attributes);
            self.row(table_sym, None, value, time, line);
            newest = newest.max(Some(time));
        }
        newest
    }

    /// The time of a point to store, or `None` (counted) for one not to.
    fn time(&mut self, metric: &str, time_unix_nano: u64, flags: u32) -> Option<i64> {
        if flags & NO_RECORDED_VALUE != 0 {
            self.out.no_recorded_value += 1;
            return None;
        }
        match i64::try_from(time_unix_nano) {
            Ok(t) if t > 0 => Some(t),
            _ => {
                self.out.reject(
                    1,
                    format!("a data point of '{metric}' has no time (time_unix_nano)"),
                );
                None
            }
        }
    }

    /// Fills `self.tags` and `self.syms` with `scope`'s tags and the point's attributes;
    /// attributes whose names become the same label are joined with `;`, as the Collector's
    /// translator does.
    fn point_tags(&mut self, scope: &[(String, String)], attributes: &[KeyValue]) {
        self.tags.clear();
        self.tags.extend(scope.iter().cloned());
        for a in attributes {
            let name = label_name(&a.key);
            let value = value_string(a.value.as_ref());
            match self.tags.iter_mut().find(|(k, _)| *k == name) {
                Some((_, v)) => {
                    v.push(';');
                    v.push_str(&value);
                }
                None => self.tags.push((name, value)),
            }
        }
        self.intern_tags();
    }

    /// Interns `self.tags` into `self.syms`, leaving empty values out.
    fn intern_tags(&mut self) {
        let symbols = &mut self.out.batch.symbols;
        self.syms.clear();
        for (k, v) in &self.tags {
            if !v.is_empty() {
                self.syms.push((symbols.intern(k), symbols.intern(v)));
            }
        }
    }

    fn intern(&mut self, s: &str) -> Sym {
        self.out.batch.symbols.intern(s)
    }

    /// Adds one row: table `table`, the tags in `self.syms` and `extra`, field `value`.
    fn row(&mut self, table: Sym, extra: Option<(&str, &str)>, value: f64, time: i64, line: u32) {
        let batch = &mut self.out.batch;
        self.key.clear();
        self.key.extend_from_slice(&self.syms);
        if let Some((k, v)) = extra {
            self.key
                .push((batch.symbols.intern(k), batch.symbols.intern(v)));
        }
        let tags = match self.ranges.get(&self.key) {
            Some(&range) => range,
            None => {
                let start = batch.begin_tags();
                for &(k, v) in &self.key {
                    batch.push_tag(k, v);
                }
                let range = batch.end_tags(start);
                self.ranges.insert(self.key.clone(), range);
                range
            }
        };
        let fields = batch.begin_fields();
        batch.push_field(self.value, FieldValue::F64(value));
        batch.push_point(table, tags, fields, time, line);
    }
}

/// An attribute value as a tag value: strings as they are, numbers and booleans as text,
/// arrays and maps as JSON.
fn value_string(value: Option<&AnyValue>) -> String {
    let Some(v) = value else {
        return String::new();
    };
    if let Some(s) = &v.string_value {
        s.clone()
    } else if let Some(b) = v.bool_value {
        b.to_string()
    } else if let Some(i) = v.int_value {
        i.to_string()
    } else if let Some(d) = v.double_value {
        float_label(d)
    } else if let Some(a) = &v.array_value {
        let items: Vec<String> = a.values.iter().map(|x| json(Some(x))).collect();
        format!("[{}]", items.join(","))
    } else if let Some(kv) = &v.kvlist_value {
        let items: Vec<String> = kv
            .values
            .iter()
            .map(|x| format!("{}:{}", json_string(&x.key), json(x.value.as_ref())))
            .collect();
        format!("{{{}}}", items.join(","))
    } else if let Some(b) = &v.bytes_value {
        b.iter().map(|x| format!("{x:02x}")).collect()
    } else {
        String::new()
    }
}

fn json(value: Option<&AnyValue>) -> String {
    match value {
        Some(v) if v.string_value.is_some() || v.bytes_value.is_some() => {
            json_string(&value_string(Some(v)))
        }
        Some(v) if v.double_value.is_some_and(|d| !d.is_finite()) => {
            json_string(&value_string(Some(v)))
        }
        Some(_) => value_string(value),
        None => "null".to_string(),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A float as Prometheus writes it in `le` and `quantile`: `+Inf`, `-Inf`, `NaN`, or the
/// shortest decimal that reads back the same.
fn float_label(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests;
