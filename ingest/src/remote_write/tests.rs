use super::*;
use prost::Message;
use sluice_model::{FieldValue, MetricMetadata, MetricType, WriteBatch};
use sluice_proto::prometheus::{Histogram, Sample, v1, v2};

fn fixture_dir() -> std::path::PathBuf {
    // at run time: a test binary built from another clone sharing CARGO_TARGET_DIR keeps
    // working
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&dir).join("../tests/fixtures/prometheus")
}

/// Decodes with a cache of its own, as a server's first request is.
fn decode_fresh(body: &[u8], version: Version, limits: &Limits) -> Result<Decoded, RequestError> {
    decode(body, version, limits, &mut SeriesCache::default())
}

/// `(name, value)` pairs, sorted, of a decoded point: its table as `__name__` and its tags.
fn point_labels(batch: &WriteBatch, p: &sluice_model::Point) -> Vec<(String, String)> {
    let mut out = vec![(NAME_LABEL.to_string(), batch.str(p.table).to_string())];
    out.extend(
        batch
            .tags_of(p)
            .iter()
            .map(|t| (batch.str(t.key).to_string(), batch.str(t.value).to_string())),
    );
    out.sort();
    out
}

fn point_value(batch: &WriteBatch, p: &sluice_model::Point) -> f64 {
    match batch.fields_of(p) {
        [f] if batch.str(f.key) == VALUE_FIELD => match f.value {
            FieldValue::F64(v) => v,
            other => panic!("value is {other:?}"),
        },
        other => panic!("fields {other:?}"),
    }
}

