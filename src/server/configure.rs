//! `/api/v3/configure/database` and `/api/v3/configure/table`: listing, creating and deleting
//! databases, changing their retention period, and deleting tables, as InfluxDB 3 serves
//! them (Sluice can also change a database's retention period, which InfluxDB 3 Core cannot).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_query::Format;
use sluice_query::system_tables::database_list;
use sluice_storage::catalog::parse_period;
use sluice_storage::{Retention, TokenSpec};

use super::auth::Access;
use super::error::ApiError;
use super::state::AppState;

/// The body of a create or change: `{"db": "...", "retention_period": "30d"}`.
#[derive(Debug, Deserialize)]
struct DatabaseRequest {
    db: String,
    retention_period: Option<String>,
}

/// `GET /api/v3/configure/database?format=json|jsonl|csv|pretty|parquet`: every database
/// with its retention period (`none` when it keeps rows forever).
pub async fn list_databases(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    access.admin()?;
    let format: Format = params
        .get("format")
        .map_or(Ok(Format::Json), |f| f.parse())
        .map_err(ApiError::bad_request)?;
    let (schema, batch) = database_list(&state.buffer.catalog());
    let bytes = format.encode(&schema, &[batch]).map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], bytes).into_response())
}

/// `POST /api/v3/configure/database` `{"db": "...", "retention_period": "30d"}`: creates an
/// empty database. 409 if it exists.
pub async fn create_database(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    access.admin()?;
    let request = database_request(&state, &headers, body).await?;
    let retention = match &request.retention_period {
        Some(text) => Retention::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => state.buffer.config().default_retention.clone(),
    };
    state.buffer.create_database(&request.db, retention).await?;
    tracing::info!(db = request.db, "database created");
    Ok(StatusCode::OK)
}

/// `PATCH /api/v3/configure/database` `{"db": "...", "retention_period": "7d"}` (or `none`):
/// changes how long the database keeps rows. Rows past the new period disappear from
/// queries at once.
pub async fn update_database(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    access.admin()?;
    let request = database_request(&state, &headers, body).await?;
    let text = request.retention_period.ok_or_else(|| {
        ApiError::bad_request(
            "nothing to change: give \"retention_period\", such as \"30d\" or \"none\"",
        )
    })?;
    let retention = Retention::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    state.buffer.set_retention(&request.db, retention).await?;
    tracing::info!(
        db = request.db,
        retention_period = text,
        "retention period changed"
    );
    Ok(StatusCode::OK)
}

/// `DELETE /api/v3/configure/database?db=`: deletes the database, its rows and its files.
pub async fn delete_database(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    access.admin()?;
    let db = required(&params, "db")?;
    state.buffer.delete_database(db).await?;
    tracing::info!(db, "database deleted");
    Ok(StatusCode::OK)
}

/// `DELETE /api/v3/configure/table?db=&table=`: deletes the table, its rows and its files.
pub async fn delete_table(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    access.admin()?;
    let db = required(&params, "db")?;
    let table = required(&params, "table")?;
    state.buffer.delete_table(db, table).await?;
    tracing::info!(db, table, "table deleted");
    Ok(StatusCode::OK)
}

async fn database_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<DatabaseRequest, ApiError> {
    let bytes = state.read_body(headers, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "request body is not a JSON object like {{\"db\": \"name\", \"retention_period\": \"30d\"}}: {e}"
        ))
    })
}

fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("missing query parameter '{name}'")))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("could not encode the list: {e}"),
    )
}

/// The body of `POST /api/v3/configure/token`.
#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    /// How long it works: `30d`, `12h`, `1y` ... or `none`.
    #[serde(default)]
    expiry: Option<String>,
    /// How long it works, in seconds (InfluxDB 3's field).
    #[serde(default)]
    expiry_secs: Option<u64>,
}

