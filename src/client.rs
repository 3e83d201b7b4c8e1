//! `sluice query`, `sluice write`, `sluice db`, `sluice table` and the storage operations:
//! small HTTP clients of a running server.

use std::io::{Read, Write};

use sluice_ingest::line_protocol::split_lines;
use sluice_storage::time::rfc3339;

use crate::cli::{
    AdminArgs, ClientArgs, DbCommand, HostArgs, QueryArgs, TableCommand, TokenCommand, WriteArgs,
};

/// An HTTP client that sends `token`, if given, as `Authorization: Bearer`.
fn http(token: Option<&str>) -> Result<reqwest::Client, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token holds characters a header cannot carry".to_string())?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .map_err(|e| format!("cannot start an HTTP client: {e}"))
}

fn endpoint(client: &ClientArgs, path: &str) -> String {
    url_of(&client.host, path)
}

fn url_of(host: &str, path: &str) -> String {
    format!("{}{path}", host.trim_end_matches('/'))
}

impl HostArgs {
    /// The URL of `path` on the server.
    fn url(&self, path: &str) -> String {
        url_of(&self.host, path)
    }

    /// A client sending the token, if one was given.
    fn http(&self) -> Result<reqwest::Client, String> {
        http(self.token.as_deref())
    }
}

/// Turns an error response into the message to show: the server's `error`/`message` text,
/// with the rejected lines listed one per line (their numbers shifted by `line_offset`, for a
/// body that was one piece of a larger file).
async fn failure(response: reqwest::Response, line_offset: u32) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let text = v
                .get("error")
                .or_else(|| v.get("message"))?
                .as_str()?
                .to_string();
            let lines: Vec<String> = v
                .get("data")
                .and_then(|d| d.as_array())
                .map(|rows| {
                    rows.iter()
                        .map(|r| {
                            let n = r["line_number"].as_u64().unwrap_or(0) + u64::from(line_offset);
                            format!(
                                "  line {n}: {}: {}",
                                r["error_message"].as_str().unwrap_or(""),
                                r["original_line"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(if lines.is_empty() {
                text
            } else {
                format!("{text}\n{}", lines.join("\n"))
            })
        })
        .unwrap_or(body);
    format!("server answered {status}: {message}")
}

/// `sluice query`: prints the result in the chosen format.
pub async fn query(args: QueryArgs) -> Result<(), String> {
    let mut params = vec![("q", args.sql.as_str()), ("format", args.format.as_str())];
    if let Some(db) = &args.client.db {
        params.push(("db", db));
    }
    let url = endpoint(&args.client, "/api/v3/query_sql");
    let response = http(args.client.token.as_deref())?
        .get(&url)
        .query(&params)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(failure(response, 0).await);
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&body)
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the result: {e}"))
}

/// `sluice write`: sends a file (or stdin) of line protocol, in pieces of at most
/// `--max-body-bytes` cut between lines, so that files larger than the server's request limit
/// go through. Pieces with rejected lines do not stop the rest (the server keeps a piece's
/// good lines); every rejected line is reported, numbered within the whole file, and the
/// command then fails.
pub async fn write(args: WriteArgs) -> Result<(), String> {
    let data = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading standard input: {e}"))?;
        buf
    } else {
        std::fs::read(&args.file).map_err(|e| format!("reading {}: {e}", args.file.display()))?
    };
    let mut params = vec![("precision", args.precision.as_str())];
    if let Some(db) = &args.client.db {
        params.push(("db", db));
    }
    let url = endpoint(&args.client, "/api/v3/write_lp");
    let client = http(args.client.token.as_deref())?;
    let mut failures = Vec::new();
    for (line_offset, piece) in split_lines(&data, args.max_body_bytes) {
        let response = client
            .post(&url)
            .query(&params)
            .body(piece.to_vec())
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        if response.status().is_success() {
            continue;
        }
        let retryable = response.status().is_server_error() || response.status() == 429;
        failures.push(failure(response, line_offset).await);
        if retryable {
            // the server cannot take writes now; the rest would fail the same way
            break;
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// POSTs to an admin endpoint and returns its JSON answer.
async fn admin_post(args: &AdminArgs, path: &str) -> Result<serde_json::Value, String> {
    let url = endpoint(&args.client, path);
    let text = send(http(args.client.token.as_deref())?.post(&url), &url).await?;
    serde_json::from_str(&text).map_err(|e| format!("reading the answer: {e}"))
}

/// `sluice persist`: asks the server to persist its buffer now and prints what it wrote.
pub async fn persist(args: AdminArgs) -> Result<(), String> {
    let v = admin_post(&args, "/api/v3/persist").await?;
    println!(
        "persisted {} rows in {} files ({} bytes)",
        v["rows"], v["files"], v["bytes"]
    );
    Ok(())
}

/// `sluice compact`: asks the server for a compaction round now and prints what it merged.
pub async fn compact(args: AdminArgs) -> Result<(), String> {
    let v = admin_post(&args, "/api/v3/compact").await?;
    println!(
        "compacted {} day partitions: {} files ({} bytes) into {} files ({} bytes)",
        v["days"], v["files_in"], v["bytes_in"], v["files_out"], v["bytes_out"]
    );
    Ok(())
}

/// Sends `request` and returns the answer's body, or the server's error as the message.
async fn send(request: reqwest::RequestBuilder, url: &str) -> Result<String, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(failure(response, 0).await);
    }
    response
        .text()
        .await
        .map_err(|e| format!("reading the answer: {e}"))
}

/// `sluice db create|list|delete|set-retention`.
pub async fn db(command: DbCommand) -> Result<(), String> {
    let path = "/api/v3/configure/database";
    match command {
        DbCommand::Create {
            server,
            retention,
            name,
        } => {
            let url = server.url(path);
            let http = server.http()?;
            let mut body = serde_json::json!({ "db": name });
            if let Some(r) = &retention {
                body["retention_period"] = r.text.clone().into();
            }
            send(http.post(&url).json(&body), &url).await?;
            match retention {
                Some(r) => println!("created database {name} (retention {})", r.text),
                None => println!("created database {name}"),
            }
        }
        DbCommand::List { server, format } => {
            let url = server.url(path);
            let http = server.http()?;
            let text = send(http.get(&url).query(&[("format", &format)]), &url).await?;
            print!("{text}");
        }
        DbCommand::Delete { server, name } => {
            let url = server.url(path);
            let http = server.http()?;
            send(http.delete(&url).query(&[("db", &name)]), &url).await?;
            println!("deleted database {name}");
        }
        DbCommand::SetRetention {
            server,
            name,
            retention,
        } => {
            let url = server.url(path);
            let http = server.http()?;
            let body = serde_json::json!({ "db": name, "retention_period": retention.text });
            send(http.patch(&url).json(&body), &url).await?;
            println!("database {name} now keeps rows for {}", retention.text);
        }
    }
    Ok(())
}

/// `sluice table list|delete`.
pub async fn table(command: TableCommand) -> Result<(), String> {
    match command {
        TableCommand::List { client, format } => {
            let url = endpoint(&client, "/api/v3/query_sql");
            let http = http(client.token.as_deref())?;
            let db = client.db.clone().ok_or(
                "say which database to list the tables of: --db NAME (or SLUICE_DATABASE)",
            )?;
            let sql = format!(
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = '{}' AND table_type = 'BASE TABLE' ORDER BY table_name",
                db.replace('\'', "''")
            );
            let params = [("q", sql.as_str()), ("format", &format), ("db", &db)];
            let text = send(http.get(&url).query(&params), &url).await?;
            print!("{text}");
        }
        TableCommand::Delete { client, table } => {
            let url = endpoint(&client, "/api/v3/configure/table");
            let http = http(client.token.as_deref())?;
            let db = client
                .db
                .clone()
                .ok_or("say which database the table is in: --db NAME (or SLUICE_DATABASE)")?;
            send(
                http.delete(&url)
                    .query(&[("db", db.as_str()), ("table", &table)]),
                &url,
            )
            .await?;
            println!("deleted table {table} of database {db}");
        }
    }
    Ok(())
}

/// `sluice token create`: prints the new token, the only time it is shown.
pub async fn token(command: TokenCommand) -> Result<(), String> {
    let (server, admin, read, write, name, expiry) = match command {
        TokenCommand::Create {
            server,
            admin,
            read,
            write,
            name,
            expiry,
        } => (server, admin, read, write, name, expiry),
        TokenCommand::List { server } => return list_tokens(server).await,
        TokenCommand::Delete { server, id } => {
            let url = server.url("/api/v3/configure/token");
            let id = id.to_string();
            let request = server.http()?.delete(&url).query(&[("id", &id)]);
            send(request, &url).await?;
            println!("token {id} revoked");
            return Ok(());
        }
    };
    let url = server.url("/api/v3/configure/token");
    let body = serde_json::json!({
        "name": name, "admin": admin, "read": read, "write": write, "expiry": expiry,
    });
    let answer = send(server.http()?.post(&url).json(&body), &url).await?;
    let v: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| format!("reading the answer: {e}"))?;
    let token = v["token"].as_str().ok_or("the answer holds no token")?;
    println!("{token}");
    eprintln!(
        "token {} created; store it now, it is not shown again (use it as --token, \
         SLUICE_TOKEN, or 'Authorization: Bearer <token>')",
        v["id"]
    );
    Ok(())
}

/// `sluice token list`: one line per token.
async fn list_tokens(server: HostArgs) -> Result<(), String> {
    let url = server.url("/api/v3/configure/token");
    let answer = send(server.http()?.get(&url), &url).await?;
    let tokens: Vec<serde_json::Value> =
        serde_json::from_str(&answer).map_err(|e| format!("reading the answer: {e}"))?;
    let list = |v: &serde_json::Value| -> String {
        let names = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str());
        names.collect::<Vec<_>>().join(",")
    };
    println!(
        "{:>4}  {:<20} {:<6} {:<24} {:<24} expires",
        "id", "name", "admin", "read", "write"
    );
    for t in tokens {
        let expires = t["expires"]
            .as_i64()
            .map_or_else(|| "never".to_string(), rfc3339);
        println!(
            "{:>4}  {:<20} {:<6} {:<24} {:<24} {expires}",
            // a JSON value prints without padding: as text first
            t["id"].to_string(),
            t["name"].as_str().unwrap_or(""),
            t["admin"].to_string(),
            list(&t["read"]),
            list(&t["write"])
        );
    }
    Ok(())
}
