//! Line protocol against InfluxDB 1.x itself (the Debian package, 1.6): the same generated and
//! mutated lines go to both, one request per line, and both must accept the same lines and
//! store the same measurements, tags, fields and values (issue 19, item 16).
//!
//! The differences that remain are deliberate, and each is named in [`deliberate`]: where
//! InfluxDB 1.x keeps a tag and a field of the same name apart (Sluice's tables cannot), and
//! names with control characters (the generator makes none).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Rng, Server, external};
use crate::remote_write::Child;

/// A running `influxd`, its data in a temporary folder.
struct Influx {
    _child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Influx {
    /// Starts `influxd` on loopback port 0 and waits for the address it logs.
    fn start(influxd: &Path) -> Influx {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("influxd.log");
        let d = |name: &str| dir.path().join(name).into_os_string();
        let child = std::process::Command::new(influxd)
            .arg("run")
            .env("INFLUXDB_META_DIR", d("meta"))
            .env("INFLUXDB_DATA_DIR", d("data"))
            .env("INFLUXDB_DATA_WAL_DIR", d("wal"))
            .env("INFLUXDB_HTTP_BIND_ADDRESS", "127.0.0.1:0")
            .env("INFLUXDB_BIND_ADDRESS", "127.0.0.1:0")
            .env("INFLUXDB_REPORTING_DISABLED", "true")
            .env("INFLUXDB_MONITOR_STORE_ENABLED", "false")
            .env("INFLUXDB_DATA_QUERY_LOG_ENABLED", "false")
            .env("INFLUXDB_HTTP_LOG_ENABLED", "false")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start influxd");
        let child = Child(child);
        for _ in 0..300 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = text
                .lines()
                .filter(|l| l.contains("msg=\"Listening on HTTP\""))
                .find_map(|l| l.split(" addr=").nth(1)?.split(' ').next());
            if let Some(addr) = addr {
                return Influx {
                    _child: child,
                    url: format!("http://{addr}"),
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "influxd did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    async fn query(&self, client: &reqwest::Client, db: &str, q: &str) -> Value {
        let r = client
            .get(format!("{}/query", self.url))
            .query(&[("db", db), ("q", q), ("epoch", "ns")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        assert!(v["results"][0].get("error").is_none(), "{q}: {v}");
        v
    }
}

/// A field value as both servers give it back.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Field {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

/// What one point stored: measurement, tags and time, then its fields.
type Stored = BTreeMap<(String, BTreeMap<String, String>, i64), BTreeMap<String, Field>>;

fn field(v: &Value, ty: &str) -> Field {
    match ty {
        "float" => Field::Float(v.as_f64().unwrap()),
        "integer" => Field::Int(v.as_i64().unwrap()),
        "boolean" => Field::Bool(v.as_bool().unwrap()),
        _ => Field::Str(v.as_str().unwrap().to_string()),
    }
}

/// Everything InfluxDB stored in `db`.
async fn influx_points(influx: &Influx, client: &reqwest::Client, db: &str) -> Stored {
    let keys = influx.query(client, db, "SHOW FIELD KEYS").await;
    let mut types: BTreeMap<(String, String), String> = BTreeMap::new();
    for s in keys["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let m = s["name"].as_str().unwrap();
        for row in s["values"].as_array().unwrap() {
            let (k, t) = (row[0].as_str().unwrap(), row[1].as_str().unwrap());
            types.insert((m.to_string(), k.to_string()), t.to_string());
        }
    }
    let mut out = Stored::new();
    // One measurement at a time: across measurements, GROUP BY * would take a field for a
    // tag wherever another measurement has a tag of its name.
    let measurements = influx.query(client, db, "SHOW MEASUREMENTS").await;
    let mut series = Vec::new();
    for m in measurements["results"][0]["series"][0]["values"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let m = m[0].as_str().unwrap();
        let quoted = m.replace('\\', "\\\\").replace('"', "\\\"");
        let q = format!("SELECT * FROM \"{quoted}\" GROUP BY *");
        let answer = influx.query(client, db, &q).await;
        series.extend(
            answer["results"][0]["series"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    for s in &series {
        let m = s["name"].as_str().unwrap().to_string();
        let tags: BTreeMap<String, String> = s["tags"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_str() != Some(""))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for row in s["values"].as_array().unwrap() {
            let time = row[0].as_i64().unwrap();
            let mut fields = BTreeMap::new();
            for (c, v) in columns.iter().zip(row.as_array().unwrap()).skip(1) {
                if v.is_null() {
                    continue;
                }
                let ty = &types[&(m.clone(), c.to_string())];
                fields.insert(c.to_string(), field(v, ty));
            }
            out.insert((m.clone(), tags.clone(), normal_time(time)), fields);
        }
    }
    out
}

/// Everything Sluice stored in `db`.
async fn sluice_points(s: &Server, db: &str) -> Stored {
    let columns = s
        .sql(
            db,
            &format!(
                "SELECT table_name, column_name, data_type FROM information_schema.columns \
                 WHERE table_schema = '{db}'"
            ),
        )
        .await;
    let mut tables: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for c in &columns {
        let t = c["table_name"].as_str().unwrap().to_string();
        let ty = match c["data_type"].as_str().unwrap() {
            "Float64" => "float",
            "Int64" => "integer",
            "Boolean" => "boolean",
            "Utf8" => "string",
            t if t.starts_with("Dictionary") => "tag",
            _ => continue, // time
        };
        let name = c["column_name"].as_str().unwrap().to_string();
        tables.entry(t).or_default().push((name, ty.to_string()));
    }
    let mut out = Stored::new();
    for (table, cols) in tables {
        let sql = format!(
            "SELECT *, CAST(time AS BIGINT) AS sluice_test_ns FROM \"{}\"",
            table.replace('"', "\"\"")
        );
        for row in s.sql(db, &sql).await {
            let mut tags = BTreeMap::new();
            let mut fields = BTreeMap::new();
            for (name, ty) in &cols {
                let v = &row[name.as_str()];
                if v.is_null() {
                    continue;
                }
                if ty == "tag" {
                    tags.insert(name.clone(), v.as_str().unwrap().to_string());
                } else {
                    fields.insert(name.clone(), field(v, ty));
                }
            }
            let time = row["sluice_test_ns"].as_i64().unwrap();
            out.insert((table.clone(), tags, normal_time(time)), fields);
        }
    }
    out
}

/// Lines carry times from [`BASE`]; a line whose timestamp a mutation spoilt takes the
/// server's clock, which the two servers read at different moments.
fn normal_time(t: i64) -> i64 {
    if t > BASE + 1_000_000_000_000 { -1 } else { t }
}

/// Nanosecond times of the generated lines: 1970-01-12, inside one InfluxDB shard.
const BASE: i64 = 1_000_000_000_000_000;

/// Bytes of names and tag values: letters, and every byte the grammar gives a meaning to.
const NAME_BYTES: &[&str] = &[
    "a", "b", "c", "a", "b", "c", " ", ",", "=", "\\", "\\", "\"", "#", ".", "-", "é", "'",
];

/// Bytes of string field values.
const STRING_BYTES: &[&str] = &[
    "a", "b", " ", ",", "=", "\\", "\\", "\"", "\\\"", "\\\\", "\n", "é",
];

/// Field values that InfluxDB accepts, each kind by itself.
const FLOATS: &[&str] = &[
    "1",
    "1.5",
    "-2",
    "0",
    "-0",
    "1.",
    ".1",
    "-0.",
    ".0E4",
    "1e5",
    "1E+5",
    "1.5e-3",
    "1.e5",
    "-.5",
    "007",
    "1e-400",
    "12345678901234567890123456789",
];
const INTEGERS: &[&str] = &[
    "1i",
    "-1i",
    "0i",
    "-0i",
    "007i",
    "9223372036854775807i",
    "-9223372036854775808i",
];
const BOOLS: &[&str] = &[
    "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE",
];
/// Values that are none of the kinds.
const NOT_VALUES: &[&str] = &[
    "1e400",
    "-1e400",
    ".",
    "-",
    "-.",
    "1e",
    ".e5",
    "1..2",
    "+1",
    "1-2",
    "0x1",
    "NaN",
    "nan",
    "inf",
    "-Inf",
    "1_0",
    "1.5.5",
    "e5",
    "--1",
    "1e5e3",
    "9223372036854775808i",
    "1.0i",
    "i",
    "-i",
    "1e5i",
    "1ii",
    "+1i",
    "1i2",
    "tRUE",
    "fals",
    "yes",
];

/// A name or tag value of random bytes, escaped the way a client would (most of the time) or
/// left raw.
fn name(rng: &mut Rng, prefix: &str, escapes: &[char]) -> String {
    let mut raw = prefix.to_string();
    for _ in 0..1 + rng.below(4) {
        raw.push_str(rng.pick(NAME_BYTES));
    }
    // InfluxDB 1.x has no way to write a name that ends in a backslash: its delimiter would
    // be escaped. Some are left in, for the errors.
    if raw.ends_with('\\') && rng.chance(90) {
        raw.push('x');
    }
    if rng.chance(8) {
        return raw;
    }
    let mut out = String::new();
    for c in raw.chars() {
        if escapes.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One line: a measurement, up to three tags, one to three fields of every type and a
/// timestamp, with a mutation (a byte inserted, removed or replaced) in some.
fn line(rng: &mut Rng, time: i64) -> String {
    let measurement = rng.pick(&["m", "cpu", "m"]);
    let mut l = name(rng, measurement, &[',', ' ']);
    for k in 0..rng.below(4) {
        l.push(',');
        l.push_str(&name(rng, ["t", "u", "v"][k], &[',', ' ', '=']));
        l.push('=');
        l.push_str(&name(rng, "", &[',', ' ', '=']));
    }
    l.push(' ');
    for k in 0..1 + rng.below(3) {
        if k > 0 {
            l.push(',');
        }
        let (prefix, value) = match rng.below(9) {
            0 => ("f", rng.pick(NOT_VALUES).to_string()),
            1 | 2 => ("f", rng.pick(FLOATS).to_string()),
            3 | 4 => ("i", rng.pick(INTEGERS).to_string()),
            5 | 6 => ("b", rng.pick(BOOLS).to_string()),
            _ => {
                let mut s = String::from("\"");
                for _ in 0..rng.below(6) {
                    s.push_str(rng.pick(STRING_BYTES));
                }
                s.push('"');
                ("s", s)
            }
        };
        l.push_str(&name(rng, prefix, &[',', ' ', '=']));
        l.push('=');
        l.push_str(&value);
    }
    if rng.chance(25) {
        let at = rng.below(l.len() + 1);
        let at = (0..=at).rev().find(|&i| l.is_char_boundary(i)).unwrap();
        match rng.below(3) {
            0 => l.insert_str(at, rng.pick(&[" ", ",", "=", "\\", "\"", "\\\\"])),
            1 if at < l.len() => {
                let len = l[at..].chars().next().unwrap().len_utf8();
                l.replace_range(at..at + len, "");
            }
            _ if at < l.len() => {
                let len = l[at..].chars().next().unwrap().len_utf8();
                l.replace_range(at..at + len, rng.pick(&[" ", ",", "=", "\\", "\""]));
            }
            _ => {}
        }
    }
    format!("{l} {time}")
}

/// Lines Sluice refuses where InfluxDB 1.x stores something, each a decision (Sluice's error
/// says which):
/// - a tag and a field of the same name: InfluxDB keeps both (and its queries then show only
///   one), a Sluice table has one column per name;
/// - text after a string value's closing quote (`s="a"b`): InfluxDB stores the bytes from the
///   first quote to the last but one;
/// - a field key followed by an unescaped comma (`f\\=1.,s="a"`): InfluxDB accepts some
///   when the count of its `=` and `,` comes out right by other misreadings (that line stores
///   a field named `f=1.,s`); every other such line InfluxDB refuses too;
/// - a field key ending in backslashes before a delimiter (`f\\=1,s=""`): InfluxDB checks
///   the line reading `\\` as one escape and then reads it taking the delimiter as escaped
///   (that line stores a field named `f\=1,s`);
/// - two backslashes before an escapable byte in a measurement (`m\\,x`): InfluxDB
///   acknowledges the point and no query finds it.
///
/// Points InfluxDB 1.x loses to its queries are also allowed for ([`respelt_measurements`]).
/// InfluxDB 1.6 also refuses the unsigned integers (`1u`) that InfluxDB 2 and 3 and Sluice
/// accept; the generator writes none.
fn deliberate(sluice_answer: &str) -> bool {
    [
        "is a tag; it cannot also be a field",
        "is a field; it cannot also be a tag",
        "after the value of field",
        "is followed by an unescaped ','",
        "which InfluxDB 1.x reads two ways",
        "which InfluxDB 1.x stores under a name no query finds",
    ]
    .iter()
    .any(|m| sluice_answer.contains(m))
}

/// Measurements that `lines` spell two ways, one of them with `\=` or `\"`. InfluxDB 1.x
/// files such a point under its series key as written but under its name unescaped, and of
/// two spellings of one name the later loses its points to queries; Sluice stores both
/// under the one name.
fn respelt_measurements(lines: &[String]) -> BTreeSet<String> {
    let mut spellings: BTreeMap<String, BTreeSet<&[u8]>> = BTreeMap::new();
    for l in lines {
        let b = l.trim_start_matches([' ', '\t']).as_bytes();
        let end = (1..b.len())
            .find(|&i| matches!(b[i], b',' | b' ') && b[i - 1] != b'\\')
            .unwrap_or(b.len());
        let raw = &b[..end];
        let mut name = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' && matches!(raw.get(i + 1), Some(b',' | b' ' | b'=' | b'"')) {
                i += 1;
            }
            name.push(raw[i]);
            i += 1;
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        spellings.entry(name).or_default().insert(raw);
    }
    spellings
        .into_iter()
        .filter(|(_, raw)| {
            raw.len() > 1
                && raw
                    .iter()
                    .any(|r| r.windows(2).any(|w| w == b"\\=" || w == b"\\\""))
        })
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test]
async fn line_protocol_is_read_as_influxdb_1_reads_it() {
    let Some(influxd) = external(
        "SLUICE_TEST_INFLUXD",
        "line protocol against InfluxDB 1.x",
        "the influxd program of the influxdb package",
    ) else {
        return;
    };
    let influx = Influx::start(&influxd);
    let s = Server::start();
    let client = reqwest::Client::new();
    influx.query(&client, "", "CREATE DATABASE lp").await;
    influx.query(&client, "", "CREATE DATABASE aside").await;

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let lines: Vec<String> = (0..3000).map(|i| line(&mut rng, BASE + i)).collect();
    let mut differences = Vec::new();
    let (mut accepted, mut on_purpose) = (0, 0);
    for l in &lines {
        // A line Sluice refuses on purpose goes to a database that is not compared: a line
        // can hold several (a string may span lines), and the point InfluxDB stores for it
        // may carry the server's clock, so it could not be told apart afterwards.
        let (_, probe) = s.post("/write?db=probe&precision=ns", l.clone()).await;
        let db = if deliberate(&probe) { "aside" } else { "lp" };
        let r = client
            .post(format!("{}/write?db={db}&precision=ns", influx.url))
            .body(l.clone())
            .send()
            .await
            .unwrap();
        let (influx_status, influx_text) = (r.status(), r.text().await.unwrap());
        let (sluice_status, sluice_text) = s
            .post(&format!("/write?db={db}&precision=ns"), l.clone())
            .await;
        if influx_status == sluice_status {
            accepted += usize::from(sluice_status == StatusCode::NO_CONTENT);
            continue;
        }
        if db == "aside" {
            on_purpose += 1;
            continue;
        }
        differences.push(format!(
            "{l:?}\n    InfluxDB {influx_status} {influx_text}\n    Sluice {sluice_status} {sluice_text}"
        ));
    }
    let influx_stored = influx_points(&influx, &client, "lp").await;
    let sluice_stored = sluice_points(&s, "lp").await;
    for (key, fields) in &influx_stored {
        match sluice_stored.get(key) {
            Some(f) if f == fields => {}
            other => differences.push(format!(
                "line {:?}\n    InfluxDB stored {key:?} {fields:?}\n    Sluice {other:?}",
                usize::try_from(key.2 - BASE)
                    .ok()
                    .and_then(|i| lines.get(i))
            )),
        }
    }
    let respelt = respelt_measurements(&lines);
    for (key, fields) in &sluice_stored {
        if !influx_stored.contains_key(key) && respelt.contains(&key.0) {
            on_purpose += 1;
            continue;
        }
        if !influx_stored.contains_key(key) {
            differences.push(format!(
                "line {:?}\n    Sluice stored {key:?} {fields:?}, InfluxDB did not",
                usize::try_from(key.2 - BASE)
                    .ok()
                    .and_then(|i| lines.get(i))
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences from InfluxDB (showing 40):\n{}",
        differences.len(),
        differences[..differences.len().min(40)].join("\n")
    );
    eprintln!(
        "line protocol against InfluxDB: {accepted} of {} lines accepted by both, {on_purpose} \
         refused by Sluice on purpose, {} points compared",
        lines.len(),
        influx_stored.len()
    );
    // the generator makes both kinds of line in numbers, and few that differ on purpose
    assert!(
        accepted > 1000 && accepted < 2700 && on_purpose < 150,
        "{accepted} of 3000 accepted, {on_purpose} differ on purpose"
    );
}