impl TokenRequest {
    /// How long the token is to work, in nanoseconds (`None`: until deleted).
    fn valid_for(&self) -> Result<Option<i64>, ApiError> {
        let valid_for = match (&self.expiry, self.expiry_secs) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give the token's expiry once: expiry (as in \"30d\") or expiry_secs",
                ));
            }
            (Some(text), None) => parse_period(text, "expiry")
                .map_err(|e| ApiError::bad_request(e.to_string()))?
                .map(|(_, _, nanos)| nanos),
            (None, Some(secs)) => Some(
                i64::try_from(secs)
                    .ok()
                    .and_then(|s| s.checked_mul(1_000_000_000))
                    .ok_or_else(|| ApiError::bad_request("expiry_secs is too large"))?,
            ),
            (None, None) => None,
        };
        if valid_for == Some(0) {
            return Err(ApiError::bad_request(
                "an expiry of 0 would make a token that never works; give a positive one",
            ));
        }
        Ok(valid_for)
    }
}

/// `POST /api/v3/configure/token/admin` (InfluxDB 3's path): creates an admin token. Without
/// a token only while none exists (the first one); after that, with an admin token.
pub async fn create_admin_token(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut request = token_request(&state, &headers, body).await?;
    request.admin = true;
    new_token(&state, &access, request).await
}

/// `POST /api/v3/configure/token` `{"name": "...", "admin": false, "read": ["db"], "write":
/// ["db"], "expiry": "30d"}` (`"*"` for every database; `expiry` or `expiry_secs` optional):
/// creates a token. Needs an admin token, except for the
/// first admin token.
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = token_request(&state, &headers, body).await?;
    new_token(&state, &access, request).await
}

async fn token_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<TokenRequest, ApiError> {
    let bytes = state.read_body(headers, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(TokenRequest::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "request body is not a JSON object like {{\"name\": \"grafana\", \"read\": [\"db\"], \
             \"write\": []}}: {e}"
        ))
    })
}

/// Creates the token and answers with it: the only time it is shown.
async fn new_token(
    state: &AppState,
    access: &Access,
    request: TokenRequest,
) -> Result<Response, ApiError> {
    let spec = TokenSpec {
        valid_for: request.valid_for()?,
        name: request.name,
        admin: request.admin,
        read: request.read,
        write: request.write,
    };
    // a token that may not administer is forbidden to (401 is for no token, or a bad one)
    if matches!(access, Access::Token(_)) {
        access.admin()?;
    }
    let (token, record) = state.buffer.create_token(spec, access.is_admin()).await?;
    tracing::info!(
        id = record.id,
        name = record.name,
        admin = record.admin,
        "token created"
    );
    let body = serde_json::json!({
        "id": record.id,
        "name": record.name,
        "token": token,
        "admin": record.admin,
        "read": record.read,
        "write": record.write,
        "created": record.created,
        "expires": record.expires,
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /api/v3/configure/token`: every token's id, name and scope (never the token, which
/// Sluice does not keep).
pub async fn list_tokens(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
) -> Result<Response, ApiError> {
    access.admin()?;
    let tokens: Vec<serde_json::Value> = state
        .buffer
        .tokens()
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "name": t.name,
                "admin": t.admin,
                "read": t.read,
                "write": t.write,
                "created": t.created,
                "expires": t.expires,
            })
        })
        .collect();
    Ok(axum::Json(tokens).into_response())
}

/// `DELETE /api/v3/configure/token?id=`: revokes a token at once.
pub async fn delete_token(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    access.admin()?;
    let id = required(&params, "id")?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("token id '{id}' is not a number")))?;
    // a server listening beyond loopback keeps its last token: without one it would serve
    // everyone (the start-up check holds only at start)
    let keep_one = state.config.exposed_address().is_some();
    let removed = state
        .buffer
        .delete_token(id, keep_one)
        .await
        .inspect_err(|e| {
            if keep_one {
                tracing::warn!(id, "refused to delete a token: {e}");
            }
        })?;
    tracing::info!(id, name = removed.name, "token deleted");
    Ok(StatusCode::OK)
}
