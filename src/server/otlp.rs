//! `POST /v1/metrics`: OpenTelemetry OTLP/HTTP metrics export, protobuf
//! (`application/x-protobuf`) or JSON (`application/json`) encoding.
//!
//! The answers follow the OTLP/HTTP specification, in the request's encoding: 200 with an
//! `ExportMetricsServiceResponse` (its `partial_success` saying how many data points were not
//! stored, and why); for errors a `google.rpc.Status` body: 400 for a body that is not an
//! export request, 413 over the size limit, 415 for another content type or encoding, 503 with
//! `Retry-After` when the buffer is full (which exporters retry). `Content-Encoding: gzip` is
//! accepted. The database is the `db` query parameter, else the `X-Sluice-Database` header,
//! else the default.
//!
//! OTLP/gRPC ([`grpc`]) maps and stores requests the same way ([`store`]).

pub mod grpc;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::json;
use sluice_ingest::otlp::{json, map};
use sluice_proto::otlp::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse, Status};
use sluice_storage::WriteOptions;

use super::auth::Access;
use super::error::ApiError;
use super::state::AppState;

const PATH: &str = "/v1/metrics";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The encoding of a request, and so of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Encoding, String> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case(PROTOBUF) {
            Ok(Encoding::Protobuf)
        } else if media.eq_ignore_ascii_case(JSON) {
            Ok(Encoding::Json)
        } else {
            Err(format!(
                "Content-Type '{content_type}' is not accepted; send OTLP with Content-Type: \
                 {PROTOBUF} (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf) or {JSON} \
                 (http/json)"
            ))
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

/// `POST /v1/metrics?db=`
pub async fn export(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let encoding = match Encoding::of(&headers) {
        Ok(e) => e,
        // the answer in protobuf, the encoding OTLP/HTTP requires every receiver to take
        Err(message) => {
            let e = ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
            return error_response(e, Encoding::Protobuf);
        }
    };
    match ingest(&state, &access, encoding, &params, &headers, body).await {
        Ok(response) => {
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                Encoding::Json => {
                    // protojson: lowerCamelCase, int64 as a string, an unset message left out
                    let v = match &response.partial_success {
                        Some(p) => json!({"partialSuccess": {
                            "rejectedDataPoints": p.rejected_data_points.to_string(),
                            "errorMessage": p.error_message,
                        }}),
                        None => json!({}),
                    };
                    v.to_string().into_bytes()
                }
            };
            encoded(StatusCode::OK, encoding, body)
        }
        Err(e) => error_response(e, encoding),
    }
}

/// The database a request names: the `db` query parameter, else the `x-sluice-database`
/// header (or gRPC metadata), else the default.
fn database<'a>(state: &'a AppState, db_param: Option<&'a str>, headers: &'a HeaderMap) -> &'a str {
    db_param
        .or_else(|| {
            headers
                .get("x-sluice-database")
                .and_then(|v| v.to_str().ok())
        })
        .filter(|d| !d.is_empty())
        .unwrap_or(&state.config.default_db)
}

async fn ingest(
    state: &AppState,
    access: &Access,
    encoding: Encoding,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<ExportMetricsServiceResponse, ApiError> {
    let db = database(state, params.get("db").map(String::as_str), headers);
    access.write(db)?;
    let bytes = state.read_body(headers, body).await?;
    let mapped = match encoding {
        Encoding::Protobuf => {
            with_cache(state, |c| map::map_protobuf(&bytes, &state.config.otlp, c)).map_err(
                |e| {
                    ApiError::bad_request(format!(
                        "the body is not an OTLP ExportMetricsServiceRequest in protobuf: {e}"
                    ))
                },
            )?
        }
        Encoding::Json => {
            let request = json::decode(&bytes).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body is not an OTLP/JSON ExportMetricsServiceRequest: {e}"
                ))
            })?;
            with_cache(state, |c| map::map(&request, &state.config.otlp, c)).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body is not an OTLP/JSON ExportMetricsServiceRequest: {e}"
                ))
            })?
        }
    };
    store(state, PATH, db, mapped).await
}

/// Runs `f` with one of the server's mapping caches: one per mapping in progress at once (at
/// most one per runtime thread, since a mapping does not yield).
fn with_cache<T>(state: &AppState, f: impl FnOnce(&mut map::Cache) -> T) -> T {
    let mut cache = state.otlp_caches.lock().pop().unwrap_or_default();
    let out = f(&mut cache);
    state.otlp_caches.lock().push(cache);
    out
}

/// Writes the rows of a mapped request to `db`; the answer says what was not stored.
/// `endpoint` names the route in the server's metrics.
async fn store(
    state: &AppState,
    endpoint: &'static str,
    db: &str,
    mapped: map::Mapped,
) -> Result<ExportMetricsServiceResponse, ApiError> {
    let mut rejected = mapped.rejected_points;
    let mut message = mapped.error_message();
    let mut accepted = 0;
    if !mapped.batch.is_empty() {
        let outcome = state
            .buffer
            .write(db, mapped.batch, WriteOptions::default())
            .await?;
        accepted = outcome.accepted_points;
        if !outcome.rejected.is_empty() {
            // rows, not data points: a histogram point is several rows
            rejected += outcome.rejected.len() as u64;
            let first = &outcome.rejected[0].message;
            let more = outcome.rejected.len() - 1;
            let sep = if message.is_empty() { "" } else { "; " };
            message = format!("{message}{sep}{} row(s) refused: {first}", more + 1);
            if more > 0 {
                message.push_str(&format!(" (and {more} more)"));
            }
        }
    }
    state
        .metrics
        .write(endpoint, accepted, rejected as usize, accepted);
    if rejected > 0 {
        tracing::debug!(db, rejected, "OTLP export partly stored: {message}");
    }
    Ok(ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then_some(ExportMetricsPartialSuccess {
            rejected_data_points: rejected as i64,
            error_message: message,
        }),
    })
}

fn encoded(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    response
}

/// An error as OTLP/HTTP wants it: a `google.rpc.Status` body, `Retry-After` kept.
fn error_response(e: ApiError, encoding: Encoding) -> Response {
    let code = e.otlp_http_code();
    if e.status.is_server_error() {
        tracing::error!(status = %e.status, "{}", e.message);
    }
    let body = match encoding {
        Encoding::Protobuf => Status {
            code,
            message: e.message,
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => json!({"code": code, "message": e.message})
            .to_string()
            .into_bytes(),
    };
    let mut response = encoded(e.status, encoding, body);
    if let Some(secs) = e.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
