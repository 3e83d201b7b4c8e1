//! The HTTP server: routes, shared state, start-up and shutdown.
//!
//! Handlers are thin: they extract the request, call storage or query, and map errors to
//! status codes ([`error::ApiError`]). One listener serves HTTP/1.1 and HTTP/2 (h2c).

pub mod admin;
pub mod auth;
pub mod body;
pub mod configure;
pub mod error;
pub mod flight;
pub mod listen;
pub mod metrics;
pub mod origin;
pub mod otlp;
pub mod prometheus;
pub mod query;
pub mod remote_read;
pub mod remote_write;
pub mod state;
pub mod write;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use sluice_query::QueryExecutor;
use sluice_storage::{ObjectStorage, WriteBuffer, WriteBufferConfig};
use tokio::net::TcpListener;

use self::metrics::ServerMetrics;
pub use self::state::{AppState, ServerConfig};

/// The routes of the `--otlp-grpc-bind` listener: OTLP/gRPC only.
pub fn otlp_grpc_router(state: Arc<AppState>) -> Router {
    finish(
        Router::new().route(otlp::grpc::PATH, post(otlp::grpc::export)),
        state,
    )
}

/// The routes of the HTTP API.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = Router::new()
        .route("/api/v3/write_lp", post(write::write_v3))
        .route("/api/v2/write", post(write::write_v2))
        .route("/write", post(write::write_v1))
        .route("/api/v1/write", post(remote_write::write))
        .route("/v1/metrics", post(otlp::export))
        .route(otlp::grpc::PATH, post(otlp::grpc::export))
        .route(
            "/api/v3/query_sql",
            get(query::query_get).post(query::query_post),
        )
        .route(
            "/api/v3/configure/database",
            get(configure::list_databases)
                .post(configure::create_database)
                .patch(configure::update_database)
                .delete(configure::delete_database),
        )
        .route(
            "/api/v3/configure/table",
            axum::routing::delete(configure::delete_table),
        )
        .route(
            "/api/v3/configure/token/admin",
            post(configure::create_admin_token),
        )
        .route(
            "/api/v3/configure/token",
            get(configure::list_tokens)
                .post(configure::create_token)
                .delete(configure::delete_token),
        )
        .route_service(
            &format!("{}{{*method}}", flight::PATH_PREFIX),
            flight::service(state.clone()),
        )
        .route("/api/v3/persist", post(admin::persist))
        .route("/api/v3/compact", post(admin::compact))
        .route("/health", get(admin::health))
        .route("/ping", get(admin::ping).head(admin::ping))
        .route("/metrics", get(admin::metrics))
        .merge(prometheus::routes(""))
        .merge(prometheus::routes("/prometheus/{db}"))
        .route("/api/v1/read", post(remote_read::read))
        .route("/prometheus/{db}/api/v1/read", post(remote_read::read));
    finish(routes, state)
}

/// What every listener's routes share: the answer to unknown paths (gRPC ones included) and
/// the request metrics.
fn finish(routes: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    routes
        .fallback(otlp::grpc::unknown_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::same_site_only,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            track_request,
        ))
        // Bodies are limited by `body::read`, which says which flag to change.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn track_request(
    State(state): State<Arc<AppState>>,
    path: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let path = path.as_ref().map_or("other", |p| p.as_str());
    state
        .metrics
        .request(path, response.status().as_u16(), started.elapsed());
    response
}

