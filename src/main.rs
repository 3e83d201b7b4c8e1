//! The `sluice` binary: the server and its command-line clients.

mod cli;
mod client;
mod server;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, ServeArgs};
use crate::server::ServerConfig;
use sluice_query::QueryConfig;
use sluice_storage::{Limits, ObjectStoreConfig};

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    raise_open_files_limit();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => server::serve(server_config(*args)).await,
            Command::Query(args) => client::query(args).await,
            Command::Write(args) => client::write(args).await,
            Command::Persist(args) => client::persist(args).await,
            Command::Compact(args) => client::compact(args).await,
            Command::Db { command } => client::db(command).await,
            Command::Table { command } => client::table(command).await,
            Command::Token { command } => client::token(command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn server_config(args: ServeArgs) -> ServerConfig {
    let wal_dir = args
        .wal_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("wal"));
    ServerConfig {
        http_bind: args.http_bind,
        otlp_grpc_bind: args.otlp_grpc_bind,
        wal_dir,
        default_db: args.default_db,
        max_request_bytes: args.max_request_bytes,
        max_line_bytes: args.max_line_bytes,
        remote_write_limits: sluice_ingest::remote_write::Limits {
            max_labels_per_series: args.max_labels_per_series,
            max_label_name_bytes: args.max_label_name_bytes,
            max_label_value_bytes: args.max_label_value_bytes,
        },
        otlp: sluice_ingest::otlp::map::Options {
            promote: args
                .otlp_promote_resource_attributes
                .iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
        },
        limits: Limits {
            max_columns_per_table: args.max_columns_per_table,
            max_tables_per_database: args.max_tables_per_database,
            max_name_bytes: args.max_name_bytes,
        },
        auto_create_databases: !args.no_auto_create_databases,
        buffer_memory_limit: args.buffer_memory_limit,
        buffer_wait: args.buffer_wait,
        query: QueryConfig {
            memory_limit: args.query_memory_limit,
            timeout: args.query_timeout,
            max_concurrent: args.max_concurrent_queries,
            page_cache_bytes: args.query_page_cache,
            ..QueryConfig::default()
        },
        promql: sluice_query::promql::PromConfig {
            lookback: args.promql_lookback_delta,
            max_samples: args.promql_max_samples,
            timeout: args.query_timeout,
            ..Default::default()
        },
        object_store: ObjectStoreConfig {
            kind: args.object_store,
            root: args.data_dir.clone(),
            bucket: args.bucket,
            aws_region: args.aws_region,
            aws_endpoint: args.aws_endpoint,
            aws_access_key_id: args.aws_access_key_id,
            aws_secret_access_key: args.aws_secret_access_key,
            aws_allow_http: args.aws_allow_http,
        },
        persist_after: args.persist_after,
        wal_persist_bytes: args.wal_persist_bytes as u64,
        max_future: args.max_future.0,
        persist_interval: args.persist_interval,
        compaction_interval: args.compaction_interval,
        compaction_target_bytes: args.compaction_target_bytes as u64,
        compaction_memory: args.compaction_memory as u64,
        parquet_whole_floats_as_integers: args.parquet_whole_floats_as_integers,
        parquet_page_rows: args.parquet_page_rows as usize,
        default_retention: args.default_retention.period.clone(),
        without_auth: args.without_auth,
        connections: crate::server::listen::ConnectionLimits {
            header_timeout: args.http_header_timeout,
            max_connections: args.max_connections,
        },
        http_body_timeout: args.http_body_timeout,
        allow_origins: args
            .allow_origin
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect(),
        data_dir: args.data_dir,
    }
}

/// Raises the soft limit of open files to the hard one: every connection, WAL segment and
/// local Parquet file takes a descriptor, and the usual soft limit (1024) is far below what a
/// server with `--max-connections` connections needs.
fn raise_open_files_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let from = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                eprintln!("cannot raise the open-files limit from {from}");
            }
        }
    }
}

/// Tells glibc's malloc to keep freed memory for reuse instead of handing it back to the
/// kernel. Every write request allocates and frees blocks of about its body's size (the body,
/// its batch, its WAL record), and glibc's defaults return such blocks to the kernel (by
/// `munmap`, or by trimming the heap) once they are freed, so the next request faults fresh
/// zeroed pages in again: under OTLP load that was about a quarter of the server's CPU (see
/// benches/README.md). Blocks up to 4 MiB now come from the heap, and up to 64 MiB of free
/// space stays at the top of each heap. Larger blocks, the table buffer's columns as they
/// grow, are still mapped on their own, so that growing one remaps its pages (`mremap`)
/// instead of copying them into fresh heap memory. What a load left free is handed back
/// once a persist or a compaction step ends (`return_free_memory` in the storage crate).
///
/// Heaps (arenas) are at most one per core: glibc's default, eight per core, lets each of the
/// server's threads (workers, the WAL and apply threads, encoders) keep a heap of its own
/// with its own retained free space, which on the TSBS remote-write load of 4,000 hosts was
/// half of the peak RSS (483 MiB against 295 with two heaps on two cores), for no measurable
/// CPU per value (benches/README.md, issue 19).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        // SAFETY: mallopt only sets the allocator's parameters; this runs before any other
        // thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_ARENA_MAX, cores as i32);
        }
    }
}
