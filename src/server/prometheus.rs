//! The Prometheus HTTP API (`/api/v1/query`, `query_range`, `series`, `labels`,
//! `label/<name>/values`, `metadata`, `status/buildinfo`, `query_exemplars`, `format_query`),
//! at `/` and under `/prometheus/<db>/`, so a Grafana Prometheus data source can name the
//! database in its URL. GET takes parameters in the query string; POST also takes them from a
//! form body, as Grafana sends them.
//!
//! The database is the path's, else the `db` parameter, else `--default-db`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use promql_parser::parser::Prettier;
use sluice_query::promql::response::{data_json, series_json};
use sluice_query::promql::{self, PromError, PromQl};

use super::auth::Access;
use super::error::{ApiError, ErrorStyle};
use super::state::AppState;

/// The request's parameters (query string and form body, in that order), the database it
/// reads, and who asks.
pub struct Params {
    pairs: Vec<(String, String)>,
    db: String,
    label: Option<String>,
    access: Access,
}

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn engine<'a>(&'a self, state: &'a AppState) -> PromQl<'a> {
        PromQl::new(
            &state.query,
            &self.db,
            self.access.readable(),
            &state.config.promql,
            &state.promql_parsed,
        )
    }
}

impl FromRequest<Arc<AppState>> for Params {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let (access, path_db, label) = caller_and_path(&mut parts, state)
            .await
            .map_err(prom_error)?;
        let mut pairs = query_pairs(&parts);
        if parts.method == Method::POST {
            let form = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
            let bytes = state
                .read_body(&parts.headers, Body::new(body))
                .await
                .map_err(prom_error)?;
            if form || !bytes.is_empty() {
                pairs.extend(form_urlencoded::parse(&bytes).into_owned());
            }
        }
        let db = database(path_db, &pairs, state);
        access.read(&db).map_err(prom_error)?;
        Ok(Params {
            pairs,
            db,
            label,
            access,
        })
    }
}

/// Who asks (the token the auth layer checked), and the path's `{db}` and `{name}` where
/// the route has them.
pub(super) async fn caller_and_path(
    parts: &mut Parts,
    state: &Arc<AppState>,
) -> Result<(Access, Option<String>, Option<String>), ApiError> {
    let access = parts
        .extensions
        .get::<Access>()
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no credentials"))?;
    let (mut db, mut label) = (None, None);
    if let Ok(params) = RawPathParams::from_request_parts(parts, state).await {
        for (k, v) in params.iter() {
            match k {
                "db" => db = Some(v.to_string()),
                "name" => label = Some(v.to_string()),
                _ => {}
            }
        }
    }
    Ok((access, db, label))
}

