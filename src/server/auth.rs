//! Access tokens on every request.
//!
//! While the catalog holds no token (a fresh server on loopback: the quick start), every
//! request is allowed. Once one exists, every request but `/health`, `/ping` and `/metrics`
//! must carry one, in any of the forms InfluxDB clients send:
//!
//! - `Authorization: Bearer <token>` or `Authorization: Token <token>` (InfluxDB 3 and 2
//!   clients, Grafana, gRPC `authorization` metadata, which is the same header);
//! - `Authorization: Basic <base64 of user:token>` (InfluxDB 1 clients, Prometheus'
//!   `basic_auth`): the password is the token, the user name is ignored;
//! - `?p=<token>` (InfluxDB 1 query parameters; `u` is ignored).
//!
//! A missing or unknown token is 401. A known token reaches the handler as an [`Access`],
//! which each handler asks about the database it touches: a token without the scope is 403,
//! naming the database.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sluice_storage::TokenRecord;
use sluice_storage::time::rfc3339;

use super::error::ApiError;
use super::state::AppState;

/// Paths anyone may call, token or not: liveness probes and metrics scrapers.
const OPEN_PATHS: &[&str] = &["/health", "/ping", "/metrics"];

/// Who is asking: anyone (no tokens exist, or the server runs `--without-auth`) or the
/// holder of a token.
#[derive(Debug, Clone)]
pub enum Access {
    Open,
    Token(Arc<TokenRecord>),
}

impl Access {
    /// Ok if it may query `db`; else 403.
    pub fn read(&self, db: &str) -> Result<(), ApiError> {
        match self {
            Access::Token(t) if !t.may_read(db) => {
                Err(forbidden(t, &format!("read database '{db}'")))
            }
            _ => Ok(()),
        }
    }

    /// Ok if it may write to `db`; else 403.
    pub fn write(&self, db: &str) -> Result<(), ApiError> {
        match self {
            Access::Token(t) if !t.may_write(db) => {
                Err(forbidden(t, &format!("write to database '{db}'")))
            }
            _ => Ok(()),
        }
    }

    /// Ok if it may administer the server (databases, tables, tokens, persistence); else 403.
    pub fn admin(&self) -> Result<(), ApiError> {
        match self {
            Access::Token(t) if !t.admin => Err(forbidden(t, "administer the server")),
            _ => Ok(()),
        }
    }

    /// Whether it holds an admin token.
    pub fn is_admin(&self) -> bool {
        matches!(self, Access::Token(t) if t.admin)
    }

    /// The databases its queries may see, or `None` for all.
    pub fn readable(&self) -> Option<&[String]> {
        match self {
            Access::Open => None,
            Access::Token(t) => t.readable(),
        }
    }
}

fn forbidden(t: &TokenRecord, what: &str) -> ApiError {
    let name = if t.name.is_empty() {
        format!("token {}", t.id)
    } else {
        format!("token {} ({})", t.id, t.name)
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("{name} may not {what}; use a token with that scope"),
    )
}

/// The middleware: checks the request's token and hands the handler its [`Access`].
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let open = state.config.without_auth
        || OPEN_PATHS.contains(&request.uri().path())
        || !state.buffer.has_tokens();
    let access = if open {
        Access::Open
    } else {
        let presented = token_of(request.headers(), request.uri());
        let Some(token) = presented else {
            return unauthorized(
                &request,
                "this server requires a token: send 'Authorization: Bearer <token>'",
            );
        };
        match state.buffer.authenticate(&token) {
            Some(record) if record.expired(state.buffer.now()) => {
                let at = record.expires.map(rfc3339).unwrap_or_default();
                return unauthorized(&request, &format!("the token expired at {at}"));
            }
            Some(record) => Access::Token(Arc::new(record)),
            None => return unauthorized(&request, "the token is not valid"),
        }
    };
    request.extensions_mut().insert(access);
    next.run(request).await
}

/// The token a request carries, if any.
fn token_of(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            return Some(rest.to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let password = decoded.split_once(':').map_or(&*decoded, |(_, p)| p);
            return Some(password.to_string());
        }
    }
    uri.query()?;
    let Query(mut params) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    params.remove("p")
}

/// 401, as an HTTP error or, for a gRPC call, as the `UNAUTHENTICATED` status.
fn unauthorized(request: &Request, message: &str) -> Response {
    if super::error::is_grpc(request.headers()) {
        return tonic::Status::unauthenticated(message).into_http::<axum::body::Body>();
    }
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
