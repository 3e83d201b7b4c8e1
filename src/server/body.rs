//! Reading request bodies: the size limit and `Content-Encoding`.
//!
//! The limit applies twice: to the bytes on the wire and again to the decompressed bytes, so
//! that a small gzip bomb cannot make the server hold gigabytes.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;

/// Reads `body` (at most `limit` bytes) and decompresses it as its `Content-Encoding` says
/// (`gzip`, or none/`identity`), again to at most `limit` bytes.
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = content_encoding(headers);
    if !matches!(encoding.as_str(), "" | "identity" | "gzip" | "x-gzip") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding '{encoding}' is not supported; send gzip or no encoding"),
        ));
    }
    let raw = read_raw(headers, body, limit).await?;
    if encoding.ends_with("gzip") {
        let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
        let mut decoder = flate2::read::MultiGzDecoder::new(&raw[..]).take(limit as u64 + 1);
        decoder.read_to_end(&mut out).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not valid gzip (Content-Encoding: gzip): {e}"
            ))
        })?;
        if out.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "decompressed request body is larger than {limit} bytes \
                     (--max-request-bytes); send smaller batches"
                ),
            ));
        }
        return Ok(Bytes::from(out));
    }
    Ok(raw)
}

/// The request's `Content-Encoding`, lower case, empty when absent.
pub fn content_encoding(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads `body` as it is on the wire, at most `limit` bytes.
pub async fn read_raw(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {limit} bytes (--max-request-bytes); send smaller \
                 batches"
            ),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            too_large()
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("length limit exceeded") {
            return true;
        }
        source = s.source();
    }
    false
}
