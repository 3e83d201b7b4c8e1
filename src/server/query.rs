//! `GET/POST /api/v3/query_sql`: SQL over HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_query::Format;
use sluice_query::ScalarValue;

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
    run(&state, &access, request, &headers).await
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
    run(&state, &access, request, &headers).await
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
    state: &AppState,
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
    let output = state
        .query
        .query_as(&db, &sql, params, access.readable())
        .await?;
    let bytes = format
        .encode(&output.schema, &output.batches)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not encode the result: {e}"),
            )
        })?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], bytes).into_response())
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
