//! OTLP/gRPC: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.
//!
//! It is served on the main port (gRPC is HTTP/2, which the listener takes in clear text
//! beside HTTP/1.1) and, with `--otlp-grpc-bind`, on a port of its own such as 4317.
//! tonic frames the messages, takes gzip and answers the status; the request is mapped and
//! stored as OTLP/HTTP stores it. The database is the `x-sluice-database` metadata, else the
//! default.
//!
//! Statuses follow the OTLP specification's retry rules: `INVALID_ARGUMENT` for a message
//! that is not an export request, `NOT_FOUND` for a database that does not exist (when writes
//! do not create them), `UNAVAILABLE` with `RetryInfo` when the buffer is full (exporters
//! retry it), `OUT_OF_RANGE` from tonic for a message over `--max-request-bytes`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes};
use prost::Message;
use sluice_proto::otlp::ExportMetricsServiceResponse;
use tonic::Status;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::super::auth::Access;
use super::super::error::{ApiError, is_grpc, status};
use super::super::state::AppState;

/// The route of the export method.
pub const PATH: &str = sluice_proto::otlp::EXPORT_PATH;

/// `POST /opentelemetry.proto.collector.metrics.v1.MetricsService/Export` (gRPC).
pub async fn export(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let limit = state.config.max_request_bytes;
    let mut grpc = tonic::server::Grpc::new(ExportCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let mut response = grpc.unary(Export { state }, request).await;
    // tonic's own answer to an oversize message names no flag: say which one
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|s| s == "11") {
        let message = format!(
            "the message is larger than {limit} bytes (--max-request-bytes); export smaller \
             batches"
        );
        if let Ok(v) = message.parse() {
            headers.insert("grpc-message", v);
        }
    }
    response.map(axum::body::Body::new)
}

/// The answer to a gRPC call of a method Sluice does not serve: `UNIMPLEMENTED`, as gRPC
/// clients expect, instead of an HTTP 404 they cannot read. Other requests get the 404.
pub async fn unknown_method(request: Request) -> Response {
    if is_grpc(request.headers()) {
        let status = Status::unimplemented(format!(
            "Sluice does not serve the gRPC method {}",
            request.uri().path()
        ));
        return status.into_http::<axum::body::Body>();
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

/// Calls of the export method.
struct Export {
    state: Arc<AppState>,
}

impl tonic::server::UnaryService<Bytes> for Export {
    type Response = ExportMetricsServiceResponse;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let (metadata, extensions, message) = request.into_parts();
            let headers = metadata.into_headers();
            let db = super::database(&state, None, &headers);
            match extensions.get::<Access>() {
                Some(access) => access.write(db).map_err(status)?,
                None => return Err(Status::internal("the request was not authenticated")),
            }
            let mapped = super::with_cache(&state, |c| {
                sluice_ingest::otlp::map::map_protobuf(&message, &state.config.otlp, c)
            })
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "the message is not an OTLP ExportMetricsServiceRequest: {e}"
                ))
            })?;
            super::store(&state, PATH, db, mapped)
                .await
                .map(tonic::Response::new)
                .map_err(status)
        })
    }
}

/// Takes the request message as bytes (decoded by Sluice, so both transports share one
/// decoder) and writes the answer with prost.
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = ExportCodec;
    type Decoder = ExportCodec;

    fn encoder(&mut self) -> Self::Encoder {
        ExportCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        ExportCodec
    }
}

impl Encoder for ExportCodec {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))
    }
}

impl Decoder for ExportCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
