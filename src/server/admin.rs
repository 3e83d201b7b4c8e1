//! Liveness and the server's own metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;

/// The version agents see in `X-Influxdb-Version`: the InfluxDB API generation Sluice speaks
/// (some clients branch on the major version), then Sluice's own version.
pub const INFLUXDB_VERSION: &str = concat!("3.0.0-sluice-", env!("CARGO_PKG_VERSION"));

/// `GET /health`: 200 while the server runs.
pub async fn health() -> impl IntoResponse {
    (StatusCode::OK, "OK")
}

/// `GET|HEAD /ping`: 204 with `X-Influxdb-Version`, as Telegraf and InfluxDB clients expect.
pub async fn ping() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [
            ("X-Influxdb-Version", INFLUXDB_VERSION),
            ("X-Influxdb-Build", "Sluice"),
        ],
    )
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state.buffer),
    )
}
