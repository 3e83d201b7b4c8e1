//! `GET/POST /api/v3/query_sql`: SQL over HTTP.
//!
//! Answers are sent while the query runs (JSON, JSON lines, CSV and Parquet): the server holds
//! one batch at a time, however long the answer, and a client that reads slowly slows the
//! query down instead of making the server buffer for it. The first batch is computed before
//! the answer starts, so an error that comes at once (most do) gets its own status; an error
//! after that ends the body early (the client sees it cut). The pretty format needs every row
//! for its column widths: it is collected, up to the query memory limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use sluice_query::format::StreamEncoder;
use sluice_query::profile::Phase;
use sluice_query::{
    DataFusionError, Format, QueryError, QueryExecutor, RecordBatch, ScalarValue,
    SendableRecordBatchStream,
};

use super::auth::Access;
use super::error::ApiError;
use super::state::AppState;

/// The request, from the query string (GET) or a JSON body (POST).
#[derive(Debug, Default, Deserialize)]
pub struct QueryRequest {
    db: Option<String>,
    q: Option<String>,
    format: Option<String>,
    /// `$name` placeholder values: a JSON object (a JSON string of one in a query string).
    params: Option<serde_json::Value>,
}

/// `GET /api/v3/query_sql?db=&q=&format=&params=`
pub async fn query_get(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let request = from_query_string(params)?;
    run(state, &access, request, &headers).await
}

/// `POST /api/v3/query_sql` with a JSON body `{"db", "q", "format", "params"}`; parameters in
/// the query string are used where the body leaves them out.
pub async fn query_post(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut request = from_query_string(params)?;
    let bytes = state.read_body(&headers, body).await?;
    if !bytes.is_empty() {
        let posted: QueryRequest = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "request body is not a JSON object like {{\"db\": \"...\", \"q\": \"SELECT ...\"}}: {e}"
            ))
        })?;
        request.db = posted.db.or(request.db);
        request.q = posted.q.or(request.q);
        request.format = posted.format.or(request.format);
        request.params = posted.params.or(request.params);
    }
    run(state, &access, request, &headers).await
}

fn from_query_string(mut params: HashMap<String, String>) -> Result<QueryRequest, ApiError> {
    let json_params = match params.remove("params") {
        Some(p) if !p.is_empty() => Some(serde_json::from_str(&p).map_err(|e| {
            ApiError::bad_request(format!(
                "params must be a JSON object such as {{\"host\": \"a\"}}: {e}"
            ))
        })?),
        _ => None,
    };
    Ok(QueryRequest {
        db: params.remove("db"),
        q: params.remove("q"),
        format: params.remove("format"),
        params: json_params,
    })
}

async fn run(
    state: Arc<AppState>,
    access: &Access,
    request: QueryRequest,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let sql = request
        .q
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("missing query: pass the SQL in the 'q' parameter"))?;
    let db = request
        .db
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| state.config.default_db.clone());
    access.read(&db)?;
    let format = match request.format {
        Some(f) => f.parse::<Format>().map_err(ApiError::bad_request)?,
        None => headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .and_then(Format::from_accept)
            .unwrap_or(Format::Json),
    };
    let params = match request.params {
        None | Some(serde_json::Value::Null) => HashMap::new(),
        Some(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| scalar(&k, v).map(|s| (k, s)))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "params must be a JSON object of name -> value, not {other}"
            )));
        }
    };
    let (schema, batches) = state
        .query
        .query_stream(&db, &sql, params, access.readable())
        .await?;
    let content_type = [(header::CONTENT_TYPE, format.content_type())];
    Ok(
        match format.stream_encoder(&schema).map_err(encode_error)? {
            Some(encoder) => {
                (content_type, streamed(state, encoder, batches).await?).into_response()
            }
            None => {
                let all = held_whole(&state.query, batches).await?;
                let started = Instant::now();
                let bytes = format.encode(&schema, &all).map_err(encode_error)?;
                state
                    .query
                    .profile()
                    .record(Phase::Encode, started.elapsed());
                (content_type, bytes).into_response()
            }
        },
    )
}

/// Bytes of an answer's start that may be held to send it whole.
const WHOLE_BODY_BYTES: usize = 1 << 20;

