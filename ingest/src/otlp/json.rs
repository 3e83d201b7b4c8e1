//! OTLP/JSON -> the protobuf types: the JSON Protobuf Encoding the OTLP specification uses,
//! with its differences from plain protojson: field names in lowerCamelCase (the original
//! snake_case names are accepted too, as protojson parsers do), enums as integers (names are
//! accepted), 64-bit integers as strings or numbers, doubles as numbers or `"NaN"`,
//! `"Infinity"`, `"-Infinity"`, trace and span ids as hex. Unknown fields are ignored, as the
//! specification asks.

use serde_json::{Map, Value};
use sluice_proto::otlp::{
    AnyValue, ArrayValue, Buckets, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint,
    ExportMetricsServiceRequest, Gauge, Histogram, HistogramDataPoint, InstrumentationScope,
    KeyValue, KeyValueList, Metric, NumberDataPoint, Resource, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, ValueAtQuantile,
};

/// Why a body is not an OTLP/JSON export request: what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(pub String);

type R<T> = Result<T, JsonError>;

/// Reads an OTLP/JSON `ExportMetricsServiceRequest`.
pub fn decode(body: &[u8]) -> R<ExportMetricsServiceRequest> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| JsonError(format!("the body is not JSON: {e}")))?;
    let o = object(&v, "the request")?;
    Ok(ExportMetricsServiceRequest {
        resource_metrics: list(o, "resourceMetrics", "resource_metrics", resource_metrics)?,
    })
}

/// The member `camel` (or `snake`) of `o`.
fn field<'a>(o: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    o.get(camel)
        .or_else(|| o.get(snake))
        .filter(|v| !v.is_null())
}

fn object<'a>(v: &'a Value, what: &str) -> R<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| JsonError(format!("{what} must be a JSON object, not {v}")))
}

fn list<T>(
    o: &Map<String, Value>,
    camel: &str,
    snake: &str,
    item: impl Fn(&Map<String, Value>) -> R<T>,
) -> R<Vec<T>> {
    let Some(v) = field(o, camel, snake) else {
        return Ok(Vec::new());
    };
    let items = v
        .as_array()
        .ok_or_else(|| JsonError(format!("'{camel}' must be an array")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, x)| item(object(x, &format!("'{camel}'[{i}]"))?))
        .collect()
}

fn message<T: Default>(
    o: &Map<String, Value>,
    camel: &str,
    snake: &str,
    read: impl Fn(&Map<String, Value>) -> R<T>,
) -> R<Option<T>> {
    match field(o, camel, snake) {
        None => Ok(None),
        Some(v) => read(object(v, &format!("'{camel}'"))?).map(Some),
    }
}

fn string(o: &Map<String, Value>, camel: &str, snake: &str) -> R<String> {
    match field(o, camel, snake) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(JsonError(format!("'{camel}' must be a string, not {v}"))),
    }
}

fn boolean(o: &Map<String, Value>, camel: &str, snake: &str) -> R<bool> {
    match field(o, camel, snake) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(JsonError(format!(
            "'{camel}' must be true or false, not {v}"
        ))),
    }
}

/// A 64-bit integer: a JSON number or a decimal string.
fn int_value(v: &Value, what: &str) -> R<i128> {
    let n = match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    n.ok_or_else(|| {
        JsonError(format!(
            "'{what}' must be an integer (a number or a string), not {v}"
        ))
    })
}

fn u64_field(o: &Map<String, Value>, camel: &str, snake: &str) -> R<u64> {
    field(o, camel, snake).map_or(Ok(0), |v| {
        u64::try_from(int_value(v, camel)?)
            .map_err(|_| JsonError(format!("'{camel}' is out of range: {v}")))
    })
}

fn i64_field(o: &Map<String, Value>, camel: &str, snake: &str) -> R<Option<i64>> {
    field(o, camel, snake)
        .map(|v| {
            i64::try_from(int_value(v, camel)?)
                .map_err(|_| JsonError(format!("'{camel}' is out of range: {v}")))
        })
        .transpose()
}

fn i32_field(o: &Map<String, Value>, camel: &str, snake: &str) -> R<i32> {
    field(o, camel, snake).map_or(Ok(0), |v| {
        i32::try_from(int_value(v, camel)?)
            .map_err(|_| JsonError(format!("'{camel}' is out of range: {v}")))
    })
}

fn double_value(v: &Value, what: &str) -> R<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
    .ok_or_else(|| JsonError(format!("'{what}' must be a number, not {v}")))
}