/// Opens storage, binds the listener and serves until SIGINT or SIGTERM; then stops taking
/// requests, lets in-flight writes become durable, and syncs the WAL.
pub async fn serve(config: ServerConfig) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!(
            "cannot create the data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let storage = ObjectStorage::from_config(&config.object_store).map_err(|e| e.to_string())?;
    tracing::info!(object_store = storage.description(), "object store");
    let mut wb_config = WriteBufferConfig::new(&config.wal_dir);
    wb_config.limits = config.limits;
    wb_config.auto_create_databases = config.auto_create_databases;
    wb_config.buffer_memory_limit = config.buffer_memory_limit;
    wb_config.buffer_wait = config.buffer_wait;
    wb_config.persist_after = config.persist_after;
    wb_config.wal_persist_bytes = config.wal_persist_bytes;
    wb_config.compaction_memory = config.compaction_memory;
    wb_config.whole_floats_as_integers = config.parquet_whole_floats_as_integers;
    wb_config.parquet_page_rows = config.parquet_page_rows;
    wb_config.max_future = config.max_future;
    wb_config.default_retention = config.default_retention.clone();
    // a replaced file outlives every query that may have started before it was replaced
    wb_config.replaced_file_grace = config.query.timeout + std::time::Duration::from_secs(60);
    let started = Instant::now();
    let (buffer, replay) = WriteBuffer::open(wb_config, storage)
        .await
        .map_err(|e| format!("cannot open storage: {e}"))?;
    tracing::info!(
        wal_dir = %config.wal_dir.display(),
        files = replay.files,
        records = replay.records,
        points = replay.points,
        points_already_persisted = replay.points_persisted,
        undecodable = replay.undecodable,
        cut_tails = replay.cut_tails.len(),
        orphan_files_deleted = replay.orphan_files_deleted,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded the catalog and replayed the write-ahead log"
    );
    check_exposure(&config, &buffer)?;
    let buffer = Arc::new(buffer);
    let (stop_background, background_stopped) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = background_stopped.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let persister = tokio::spawn({
        let (buffer, interval, stop) = (buffer.clone(), config.persist_interval, stopped());
        async move { buffer.run_persister(interval, stop).await }
    });
    let compactor = tokio::spawn({
        let (buffer, stop) = (buffer.clone(), stopped());
        let (interval, target) = (config.compaction_interval, config.compaction_target_bytes);
        async move { buffer.run_compactor(interval, target, stop).await }
    });
    let query = QueryExecutor::new(buffer.read_view(), config.query.clone())
        .map_err(|e| format!("cannot start the query engine: {e}"))?;
    let listener = TcpListener::bind(config.http_bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.http_bind))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let otlp_grpc_listener = match config.otlp_grpc_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (--otlp-grpc-bind): {e}"))?,
        ),
        None => None,
    };
    let state = Arc::new(AppState {
        config,
        buffer: buffer.clone(),
        query,
        promql_parsed: Default::default(),
        metrics: ServerMetrics::default(),
        remote_write_scratch: Default::default(),
        otlp_caches: Default::default(),
    });
    let (stop_serving, serving_stopped) = tokio::sync::watch::channel(false);
    let stop_requested = move || {
        let mut rx = serving_stopped.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let otlp_grpc = match otlp_grpc_listener {
        Some(listener) => {
            let local = listener
                .local_addr()
                .map_err(|e| format!("cannot read the listening address: {e}"))?;
            tracing::info!(address = %local, "OTLP/gRPC is listening");
            println!("Sluice OTLP/gRPC listening on http://{local}");
            let server = listen::serve(
                listener,
                otlp_grpc_router(state.clone()),
                state.config.connections,
                stop_requested(),
            );
            Some(tokio::spawn(server))
        }
        None => None,
    };
    tracing::info!(address = %local, "Sluice is listening");
    // A line on stdout for whoever started us (tests bind port 0 and read it); it comes last,
    // once every listener is bound.
    println!("Sluice listening on http://{local}");
    let main = tokio::spawn(listen::serve(
        listener,
        router(state.clone()),
        state.config.connections,
        stop_requested(),
    ));
    shutdown_signal().await;
    let _ = stop_serving.send(true);
    main.await
        .map_err(|e| format!("server task failed: {e}"))?
        .map_err(|e| format!("server error: {e}"))?;
    if let Some(otlp_grpc) = otlp_grpc {
        otlp_grpc
            .await
            .map_err(|e| format!("OTLP/gRPC server task failed: {e}"))?
            .map_err(|e| format!("OTLP/gRPC server error: {e}"))?;
    }
    tracing::info!("stopped taking requests; syncing the write-ahead log");
    let _ = stop_background.send(true);
    let _ = persister.await;
    let _ = compactor.await;
    tokio::task::spawn_blocking(move || buffer.shutdown())
        .await
        .map_err(|e| format!("WAL shutdown failed: {e}"))?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Refuses to listen beyond loopback while no token exists (anyone who can reach the port
/// could read and write everything), unless `--without-auth` says that is meant.
fn check_exposure(config: &ServerConfig, buffer: &WriteBuffer) -> Result<(), String> {
    if config.without_auth {
        tracing::warn!(
            "--without-auth: every request is allowed, tokens or not; anyone who can reach \
             the server can read, write and delete everything"
        );
        return Ok(());
    }
    if buffer.has_tokens() {
        return Ok(());
    }
    match config.exposed_address() {
        Some(addr) => Err(format!(
            "refusing to listen on {addr} without authentication: no token exists yet. Start \
             on a loopback address, create one with `sluice token create --admin`, then \
             restart; or pass --without-auth to serve everyone"
        )),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
