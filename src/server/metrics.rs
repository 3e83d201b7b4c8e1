//! The server's own metrics, rendered with storage's at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_storage::WriteBuffer;
use sluice_storage::metrics::{Counter, Histogram, header};

/// The routes that get their own series; anything else is counted as `other`.
pub const ENDPOINTS: &[&str] = &[
    "/api/v3/write_lp",
    "/api/v2/write",
    "/write",
    "/api/v1/write",
    "/v1/metrics",
    OTLP_GRPC,
    "/api/v3/query_sql",
    "/api/v3/persist",
    "/api/v3/compact",
    "/health",
    "/ping",
    "/metrics",
    "other",
];

/// The write endpoints, which also count lines and values.
pub const WRITE_ENDPOINTS: &[&str] = &[
    "/api/v3/write_lp",
    "/api/v2/write",
    "/write",
    "/api/v1/write",
    "/v1/metrics",
    OTLP_GRPC,
];

/// OTLP/gRPC's export method, counted under its gRPC path.
const OTLP_GRPC: &str = sluice_proto::otlp::EXPORT_PATH;

/// What remote write received and did not store, by kind (see [`ServerMetrics::not_stored`]).
pub const NOT_STORED: &[&str] = &["histogram", "exemplar"];

/// Per-endpoint request metrics.
#[derive(Default)]
struct EndpointMetrics {
    duration: Histogram,
    lines_accepted: Counter,
    lines_rejected: Counter,
    values_accepted: Counter,
}

/// What the server counts.
pub struct ServerMetrics {
    endpoints: BTreeMap<&'static str, EndpointMetrics>,
    /// Remote write samples not stored, in [`NOT_STORED`]'s order.
    not_stored: [Counter; 2],
    responses: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            endpoints: ENDPOINTS
                .iter()
                .map(|e| (*e, EndpointMetrics::default()))
                .collect(),
            not_stored: Default::default(),
            responses: Mutex::new(BTreeMap::new()),
        }
    }
}

impl ServerMetrics {
    fn endpoint(&self, path: &str) -> (&'static str, &EndpointMetrics) {
        let (name, m) = self
            .endpoints
            .get_key_value(path)
            .unwrap_or_else(|| self.endpoints.get_key_value("other").expect("listed"));
        (*name, m)
    }

    /// Records a finished request.
    pub fn request(&self, path: &str, status: u16, took: Duration) {
        let (name, m) = self.endpoint(path);
        m.duration.observe(took);
        *self.responses.lock().entry((name, status)).or_default() += 1;
    }

    /// Records a write's outcome in lines and field values.
    pub fn write(&self, path: &str, accepted: usize, rejected: usize, values: usize) {
        let (_, m) = self.endpoint(path);
        m.lines_accepted.add(accepted as u64);
        m.lines_rejected.add(rejected as u64);
        m.values_accepted.add(values as u64);
    }

    /// Records what a remote write request carried that Sluice does not store: native
    /// histogram samples and exemplars.
    pub fn not_stored(&self, histograms: usize, exemplars: usize) {
        for (c, n) in self.not_stored.iter().zip([histograms, exemplars]) {
            c.add(n as u64);
        }
    }

    /// Everything in Prometheus text format.
    pub fn render(&self, buffer: &WriteBuffer) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "sluice_http_request_duration_seconds",
            "histogram",
            "Time to answer HTTP requests, per endpoint.",
        );
        for (name, m) in &self.endpoints {
            m.duration.render(
                &mut out,
                "sluice_http_request_duration_seconds",
                &format!("endpoint=\"{name}\""),
            );
        }
        header(
            &mut out,
            "sluice_http_responses_total",
            "counter",
            "HTTP responses, per endpoint and status code.",
        );
        for ((name, status), n) in self.responses.lock().iter() {
            let _ = writeln!(
                out,
                "sluice_http_responses_total{{endpoint=\"{name}\",status=\"{status}\"}} {n}"
            );
        }
        for (metric, help, get) in [
            (
                "sluice_write_lines_accepted_total",
                "Lines (points) stored, per write endpoint.",
                (|m: &EndpointMetrics| m.lines_accepted.get()) as fn(&EndpointMetrics) -> u64,
            ),
            (
                "sluice_write_lines_rejected_total",
                "Lines (points) rejected as invalid, per write endpoint.",
                |m: &EndpointMetrics| m.lines_rejected.get(),
            ),
            (
                "sluice_write_values_accepted_total",
                "Field values stored, per write endpoint.",
                |m: &EndpointMetrics| m.values_accepted.get(),
            ),
        ] {
            header(&mut out, metric, "counter", help);
            for name in WRITE_ENDPOINTS {
                let _ = writeln!(
                    out,
                    "{metric}{{endpoint=\"{name}\"}} {}",
                    get(&self.endpoints[name])
                );
            }
        }
        header(
            &mut out,
            "sluice_remote_write_not_stored_total",
            "counter",
            "Remote write samples received and not stored: native histograms and exemplars \
             (not supported yet).",
        );
        for (kind, c) in NOT_STORED.iter().zip(&self.not_stored) {
            let _ = writeln!(
                out,
                "sluice_remote_write_not_stored_total{{kind=\"{kind}\"}} {}",
                c.get()
            );
        }
        buffer.metrics().render(
            &mut out,
            buffer.buffer_rows() as u64,
            buffer.buffer_bytes() as u64,
        );
        out
    }
}
