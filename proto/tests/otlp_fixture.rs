//! The OTLP types read the OpenTelemetry Python SDK's protobuf export (the shared capture) the
//! way its JSON export of the same metrics reads.

use prost::Message;
use serde_json::Value;
use sluice_proto::otlp::{AnyValue, ExportMetricsServiceRequest, KeyValue, Metric};

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    std::fs::read(
        std::path::Path::new(&dir)
            .join("../tests/fixtures/otlp")
            .join(name),
    )
    .unwrap()
}

/// `(kind, data points)` of a metric, in the JSON's names.
fn kind(m: &Metric) -> (&'static str, usize) {
    if let Some(g) = &m.gauge {
        ("gauge", g.data_points.len())
    } else if let Some(s) = &m.sum {
        ("sum", s.data_points.len())
    } else if let Some(h) = &m.histogram {
        ("histogram", h.data_points.len())
    } else if let Some(e) = &m.exponential_histogram {
        ("exponentialHistogram", e.data_points.len())
    } else if let Some(s) = &m.summary {
        ("summary", s.data_points.len())
    } else {
        ("none", 0)
    }
}

fn attribute_keys(attributes: &[KeyValue]) -> Vec<String> {
    let mut keys: Vec<String> = attributes.iter().map(|a| a.key.clone()).collect();
    keys.sort();
    keys
}

fn json_keys(attributes: &Value) -> Vec<String> {
    let mut keys: Vec<String> = attributes
        .as_array()
        .map(|a| {
            a.iter()
                .map(|kv| kv["key"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

#[test]
fn python_sdk_protobuf_export_reads_like_its_json_export() {
    let pb = ExportMetricsServiceRequest::decode(&fixture("python-sdk-metrics.pb")[..]).unwrap();
    let json: Value = serde_json::from_slice(&fixture("python-sdk-metrics.json")).unwrap();
    let json_rms = json["resourceMetrics"].as_array().unwrap();
    assert_eq!(pb.resource_metrics.len(), json_rms.len());
    for (rm, jrm) in pb.resource_metrics.iter().zip(json_rms) {
        let resource = rm.resource.as_ref().unwrap();
        assert_eq!(
            attribute_keys(&resource.attributes),
            json_keys(&jrm["resource"]["attributes"])
        );
        let service = resource
            .attributes
            .iter()
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .and_then(|v: &AnyValue| v.string_value.clone());
        assert!(service.is_some_and(|s| !s.is_empty()));
        let jsms = jrm["scopeMetrics"].as_array().unwrap();
        assert_eq!(rm.scope_metrics.len(), jsms.len());
        for (sm, jsm) in rm.scope_metrics.iter().zip(jsms) {
            assert_eq!(
                sm.scope.as_ref().unwrap().name,
                jsm["scope"]["name"].as_str().unwrap()
            );
            let jms = jsm["metrics"].as_array().unwrap();
            assert_eq!(sm.metrics.len(), jms.len());
            for (m, jm) in sm.metrics.iter().zip(jms) {
                assert_eq!(m.name, jm["name"].as_str().unwrap());
                assert_eq!(m.unit, jm["unit"].as_str().unwrap_or(""));
                let (k, points) = kind(m);
                let jpoints = jm[k]["dataPoints"].as_array();
                assert_eq!(Some(points), jpoints.map(|p| p.len()), "{}: {k}", m.name);
            }
        }
    }
    let kinds: Vec<&str> = pb.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| kind(m).0)
        .collect();
    assert_eq!(
        kinds,
        [
            "sum",
            "histogram",
            "exponentialHistogram",
            "sum",
            "sum",
            "gauge"
        ]
    );
    // the round trip through the types is byte for byte
    let bytes = fixture("python-sdk-metrics.pb");
    assert_eq!(pb.encode_to_vec(), bytes);
}
