//! Errors as HTTP responses: one type, one `IntoResponse`.
//!
//! Status codes follow the senders' retry rules: 4xx for requests that will never succeed
//! as sent, 429/503 with `Retry-After` for "later", 500 only for faults of the server.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The body shape an error is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// InfluxDB 3: `{"error": "..."}` (with `data` for line errors).
    V3,
    /// InfluxDB 1.x/2.x write APIs: `{"code": "...", "message": "..."}`.
    Influx,
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
