//! What the server is configured with and what every handler shares.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sluice_query::{QueryConfig, QueryExecutor};
use sluice_storage::{Limits, ObjectStoreConfig, WriteBuffer};

use super::metrics::ServerMetrics;

/// Everything `sluice serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http_bind: SocketAddr,
    /// A second listener for OTLP/gRPC only (the main one serves it too).
    pub otlp_grpc_bind: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub wal_dir: PathBuf,
    pub default_db: String,
    pub max_request_bytes: usize,
    pub max_line_bytes: usize,
    pub remote_write_limits: sluice_ingest::remote_write::Limits,
    /// How OTLP metrics map to tables and tags.
    pub otlp: sluice_ingest::otlp::map::Options,
    pub limits: Limits,
    pub auto_create_databases: bool,
    pub buffer_memory_limit: usize,
    /// How long a write that finds the buffer over half its limit waits for a persist round.
    pub buffer_wait: std::time::Duration,
    pub query: QueryConfig,
    /// How PromQL queries are evaluated.
    pub promql: sluice_query::promql::PromConfig,
    pub object_store: ObjectStoreConfig,
    /// A buffer partition is persisted once its hour ended this long ago.
    pub persist_after: std::time::Duration,
    /// Everything is persisted once the WAL on disk holds more than this.
    pub wal_persist_bytes: u64,
    /// Points more than this far ahead of the clock are refused (`None`: any time).
    pub max_future: Option<std::time::Duration>,
    /// How often the persister looks for due partitions.
    pub persist_interval: std::time::Duration,
    /// How often the compactor runs.
    pub compaction_interval: std::time::Duration,
    /// Largest file compaction writes.
    pub compaction_target_bytes: u64,
    /// Most bytes of decoded rows one compaction step merges.
    pub compaction_memory: u64,
    /// Float fields of whole numbers stored as integers in the Parquet files.
    pub parquet_whole_floats_as_integers: bool,
    /// Rows a Parquet data page holds.
    pub parquet_page_rows: usize,
    /// Retention period of databases created by a write (or created without one).
    pub default_retention: Option<sluice_storage::Retention>,
    /// Take requests without tokens even when tokens exist, and listen on any address
    /// without one.
    pub without_auth: bool,
    /// Origins (`scheme://host:port`, or `*`) whose pages' browser requests are taken.
    pub allow_origins: Vec<String>,
    /// How connections are bounded.
    pub connections: super::listen::ConnectionLimits,
    /// Longest wait for the next piece of a request body.
    pub http_body_timeout: std::time::Duration,
}

impl ServerConfig {
    /// Whether every address the server listens on is a loopback one.
    pub fn listens_on_loopback_only(&self) -> bool {
        std::iter::once(self.http_bind)
            .chain(self.otlp_grpc_bind)
            .all(|a| a.ip().is_loopback())
    }

    /// An address beyond loopback the server listens on, unless `--without-auth` says that
    /// something else guards it: such a server must always have a token.
    pub fn exposed_address(&self) -> Option<std::net::SocketAddr> {
        if self.without_auth {
            return None;
        }
        std::iter::once(self.http_bind)
            .chain(self.otlp_grpc_bind)
            .find(|a| !a.ip().is_loopback())
    }
}

/// State shared by every handler.
pub struct AppState {
    pub config: ServerConfig,
    pub buffer: Arc<WriteBuffer>,
    pub query: QueryExecutor,
    /// PromQL queries parsed, by their text.
    pub promql_parsed: sluice_query::promql::ParseCache,
    pub metrics: ServerMetrics,
    /// Remote write decoders' state, one per decode in progress at once (at most one per
    /// runtime thread, since a decode does not yield).
    pub remote_write_scratch: parking_lot::Mutex<Vec<sluice_ingest::remote_write::Scratch>>,
    /// OTLP mapping caches, likewise.
    pub otlp_caches: parking_lot::Mutex<Vec<sluice_ingest::otlp::map::Cache>>,
}

impl AppState {
    /// A request's body, decompressed, within `--max-request-bytes` and
    /// `--http-body-timeout` (see [`super::body::read`]).
    pub async fn read_body(
        &self,
        headers: &axum::http::HeaderMap,
        body: axum::body::Body,
    ) -> Result<bytes::Bytes, super::error::ApiError> {
        super::body::read(
            headers,
            body,
            self.config.max_request_bytes,
            self.config.http_body_timeout,
        )
        .await
    }
}
