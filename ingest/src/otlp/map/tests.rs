use std::collections::BTreeMap;

use prost::Message;
use sluice_model::FieldValue;
use sluice_proto::otlp::{
    AggregationTemporality, AnyValue, ExportMetricsServiceRequest, Gauge, HistogramDataPoint,
    InstrumentationScope, KeyValue, Metric, NumberDataPoint, Resource, ResourceMetrics,
    ScopeMetrics, Sum, Summary, SummaryDataPoint, ValueAtQuantile,
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
    let mapped = map(&fixture(), &Options::default(), &mut Cache::default()).unwrap();
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
    let mapped = map(&request(metrics), &options, &mut Cache::default()).unwrap();
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
        message.contains("1 data point(s): a data point of 'queue.depth' has no time"),
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

/// Protobuf written by hand, to put fields where prost would not.
mod wire {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Field `field` holding the bytes `b` (a message, string or packed values).
    pub fn len(field: u64, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, field << 3 | 2);
        varint(&mut out, b.len() as u64);
        out.extend_from_slice(b);
        out
    }

    pub fn fixed64(field: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, field << 3 | 1);
        out.extend_from_slice(&v.to_le_bytes());
        out
    }

    pub fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }
}

/// The rows of `body` mapped with a fresh cache and default options.
fn rows_of(body: &[u8]) -> BTreeMap<String, Vec<Row>> {
    rows(&map_protobuf(body, &Options::default(), &mut Cache::default()).unwrap())
}

#[test]
fn fields_in_any_order_map_as_in_the_usual_order() {
    let attrs = [kv("a", "1"), kv("b", "2")];
    let canonical = request(vec![Metric {
        name: "m".into(),
        unit: "s".into(),
        gauge: Some(Gauge {
            data_points: vec![number(attrs.to_vec(), 5, None, Some(1.5))],
        }),
        ..Default::default()
    }]);
    let want = rows_of(&canonical.encode_to_vec());
    assert_eq!(want["m_seconds"].len(), 1);

    // the point: one attribute, the time, the value, then the other attribute (so the
    // attributes are not one run of bytes)
    let point = wire::cat(&[
        wire::len(7, &attrs[0].encode_to_vec()),
        wire::fixed64(3, 5),
        wire::fixed64(4, 1.5f64.to_bits()),
        wire::len(7, &attrs[1].encode_to_vec()),
    ]);
    // the metric: its data before its name and unit
    let metric = wire::cat(&[
        wire::len(5, &wire::len(1, &point)),
        wire::len(3, b"s"),
        wire::len(1, b"m"),
    ]);
    let rm = &canonical.resource_metrics[0];
    let scope = rm.scope_metrics[0].scope.as_ref().unwrap().encode_to_vec();
    // the scope metrics: the metric before the scope; the resource metrics: the scope
    // metrics before the resource
    let scope_metrics = wire::cat(&[wire::len(2, &metric), wire::len(1, &scope)]);
    let resource = rm.resource.as_ref().unwrap().encode_to_vec();
    let resource_metrics = wire::cat(&[wire::len(2, &scope_metrics), wire::len(1, &resource)]);
    let body = wire::len(1, &resource_metrics);
    assert_ne!(body, canonical.encode_to_vec());
    assert_eq!(rows_of(&body), want);

    // a later member of `oneof data` replaces an earlier one
    let sum = Sum {
        data_points: vec![number(attrs.to_vec(), 5, Some(2), None)],
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
        is_monotonic: true,
    };
    let metric = wire::cat(&[
        wire::len(1, b"m"),
        wire::len(5, &wire::len(1, &point)),
        wire::len(7, &sum.encode_to_vec()),
    ]);
    let scope_metrics = wire::cat(&[wire::len(1, &scope), wire::len(2, &metric)]);
    let resource_metrics = wire::cat(&[wire::len(1, &resource), wire::len(2, &scope_metrics)]);
    let tables = rows_of(&wire::len(1, &resource_metrics));
    assert_eq!(
        tables.keys().collect::<Vec<_>>(),
        ["m_total", "target_info"]
    );
    assert_eq!(tables["m_total"][0].1, 2.0);
}

#[test]
fn histogram_counts_packed_or_one_by_one_map_alike() {
    let point = HistogramDataPoint {
        attributes: vec![kv("peer", "db")],
        time_unix_nano: 7,
        count: 3,
        sum: Some(0.9),
        bucket_counts: vec![1, 2, 0],
        explicit_bounds: vec![0.1, 0.5],
        ..Default::default()
    };
    let histogram = |point: Vec<u8>| {
        let metric = wire::cat(&[
            wire::len(1, b"lat"),
            wire::len(3, b"s"),
            wire::len(
                9,
                &wire::cat(&[
                    wire::len(1, &point),
                    vec![2 << 3, AggregationTemporality::Cumulative as u8],
                ]),
            ),
        ]);
        let scope_metrics = wire::len(2, &metric);
        wire::len(1, &wire::len(2, &scope_metrics))
    };
    let packed = rows_of(&histogram(point.encode_to_vec()));
    let one_by_one = wire::cat(&[
        wire::len(9, &point.attributes[0].encode_to_vec()),
        wire::fixed64(3, 7),
        wire::fixed64(4, 3),
        wire::fixed64(5, 0.9f64.to_bits()),
        wire::fixed64(6, 1),
        wire::fixed64(6, 2),
        wire::fixed64(6, 0),
        wire::fixed64(7, 0.1f64.to_bits()),
        wire::fixed64(7, 0.5f64.to_bits()),
    ]);
    assert_eq!(rows_of(&histogram(one_by_one)), packed);
    let buckets: Vec<(&str, f64)> = packed["lat_seconds_bucket"]
        .iter()
        .map(|r| (r.0["le"].as_str(), r.1))
        .collect();
    assert_eq!(buckets, [("0.1", 1.0), ("0.5", 3.0), ("+Inf", 3.0)]);
}

