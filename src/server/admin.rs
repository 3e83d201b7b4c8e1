//! Liveness, the server's own metrics, and operations on storage.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use sluice_storage::FreezeRule;

use super::auth::Access;
use super::error::ApiError;
use super::state::AppState;

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
        {
            let mut out = state.metrics.render(&state.buffer);
            state.query.profile().render(&mut out);
            out
        },
    )
}

/// `POST /api/v3/persist`: persists everything buffered now and answers once the files and the
/// catalog are durable, with what was written.
pub async fn persist(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
) -> Result<impl IntoResponse, ApiError> {
    access.admin()?;
    let summary = state.buffer.persist(FreezeRule::All).await?;
    Ok(axum::Json(json!({
        "files": summary.files,
        "rows": summary.rows,
        "bytes": summary.bytes,
        "wal_segments_deleted": summary.wal_segments_deleted,
        "failed_partitions": summary.failed_partitions,
        "rounds": summary.rounds,
    })))
}

/// `POST /api/v3/compact`: runs a compaction round now (as the background compactor does every
/// `--compaction-interval`): deletes files whose grace period ended, drops what retention
/// periods no longer keep, merges small files; answers with what it did.
pub async fn compact(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
) -> Result<impl IntoResponse, ApiError> {
    access.admin()?;
    let summary = state
        .buffer
        .compact(state.config.compaction_target_bytes)
        .await?;
    Ok(axum::Json(json!({
        "days": summary.days,
        "files_in": summary.files_in,
        "files_out": summary.files_out,
        "bytes_in": summary.bytes_in,
        "bytes_out": summary.bytes_out,
        "files_deleted": summary.files_deleted,
        "files_expired": summary.retention.files_expired,
        "partitions_expired": summary.retention.partitions_expired,
    })))
}
