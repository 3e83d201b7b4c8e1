//! `POST /api/v1/read`: Prometheus remote read, so a Prometheus can use Sluice as its
//! long-term store (`remote_read:` in its configuration).
//!
//! The body is a snappy-compressed `ReadRequest`; each query's matchers select series as a
//! PromQL selector does, with their raw samples in `[start, end]` (stale markers among
//! them, as Prometheus keeps them). The answer is the first type the client accepts: a
//! snappy-compressed `ReadResponse` of samples (`SAMPLES`, what Prometheus servers ask for),
//! or frames of `ChunkedReadResponse`s of XOR chunks (`STREAMED_XOR_CHUNKS`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use promql_parser::label::{MatchOp, Matcher};
use prost::Message;
use sluice_proto::prometheus::Sample;
use sluice_proto::prometheus::read::{
    Chunk, ChunkEncoding, ChunkedReadResponse, ChunkedSeries, Label, MatchType, QueryResult,
    ReadRequest, ReadResponse, ResponseType, TimeSeries,
};
use sluice_query::promql::xor_chunk::{frame, xor_chunks};
use sluice_query::promql::{PromError, PromQl, RawSeries};

use super::error::{ApiError, ErrorStyle};
use super::prometheus::{caller_and_path, database, query_pairs};
use super::state::AppState;

/// `POST /api/v1/read?db=` (or `/prometheus/<db>/api/v1/read`)
pub async fn read(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match answer(&state, request).await {
        Ok(r) => r,
        Err(e) => e.with_style(ErrorStyle::Prometheus).into_response(),
    }
}

async fn answer(state: &Arc<AppState>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let (access, path_db, _) = caller_and_path(&mut parts, state).await?;
    let db = database(path_db, &query_pairs(&parts), state);
    access.read(&db)?;
    let limit = state.config.max_request_bytes;
    let raw = super::body::read_raw(
        &parts.headers,
        Body::new(body),
        limit,
        state.config.http_body_timeout,
    )
    .await?;
    let bytes = sluice_ingest::remote_write::decompress_snappy(&raw, limit)?;
    let request = ReadRequest::decode(&bytes[..]).map_err(|e| {
        ApiError::bad_request(format!("the body is not a remote read ReadRequest: {e}"))
    })?;
    // the first of the client's accepted types (SAMPLES if it names none)
    let streamed = match request.accepted_response_types.first() {
        None => false,
        Some(&t) if t == ResponseType::Samples as i32 => false,
        Some(&t) if t == ResponseType::StreamedXorChunks as i32 => true,
        Some(t) => {
            return Err(ApiError::bad_request(format!(
                "response type {t} is neither SAMPLES (0) nor STREAMED_XOR_CHUNKS (1)"
            )));
        }
    };
    let engine = PromQl::new(
        &state.query,
        &db,
        access.readable(),
        &state.config.promql,
        &state.promql_parsed,
    );
    let mut results = Vec::with_capacity(request.queries.len());
    let mut frames = Vec::new();
    for (index, q) in request.queries.iter().enumerate() {
        let matchers = q
            .matchers
            .iter()
            .map(matcher)
            .collect::<Result<Vec<_>, _>>()?;
        let series = engine
            .samples(&matchers, q.start_timestamp_ms, q.end_timestamp_ms)
            .await?;
        if streamed {
            frames.extend(chunked(series, index as i64));
            continue;
        }
        results.push(QueryResult {
            timeseries: series
                .into_iter()
                .map(|s| TimeSeries {
                    labels: labels(&s),
                    samples: s
                        .t
                        .iter()
                        .zip(&s.v)
                        .map(|(&timestamp, &value)| Sample { value, timestamp })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        });
    }
    if streamed {
        return Ok(([(header::CONTENT_TYPE, STREAMED_CONTENT_TYPE)], frames).into_response());
    }
    let body = snap::raw::Encoder::new()
        .compress_vec(&ReadResponse { results }.encode_to_vec())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-protobuf"),
            (header::CONTENT_ENCODING, "snappy"),
        ],
        body,
    )
        .into_response())
}

/// The content type of a streamed answer.
const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// Bytes of series one frame of a streamed answer holds, about (Prometheus's default).
const FRAME_BYTES: usize = 1 << 20;

/// Query `index`'s series as frames of `ChunkedReadResponse`s of XOR chunks.
fn chunked(series: Vec<RawSeries>, index: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending = ChunkedReadResponse {
        chunked_series: Vec::new(),
        query_index: index,
    };
    let mut pending_bytes = 0;
    for s in series {
        let chunks: Vec<Chunk> = xor_chunks(&s.t, &s.v)
            .into_iter()
            .map(|(min_time_ms, max_time_ms, data)| Chunk {
                min_time_ms,
                max_time_ms,
                r#type: ChunkEncoding::Xor as i32,
                data,
            })
            .collect();
        pending_bytes += chunks.iter().map(|c| c.data.len()).sum::<usize>();
        pending.chunked_series.push(ChunkedSeries {
            labels: labels(&s),
            chunks,
        });
        if pending_bytes >= FRAME_BYTES {
            out.extend(frame(&pending.encode_to_vec()));
            pending.chunked_series.clear();
            pending_bytes = 0;
        }
    }
    if !pending.chunked_series.is_empty() {
        out.extend(frame(&pending.encode_to_vec()));
    }
    out
}

fn labels(s: &RawSeries) -> Vec<Label> {
    s.labels
        .pairs()
        .iter()
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// A remote read matcher as a PromQL one (regular expressions anchored, as Prometheus's).
fn matcher(m: &sluice_proto::prometheus::read::LabelMatcher) -> Result<Matcher, ApiError> {
    let regex = |v: &str| {
        regex::Regex::new(&format!("^(?s:{v})$")).map_err(|e| {
            ApiError::from(PromError::BadData(format!(
                "matcher {}=~{v:?} is not a regular expression: {e}",
                m.name
            )))
        })
    };
    let op = match MatchType::try_from(m.r#type) {
        Ok(MatchType::Eq) => MatchOp::Equal,
        Ok(MatchType::Neq) => MatchOp::NotEqual,
        Ok(MatchType::Re) => MatchOp::Re(regex(&m.value)?),
        Ok(MatchType::Nre) => MatchOp::NotRe(regex(&m.value)?),
        Err(_) => {
            return Err(ApiError::bad_request(format!(
                "matcher type {} is not one of EQ, NEQ, RE, NRE",
                m.r#type
            )));
        }
    };
    Ok(Matcher::new(op, &m.name, &m.value))
}
