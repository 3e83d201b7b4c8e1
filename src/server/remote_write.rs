//! `POST /api/v1/write`: Prometheus remote write 1.0 and 2.0.
//!
//! The answers follow the senders' retry rules: 204 when every series was stored; 400 for a
//! body that is not a snappy-compressed message or for series that break a rule (the other
//! series of the request are stored, and the message names the bad ones); 415 for another
//! content type or encoding; 503 with `Retry-After` when the buffer is full. A 2.0 answer
//! carries the `X-Prometheus-Remote-Write-*-Written` counts, error or not. A retried request
//! stores nothing twice: its points have the same primary keys and merge.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_ingest::remote_write::{self, Decoded, SeriesError, Version};
use sluice_storage::WriteOptions;

use super::auth::Access;
use super::body;
use super::error::ApiError;
use super::state::AppState;

const PATH: &str = "/api/v1/write";

/// How many bad series an error message names; the count covers the rest.
const ERRORS_SHOWN: usize = 5;

/// `POST /api/v1/write?db=`
pub async fn write(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    let Some(version) = Version::from_content_type(content_type) else {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type '{}' is not remote write; send application/x-protobuf (1.0) or \
                 {} (2.0)",
                content_type.unwrap_or(""),
                remote_write::V2_CONTENT_TYPE
            ),
        )
        .into_response();
    };
    let mut samples_written = 0;
    let mut response = match ingest(
        &state,
        &access,
        version,
        &params,
        &headers,
        body,
        &mut samples_written,
    )
    .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    };
    if version == Version::V2 {
        // Sluice stores no histograms or exemplars yet: it wrote none of them
        for (name, n) in [
            ("x-prometheus-remote-write-samples-written", samples_written),
            ("x-prometheus-remote-write-histograms-written", 0),
            ("x-prometheus-remote-write-exemplars-written", 0),
        ] {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), HeaderValue::from(n));
        }
    }
    response
}

async fn ingest(
    state: &AppState,
    access: &Access,
    version: Version,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    samples_written: &mut usize,
) -> Result<(), ApiError> {
    let encoding = body::content_encoding(headers);
    if encoding != "snappy" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding '{encoding}' is not supported for remote write; the body must \
                 be snappy block format with Content-Encoding: snappy"
            ),
        ));
    }
    let db = match params.get("db") {
        Some(db) if !db.is_empty() => db.as_str(),
        _ => state.config.default_db.as_str(),
    };
    access.write(db)?;
    let limit = state.config.max_request_bytes;
    let raw = body::read_raw(headers, body, limit, state.config.http_body_timeout).await?;
    let mut scratch = state.remote_write_scratch.lock().pop().unwrap_or_default();
    let decoded = scratch.decode(&raw, limit, version, &state.config.remote_write_limits);
    state.remote_write_scratch.lock().push(scratch);
    let decoded = decoded?;
    let Decoded {
        batch,
        series,
        samples,
        stale_markers: _,
        histograms,
        exemplars,
        metadata,
        mut errors,
    } = decoded;
    state.metrics.not_stored(histograms, exemplars);
    if histograms > 0 || exemplars > 0 {
        tracing::warn!(
            db,
            histograms,
            exemplars,
            "remote write: native histograms and exemplars are not stored yet; dropped and \
             counted in sluice_remote_write_not_stored_total"
        );
    }
    if !metadata.is_empty() {
        state.buffer.set_metric_metadata(db, &metadata)?;
    }
    let mut accepted = 0;
    if !batch.is_empty() {
        let outcome = state
            .buffer
            .write(db, batch, WriteOptions::default())
            .await?;
        accepted = outcome.accepted_points;
        errors.extend(outcome.rejected.into_iter().map(|r| SeriesError {
            series: r.line,
            labels: String::new(),
            message: r.message,
        }));
    }
    *samples_written = accepted;
    let rejected = samples.saturating_sub(accepted);
    state.metrics.write(PATH, accepted, rejected, accepted);
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort_by_key(|e| e.series);
    errors.dedup_by(|a, b| a.series == b.series && a.message == b.message);
    let bad_series = {
        let mut s: Vec<u32> = errors.iter().map(|e| e.series).collect();
        s.dedup();
        s.len()
    };
    let mut message =
        format!("{bad_series} of {series} series were not stored ({accepted} samples were): ");
    for (i, e) in errors.iter().take(ERRORS_SHOWN).enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let _ = write!(message, "{sep}series {}", e.series);
        if !e.labels.is_empty() {
            let _ = write!(message, " {}", e.labels);
        }
        let _ = write!(message, ": {}", e.message);
    }
    if errors.len() > ERRORS_SHOWN {
        let _ = write!(message, "; and {} more", errors.len() - ERRORS_SHOWN);
    }
    Err(ApiError::bad_request(message))
}
