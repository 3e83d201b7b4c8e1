//! The line-protocol write endpoints: `/api/v3/write_lp`, `/api/v2/write` and `/write`.
//!
//! All three share one path (read body, parse, store, report); they differ in how they name
//! the database, which precisions they accept, and the shape of their error bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use sluice_ingest::line_protocol::{self, ParseOptions, Precision, WriteReport};
use sluice_storage::WriteOptions;

use super::auth::Access;
use super::error::{ApiError, ErrorStyle};
use super::state::AppState;

/// Which of the three APIs a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    V3,
    V2,
    V1,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::V3 => "/api/v3/write_lp",
            Api::V2 => "/api/v2/write",
            Api::V1 => "/write",
        }
    }

    fn style(self) -> ErrorStyle {
        match self {
            Api::V3 => ErrorStyle::V3,
            Api::V2 | Api::V1 => ErrorStyle::Influx,
        }
    }

    /// The query parameter that names the database.
    fn database_param(self) -> &'static str {
        match self {
            Api::V2 => "bucket",
            Api::V3 | Api::V1 => "db",
        }
    }

    /// The request's `precision`, in this API's spelling; absent, what this API assumes.
    fn precision(self, params: &HashMap<String, String>) -> Result<Precision, ApiError> {
        let Some(p) = params.get("precision") else {
            return Ok(match self {
                Api::V3 => Precision::Auto,
                Api::V2 | Api::V1 => Precision::Nanosecond,
            });
        };
        let (parsed, accepted) = match self {
            Api::V3 => (
                Precision::parse_v3(p),
                "auto, ns, us, ms or s (or nanosecond, microsecond, millisecond, second)",
            ),
            Api::V2 => (Precision::parse_v2(p), "ns, us, ms or s"),
            Api::V1 => (Precision::parse_v1(p), "n, ns, u, us, ms, s, m or h"),
        };
        parsed.ok_or_else(|| {
            ApiError::bad_request(format!("invalid precision '{p}'; use {accepted}"))
                .with_style(self.style())
        })
    }
}

type Params = Query<HashMap<String, String>>;

/// `POST /api/v3/write_lp?db=&precision=&accept_partial=&no_sync=`
pub async fn write_v3(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let opts = WriteOptions {
        accept_partial: flag(&params, "accept_partial", true)?,
        no_sync: flag(&params, "no_sync", false)?,
    };
    ingest(&state, &access, Api::V3, &params, opts, &headers, body).await
}

/// `POST /api/v2/write?bucket=&org=&precision=` (InfluxDB 2 clients and Telegraf's
/// `influxdb_v2` output). `org` is accepted and ignored.
pub async fn write_v2(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let opts = WriteOptions::default();
    ingest(&state, &access, Api::V2, &params, opts, &headers, body).await
}

/// `POST /write?db=&rp=&precision=` (InfluxDB 1 clients). `rp` is accepted and ignored.
pub async fn write_v1(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let opts = WriteOptions::default();
    ingest(&state, &access, Api::V1, &params, opts, &headers, body).await
}

fn flag(params: &HashMap<String, String>, key: &str, default: bool) -> Result<bool, ApiError> {
    match params.get(key).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v.is_empty() || v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "invalid value '{v}' for {key}; use true or false"
        ))),
    }
}

async fn ingest(
    state: &AppState,
    access: &Access,
    api: Api,
    params: &HashMap<String, String>,
    opts: WriteOptions,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let style = api.style();
    let precision = api.precision(params)?;
    let db = match params.get(api.database_param()) {
        Some(db) if !db.is_empty() => db.as_str(),
        _ => state.config.default_db.as_str(),
    };
    access.write(db).map_err(|e| e.with_style(style))?;
    let body = state
        .read_body(headers, body)
        .await
        .map_err(|e| e.with_style(style))?;
    // lines without a time get the buffer's clock, the one retention reads
    let received = state.buffer.now();
    let parsed = line_protocol::parse(
        &body,
        &ParseOptions {
            precision,
            default_time: received,
            max_line_bytes: state.config.max_line_bytes,
        },
    );
    let mut report = WriteReport::new(parsed.lines, parsed.errors, opts.accept_partial);
    let mut values = 0;
    if report.should_store() && !parsed.batch.is_empty() {
        let outcome = state
            .buffer
            .write(db, parsed.batch, opts)
            .await
            .map_err(|e| ApiError::from(e).with_style(style))?;
        values = outcome.accepted_values;
        let rejected = outcome.rejected.into_iter().map(|r| (r.line, r.message));
        report.stored(outcome.accepted_points, rejected, |lines| {
            line_protocol::line_texts(&body, lines)
        });
    }
    let accepted = report.accepted();
    state.metrics.write(
        api.path(),
        accepted,
        report.total_lines() - accepted,
        values,
    );
    let Some(first) = report.errors().first() else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let err = match style {
        ErrorStyle::V3 => {
            let data = report
                .errors()
                .iter()
                .map(|e| {
                    json!({
                        "original_line": e.original_line,
                        "line_number": e.line_number,
                        "error_message": e.message,
                    })
                })
                .collect();
            ApiError {
                data: Some(serde_json::Value::Array(data)),
                ..ApiError::bad_request(report.summary())
            }
        }
        ErrorStyle::Influx | ErrorStyle::Prometheus => ApiError::bad_request(format!(
            "{}; first error at line {}: {}: '{}'",
            report.summary(),
            first.line_number,
            first.message,
            first.original_line
        ))
        .with_style(style),
    };
    Err(err)
}
