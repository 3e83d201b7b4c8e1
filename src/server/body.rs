//! Reading request bodies: the size limit and `Content-Encoding`.
//!
//! The limit applies twice: to the bytes on the wire and again to the decompressed bytes, so
//! that a small gzip bomb cannot make the server hold gigabytes.

use std::io::Read;
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;

use super::error::ApiError;

/// Reads `body` (at most `limit` bytes, each piece within `timeout` of the one before) and
/// decompresses it as its `Content-Encoding` says (`gzip`, or none/`identity`), again to at
/// most `limit` bytes.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let encoding = content_encoding(headers);
    if !matches!(encoding.as_str(), "" | "identity" | "gzip" | "x-gzip") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding '{encoding}' is not supported; send gzip or no encoding"),
        ));
    }
    let raw = read_raw(headers, body, limit, timeout).await?;
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

/// Reads `body` as it is on the wire, at most `limit` bytes. A client that sends nothing for
/// `timeout` (`--http-body-timeout`) gets 408: a stalled upload does not hold a worker and
/// its buffer forever.
///
/// A body that arrives in one piece is returned as it is; a longer one is copied, piece by
/// piece as it arrives, into one buffer of the size `Content-Length` declares. Each piece goes
/// back to the connection as soon as it is copied, so the connection reuses its read buffer
/// instead of allocating fresh memory for the next piece.
pub async fn read_raw(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {limit} bytes (--max-request-bytes); send smaller \
                 batches"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|len| len > limit as u64) {
        if declared.is_some_and(|len| len <= (limit + DRAIN_BYTES) as u64) {
            drain(&mut stream, timeout).await;
        }
        return Err(too_large());
    }
    let Some(first) = next_piece(&mut stream, timeout).await? else {
        return Ok(Bytes::new());
    };
    if first.len() > limit {
        drain(&mut stream, timeout).await;
        return Err(too_large());
    }
    let Some(second) = next_piece(&mut stream, timeout).await? else {
        return Ok(first);
    };
    let expected = declared.map_or(0, |len| len as usize);
    let mut out = Vec::with_capacity(expected.max(first.len() + second.len()).min(limit));
    out.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(piece) = next {
        if out.len() + piece.len() > limit {
            drain(&mut stream, timeout).await;
            return Err(too_large());
        }
        out.extend_from_slice(&piece);
        next = next_piece(&mut stream, timeout).await?;
    }
    Ok(Bytes::from(out))
}

/// Most bytes read and dropped after a body turned out too large. A client that writes its
/// whole body before it reads the answer (Python's urllib, any client on a slow link) would
/// otherwise find the connection reset under it and never see the 413, and Telegraf, which
/// splits a batch on 413, retries the same batch forever on a connection error.
const DRAIN_BYTES: usize = 64 << 20;

/// Reads and drops the rest of a body that is too large, up to [`DRAIN_BYTES`], so that the
/// client gets to read the 413.
async fn drain(stream: &mut BodyDataStream, timeout: Duration) {
    let mut drained = 0;
    while drained <= DRAIN_BYTES {
        match next_piece(stream, timeout).await {
            Ok(Some(piece)) => drained += piece.len(),
            _ => break,
        }
    }
}

/// The next piece of a body, within `timeout` (else 408).
async fn next_piece(
    stream: &mut BodyDataStream,
    timeout: Duration,
) -> Result<Option<Bytes>, ApiError> {
    match tokio::time::timeout(timeout, stream.next()).await {
        Ok(piece) => piece
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}"))),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body stalled: nothing arrived for {} s (--http-body-timeout)",
                timeout.as_secs()
            ),
        )),
    }
}
