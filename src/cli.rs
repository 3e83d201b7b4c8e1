//! The command line: `sluice serve`, `sluice query`, `sluice write`, `sluice db`,
//! `sluice table` and the storage operations.
//!
//! Every `serve` flag can also be set through a `SLUICE_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sluice_storage::{ObjectStoreKind, Retention};

/// Sluice: a time-series database for metrics. Line protocol in, SQL out.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Run a SQL query against a running server and print the result.
    Query(QueryArgs),
    /// Write line protocol from a file (or - for stdin) to a running server.
    Write(WriteArgs),
    /// Persist everything a running server holds in memory to Parquet now.
    Persist(AdminArgs),
    /// Run a compaction round on a running server now (this also drops what retention
    /// periods no longer keep).
    Compact(AdminArgs),
    /// Create, list and delete databases, and change their retention period.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// List and delete tables.
    Table {
        #[command(subcommand)]
        command: TableCommand,
    },
    /// Create access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown this once). The first admin token needs no
    /// token; every other one needs an admin token (--token).
    Create {
        #[command(flatten)]
        server: HostArgs,
        /// May do anything: read and write every database, manage databases, tables and
        /// tokens.
        #[arg(long)]
        admin: bool,
        /// Databases it may query (comma-separated; * for all).
        #[arg(long, value_delimiter = ',')]
        read: Vec<String>,
        /// Databases it may write to (comma-separated; * for all).
        #[arg(long, value_delimiter = ',')]
        write: Vec<String>,
        /// A label to tell it by.
        #[arg(long, default_value = "")]
        name: String,
        /// How long it works: a whole number with h, d, w, mo (30 days) or y (365 days), as
        /// in 90d [default: until deleted]. The first admin token cannot expire.
        #[arg(long)]
        expiry: Option<String>,
    },
    /// List the tokens: id, name, scope and expiry (the tokens themselves are not kept).
    List {
        #[command(flatten)]
        server: HostArgs,
    },
    /// Revoke a token by its id (see `sluice token list`).
    Delete {
        #[command(flatten)]
        server: HostArgs,
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create an empty database.
    Create {
        #[command(flatten)]
        server: HostArgs,
        /// Keep rows this long: none, or a number with h, d, w, mo (30 days) or y (365 days),
        /// e.g. 30d [default: the server's --default-retention].
        #[arg(long, value_parser = parse_retention)]
        retention: Option<RetentionArg>,
        name: String,
    },
    /// List the databases with their retention periods.
    List {
        #[command(flatten)]
        server: HostArgs,
        /// Output format: pretty, json, jsonl or csv.
        #[arg(long, default_value = "pretty")]
        format: String,
    },
    /// Delete a database with all its tables, rows and files.
    Delete {
        #[command(flatten)]
        server: HostArgs,
        name: String,
    },
    /// Change how long a database keeps rows (none, or e.g. 7d); older rows disappear from
    /// queries at once.
    SetRetention {
        #[command(flatten)]
        server: HostArgs,
        name: String,
        #[arg(value_parser = parse_retention)]
        retention: RetentionArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// List the tables of a database.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Output format: pretty, json, jsonl or csv.
        #[arg(long, default_value = "pretty")]
        format: String,
    },
    /// Delete a table with its rows and files.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
    },
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// The server's URL.
    #[arg(long, env = "SLUICE_HOST", default_value = "http://127.0.0.1:8181")]
    pub host: String,

    /// Access token, once the server has any.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A retention period from the command line, as written and as understood (`None`: none).
#[derive(Debug, Clone)]
pub struct RetentionArg {
    pub text: String,
    pub period: Option<Retention>,
}

/// How far ahead of the clock a point may be: `None` for any time.
#[derive(Debug, Clone, Copy)]
pub struct MaxFuture(pub Option<Duration>);

/// Parses `--max-future`: `none`, or a duration such as `2d`.
pub fn parse_max_future(s: &str) -> Result<MaxFuture, String> {
    if s.trim() == "none" {
        return Ok(MaxFuture(None));
    }
    parse_duration(s).map(|d| MaxFuture(Some(d)))
}

