//! Browser requests from other sites: refused.
//!
//! A web page can make its visitor's browser send requests to a server on their machine or
//! network: a form's POST to `/api/v3/configure/token/admin` would claim the first admin token
//! of an open server on loopback, and one to `/api/v3/write_lp` would write. And a page whose
//! name is made to resolve to 127.0.0.1 (DNS rebinding) is, for the browser, the same site as
//! the server, so it can read the answers too. Prometheus and Grafana refuse both; so does
//! Sluice:
//!
//! - a request with an `Origin` (browsers send it on every cross-site request and every
//!   POST) is taken only if that origin is the server's own (its host and port are the
//!   `Host` the request was sent to) or one `--allow-origin` names;
//! - a browser's request (it has an `Origin` or a `Sec-Fetch-*` header) to a server that
//!   listens on loopback only is taken only if its `Host` is a loopback name or address
//!   (`localhost`, `127.0.0.1`, `[::1]`), an IP address, or the host of an allowed origin.
//!
//! Agents, `curl`, Grafana's backend and every client library send none of those headers, and
//! are not affected.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;

/// The middleware: refuses browser requests from other sites (see the module docs).
pub async fn same_site_only(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let loopback_only = state.config.listens_on_loopback_only();
    if let Err(why) = check(
        request.headers(),
        &state.config.allow_origins,
        loopback_only,
    ) {
        return ApiError::new(StatusCode::FORBIDDEN, why).into_response();
    }
    next.run(request).await
}

/// Whether a request with `headers` may go on.
fn check(headers: &HeaderMap, allowed: &[String], loopback_only: bool) -> Result<(), String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = text(header::ORIGIN);
    let browser = origin.is_some() || headers.keys().any(|k| k.as_str().starts_with("sec-fetch-"));
    if !browser || allowed.iter().any(|a| a == "*") {
        return Ok(());
    }
    let host = text(header::HOST).unwrap_or("");
    let advice = "pass --allow-origin with the page's origin (scheme://host:port) to allow it";
    if let Some(origin) = origin {
        let own = origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
        let listed = allowed.iter().any(|a| a.eq_ignore_ascii_case(origin));
        if !own && !listed {
            return Err(format!(
                "a browser request from the page at '{origin}', another site than this \
                 server ('{host}'), is refused; {advice}"
            ));
        }
    }
    if loopback_only && !loopback_host(host) {
        let listed = allowed.iter().any(|a| {
            a.split_once("://").is_some_and(|(_, authority)| {
                host_of(authority).eq_ignore_ascii_case(host_of(host))
            })
        });
        if !listed {
            return Err(format!(
                "a browser request for host '{host}' is refused: this server listens on \
                 loopback only, so a name other than localhost reaching it is likely a DNS \
                 rebinding attack; {advice}"
            ));
        }
    }
    Ok(())
}

/// `host:port` without the port (`[::1]:8181` gives `[::1]`).
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            host
        }
        _ => authority,
    }
}

/// Whether `Host` names the machine itself: `localhost` (or a name under it) or an IP
/// address (a page cannot make a browser send an address for its own name).
fn loopback_host(host: &str) -> bool {
    let name = host_of(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn clients_that_are_not_browsers_pass() {
        assert!(check(&headers(&[("host", "db.example:8181")]), &[], true).is_ok());
        assert!(check(&headers(&[]), &[], true).is_ok());
    }

    #[test]
    fn a_page_of_another_site_is_refused_and_the_servers_own_or_an_allowed_one_passes() {
        let evil = headers(&[
            ("host", "127.0.0.1:8181"),
            ("origin", "http://evil.example"),
        ]);
        let e = check(&evil, &[], true).unwrap_err();
        assert!(
            e.contains("evil.example") && e.contains("--allow-origin"),
            "{e}"
        );
        assert!(check(&evil, &["http://evil.example".into()], true).is_ok());
        assert!(check(&evil, &["*".into()], true).is_ok());
        let own = headers(&[
            ("host", "localhost:8181"),
            ("origin", "http://localhost:8181"),
        ]);
        assert!(check(&own, &[], true).is_ok());
        let own_v6 = headers(&[("host", "[::1]:8181"), ("origin", "http://[::1]:8181")]);
        assert!(check(&own_v6, &[], true).is_ok());
    }

    #[test]
    fn a_rebound_name_is_refused_on_a_loopback_server() {
        let rebound = headers(&[
            ("host", "evil.example:8181"),
            ("origin", "http://evil.example:8181"),
        ]);
        let e = check(&rebound, &[], true).unwrap_err();
        assert!(e.contains("DNS rebinding"), "{e}");
        // a GET carries no Origin, but a browser says where it comes from
        let get = headers(&[
            ("host", "evil.example:8181"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(check(&get, &[], true).is_err());
        // beyond loopback the server has names of its own (and tokens)
        assert!(check(&rebound, &[], false).is_ok());
        assert!(check(&rebound, &["http://evil.example:8181".into()], true).is_ok());
        let ip = headers(&[("host", "10.0.0.5:8181"), ("sec-fetch-mode", "navigate")]);
        assert!(check(&ip, &[], true).is_ok());
    }
}
