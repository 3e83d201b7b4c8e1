//! Answers as Prometheus's HTTP API writes them: values as strings in Go's shortest
//! notation, timestamps as seconds, series ordered as Prometheus orders them.

use std::fmt::Write;

use super::labels::Labels;
use super::value::{Answer, Series, Steps, Value};

/// A float as Prometheus writes a sample value (Go's `strconv.FormatFloat(f, 'f', -1, 64)`):
/// shortest round-trip digits, no exponent, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// [`format_value`], into `out` (an answer writes one per point: no string of its own).
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v == v.trunc() && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
        // a whole number (most counters and many gauges) is its integer's digits, as
        // Go's 'f' formatting writes it: no shortest-float search
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Milliseconds as JSON seconds (`1767268800`, `1767268800.5`).
pub fn format_time(ms: i64) -> String {
    let mut out = String::new();
    write_time(&mut out, ms);
    out
}

/// [`format_time`], into `out`.
fn write_time(out: &mut String, ms: i64) {
    if ms < 0 {
        out.push('-');
    }
    let abs = ms.unsigned_abs();
    let (s, mut frac) = (abs / 1000, abs % 1000);
    let _ = write!(out, "{s}");
    if frac != 0 {
        let mut digits = 3;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        let _ = write!(out, ".{frac:0digits$}");
    }
}

fn json_str(out: &mut String, s: &str) {
    // most label names and values need no escaping: written as they are
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::String(s.to_string()).to_string());
    }
}

fn metric(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (k, v)) in labels.pairs().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        json_str(out, v);
    }
    out.push('}');
}

fn point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_time(out, t);
    out.push_str(",\"");
    write_value(out, v);
    out.push_str("\"]");
}

/// The `data` object of a query answer: `{"resultType": ..., "result": ...}`. A range
/// query's answer is a matrix whatever the expression's type.
pub fn data_json(answer: &Answer, range: bool) -> String {
    let mut out = String::new();
    let steps = answer.steps;
    match (&answer.value, range) {
        (Value::Scalar(v), false) => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            point(
                &mut out,
                steps.start,
                v.first().copied().unwrap_or(f64::NAN),
            );
            out.push('}');
        }
        (Value::String(s), false) => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            write_time(&mut out, steps.start);
            out.push(',');
            json_str(&mut out, s);
            out.push_str("]}");
        }
        (Value::Range(_), false) => {
            out.push_str("{\"resultType\":\"matrix\",\"result\":[]}");
        }
        (Value::Vector(series), false) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            let mut first = true;
            for s in series {
                let Some(v) = s.points.first().copied().flatten() else {
                    continue;
                };
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str("{\"metric\":");
                metric(&mut out, &s.labels);
                out.push_str(",\"value\":");
                point(&mut out, steps.start, v);
                out.push('}');
            }
            out.push_str("]}");
        }
        (Value::Matrix(series), _) => {
            let mut sorted: Vec<&super::value::RawSeries> = series.iter().collect();
            sorted.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in sorted.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                metric(&mut out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, (&t, &v)) in s.t.iter().zip(&s.v).enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    point(&mut out, t, v);
                }
                out.push_str("]}");
            }
            out.push_str("]}");
        }
        (value, true) => {
            let series: Vec<Series> = match value {
                Value::Vector(v) => v.clone(),
                Value::Scalar(v) => vec![Series {
                    labels: Labels::default(),
                    points: v.iter().copied().map(Some).collect(),
                    drop_name: false,
                }],
                _ => Vec::new(),
            };
            matrix_of_steps(&mut out, series, steps);
        }
    }
    out
}

/// A range query's series, ordered by labels, each with its points.
fn matrix_of_steps(out: &mut String, mut series: Vec<Series>, steps: Steps) {
    series.retain(Series::is_present);
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    out.push_str("{\"resultType\":\"matrix\",\"result\":[");
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        metric(out, &s.labels);
        out.push_str(",\"values\":[");
        let mut first = true;
        for (j, p) in s.points.iter().enumerate() {
            if let Some(v) = p {
                if !first {
                    out.push(',');
                }
                first = false;
                point(out, steps.time(j), *v);
            }
        }
        out.push_str("]}");
    }
    out.push_str("]}");
}

/// A list of label sets as `[{"__name__": ...}, ...]` (`/api/v1/series`).
pub fn series_json(series: &[Labels]) -> String {
    let mut out = String::from("[");
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        metric(&mut out, s);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_times_are_written_as_prometheus_writes_them() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(-0.5), "-0.5");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        // whole numbers, either side of where the integer path stops
        assert_eq!(format_value(-42.0), "-42");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(999_999_999_999_999.0), "999999999999999");
        assert_eq!(format_value(1e15), "1000000000000000");
        assert_eq!(format_value(-123_456_789_012_345.0), "-123456789012345");
        assert_eq!(format_value(1e-7), "0.0000001");
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_time(1_767_225_600_000), "1767225600");
        assert_eq!(format_time(1_767_225_600_500), "1767225600.5");
        assert_eq!(format_time(1_767_225_600_007), "1767225600.007");
        assert_eq!(format_time(-1_500), "-1.5");
        let mut out = String::new();
        json_str(&mut out, "host_8");
        json_str(&mut out, "a\"b\\c\nd");
        json_str(&mut out, "Zürich");
        assert_eq!(out, r#""host_8""a\"b\\c\nd""Zürich""#);
    }
}
