//! Errors as HTTP responses and gRPC statuses: one type, one `IntoResponse`, and the one
//! table of which status each domain error gets.
//!
//! Status codes follow the senders' retry rules: 4xx for requests that will never succeed
//! as sent, 429/503 with `Retry-After` for "later", 500 only for faults of the server.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::json;
use sluice_ingest::remote_write::RequestError;
use sluice_proto::otlp::{Any, Duration, RetryInfo};
use sluice_query::QueryError;
use sluice_query::promql::PromError;
use sluice_storage::{AdminError, CompactionError, PersistError, TokenError, WriteError};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// The body shape an error is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// InfluxDB 3: `{"error": "..."}` (with `data` for line errors).
    V3,
    /// InfluxDB 1.x/2.x write APIs: `{"code": "...", "message": "..."}`.
    Influx,
    /// Prometheus's HTTP API: `{"status": "error", "errorType": "...", "error": "..."}`.
    Prometheus,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub style: ErrorStyle,
    /// Extra JSON members (InfluxDB 3 puts the rejected lines in `data`).
    pub data: Option<serde_json::Value>,
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    /// An error with `status` and `message`, rendered InfluxDB 3 style.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            style: ErrorStyle::V3,
            data: None,
            retry_after_secs: None,
        }
    }

    /// 400: the request will never succeed as sent.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Renders the error in `style`.
    pub fn with_style(mut self, style: ErrorStyle) -> Self {
        self.style = style;
        self
    }

    /// Asks the client to retry after `secs`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Prometheus's `errorType` for the status.
    fn prometheus_type(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_data",
            StatusCode::UNPROCESSABLE_ENTITY => "execution",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "unauthorized",
            StatusCode::SERVICE_UNAVAILABLE if self.retry_after_secs.is_none() => "timeout",
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => "unavailable",
            _ => "internal",
        }
    }

    fn influx_code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "invalid",
            StatusCode::NOT_FOUND => "not found",
            StatusCode::PAYLOAD_TOO_LARGE => "request too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::TOO_MANY_REQUESTS => "too many requests",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        let body = match self.style {
            ErrorStyle::V3 => match &self.data {
                Some(data) => json!({ "error": self.message, "data": data }),
                None => json!({ "error": self.message }),
            },
            ErrorStyle::Influx => json!({ "code": self.influx_code(), "message": self.message }),
            ErrorStyle::Prometheus => {
                // in Prometheus's member order, which serde_json's map would sort
                let body = format!(
                    "{{\"status\":\"error\",\"errorType\":\"{}\",\"error\":{}}}",
                    self.prometheus_type(),
                    serde_json::Value::String(self.message.clone())
                );
                let mut response = (
                    self.status,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response();
                if let Some(secs) = self.retry_after_secs {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                return response;
            }
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

// The status table: which status each domain error gets. Handlers turn domain errors into
// `ApiError` with `?`, and gRPC answers derive their codes from the same statuses (except
// Flight's query errors, which have gRPC codes of their own; see `query_status`).

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        let status = match &e {
            WriteError::DatabaseNotFound(_) => StatusCode::NOT_FOUND,
            WriteError::InvalidDatabaseName(_) => StatusCode::BAD_REQUEST,
            WriteError::BufferFull { .. } | WriteError::BeingDeleted(_) | WriteError::Wal(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError::new(status, e.to_string()).retry_after_if_unavailable()
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let status = match &e {
            RequestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::NotSnappy(_) | RequestError::Malformed { .. } => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let status = match &e {
            AdminError::InvalidName(_)
            | AdminError::Token(TokenError::Invalid(_) | TokenError::InvalidName(_)) => {
                StatusCode::BAD_REQUEST
            }
            AdminError::Token(TokenError::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            AdminError::DatabaseNotFound(_)
            | AdminError::TableNotFound { .. }
            | AdminError::Token(TokenError::NotFound(_)) => StatusCode::NOT_FOUND,
            AdminError::DatabaseExists(_) => StatusCode::CONFLICT,
            AdminError::Wal(_) | AdminError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Token(TokenError::Random(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::DatabaseNotFound(_) => StatusCode::NOT_FOUND,
            QueryError::NotAllowed(_) | QueryError::Invalid(_) | QueryError::MemoryLimit { .. } => {
                StatusCode::BAD_REQUEST
            }
            // As Prometheus answers a query timeout: the server could not, retrying may help.
            QueryError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Busy(_) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .retry_after(1);
            }
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<PromError> for ApiError {
    fn from(e: PromError) -> Self {
        let status = match &e {
            PromError::BadData(_) => StatusCode::BAD_REQUEST,
            PromError::Execution(_) | PromError::TooManySamples(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PromError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            PromError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PromError::Query(QueryError::Invalid(_) | QueryError::MemoryLimit { .. }) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PromError::Query(_) => {
                let PromError::Query(q) = e else {
                    unreachable!()
                };
                return ApiError::from(q).with_style(ErrorStyle::Prometheus);
            }
        };
        ApiError::new(status, e.to_string()).with_style(ErrorStyle::Prometheus)
    }
}

impl From<PersistError> for ApiError {
    fn from(e: PersistError) -> Self {
        let status = match &e {
            PersistError::Freeze(_) => StatusCode::SERVICE_UNAVAILABLE,
            // the object store is down or refused: the data is safe, try again later
            PersistError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            PersistError::Encode { .. } | PersistError::Wal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, format!("persist failed, nothing was lost: {e}"))
            .retry_after_if_unavailable()
    }
}

impl From<CompactionError> for ApiError {
    fn from(e: CompactionError) -> Self {
        let status = match &e {
            CompactionError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            CompactionError::Data { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(
            status,
            format!("compaction failed, the files stay as they were: {e}"),
        )
    }
}

impl ApiError {
    /// Asks the client to retry in 5 s if the status says the server cannot answer now.
    fn retry_after_if_unavailable(self) -> Self {
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            self.retry_after(5)
        } else {
            self
        }
    }

    /// The gRPC code of this error's status.
    pub fn grpc_code(&self) -> Code {
        match self.status {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::InvalidArgument,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::PAYLOAD_TOO_LARGE => Code::OutOfRange,
            StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            _ => Code::Internal,
        }
    }

    /// The `google.rpc.Code` of an OTLP/HTTP error body with this error's status, as the
    /// OTLP specification pairs them.
    pub fn otlp_http_code(&self) -> i32 {
        match self.status {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Code::InvalidArgument as i32
            }
            StatusCode::NOT_FOUND => Code::NotFound as i32,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
                Code::ResourceExhausted as i32
            }
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable as i32,
            _ => Code::Internal as i32,
        }
    }
}

/// Whether a request is a gRPC call (by its content type).
pub fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"))
}

/// An HTTP-style error as a gRPC status. A retry delay goes in `google.rpc.RetryInfo`, both
/// in the status details and in the `google.rpc.retryinfo-bin` metadata the OpenTelemetry
/// exporters read.
pub fn status(e: ApiError) -> Status {
    let code = e.grpc_code();
    if code == Code::Internal {
        tracing::error!(status = %e.status, "{}", e.message);
    }
    let Some(secs) = e.retry_after_secs else {
        return Status::new(code, e.message);
    };
    let retry_info = RetryInfo {
        retry_delay: Some(Duration {
            seconds: secs.into(),
            nanos: 0,
        }),
    }
    .encode_to_vec();
    let details = sluice_proto::otlp::Status {
        code: code as i32,
        message: e.message.clone(),
        details: vec![Any {
            type_url: RetryInfo::TYPE_URL.to_string(),
            value: retry_info.clone(),
        }],
    }
    .encode_to_vec();
    let mut metadata = MetadataMap::new();
    metadata.insert_bin(
        "google.rpc.retryinfo-bin",
        MetadataValue::from_bytes(&retry_info),
    );
    Status::with_details_and_metadata(code, e.message, details.into(), metadata)
}

/// A query's error as Flight SQL answers it: gRPC has codes of its own for a query over its
/// memory limit and one past its deadline.
pub fn query_status(e: QueryError) -> Status {
    let message = e.to_string();
    match e {
        QueryError::DatabaseNotFound(_) => Status::not_found(message),
        QueryError::NotAllowed(_) | QueryError::Invalid(_) => Status::invalid_argument(message),
        QueryError::MemoryLimit { .. } => Status::resource_exhausted(message),
        QueryError::Timeout(_) => Status::deadline_exceeded(message),
        QueryError::Busy(_) => Status::unavailable(message),
        QueryError::Internal(_) => Status::internal(message),
    }
}