#[test]
fn prometheus_2_42_captures_decode_like_prost_does() {
    let mut files: Vec<_> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let mut metadata_seen = 0;
    let mut carried = SeriesCache::default();
    for path in files {
        let headers = std::fs::read_to_string(path.with_extension("headers.json")).unwrap();
        assert!(
            headers.contains(r#""Content-Encoding": "snappy""#),
            "{headers}"
        );
        let ct = headers
            .lines()
            .find_map(|l| l.trim().strip_prefix(r#""Content-Type": ""#))
            .map(|v| v.trim_end_matches(['"', ',']))
            .unwrap();
        let version = Version::from_content_type(Some(ct)).unwrap();
        assert_eq!(version, Version::V1, "{path:?}");
        let raw = decompress_snappy(&std::fs::read(&path).unwrap(), 1 << 26).unwrap();

        let expected = v1::WriteRequest::decode(&raw[..]).unwrap();
        // the captures are consecutive requests of one Prometheus: decoded with a cache of
        // their own, then with one carried from capture to capture (twice, so that every
        // series of the second reading comes from the cache)
        let fresh = decode_fresh(&raw, version, &Limits::default()).unwrap();
        let first = decode(&raw, version, &Limits::default(), &mut carried).unwrap();
        let second = decode(&raw, version, &Limits::default(), &mut carried).unwrap();
        for got in [&fresh, &first, &second] {
            assert!(got.errors.is_empty(), "{path:?}: {:?}", got.errors);
            assert_eq!(got.series, expected.timeseries.len(), "{path:?}");
            let samples: usize = expected.timeseries.iter().map(|s| s.samples.len()).sum();
            assert_eq!(got.samples, samples, "{path:?}");
            let stale = expected
                .timeseries
                .iter()
                .flat_map(|s| &s.samples)
                .filter(|s| s.value.to_bits() == STALE_NAN_BITS)
                .count();
            assert_eq!(got.stale_markers, stale);
            assert_eq!(got.batch.len(), samples);
            // every stored point, in order, against prost's reading of the same bytes
            let mut points = got.batch.points().iter();
            for (i, s) in expected.timeseries.iter().enumerate() {
                let mut labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .filter(|l| !l.value.is_empty())
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                labels.sort();
                // a stale marker is a point of the metric's stale-marker table
                let stale_labels: Vec<(String, String)> = labels
                    .iter()
                    .map(|(n, v)| match n.as_str() {
                        NAME_LABEL => (n.clone(), sluice_model::staleness::stale_table(v)),
                        _ => (n.clone(), v.clone()),
                    })
                    .collect();
                for sample in &s.samples {
                    let p = points.next().unwrap();
                    assert_eq!(p.line as usize, i + 1);
                    let stale = sample.value.to_bits() == STALE_NAN_BITS;
                    let want = if stale { &stale_labels } else { &labels };
                    assert_eq!(&point_labels(&got.batch, p), want);
                    assert_eq!(p.time, sample.timestamp * 1_000_000);
                    let v = point_value(&got.batch, p);
                    assert_eq!(v.to_bits() == STALE_NAN_BITS, stale);
                    assert!(v == sample.value || (v.is_nan() && sample.value.is_nan()));
                }
            }
            assert!(points.next().is_none());
            let families: std::collections::HashSet<&str> = expected
                .metadata
                .iter()
                .map(|m| m.metric_family_name.as_str())
                .collect();
            assert_eq!(got.metadata.len(), families.len(), "{path:?}");
            for m in &expected.metadata {
                let (_, mine) = got
                    .metadata
                    .iter()
                    .find(|(family, _)| *family == m.metric_family_name)
                    .unwrap();
                let last = expected
                    .metadata
                    .iter()
                    .rfind(|x| x.metric_family_name == m.metric_family_name)
                    .unwrap();
                assert_eq!(mine.help, last.help);
                assert_eq!(mine.unit, last.unit);
            }
        }
        let got = second;
        metadata_seen += got.metadata.len();
        assert_eq!(got.histograms, 0);
    }
    assert!(metadata_seen > 0, "the captures carry metadata requests");
    assert!(!carried.is_empty());
}

fn label(name: &str, value: &str) -> v1::Label {
    v1::Label {
        name: name.into(),
        value: value.into(),
    }
}

fn series(labels: Vec<v1::Label>, samples: &[(f64, i64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels,
        samples: samples
            .iter()
            .map(|&(value, timestamp)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn stale_markers_go_to_their_own_table_and_other_nans_are_values() {
    let req = v1::WriteRequest {
        timeseries: vec![series(
            vec![label("__name__", "up"), label("job", "a")],
            &[
                (1.0, 1000),
                (f64::from_bits(STALE_NAN_BITS), 2000),
                (f64::NAN, 3000),
            ],
        )],
        metadata: vec![],
    };
    let got = decode_fresh(&req.encode_to_vec(), Version::V1, &Limits::default()).unwrap();
    assert_eq!((got.samples, got.stale_markers, got.batch.len()), (3, 1, 3));
    let tables: Vec<&str> = got
        .batch
        .points()
        .iter()
        .map(|p| got.batch.str(p.table))
        .collect();
    assert_eq!(tables, ["up", "__stale_up", "up"]);
    let marker = got.batch.points()[1];
    assert_eq!(
        point_labels(&got.batch, &marker)[1],
        ("job".into(), "a".into())
    );
    assert_eq!(point_value(&got.batch, &marker).to_bits(), STALE_NAN_BITS);
    let p = got.batch.points()[2];
    assert_eq!(p.time, 3_000_000_000);
    assert!(point_value(&got.batch, &p).is_nan());
}

#[test]
fn bad_series_are_reported_and_the_others_kept() {
    let good = || {
        series(
            vec![label("__name__", "up"), label("job", "a")],
            &[(1.0, 1)],
        )
    };
    let req = v1::WriteRequest {
        timeseries: vec![
            good(),
            series(vec![label("job", "a")], &[(1.0, 1)]),
            series(
                vec![
                    label("__name__", "up"),
                    label("job", "a"),
                    label("job", "b"),
                ],
                &[(1.0, 1)],
            ),
            series(vec![label("__name__", "up"), label("", "x")], &[(1.0, 1)]),
            series(
                vec![label("__name__", "up"), label("job", &"x".repeat(5000))],
                &[(1.0, 1)],
            ),
            good(),
        ],
        metadata: vec![],
    };
    let got = decode_fresh(&req.encode_to_vec(), Version::V1, &Limits::default()).unwrap();
    assert_eq!(got.batch.len(), 2);
    let lines: Vec<u32> = got.batch.points().iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![1, 6]);
    let errors: Vec<(u32, &str)> = got
        .errors
        .iter()
        .map(|e| (e.series, e.message.as_str()))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(errors[0], (2, "the series has no __name__ label"));
    assert_eq!(errors[1], (3, "label \"job\" appears more than once"));
    assert_eq!(errors[2], (4, "a label has an empty name"));
    assert!(
        errors[3].1.contains("--max-label-value-bytes"),
        "{errors:?}"
    );
    assert!(
        got.errors[1].labels.contains(r#"job="b""#),
        "{:?}",
        got.errors[1]
    );

    let few = Limits {
        max_labels_per_series: 1,
        ..Limits::default()
    };
    let got = decode_fresh(&req.encode_to_vec(), Version::V1, &few).unwrap();
    assert_eq!(got.batch.len(), 0);
    assert!(got.errors[0].message.contains("--max-labels-per-series"));
}

#[test]
fn malformed_bodies_refuse_the_request() {
    let req = v1::WriteRequest {
        timeseries: vec![series(vec![label("__name__", "up")], &[(1.0, 1)])],
        metadata: vec![],
    }
    .encode_to_vec();
    let cut = &req[..req.len() - 3];
    let e = decode_fresh(cut, Version::V1, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            e,
            RequestError::Malformed {
                version: Version::V1,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("malformed V1 remote write request"),
        "{e}"
    );
    assert!(decode_fresh(&[0x0f], Version::V1, &Limits::default()).is_err());
    let e = decompress_snappy(b"\xff\xff\xff\xff\xffnot snappy", 1 << 20).unwrap_err();
    assert!(matches!(e, RequestError::NotSnappy(_)), "{e}");
    let big = snap::raw::Encoder::new()
        .compress_vec(&vec![0u8; 2000])
        .unwrap();
    let e = decompress_snappy(&big, 1000).unwrap_err();
    assert!(
        matches!(e, RequestError::TooLarge { limit: 1000, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("more than the limit of 1000"), "{e}");
}

#[test]
fn content_types_choose_the_version() {
    use Version::*;
    for (ct, v) in [
        (None, Some(V1)),
        (Some("application/x-protobuf"), Some(V1)),
        (
            Some("application/x-protobuf;proto=prometheus.WriteRequest"),
            Some(V1),
        ),
        (Some(v2::CONTENT_TYPE), Some(V2)),
        (
            Some("application/x-protobuf; proto=io.prometheus.write.v2.Request"),
            Some(V2),
        ),
        (
            Some("application/x-protobuf;proto=io.prometheus.write.v3.Request"),
            None,
        ),
        (Some("application/json"), None),
        (Some("text/plain"), None),
    ] {
        assert_eq!(Version::from_content_type(ct), v, "{ct:?}");
    }
}

#[test]
fn remote_write_2_requests_built_from_the_official_proto() {
    // symbols: "", then names and values and metadata strings
    let symbols: Vec<String> = [
        "",
        "__name__",
        "http_requests_total",
        "job",
        "api",
        "code",
        "200",
        "Requests served.",
        "requests",
        "trace_id",
        "abc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let req = v2::Request {
        symbols,
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 5, 6, 3, 4],
                samples: vec![
                    Sample {
                        value: 10.0,
                        timestamp: 1_700_000_000_000,
                    },
                    Sample {
                        value: 12.0,
                        timestamp: 1_700_000_015_000,
                    },
                ],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![9, 10],
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
                metadata: Some(v2::Metadata {
                    r#type: v2::MetricType::Counter as i32,
                    help_ref: 7,
                    unit_ref: 8,
                }),
                created_timestamp: 1_699_000_000_000,
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                histograms: vec![Histogram {
                    count_int: Some(3),
                    sum: 1.5,
                    timestamp: 1_700_000_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    let got = decode_fresh(&req.encode_to_vec(), Version::V2, &Limits::default()).unwrap();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    assert_eq!(
        (got.series, got.samples, got.histograms, got.exemplars),
        (2, 2, 1, 1)
    );
    assert_eq!(got.batch.len(), 2);
    let p = got.batch.points()[1];
    assert_eq!(
        point_labels(&got.batch, &p),
        vec![
            ("__name__".to_string(), "http_requests_total".to_string()),
            ("code".to_string(), "200".to_string()),
            ("job".to_string(), "api".to_string()),
        ]
    );
    assert_eq!(p.time, 1_700_000_015_000 * 1_000_000);
    assert_eq!(point_value(&got.batch, &p), 12.0);
    assert_eq!(
        got.metadata,
        vec![(
            "http_requests_total".to_string(),
            MetricMetadata {
                metric_type: MetricType::Counter,
                help: "Requests served.".into(),
                unit: "requests".into(),
            }
        )]
    );

    // a reference past the symbols is a malformed request
    let mut bad = req.clone();
    bad.timeseries[0].labels_refs[1] = 99;
    let e = decode_fresh(&bad.encode_to_vec(), Version::V2, &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("symbol reference 99"), "{e}");
    // a 2.0 body read as 1.0 has no series (its fields are reserved there), and the reverse
    // finds no symbols
    let as_v1 = decode_fresh(&req.encode_to_vec(), Version::V1, &Limits::default()).unwrap();
    assert_eq!((as_v1.series, as_v1.batch.len()), (0, 0));
}

#[test]
fn a_series_repeated_in_a_request_shares_its_tags_and_its_verdict() {
    let up = || vec![label("__name__", "up"), label("job", "a")];
    let bad = || vec![label("job", "nameless")];
    let req = v1::WriteRequest {
        timeseries: vec![
            series(up(), &[(1.0, 1000)]),
            series(bad(), &[(1.0, 1000)]),
            series(
                vec![label("__name__", "up"), label("job", "b")],
                &[(2.0, 1000)],
            ),
            series(up(), &[(3.0, 2000)]),
            series(bad(), &[(1.0, 2000)]),
        ],
        metadata: vec![],
    };
    let got = decode_fresh(&req.encode_to_vec(), Version::V1, &Limits::default()).unwrap();
    let points = got.batch.points();
    assert_eq!(points.len(), 3);
    assert_eq!(points[0].tag_range(), points[2].tag_range());
    assert_ne!(points[0].tag_range(), points[1].tag_range());
    assert_eq!(
        point_labels(&got.batch, &points[2]),
        point_labels(&got.batch, &points[0])
    );
    assert_eq!(points[2].line, 4);
    // the nameless series is reported at its first entry; its second is not stored either
    assert_eq!(got.errors.len(), 1, "{:?}", got.errors);
    assert_eq!(got.errors[0].series, 2);
}

#[test]
fn samples_written_before_labels_are_read() {
    // a series entry with its sample first, then its labels (prost writes fields in number
    // order, so this one is put together by hand)
    let field = |n: u8, bytes: Vec<u8>| {
        let mut out = vec![n << 3 | 2, bytes.len() as u8];
        out.extend(bytes);
        out
    };
    let mut entry = field(
        2,
        Sample {
            value: 7.0,
            timestamp: 5000,
        }
        .encode_to_vec(),
    );
    entry.extend(field(1, label("__name__", "up").encode_to_vec()));
    entry.extend(field(1, label("job", "a").encode_to_vec()));
    let body = [field(1, entry.clone()), field(1, entry)].concat();
    let got = decode_fresh(&body, Version::V1, &Limits::default()).unwrap();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    assert_eq!(got.batch.len(), 2);
    let p = got.batch.points()[1];
    assert_eq!(point_labels(&got.batch, &p)[1], ("job".into(), "a".into()));
    assert_eq!((p.time, point_value(&got.batch, &p)), (5_000_000_000, 7.0));
}

#[test]
fn the_series_cache_carries_checked_series_across_requests() {
    let up = |job: &str| vec![label("__name__", "up"), label("job", job), label("az", "")];
    let nameless = || vec![label("job", "nameless")];
    let request = |jobs: &[&str], t: i64| {
        let mut timeseries: Vec<_> = jobs.iter().map(|j| series(up(j), &[(1.0, t)])).collect();
        timeseries.insert(1, series(nameless(), &[(1.0, t)]));
        v1::WriteRequest {
            timeseries,
            metadata: vec![],
        }
        .encode_to_vec()
    };
    let labels_of = |d: &Decoded| -> Vec<Vec<(String, String)>> {
        d.batch
            .points()
            .iter()
            .map(|p| point_labels(&d.batch, p))
            .collect()
    };
    let limits = Limits::default();
    let mut cache = SeriesCache::default();
    let first = decode(
        &request(&["a", "b"], 1000),
        Version::V1,
        &limits,
        &mut cache,
    )
    .unwrap();
    assert_eq!(cache.len(), 2, "the nameless series is not kept");
    // the second request repeats "b" (from the cache) and adds "c"; its batch is its own
    let body = request(&["b", "c", "b"], 2000);
    let second = decode(&body, Version::V1, &limits, &mut cache).unwrap();
    assert_eq!(cache.len(), 3);
    assert_eq!(
        labels_of(&second),
        labels_of(&decode_fresh(&body, Version::V1, &limits).unwrap())
    );
    assert_eq!(labels_of(&second)[0], labels_of(&first)[1]);
    let points = second.batch.points();
    assert_eq!(points[0].tag_range(), points[2].tag_range());
    assert_eq!(second.batch.str(points[1].table), "up");
    // a bad series is reported in every request that sends it
    for d in [&first, &second] {
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert_eq!(d.errors[0].series, 2);
        assert!(
            d.errors[0].message.contains("no __name__"),
            "{:?}",
            d.errors
        );
    }
    // stricter limits are checked against series the cache holds
    let strict = Limits {
        max_label_value_bytes: 0,
        ..limits
    };
    let third = decode(&body, Version::V1, &strict, &mut cache).unwrap();
    assert_eq!(third.batch.len(), 0);
    assert_eq!(third.errors.len(), 3, "{:?}", third.errors);
    // a cache over its budget is emptied and relearned, and decodes the same
    let mut tiny = SeriesCache::new(1);
    for _ in 0..3 {
        let d = decode(&body, Version::V1, &limits, &mut tiny).unwrap();
        assert_eq!(labels_of(&d), labels_of(&second));
        assert_eq!(tiny.len(), 2);
    }
}

#[test]
fn thousands_of_metadata_entries_are_kept_once_each_the_last_description_winning() {
    let entry = |family: String, help: &str| v1::MetricMetadata {
        r#type: 1,
        metric_family_name: family,
        help: help.to_string(),
        unit: String::new(),
    };
    // each entry used to be matched against every earlier one: quadratic in the request
    let mut metadata: Vec<_> = (0..50_000)
        .map(|i| entry(format!("m{i}"), "first"))
        .collect();
    metadata.push(entry("m7".into(), "last"));
    let req = v1::WriteRequest {
        timeseries: vec![],
        metadata,
    };
    let got = decode_fresh(&req.encode_to_vec(), Version::V1, &Limits::default()).unwrap();
    assert_eq!(got.metadata.len(), 50_000);
    assert_eq!(got.metadata[7].0, "m7");
    assert_eq!(got.metadata[7].1.help, "last");
    assert_eq!(got.metadata[8].1.help, "first");
}