fn double(o: &Map<String, Value>, camel: &str, snake: &str) -> R<Option<f64>> {
    field(o, camel, snake)
        .map(|v| double_value(v, camel))
        .transpose()
}

fn doubles(o: &Map<String, Value>, camel: &str, snake: &str) -> R<Vec<f64>> {
    match field(o, camel, snake) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(|v| double_value(v, camel)).collect(),
        Some(v) => Err(JsonError(format!("'{camel}' must be an array, not {v}"))),
    }
}

fn u64s(o: &Map<String, Value>, camel: &str, snake: &str) -> R<Vec<u64>> {
    match field(o, camel, snake) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                u64::try_from(int_value(v, camel)?)
                    .map_err(|_| JsonError(format!("'{camel}' is out of range: {v}")))
            })
            .collect(),
        Some(v) => Err(JsonError(format!("'{camel}' must be an array, not {v}"))),
    }
}

/// `aggregationTemporality`: an integer, or the enum value's name.
fn temporality(o: &Map<String, Value>) -> R<i32> {
    match field(o, "aggregationTemporality", "aggregation_temporality") {
        Some(Value::String(s)) if s.starts_with("AGGREGATION_TEMPORALITY_") => {
            Ok(match s.as_str() {
                "AGGREGATION_TEMPORALITY_DELTA" => 1,
                "AGGREGATION_TEMPORALITY_CUMULATIVE" => 2,
                _ => 0,
            })
        }
        _ => i32_field(o, "aggregationTemporality", "aggregation_temporality"),
    }
}

fn hex(o: &Map<String, Value>, camel: &str, snake: &str) -> R<Vec<u8>> {
    let s = string(o, camel, snake)?;
    if s.len() % 2 != 0 {
        return Err(JsonError(format!("'{camel}' must be hex, not {s:?}")));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| JsonError(format!("'{camel}' must be hex, not {s:?}")))
        })
        .collect()
}

fn resource_metrics(o: &Map<String, Value>) -> R<ResourceMetrics> {
    Ok(ResourceMetrics {
        resource: message(o, "resource", "resource", |r| {
            Ok(Resource {
                attributes: list(r, "attributes", "attributes", key_value)?,
                dropped_attributes_count: i32_field(
                    r,
                    "droppedAttributesCount",
                    "dropped_attributes_count",
                )? as u32,
            })
        })?,
        scope_metrics: list(o, "scopeMetrics", "scope_metrics", scope_metrics)?,
        schema_url: string(o, "schemaUrl", "schema_url")?,
    })
}

fn scope_metrics(o: &Map<String, Value>) -> R<ScopeMetrics> {
    Ok(ScopeMetrics {
        scope: message(o, "scope", "scope", |s| {
            Ok(InstrumentationScope {
                name: string(s, "name", "name")?,
                version: string(s, "version", "version")?,
                attributes: list(s, "attributes", "attributes", key_value)?,
                dropped_attributes_count: i32_field(
                    s,
                    "droppedAttributesCount",
                    "dropped_attributes_count",
                )? as u32,
            })
        })?,
        metrics: list(o, "metrics", "metrics", metric)?,
        schema_url: string(o, "schemaUrl", "schema_url")?,
    })
}

fn metric(o: &Map<String, Value>) -> R<Metric> {
    Ok(Metric {
        name: string(o, "name", "name")?,
        description: string(o, "description", "description")?,
        unit: string(o, "unit", "unit")?,
        gauge: message(o, "gauge", "gauge", |g| {
            Ok(Gauge {
                data_points: list(g, "dataPoints", "data_points", number_point)?,
            })
        })?,
        sum: message(o, "sum", "sum", |s| {
            Ok(Sum {
                data_points: list(s, "dataPoints", "data_points", number_point)?,
                aggregation_temporality: temporality(s)?,
                is_monotonic: boolean(s, "isMonotonic", "is_monotonic")?,
            })
        })?,
        histogram: message(o, "histogram", "histogram", |h| {
            Ok(Histogram {
                data_points: list(h, "dataPoints", "data_points", histogram_point)?,
                aggregation_temporality: temporality(h)?,
            })
        })?,
        exponential_histogram: message(o, "exponentialHistogram", "exponential_histogram", |h| {
            Ok(ExponentialHistogram {
                data_points: list(h, "dataPoints", "data_points", exponential_point)?,
                aggregation_temporality: temporality(h)?,
            })
        })?,
        summary: message(o, "summary", "summary", |s| {
            Ok(Summary {
                data_points: list(s, "dataPoints", "data_points", summary_point)?,
            })
        })?,
        metadata: list(o, "metadata", "metadata", key_value)?,
    })
}

