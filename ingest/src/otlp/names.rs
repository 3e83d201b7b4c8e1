//! OTLP names -> Prometheus-style table and tag names, following the OpenTelemetry
//! "Prometheus and OpenMetrics Compatibility" specification (metric and label name
//! translation) as the Collector's Prometheus translator applies it:
//!
//! - a metric name's runs of characters outside `[a-zA-Z0-9]` become single `_` separators;
//! - its unit becomes a suffix: `s` -> `seconds`, `By` -> `bytes`, `By/s` ->
//!   `bytes_per_second`, `%` -> `percent`; annotations in braces (`{request}`) are dropped;
//!   unit `1` adds `ratio` to gauges and nothing to other kinds; a suffix already in the name
//!   is not added twice;
//! - monotonic cumulative sums end in `_total`;
//! - a name starting with a digit gets a leading `_`;
//! - attribute keys keep `[a-zA-Z0-9_]`, other characters become `_`, and a key starting with a
//!   digit gets `key_` in front.

/// What kind of metric a name is for: the suffixes depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Gauge,
    /// A monotonic sum with cumulative temporality: a Prometheus counter.
    Counter,
    /// A non-monotonic sum (an UpDownCounter): a Prometheus gauge without `_ratio`.
    UpDownSum,
    Histogram,
    Summary,
}

/// The table name of an OTLP metric `name` with unit `unit`, of kind `kind` (histograms and
/// summaries add `_bucket`, `_sum` and `_count` to it).
pub fn metric_name(name: &str, unit: &str, kind: MetricKind) -> String {
    let mut tokens: Vec<&str> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect();
    if kind == MetricKind::Counter {
        // `total` goes last, once
        tokens.retain(|t| *t != "total");
    }
    let mut suffixes = unit_suffixes(unit);
    if unit == "1" && kind == MetricKind::Gauge {
        suffixes.push("ratio".to_string());
    }
    let mut out: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    let already = |out: &[String], s: &str| out.iter().any(|t| t == s);
    for s in suffixes {
        if !s.is_empty() && !already(&out, &s) {
            out.push(s);
        }
    }
    if kind == MetricKind::Counter {
        out.push("total".to_string());
    }
    let mut joined = out.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        joined.insert(0, '_');
    }
    joined
}

/// The tag name of an OTLP attribute key.
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

/// The name tokens a unit adds: `By/s` -> `["bytes", "per", "second"]`.
fn unit_suffixes(unit: &str) -> Vec<String> {
    // annotations in braces say what is counted, not in what unit
    let mut plain = String::with_capacity(unit.len());
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let plain = plain.trim();
    if plain.is_empty() || plain == "1" {
        return Vec::new();
    }
    let (main, per) = match plain.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (plain, None),
    };
    let mut out = Vec::new();
    let push_tokens = |s: &str, out: &mut Vec<String>| {
        out.extend(
            s.split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        );
    };
    if !main.is_empty() && main != "1" {
        push_tokens(unit_word(main), &mut out);
    }
    if let Some(per) = per.filter(|p| !p.is_empty()) {
        out.push("per".to_string());
        push_tokens(per_unit_word(per), &mut out);
    }
    out
}

fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => other,
    }
}

fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::MetricKind::*;
    use super::*;

    #[test]
    fn metric_names_follow_the_prometheus_compatibility_rules() {
        for (name, unit, kind, want) in [
            // the metrics of the Python SDK capture (tests/fixtures/otlp)
            (
                "http.server.requests",
                "1",
                Counter,
                "http_server_requests_total",
            ),
            (
                "http.server.request.duration",
                "s",
                Histogram,
                "http_server_request_duration_seconds",
            ),
            ("net.io", "By", Counter, "net_io_bytes_total"),
            (
                "http.server.active_requests",
                "{request}",
                UpDownSum,
                "http_server_active_requests",
            ),
            (
                "system.memory.utilization",
                "1",
                Gauge,
                "system_memory_utilization_ratio",
            ),
            // cases of the specification and the Collector's translator
            (
                "system.network.io",
                "By/s",
                Gauge,
                "system_network_io_bytes_per_second",
            ),
            ("cpu.utilization", "%", Gauge, "cpu_utilization_percent"),
            ("requests_total", "1", Counter, "requests_total"),
            ("total.requests", "", Counter, "requests_total"),
            ("latency_seconds", "s", Histogram, "latency_seconds"),
            ("disk.io", "KiBy", Counter, "disk_io_kibibytes_total"),
            ("queue..length__", "{item}", Gauge, "queue_length"),
            ("2xx.responses", "", Counter, "_2xx_responses_total"),
            ("temperature", "Cel", Gauge, "temperature_celsius"),
            ("speed", "m/h", Gauge, "speed_meters_per_hour"),
            ("odd", "furlong", Gauge, "odd_furlong"),
            ("rpc.duration", "ms", Summary, "rpc_duration_milliseconds"),
        ] {
            assert_eq!(
                metric_name(name, unit, kind),
                want,
                "{name} {unit} {kind:?}"
            );
        }
    }

    #[test]
    fn attribute_keys_become_label_names() {
        for (key, want) in [
            ("http.route", "http_route"),
            ("http.response.status_code", "http_response_status_code"),
            ("service_name", "service_name"),
            ("k8s.pod-name", "k8s_pod_name"),
            ("1st", "key_1st"),
            ("ünïcode", "_n_code"),
        ] {
            assert_eq!(label_name(key), want, "{key}");
        }
    }
}
