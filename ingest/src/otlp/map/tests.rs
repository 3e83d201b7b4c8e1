use std::collections::BTreeMap;

use prost::Message;
use sluice_proto::otlp::{
    ExportMetricsServiceRequest, Gauge, InstrumentationScope, Metric, NumberDataPoint, Resource,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, ValueAtQuantile,
};

use super::*;

/// A stored row: its tags (sorted), value and time.
type Row = (BTreeMap<String, String>, f64, i64);

fn rows(m: &Mapped) -> BTreeMap<String, Vec<Row>> {
    let b = &m.batch;
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for p in b.points() {
        let tags = b
            .tags_of(p)
            .iter()
            .map(|t| (b.str(t.key).to_string(), b.str(t.value).to_string()))
            .collect();
        let value = match b.fields_of(p) {
            [f] if b.str(f.key) == "value" => match f.value {
                FieldValue::F64(v) => v,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        out.entry(b.str(p.table).to_string())
            .or_default()
            .push((tags, value, p.time));
    }
    out
}

fn fixture() -> ExportMetricsServiceRequest {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let path = std::path::Path::new(&dir).join("../tests/fixtures/otlp/python-sdk-metrics.pb");
    ExportMetricsServiceRequest::decode(&std::fs::read(path).unwrap()[..]).unwrap()
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            string_value: Some(value.into()),
            ..Default::default()
        }),
    }
}

#[test]
fn the_python_sdk_capture_maps_to_prometheus_style_tables() {
    let mapped = map(&fixture(), &Options::default());
    let tables = rows(&mapped);
    let names: Vec<&str> = tables.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "http_server_active_requests",
            "http_server_request_duration_seconds_bucket",
            "http_server_request_duration_seconds_count",
            "http_server_request_duration_seconds_sum",
            "http_server_requests_total",
            "net_io_bytes_total",
            "system_memory_utilization_ratio",
            "target_info",
        ]
    );
    // the exponential histogram (one point) is refused, with its reason
    assert_eq!(mapped.rejected_points, 1);
    assert!(
        mapped
            .error_message()
            .contains("'rpc.payload.size' is an exponential histogram")
    );

    let identity = [
        ("job", "shop/checkout"),
        ("instance", "checkout-1"),
        ("otel_scope_name", "shop.checkout"),
        ("otel_scope_version", "1.4.2"),
    ];
    for (table, rows) in &tables {
        for (tags, _, time) in rows {
            assert!(*time > 1_700_000_000_000_000_000, "{table}");
            for (k, v) in identity {
                if table == "target_info" && k.starts_with("otel_scope") {
                    assert!(!tags.contains_key(k));
                } else {
                    assert_eq!(tags.get(k).map(String::as_str), Some(v), "{table} {k}");
                }
            }
        }
    }

    // rows of one attribute set share a tag range, in every table they are in
    let b = &mapped.batch;
    let ranges: std::collections::HashSet<_> = b.points().iter().map(|p| p.tag_range()).collect();
    let tag_sets: std::collections::HashSet<Vec<_>> = b
        .points()
        .iter()
        .map(|p| b.tags_of(p).iter().map(|t| (t.key, t.value)).collect())
        .collect();
    assert_eq!(ranges.len(), tag_sets.len());
    // each counter row and the histogram _sum and _count rows of the same attributes: 18 sets
    // of three rows
    assert_eq!(ranges.len() + 36, b.len());

    let requests = &tables["http_server_requests_total"];
    assert_eq!(requests.len(), 18);
    assert_eq!(requests.iter().map(|r| r.1).sum::<f64>(), 200.0);
    let codes: std::collections::BTreeSet<&str> = requests
        .iter()
        .map(|r| r.0["http_response_status_code"].as_str())
        .collect();
    assert!(codes.contains("200") && codes.contains("500"), "{codes:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.0.contains_key("http_request_method") && r.0.contains_key("http_route"))
    );

    // 18 histogram points of 16 buckets each, cumulative, ending at +Inf = count
    let buckets = &tables["http_server_request_duration_seconds_bucket"];
    let counts = &tables["http_server_request_duration_seconds_count"];
    assert_eq!(buckets.len(), 18 * 16);
    assert_eq!(counts.len(), 18);
    assert_eq!(tables["http_server_request_duration_seconds_sum"].len(), 18);
    let first: Vec<(&str, f64)> = buckets[..16]
        .iter()
        .map(|r| (r.0["le"].as_str(), r.1))
        .collect();
    let les: Vec<&str> = first.iter().map(|b| b.0).collect();
    assert_eq!(
        les,
        [
            "0", "5", "10", "25", "50", "75", "100", "250", "500", "750", "1000", "2500", "5000",
            "7500", "10000", "+Inf"
        ]
    );
    assert!(
        first.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {first:?}"
    );
    let mut first_tags = buckets[0].0.clone();
    first_tags.remove("le");
    let count = counts.iter().find(|r| r.0 == first_tags).unwrap();
    assert_eq!(first[15].1, count.1);

    assert_eq!(tables["net_io_bytes_total"][0].1, 509_814.0);
    assert_eq!(tables["net_io_bytes_total"][0].0["direction"], "transmit");
    let mut active: Vec<f64> = tables["http_server_active_requests"]
        .iter()
        .map(|r| r.1)
        .collect();
    active.sort_by(f64::total_cmp);
    assert_eq!(active, [-19.0, -2.0, 1.0]);
    let memory = &tables["system_memory_utilization_ratio"];
    assert_eq!((memory.len(), memory[0].1), (1, 0.43));
    assert_eq!(memory[0].0["state"], "used");

    // the other resource attributes, once, on target_info
    let info = &tables["target_info"];
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].1, 1.0);
    for (k, v) in [
        ("host_name", "node-1"),
        ("deployment_environment", "staging"),
        ("telemetry_sdk_language", "python"),
        ("telemetry_sdk_version", "1.45.2"),
    ] {
        assert_eq!(info[0].0[k], v);
    }
    assert!(!info[0].0.contains_key("service_name"));
    let newest = tables.values().flatten().map(|r| r.2).max().unwrap();
    assert_eq!(info[0].2, newest);
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api"), kv("k8s.pod.name", "api-7")],
                dropped_attributes_count: 0,
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope::default()),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn number(
    attributes: Vec<KeyValue>,
    time: u64,
    int: Option<i64>,
    double: Option<f64>,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano: time,
        as_int: int,
        as_double: double,
        ..Default::default()
    }
}