/// Every batch of an answer that cannot be streamed, refused past the query memory limit.
async fn held_whole(
    query: &QueryExecutor,
    mut batches: SendableRecordBatchStream,
) -> Result<Vec<RecordBatch>, ApiError> {
    let mut all = Vec::new();
    let mut held = 0;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| query.error_of(e))?;
        held += batch.get_array_memory_size();
        let limit = query.config().memory_limit;
        if held > limit {
            return Err(QueryError::MemoryLimit {
                limit,
                detail: format!(
                    "the pretty format holds the whole answer, and it passed {held} bytes; ask \
                     for json, jsonl, csv or parquet, which are sent as they are computed"
                ),
            }
            .into());
        }
        all.push(batch);
    }
    Ok(all)
}

/// The body of an answer sent as it is computed: the first batch is encoded before the
/// answer starts (so that its error keeps its status), the rest as the client reads. An
/// answer whose batches are all ready by then (most small ones) goes out whole, in one
/// piece with its length, instead of as chunks.
async fn streamed(
    state: Arc<AppState>,
    mut encoder: StreamEncoder,
    mut batches: SendableRecordBatchStream,
) -> Result<Body, ApiError> {
    let query = &state.query;
    let mut first = match batches.next().await {
        Some(batch) => {
            let batch = batch.map_err(|e| query.error_of(e))?;
            let started = Instant::now();
            let bytes = encoder.batch(&batch).map_err(encode_error)?;
            query.profile().record(Phase::Encode, started.elapsed());
            bytes
        }
        None => Vec::new(),
    };
    // what is ready now, up to a bound: a larger answer is sent as it comes
    while first.len() < WHOLE_BODY_BYTES {
        match batches.next().now_or_never() {
            Some(Some(batch)) => {
                let batch = batch.map_err(|e| query.error_of(e))?;
                let started = Instant::now();
                first.extend(encoder.batch(&batch).map_err(encode_error)?);
                query.profile().record(Phase::Encode, started.elapsed());
            }
            Some(None) => {
                let started = Instant::now();
                first.extend(encoder.finish().map_err(encode_error)?);
                query.profile().record(Phase::Encode, started.elapsed());
                return Ok(Body::from(first));
            }
            None => break,
        }
    }
    let rest = futures::stream::unfold(
        (batches, Some(encoder), state.clone()),
        |(mut batches, encoder, state)| async move {
            let mut encoder: StreamEncoder = encoder?;
            let next = batches.next().await;
            let started = Instant::now();
            let next = match next {
                Some(Ok(batch)) => encoder
                    .batch(&batch)
                    .map_err(|e| cut(&state.query, e.into())),
                Some(Err(e)) => Err(cut(&state.query, e)),
                None => {
                    let last = encoder.finish().map_err(|e| cut(&state.query, e.into()));
                    state
                        .query
                        .profile()
                        .record(Phase::Encode, started.elapsed());
                    return Some((last, (batches, None, state)));
                }
            };
            state
                .query
                .profile()
                .record(Phase::Encode, started.elapsed());
            let encoder = next.is_ok().then_some(encoder);
            Some((next, (batches, encoder, state)))
        },
    );
    let body = futures::stream::once(async { Ok(first) })
        .chain(rest)
        .filter(|piece| std::future::ready(!matches!(piece, Ok(b) if b.is_empty())))
        .map(|piece| piece.map(Bytes::from));
    Ok(Body::from_stream(body))
}

/// The error that ends an answer already under way: logged, and given to hyper, which cuts
/// the body so that the client sees it incomplete.
fn cut(query: &QueryExecutor, e: DataFusionError) -> std::io::Error {
    let e = query.error_of(e);
    tracing::warn!(error = %e, "a query failed while its answer was being sent; the answer was cut");
    std::io::Error::other(e)
}

fn encode_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("could not encode the result: {e}"),
    )
}

/// A `$name` parameter's value from its JSON form.
pub(crate) fn scalar(name: &str, v: serde_json::Value) -> Result<ScalarValue, ApiError> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(b)),
        Value::String(s) => ScalarValue::Utf8(Some(s)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int64(Some(i))
            } else if let Some(u) = n.as_u64() {
                ScalarValue::UInt64(Some(u))
            } else {
                ScalarValue::Float64(n.as_f64())
            }
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "parameter '{name}' is {other}; parameters must be strings, numbers, booleans \
                 or null"
            )));
        }
    })
}