fn number_point(o: &Map<String, Value>) -> R<NumberDataPoint> {
    Ok(NumberDataPoint {
        attributes: list(o, "attributes", "attributes", key_value)?,
        start_time_unix_nano: u64_field(o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: u64_field(o, "timeUnixNano", "time_unix_nano")?,
        as_double: double(o, "asDouble", "as_double")?,
        as_int: i64_field(o, "asInt", "as_int")?,
        exemplars: list(o, "exemplars", "exemplars", exemplar)?,
        flags: u64_field(o, "flags", "flags")? as u32,
    })
}

fn histogram_point(o: &Map<String, Value>) -> R<HistogramDataPoint> {
    Ok(HistogramDataPoint {
        attributes: list(o, "attributes", "attributes", key_value)?,
        start_time_unix_nano: u64_field(o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: u64_field(o, "timeUnixNano", "time_unix_nano")?,
        count: u64_field(o, "count", "count")?,
        sum: double(o, "sum", "sum")?,
        bucket_counts: u64s(o, "bucketCounts", "bucket_counts")?,
        explicit_bounds: doubles(o, "explicitBounds", "explicit_bounds")?,
        exemplars: list(o, "exemplars", "exemplars", exemplar)?,
        flags: u64_field(o, "flags", "flags")? as u32,
        min: double(o, "min", "min")?,
        max: double(o, "max", "max")?,
    })
}

fn exponential_point(o: &Map<String, Value>) -> R<ExponentialHistogramDataPoint> {
    let buckets = |b: &Map<String, Value>| {
        Ok(Buckets {
            offset: i32_field(b, "offset", "offset")?,
            bucket_counts: u64s(b, "bucketCounts", "bucket_counts")?,
        })
    };
    Ok(ExponentialHistogramDataPoint {
        attributes: list(o, "attributes", "attributes", key_value)?,
        start_time_unix_nano: u64_field(o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: u64_field(o, "timeUnixNano", "time_unix_nano")?,
        count: u64_field(o, "count", "count")?,
        sum: double(o, "sum", "sum")?,
        scale: i32_field(o, "scale", "scale")?,
        zero_count: u64_field(o, "zeroCount", "zero_count")?,
        positive: message(o, "positive", "positive", buckets)?,
        negative: message(o, "negative", "negative", buckets)?,
        flags: u64_field(o, "flags", "flags")? as u32,
        exemplars: list(o, "exemplars", "exemplars", exemplar)?,
        min: double(o, "min", "min")?,
        max: double(o, "max", "max")?,
        zero_threshold: double(o, "zeroThreshold", "zero_threshold")?.unwrap_or(0.0),
    })
}

fn summary_point(o: &Map<String, Value>) -> R<SummaryDataPoint> {
    Ok(SummaryDataPoint {
        attributes: list(o, "attributes", "attributes", key_value)?,
        start_time_unix_nano: u64_field(o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: u64_field(o, "timeUnixNano", "time_unix_nano")?,
        count: u64_field(o, "count", "count")?,
        sum: double(o, "sum", "sum")?.unwrap_or(0.0),
        quantile_values: list(o, "quantileValues", "quantile_values", |q| {
            Ok(ValueAtQuantile {
                quantile: double(q, "quantile", "quantile")?.unwrap_or(0.0),
                value: double(q, "value", "value")?.unwrap_or(0.0),
            })
        })?,
        flags: u64_field(o, "flags", "flags")? as u32,
    })
}

fn exemplar(o: &Map<String, Value>) -> R<Exemplar> {
    Ok(Exemplar {
        filtered_attributes: list(o, "filteredAttributes", "filtered_attributes", key_value)?,
        time_unix_nano: u64_field(o, "timeUnixNano", "time_unix_nano")?,
        as_double: double(o, "asDouble", "as_double")?,
        as_int: i64_field(o, "asInt", "as_int")?,
        span_id: hex(o, "spanId", "span_id")?,
        trace_id: hex(o, "traceId", "trace_id")?,
    })
}

fn key_value(o: &Map<String, Value>) -> R<KeyValue> {
    Ok(KeyValue {
        key: string(o, "key", "key")?,
        value: message(o, "value", "value", any_value)?,
    })
}

fn any_value(o: &Map<String, Value>) -> R<AnyValue> {
    Ok(AnyValue {
        string_value: field(o, "stringValue", "string_value")
            .map(|_| string(o, "stringValue", "string_value"))
            .transpose()?,
        bool_value: field(o, "boolValue", "bool_value")
            .map(|_| boolean(o, "boolValue", "bool_value"))
            .transpose()?,
        int_value: i64_field(o, "intValue", "int_value")?,
        double_value: double(o, "doubleValue", "double_value")?,
        array_value: message(o, "arrayValue", "array_value", |a| {
            Ok(ArrayValue {
                values: list(a, "values", "values", any_value)?,
            })
        })?,
        kvlist_value: message(o, "kvlistValue", "kvlist_value", |l| {
            Ok(KeyValueList {
                values: list(l, "values", "values", key_value)?,
            })
        })?,
        bytes_value: field(o, "bytesValue", "bytes_value")
            .map(|v| match v {
                // protojson bytes are base64; kept as the text's bytes, which is what a tag
                // value shows anyway
                Value::String(s) => Ok(s.as_bytes().to_vec()),
                other => Err(JsonError(format!(
                    "'bytesValue' must be a string, not {other}"
                ))),
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        std::fs::read(
            std::path::Path::new(&dir)
                .join("../tests/fixtures/otlp")
                .join(name),
        )
        .unwrap()
    }

    /// `debug` with every float rounded to 13 significant digits: serde_json (without its
    /// `float_roundtrip` feature) may read the last digit of a 17-digit double one unit off.
    fn rounded(debug: &str) -> String {
        let mut out = String::with_capacity(debug.len());
        let mut run = String::new();
        let flush = |run: &mut String, out: &mut String| {
            match run.parse::<f64>() {
                Ok(v) if run.contains('.') => out.push_str(&format!("{v:.12e}")),
                _ => out.push_str(run),
            }
            run.clear();
        };
        for c in debug.chars() {
            if c.is_ascii_digit() || matches!(c, '.' | 'e' | '-') {
                run.push(c);
            } else {
                flush(&mut run, &mut out);
                out.push(c);
            }
        }
        flush(&mut run, &mut out);
        out
    }

    #[test]
    fn the_json_capture_reads_as_the_protobuf_capture_does() {
        let from_json = decode(&fixture("python-sdk-metrics.json")).unwrap();
        let from_pb =
            ExportMetricsServiceRequest::decode(&fixture("python-sdk-metrics.pb")[..]).unwrap();
        assert!(!from_pb.resource_metrics.is_empty());
        assert_eq!(
            rounded(&format!("{from_json:?}")),
            rounded(&format!("{from_pb:?}"))
        );
    }

    #[test]
    fn otlp_json_spellings_are_read_and_bad_values_named() {
        let body = br#"{"resource_metrics": [{"scopeMetrics": [{"metrics": [
            {"name": "g", "gauge": {"dataPoints": [
                {"timeUnixNano": 5, "asDouble": "NaN", "attributes": [
                    {"key": "n", "value": {"intValue": 7}},
                    {"key": "b", "value": {"boolValue": true}}]},
                {"time_unix_nano": "6", "as_int": "-3"}]}},
            {"name": "s", "sum": {"aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA",
                "isMonotonic": true, "dataPoints": [{"timeUnixNano": "7", "asDouble": 1}]}},
            {"name": "unknown fields are ignored", "newKind": {"x": 1}}
        ]}]}]}"#;
        let r = decode(body).unwrap();
        let metrics = &r.resource_metrics[0].scope_metrics[0].metrics;
        let g = &metrics[0].gauge.as_ref().unwrap().data_points;
        assert!(g[0].as_double.unwrap().is_nan());
        assert_eq!(g[0].time_unix_nano, 5);
        assert_eq!(
            g[0].attributes[0].value.as_ref().unwrap().int_value,
            Some(7)
        );
        assert_eq!(
            g[0].attributes[1].value.as_ref().unwrap().bool_value,
            Some(true)
        );
        assert_eq!((g[1].time_unix_nano, g[1].as_int), (6, Some(-3)));
        let s = metrics[1].sum.as_ref().unwrap();
        assert_eq!((s.aggregation_temporality, s.is_monotonic), (1, true));
        assert_eq!(metrics.len(), 3);

        for (bad, want) in [
            (&b"not json"[..], "not JSON"),
            (br#"[]"#, "must be a JSON object"),
            (
                br#"{"resourceMetrics": {}}"#,
                "'resourceMetrics' must be an array",
            ),
            (
                br#"{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x",
                    "gauge": {"dataPoints": [{"timeUnixNano": "soon"}]}}]}]}]}"#,
                "'timeUnixNano' must be an integer",
            ),
            (
                br#"{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": 5}]}]}]}"#,
                "'name' must be a string",
            ),
        ] {
            let e = decode(bad).unwrap_err();
            assert!(e.0.contains(want), "{e}");
        }
    }
}