#[test]
fn ints_and_doubles_share_value_and_what_prometheus_cannot_hold_is_counted() {
    let metrics = vec![
        Metric {
            name: "queue.depth".into(),
            gauge: Some(Gauge {
                data_points: vec![
                    number(vec![kv("a.b", "x"), kv("a_b", "y")], 10, Some(3), None),
                    number(vec![], 20, None, Some(2.5)),
                    NumberDataPoint {
                        flags: 1,
                        ..number(vec![], 30, Some(1), None)
                    },
                    number(vec![], 0, Some(1), None),
                ],
            }),
            ..Default::default()
        },
        Metric {
            name: "jobs.done".into(),
            sum: Some(Sum {
                data_points: vec![number(vec![], 10, Some(5), None); 2],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            }),
            ..Default::default()
        },
        Metric {
            name: "rpc.latency".into(),
            unit: "ms".into(),
            summary: Some(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: 10,
                    count: 4,
                    sum: 10.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 2.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 4.0,
                        },
                    ],
                    ..Default::default()
                }],
            }),
            ..Default::default()
        },
    ];
    let options = Options {
        promote: vec!["k8s.pod.name".into()],
    };
    let mapped = map(&request(metrics), &options);
    let tables = rows(&mapped);
    let depth = &tables["queue_depth"];
    assert_eq!(depth.iter().map(|r| r.1).collect::<Vec<_>>(), [3.0, 2.5]);
    // two keys that become one label name: values joined, as the Collector does
    assert_eq!(depth[0].0["a_b"], "x;y");
    assert_eq!(depth[0].0["k8s_pod_name"], "api-7");
    assert_eq!(depth[0].0["job"], "api");
    assert_eq!(mapped.no_recorded_value, 1);
    // the point without a time and the two delta points
    assert_eq!(mapped.rejected_points, 3);
    let message = mapped.error_message();
    assert!(
        message.contains("2 data point(s): metric 'jobs.done' has delta temporality"),
        "{message}"
    );
    assert!(
        message.contains("1 data point(s): a data point of 'queue_depth' has no time"),
        "{message}"
    );
    assert!(!tables.contains_key("jobs_done_total"));

    let q: Vec<(&str, f64)> = tables["rpc_latency_milliseconds"]
        .iter()
        .map(|r| (r.0["quantile"].as_str(), r.1))
        .collect();
    assert_eq!(q, [("0.5", 2.0), ("0.99", 4.0)]);
    assert_eq!(tables["rpc_latency_milliseconds_sum"][0].1, 10.0);
    assert_eq!(tables["rpc_latency_milliseconds_count"][0].1, 4.0);
    // the promoted attribute is also on target_info, with what is left
    assert_eq!(tables["target_info"][0].0["k8s_pod_name"], "api-7");
}