/// Parses a retention period: `none`, or e.g. `30d`.
pub fn parse_retention(s: &str) -> Result<RetentionArg, String> {
    Ok(RetentionArg {
        text: s.trim().to_string(),
        period: Retention::parse(s).map_err(|e| e.to_string())?,
    })
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for HTTP/1.1 and HTTP/2 (h2c).
    #[arg(long, env = "SLUICE_HTTP_BIND", default_value = "127.0.0.1:8181")]
    pub http_bind: SocketAddr,

    /// Folder for all of the server's data.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,

    /// Folder of the write-ahead log [default: <data-dir>/wal].
    #[arg(long, env = "SLUICE_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,

    /// Database used by requests that name none.
    #[arg(long, env = "SLUICE_DEFAULT_DB", default_value = "main")]
    pub default_db: String,

    /// Largest request body, before and after decompression (e.g. 10MiB).
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES", default_value = "10MiB", value_parser = parse_size)]
    pub max_request_bytes: usize,

    /// Longest line-protocol line; longer lines are rejected alone.
    #[arg(long, env = "SLUICE_MAX_LINE_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_line_bytes: usize,

    /// Most labels (`__name__` included) of one remote-write series; a series with more is
    /// rejected alone.
    #[arg(long, env = "SLUICE_MAX_LABELS_PER_SERIES", default_value_t = 64)]
    pub max_labels_per_series: usize,

    /// Longest remote-write label name, in bytes.
    #[arg(long, env = "SLUICE_MAX_LABEL_NAME_BYTES", default_value_t = 256)]
    pub max_label_name_bytes: usize,

    /// Longest remote-write label value, in bytes.
    #[arg(long, env = "SLUICE_MAX_LABEL_VALUE_BYTES", default_value_t = 4096)]
    pub max_label_value_bytes: usize,

    /// OTLP resource attributes to copy onto every series of their resource as tags
    /// (comma-separated, e.g. `k8s.namespace.name,k8s.pod.name`); all of them are on
    /// `target_info` in any case.
    #[arg(
        long,
        env = "SLUICE_OTLP_PROMOTE_RESOURCE_ATTRIBUTES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub otlp_promote_resource_attributes: Vec<String>,

    /// Also serve OTLP/gRPC on this address (e.g. `127.0.0.1:4317`, the OTLP/gRPC port),
    /// besides the main one.
    #[arg(long, env = "SLUICE_OTLP_GRPC_BIND")]
    pub otlp_grpc_bind: Option<SocketAddr>,

    /// Most columns (tags, fields and time) in one table.
    #[arg(long, env = "SLUICE_MAX_COLUMNS_PER_TABLE", default_value_t = 500)]
    pub max_columns_per_table: usize,

    /// Most tables in one database.
    #[arg(long, env = "SLUICE_MAX_TABLES_PER_DATABASE", default_value_t = 10_000)]
    pub max_tables_per_database: usize,

    /// Longest table or column name, in bytes of UTF-8; a point with a longer one is refused.
    #[arg(long, env = "SLUICE_MAX_NAME_BYTES", default_value_t = 256)]
    pub max_name_bytes: usize,

    /// Memory the write buffer may hold; past it, writes get 503 with Retry-After. Past half
    /// of it, everything buffered is persisted and writes wait for that (--buffer-wait). The
    /// server's peak is about twice the buffer's (rows being persisted, requests, the
    /// allocator's free space).
    #[arg(long, env = "SLUICE_BUFFER_MEMORY_LIMIT", default_value = "256MiB", value_parser = parse_size)]
    pub buffer_memory_limit: usize,

    /// How long a write that finds the buffer over half its limit waits for a round of
    /// persistence before it goes ahead (0s: never waits). Under the 5 s timeout of
    /// Telegraf's InfluxDB output, the shortest common client timeout.
    #[arg(long, env = "SLUICE_BUFFER_WAIT", default_value = "3s", value_parser = parse_duration)]
    pub buffer_wait: Duration,

    /// Queries that run at once; one past them waits up to 10 s for a slot, then gets 503
    /// with Retry-After.
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_QUERIES", default_value_t = 16)]
    pub max_concurrent_queries: usize,

    /// Memory one query may use in sorts, aggregations and joins.
    #[arg(long, env = "SLUICE_QUERY_MEMORY_LIMIT", default_value = "1GiB", value_parser = parse_size)]
    pub query_memory_limit: usize,

    /// Memory for the Parquet pages queries read, kept decompressed for the next query that
    /// reads them (the most recently used; 0 keeps none, and reads files as written).
    #[arg(long, env = "SLUICE_QUERY_PAGE_CACHE", default_value = "64MiB", value_parser = parse_size)]
    pub query_page_cache: usize,

    /// Longest time one query may run (e.g. 60s, 5m).
    #[arg(long, env = "SLUICE_QUERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub query_timeout: Duration,

    /// How far back PromQL looks for a series' newest sample at each step (Prometheus's
    /// `--query.lookback-delta`).
    #[arg(long, env = "SLUICE_PROMQL_LOOKBACK_DELTA", default_value = "5m", value_parser = parse_duration)]
    pub promql_lookback_delta: Duration,

    /// Most samples one PromQL query may load; past it the query fails with 422 (Prometheus's
    /// `--query.max-samples`).
    #[arg(long, env = "SLUICE_PROMQL_MAX_SAMPLES", default_value_t = 50_000_000)]
    pub promql_max_samples: usize,

    /// Refuse writes to databases that do not exist instead of creating them.
    #[arg(long, env = "SLUICE_NO_AUTO_CREATE_DATABASES")]
    pub no_auto_create_databases: bool,

    /// Where Parquet files and the catalog live: file (under --data-dir), memory (lost on
    /// exit; for tests), s3, gcs or azure.
    #[arg(long, env = "SLUICE_OBJECT_STORE", default_value = "file")]
    pub object_store: ObjectStoreKind,

    /// Bucket (s3, gcs) or container (azure).
    #[arg(long, env = "SLUICE_BUCKET")]
    pub bucket: Option<String>,

    /// S3 region [default: AWS_DEFAULT_REGION / AWS_REGION, else us-east-1].
    #[arg(long, env = "SLUICE_AWS_REGION")]
    pub aws_region: Option<String>,

    /// S3 endpoint, for S3-compatible stores such as MinIO (e.g. http://127.0.0.1:9000).
    #[arg(long, env = "SLUICE_AWS_ENDPOINT")]
    pub aws_endpoint: Option<String>,

    /// S3 access key [default: AWS_ACCESS_KEY_ID].
    #[arg(long, env = "SLUICE_AWS_ACCESS_KEY_ID")]
    pub aws_access_key_id: Option<String>,

    /// S3 secret key [default: AWS_SECRET_ACCESS_KEY].
    #[arg(long, env = "SLUICE_AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,

    /// Allow a plain http:// S3 endpoint.
    #[arg(long, env = "SLUICE_AWS_ALLOW_HTTP")]
    pub aws_allow_http: bool,

    /// Persist a buffered hour to Parquet once it ended this long ago (e.g. 15m, 1h).
    #[arg(long, env = "SLUICE_PERSIST_AFTER", default_value = "15m", value_parser = parse_duration)]
    pub persist_after: Duration,

    /// Persist everything once the WAL on disk passes this size, whatever the buffered
    /// hours' ages (bounds replay time after a crash).
    #[arg(long, env = "SLUICE_WAL_PERSIST_BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub wal_persist_bytes: usize,

    /// Refuse points more than this far ahead of the server's clock (e.g. 2d, 36h), or
    /// `none`. A point far in the future keeps its buffered hour, and the WAL, from ever
    /// being let go of.
    #[arg(long, env = "SLUICE_MAX_FUTURE", default_value = "2d", value_parser = parse_max_future)]
    pub max_future: MaxFuture,

    /// How often to look for buffered hours due for persistence.
    #[arg(long, env = "SLUICE_PERSIST_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub persist_interval: Duration,

    /// How often to merge the small Parquet files of each day.
    #[arg(long, env = "SLUICE_COMPACTION_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub compaction_interval: Duration,

    /// How long databases created by a write (or without a retention period of their own)
    /// keep rows: none, or a number with h, d, w, mo (30 days) or y (365 days), e.g. 30d.
    #[arg(long, env = "SLUICE_DEFAULT_RETENTION", default_value = "none", value_parser = parse_retention)]
    pub default_retention: RetentionArg,

    /// Serve every request without checking tokens, and allow listening on a non-loopback
    /// address while no token exists. For networks where something else controls access.
    #[arg(long, env = "SLUICE_WITHOUT_AUTH")]
    pub without_auth: bool,

    /// Origins (scheme://host:port, comma-separated, or *) whose web pages may send requests
    /// from a browser; pages of other sites are refused (403), as are browser requests for a
    /// name other than localhost while the server listens on loopback only (DNS rebinding).
    #[arg(
        long,
        env = "SLUICE_ALLOW_ORIGIN",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allow_origin: Vec<String>,

    /// Time a connection has to send a request's headers, counted from the end of the
    /// previous response (so it is also how long an idle keep-alive connection stays open).
    #[arg(long, env = "SLUICE_HTTP_HEADER_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// Longest a request body may stall (nothing arriving) before the request gets 408.
    #[arg(long, env = "SLUICE_HTTP_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_body_timeout: Duration,

    /// Most connections open at once (per listener); past it, new ones wait in the kernel's
    /// queue until one closes.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Largest file compaction writes; a bigger day becomes several files.
    #[arg(long, env = "SLUICE_COMPACTION_TARGET_BYTES", default_value = "100MiB", value_parser = parse_size)]
    pub compaction_target_bytes: usize,

    /// Most rows compaction merges at a time, in bytes as they are in memory (about 8 a
    /// value, 4 a tag); a day with more is merged a time range at a time, each range a file.
    #[arg(long, env = "SLUICE_COMPACTION_MEMORY", default_value = "32MiB", value_parser = parse_size)]
    pub compaction_memory: usize,

    /// A float field whose values in a Parquet file are all whole numbers (up to 2^53, no -0)
    /// is stored in that file as INT64, delta-encoded: half the bytes. Sluice reads it back
    /// as the same floats; `false` keeps float fields DOUBLE in every file, for readers that
    /// need one type per column across files.
    #[arg(long, env = "SLUICE_PARQUET_WHOLE_FLOATS_AS_INTEGERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub parquet_whole_floats_as_integers: bool,

    /// Rows a Parquet data page holds, in every column of the files persistence and
    /// compaction write: a query of one series decodes whole pages, and each page costs a
    /// header and a page-index entry.
    #[arg(long, env = "SLUICE_PARQUET_PAGE_ROWS", default_value_t = sluice_storage::lake::parquet::DEFAULT_PAGE_ROWS as u32, value_parser = clap::value_parser!(u32).range(1024..=1048576))]
    pub parquet_page_rows: u32,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "SLUICE_HOST", default_value = "http://127.0.0.1:8181")]
    pub host: String,

    /// Database [default: the server's default database].
    #[arg(long, env = "SLUICE_DATABASE")]
    pub db: Option<String>,

    /// Access token, once the server has any.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Output format: pretty, json, jsonl, csv or parquet.
    #[arg(long, default_value = "pretty")]
    pub format: String,

    /// The SQL statement.
    pub sql: String,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Timestamp precision: auto, ns, us, ms or s.
    #[arg(long, default_value = "auto")]
    pub precision: String,

    /// Largest request to send; bigger files go as several requests, cut between lines.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub max_body_bytes: usize,

    /// Line-protocol file, or - for standard input.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Parses a byte size: a number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, unit) = number_and_unit(s)
        .ok_or_else(|| format!("'{s}' is not a size; write e.g. 512MiB, 4GiB or 1048576"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}'; use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    Ok((num * mult) as usize)
}

/// Parses a duration: a number with a unit (ms, s, m, h).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = number_and_unit(s)
        .ok_or_else(|| format!("'{s}' is not a duration; write e.g. 500ms, 60s, 5m, 1h or 2d"))?;
    let secs = match unit {
        "ms" => num / 1000.0,
        "s" | "" => num,
        "m" => num * 60.0,
        "h" => num * 3600.0,
        "d" => num * 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{s}'; use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Splits `12.5MiB` into 12.5 and `MiB`; `None` if it does not start with a number.
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2kb"), Ok(2000));
        assert!(parse_size("ten").is_err());
        assert!(
            parse_size("10XB")
                .unwrap_err()
                .contains("unknown size unit")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