/// The parameters of the query string, in order.
pub(super) fn query_pairs(parts: &Parts) -> Vec<(String, String)> {
    parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The database a request reads: the path's, else its last non-empty `db` parameter, else
/// `--default-db`.
pub(super) fn database(
    path_db: Option<String>,
    pairs: &[(String, String)],
    state: &AppState,
) -> String {
    path_db
        .or_else(|| {
            pairs
                .iter()
                .rev()
                .find(|(k, v)| k == "db" && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| state.config.default_db.clone())
}

/// An error as Prometheus's API answers one: `{"status":"error","errorType":...,"error":...}`.
fn prom_error(e: ApiError) -> Response {
    e.with_style(ErrorStyle::Prometheus).into_response()
}

fn bad_data(message: String) -> ApiError {
    PromError::BadData(message).into()
}

/// `{"status":"success","data":<data>}`.
fn success(data: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"status\":\"success\",\"data\":{data}}}"),
    )
        .into_response()
}

/// A time parameter: Unix seconds (a float) or RFC 3339, in milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return None;
        }
        return Some((f * 1000.0).round() as i64);
    }
    rfc3339_ms(s)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff...](Z|±HH:MM)` in milliseconds since the epoch.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let f = &frac[..digits];
        let mut padded = f.chars().take(3).collect::<String>();
        while padded.len() < 3 {
            padded.push('0');
        }
        ms = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec - offset) * 1000) + ms)
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration parameter: seconds (a float) or a Prometheus duration (`15s`, `1m30s`).
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() || f.abs() > 9.2e15 {
            return None;
        }
        return Some((f * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(s)
        .ok()
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    match p.get(name) {
        None => Ok(default),
        Some(s) => parse_time(s).ok_or_else(|| {
            bad_data(format!(
                "invalid parameter \"{name}\": cannot parse \"{s}\" to a valid timestamp"
            ))
        }),
    }
}

fn timeout_param(p: &Params) -> Result<Option<Duration>, ApiError> {
    match p.get("timeout") {
        None => Ok(None),
        Some(s) => match parse_duration_ms(s) {
            Some(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms as u64))),
            _ => Err(bad_data(format!(
                "invalid parameter \"timeout\": cannot parse \"{s}\" to a valid duration"
            ))),
        },
    }
}

/// The earliest and latest times Prometheus's API accepts for series and label lookups.
const MIN_TIME: i64 = -9_223_309_901_257_974;
const MAX_TIME: i64 = 9_223_309_901_257_974;

fn now_ms(state: &AppState) -> i64 {
    state.query.storage().now().div_euclid(1_000_000)
}

fn query_param(p: &Params) -> Result<String, ApiError> {
    p.get("query")
        .map(str::to_string)
        .ok_or_else(|| bad_data("invalid parameter \"query\": query must not be empty".into()))
}

/// `/api/v1/query`
pub async fn query(State(state): State<Arc<AppState>>, p: Params) -> Result<Response, ApiError> {
    let q = query_param(&p)?;
    let t = time_param(&p, "time", now_ms(&state))?;
    let timeout = timeout_param(&p)?;
    let answer = p.engine(&state).instant(&q, t, timeout).await?;
    Ok(success(data_json(&answer, false)))
}

/// `/api/v1/query_range`
pub async fn query_range(
    State(state): State<Arc<AppState>>,
    p: Params,
) -> Result<Response, ApiError> {
    let q = query_param(&p)?;
    let required = |name: &str| {
        p.get(name)
            .ok_or_else(|| bad_data(format!("invalid parameter \"{name}\": missing")))
    };
    required("start")?;
    required("end")?;
    // both are there: the defaults are never used
    let start = time_param(&p, "start", 0)?;
    let end = time_param(&p, "end", 0)?;
    let step = required("step")?;
    let step = parse_duration_ms(step).ok_or_else(|| {
        bad_data(format!(
            "invalid parameter \"step\": cannot parse \"{step}\" to a valid duration"
        ))
    })?;
    let timeout = timeout_param(&p)?;
    let answer = p
        .engine(&state)
        .range(&q, start, end, step, timeout)
        .await?;
    Ok(success(data_json(&answer, true)))
}

fn limit_param(p: &Params) -> Result<Option<usize>, ApiError> {
    match p.get("limit") {
        None => Ok(None),
        Some(s) => match s.parse::<usize>() {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(bad_data(format!(
                "invalid parameter \"limit\": cannot parse \"{s}\""
            ))),
        },
    }
}

/// `/api/v1/series`
pub async fn series(State(state): State<Arc<AppState>>, p: Params) -> Result<Response, ApiError> {
    let selectors = p.all("match[]");
    if selectors.is_empty() {
        return Err(bad_data("no match[] parameter provided".into()));
    }
    let start = time_param(&p, "start", MIN_TIME)?;
    let end = time_param(&p, "end", MAX_TIME)?;
    let limit = limit_param(&p)?;
    let series = p
        .engine(&state)
        .series(&selectors, start, end, limit)
        .await?;
    Ok(success(series_json(&series)))
}

fn string_list(values: &[String], limit: Option<usize>) -> String {
    serde_json::Value::Array(
        values
            .iter()
            .take(limit.unwrap_or(usize::MAX))
            .map(|v| serde_json::Value::String(v.clone()))
            .collect(),
    )
    .to_string()
}

/// `/api/v1/labels`
pub async fn labels(State(state): State<Arc<AppState>>, p: Params) -> Result<Response, ApiError> {
    let start = time_param(&p, "start", MIN_TIME)?;
    let end = time_param(&p, "end", MAX_TIME)?;
    let limit = limit_param(&p)?;
    let names = p
        .engine(&state)
        .label_names(&p.all("match[]"), start, end)
        .await?;
    Ok(success(string_list(&names, limit)))
}

/// `/api/v1/label/<name>/values`
pub async fn label_values(
    State(state): State<Arc<AppState>>,
    p: Params,
) -> Result<Response, ApiError> {
    let name = p.label.clone().unwrap_or_default();
    let start = time_param(&p, "start", MIN_TIME)?;
    let end = time_param(&p, "end", MAX_TIME)?;
    let limit = limit_param(&p)?;
    let values = p
        .engine(&state)
        .label_values(&name, &p.all("match[]"), start, end)
        .await?;
    Ok(success(string_list(&values, limit)))
}

/// `/api/v1/metadata`: the type, help and unit remote write and OTLP sent, per metric.
pub async fn metadata(State(state): State<Arc<AppState>>, p: Params) -> Result<Response, ApiError> {
    let limit = limit_param(&p)?;
    let metric = p.get("metric");
    let catalog = state.query.storage().catalog();
    let mut out = serde_json::Map::new();
    if let Some(db) = catalog.database(&p.db) {
        for (name, m) in &db.metric_metadata {
            if metric.is_some_and(|x| x != &**name) {
                continue;
            }
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            out.insert(
                name.to_string(),
                serde_json::json!([{
                    "type": m.metric_type.as_str(),
                    "help": m.help,
                    "unit": m.unit,
                }]),
            );
        }
    }
    Ok(success(serde_json::Value::Object(out).to_string()))
}

/// `/api/v1/status/buildinfo`: the Prometheus version whose API and PromQL Sluice answers.
pub async fn buildinfo(_p: Params) -> Response {
    success(
        serde_json::json!({
            "version": "3.0.0",
            "revision": concat!("sluice-", env!("CARGO_PKG_VERSION")),
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        })
        .to_string(),
    )
}

/// `/api/v1/query_exemplars`: no exemplars are stored yet, so none match.
pub async fn query_exemplars(p: Params) -> Result<Response, ApiError> {
    promql::parse(&query_param(&p)?)?;
    Ok(success("[]".into()))
}

/// `/api/v1/format_query`: the query, formatted as Prometheus formats it.
pub async fn format_query(p: Params) -> Result<Response, ApiError> {
    let expr = promql::parse(&query_param(&p)?)?;
    Ok(success(
        serde_json::Value::String(expr.pretty(0, 100)).to_string(),
    ))
}

/// The routes above, at `prefix` (`""` or `/prometheus/{db}`).
pub fn routes(prefix: &str) -> axum::Router<Arc<AppState>> {
    use axum::routing::get;
    let r = |path: &str| format!("{prefix}/api/v1/{path}");
    axum::Router::new()
        .route(&r("query"), get(query).post(query))
        .route(&r("query_range"), get(query_range).post(query_range))
        .route(&r("series"), get(series).post(series))
        .route(&r("labels"), get(labels).post(labels))
        .route(&r("label/{name}/values"), get(label_values))
        .route(&r("metadata"), get(metadata))
        .route(&r("status/buildinfo"), get(buildinfo))
        .route(
            &r("query_exemplars"),
            get(query_exemplars).post(query_exemplars),
        )
        .route(&r("format_query"), get(format_query).post(format_query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_as_prometheus_reads_them() {
        assert_eq!(parse_time("1767225600"), Some(1_767_225_600_000));
        assert_eq!(parse_time("1767225600.1234"), Some(1_767_225_600_123));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Some(1_767_225_600_000));
        assert_eq!(
            parse_time("2026-01-01T01:30:00.25+01:30"),
            Some(1_767_225_600_250)
        );
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Some(-1000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("NaN"), None);
        assert_eq!(parse_duration_ms("15"), Some(15_000));
        assert_eq!(parse_duration_ms("0.5"), Some(500));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("soon"), None);
    }
}