#[test]
fn the_cache_keeps_resources_apart_and_restarts_when_the_options_change() {
    let mut cache = Cache::default();
    let options = Options::default();
    // two resources whose points have the same attribute bytes
    let mut req = request(vec![Metric {
        name: "g".into(),
        gauge: Some(Gauge {
            data_points: vec![number(vec![kv("k", "v")], 9, Some(1), None)],
        }),
        ..Default::default()
    }]);
    let mut other = req.resource_metrics[0].clone();
    other.resource.as_mut().unwrap().attributes[0] = kv("service.name", "web");
    req.resource_metrics.push(other);
    let body = req.encode_to_vec();
    let first = rows(&map_protobuf(&body, &options, &mut cache).unwrap());
    let jobs: Vec<&str> = first["g"].iter().map(|r| r.0["job"].as_str()).collect();
    assert_eq!(jobs, ["api", "web"]);
    // the second time from the cache, with the same rows
    let again = rows(&map_protobuf(&body, &options, &mut cache).unwrap());
    assert_eq!(again, first);
    // other options: the cached tags would be wrong, so the cache starts over
    let promote = Options {
        promote: vec!["k8s.pod.name".into()],
    };
    let promoted = rows(&map_protobuf(&body, &promote, &mut cache).unwrap());
    assert_eq!(promoted["g"][0].0["k8s_pod_name"], "api-7");
}

#[test]
fn a_broken_body_is_an_error_that_says_where() {
    let body = request(vec![Metric {
        name: "g".into(),
        gauge: Some(Gauge {
            data_points: vec![number(vec![kv("k", "v")], 9, Some(1), None)],
        }),
        ..Default::default()
    }])
    .encode_to_vec();
    // cut inside the data point; every enclosing length now runs past the end
    let cut = &body[..body.len() - 3];
    let e = map_protobuf(cut, &Options::default(), &mut Cache::default()).unwrap_err();
    assert!(e.0.contains("ExportMetricsServiceRequest"), "{e}");
    assert!(e.0.contains("ends in the middle of a field"), "{e}");
    // a point whose time has the wrong wire type: skipped as an unknown field would be,
    // so the point has no time and is counted, not stored
    let point = wire::cat(&[wire::len(3, b"12345678"), wire::fixed64(4, 1f64.to_bits())]);
    let metric = wire::cat(&[wire::len(1, b"g"), wire::len(5, &wire::len(1, &point))]);
    let body = wire::len(1, &wire::len(2, &wire::len(2, &metric)));
    let m = map_protobuf(&body, &Options::default(), &mut Cache::default()).unwrap();
    assert_eq!(m.rejected_points, 1);
    assert!(
        m.error_message().contains("has no time"),
        "{}",
        m.error_message()
    );
    // a string that is not UTF-8
    let metric = wire::cat(&[
        wire::len(1, b"\xff\xfe"),
        wire::len(5, &wire::len(1, &point)),
    ]);
    let body = wire::len(1, &wire::len(2, &wire::len(2, &metric)));
    let e = map_protobuf(&body, &Options::default(), &mut Cache::default()).unwrap_err();
    assert!(e.0.contains("in a Metric starting at byte"), "{e}");
    assert!(e.0.contains("not UTF-8"), "{e}");
}

#[test]
fn short_names_compare_equal_only_when_equal() {
    let words = [
        "",
        "a",
        "b",
        "ab",
        "ba",
        "cpu.usage",
        "cpu.usagf",
        "cpu.usage_user",
        "cpu.usage_usex",
        "xpu.usage_user",
        "cpu.usage_nicely",
        "cpu.usage_nicelz",
        "cpu.usage_user_and_more",
    ];
    for a in words {
        for b in words {
            assert_eq!(
                super::walk::same_short(a.as_bytes(), b.as_bytes()),
                a == b,
                "{a:?} {b:?}"
            );
        }
    }
}

/// Each plain tag range (a data point's attribute set, a `target_info` row) carries the id of
/// its cached set: the same id for the same set in the next request mapped with the cache,
/// different ids for different sets, and new ones once the cache starts over.
#[test]
fn tag_set_ids_name_cached_sets_across_requests() {
    let body = fixture().encode_to_vec();
    let ids = |m: &Mapped| -> BTreeMap<Vec<(String, String)>, u64> {
        let b = &m.batch;
        let mut out = BTreeMap::new();
        for p in b.points() {
            let tags: Vec<(String, String)> = b
                .tags_of(p)
                .iter()
                .map(|t| (b.str(t.key).to_string(), b.str(t.value).to_string()))
                .collect();
            let id = b.tag_set_id(p.tag_range());
            if tags.iter().any(|(k, _)| k == "le" || k == "quantile") {
                assert_eq!(id, None, "bucket and quantile rows have extra tags: no id");
                continue;
            }
            let id = id.expect("a plain range has an id").0;
            assert_eq!(*out.entry(tags).or_insert(id), id, "one id per tag set");
        }
        out
    };
    let mut cache = Cache::default();
    let first = ids(&map_protobuf(&body, &Options::default(), &mut cache).unwrap());
    let second = ids(&map_protobuf(&body, &Options::default(), &mut cache).unwrap());
    assert!(first.len() > 2, "{first:?}");
    assert_eq!(first, second);
    let distinct: std::collections::BTreeSet<u64> = first.values().copied().collect();
    assert_eq!(distinct.len(), first.len());
    let other = Options {
        promote: vec!["service.name".into()],
    };
    let third = ids(&map_protobuf(&body, &other, &mut cache).unwrap());
    assert!(third.values().all(|id| !distinct.contains(id)));
}
