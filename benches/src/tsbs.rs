//! TSBS "cpu-only" shaped data, as line protocol.
//!
//! The shape of the Time Series Benchmark Suite's `cpu-only` use case: measurement `cpu`, ten
//! tags per host (hostname, region, datacenter, rack, os, arch, team, service,
//! service_version, service_environment), ten integer fields `usage_user` ...
//! `usage_guest_nice` doing a bounded random walk, one point per host every 10 s, emitted
//! time-major (all hosts at t, then all hosts at t + 10 s) as TSBS emits them. Generation is
//! deterministic: the same arguments give the same bytes.

use std::fmt::Write;

/// The field names, in TSBS order.
pub const FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

const REGIONS: [(&str, [&str; 3]); 4] = [
    ("us-east-1", ["us-east-1a", "us-east-1b", "us-east-1c"]),
    ("us-west-2", ["us-west-2a", "us-west-2b", "us-west-2c"]),
    ("eu-west-1", ["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
    (
        "ap-southeast-1",
        ["ap-southeast-1a", "ap-southeast-1b", "ap-southeast-1c"],
    ),
];
const OSES: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
const ARCHES: [&str; 2] = ["x64", "x86"];
const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const ENVIRONMENTS: [&str; 3] = ["production", "staging", "test"];

/// Nanoseconds of 2026-01-01T00:00:00Z, where generated data starts.
pub const START_NANOS: i64 = 1_767_225_600_000_000_000;
/// Seconds between two points of one host.
pub const INTERVAL_SECS: i64 = 10;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub hosts: usize,
    /// Number of 10-second steps (8,640 for a day).
    pub steps: usize,
    /// Steps skipped before the first one generated: data that continues an earlier set.
    pub first_step: usize,
    /// Of the steps generated, how many at the start are not sent: the rest of a set whose
    /// first part was sent before (the values continue where they left off, unlike
    /// `first_step`'s).
    pub unsent_steps: usize,
}

impl Spec {
    /// `hosts` hosts over `hours` hours.
    pub fn hours(hosts: usize, hours: usize) -> Self {
        Spec {
            hosts,
            steps: hours * 3600 / INTERVAL_SECS as usize,
            first_step: 0,
            unsent_steps: 0,
        }
    }

    /// The same data set without its first `hours` hours.
    pub fn sending_after_hours(mut self, hours: usize) -> Self {
        self.unsent_steps = (hours * 3600 / INTERVAL_SECS as usize).min(self.steps);
        self
    }

    /// Steps sent.
    pub fn sent_steps(&self) -> usize {
        self.steps - self.unsent_steps
    }

    /// The same data set starting `hours` later.
    pub fn starting_after_hours(mut self, hours: usize) -> Self {
        self.first_step = hours * 3600 / INTERVAL_SECS as usize;
        self
    }

    /// Rows (points) in total.
    pub fn rows(&self) -> usize {
        self.hosts * self.sent_steps()
    }

    /// Field values in total.
    pub fn values(&self) -> usize {
        self.rows() * FIELDS.len()
    }
}

/// splitmix64: small, fast, and reproducible everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The names of a host's ten tags, in TSBS order.
pub const TAGS: [&str; 10] = [
    "hostname",
    "region",
    "datacenter",
    "rack",
    "os",
    "arch",
    "team",
    "service",
    "service_version",
    "service_environment",
];

/// A host's tag values, in [`TAGS`] order.
fn host_tags(i: usize, rng: &mut Rng) -> [String; 10] {
    let (region, dcs) = REGIONS[rng.below(REGIONS.len() as u64) as usize];
    [
        format!("host_{i}"),
        region.to_string(),
        dcs[rng.below(3) as usize].to_string(),
        rng.below(100).to_string(),
        OSES[rng.below(OSES.len() as u64) as usize].to_string(),
        ARCHES[rng.below(ARCHES.len() as u64) as usize].to_string(),
        TEAMS[rng.below(TEAMS.len() as u64) as usize].to_string(),
        rng.below(20).to_string(),
        rng.below(2).to_string(),
        ENVIRONMENTS[rng.below(ENVIRONMENTS.len() as u64) as usize].to_string(),
    ]
}

/// Calls `each(host, tags, values, time_nanos)` for every point of the data set, time-major.
fn points(spec: Spec, mut each: impl FnMut(usize, &[String; 10], &[i64; 10], i64)) {
    let mut rng = Rng(42);
    let tags: Vec<[String; 10]> = (0..spec.hosts).map(|i| host_tags(i, &mut rng)).collect();
    let mut state: Vec<[i64; 10]> = (0..spec.hosts)
        .map(|_| std::array::from_fn(|_| rng.below(101) as i64))
        .collect();
    for step in 0..spec.steps {
        let time = START_NANOS + (spec.first_step + step) as i64 * INTERVAL_SECS * 1_000_000_000;
        for (host, values) in state.iter_mut().enumerate() {
            for v in values.iter_mut() {
                *v = (*v + rng.below(11) as i64 - 5).clamp(0, 100);
            }
            if step >= spec.unsent_steps {
                each(host, &tags[host], values, time);
            }
        }
    }
}

/// Streams the data set as line-protocol bodies of at most `lines_per_body` lines each,
/// calling `each` with every body. Timestamps are nanoseconds.
pub fn generate(spec: Spec, lines_per_body: usize, mut each: impl FnMut(&str)) {
    let mut keys: Vec<String> = Vec::new();
    let mut body = String::with_capacity(lines_per_body * 320);
    let mut lines = 0;
    points(spec, |host, tags, values, time| {
        if keys.len() <= host {
            let mut key = String::from("cpu");
            for (name, value) in TAGS.iter().zip(tags) {
                let _ = write!(key, ",{name}={value}");
            }
            keys.push(key);
        }
        body.push_str(&keys[host]);
        for (f, (name, v)) in FIELDS.iter().zip(values).enumerate() {
            let sep = if f == 0 { ' ' } else { ',' };
            let _ = write!(body, "{sep}{name}={v}i");
        }
        let _ = writeln!(body, " {time}");
        lines += 1;
        if lines == lines_per_body {
            each(&body);
            body.clear();
            lines = 0;
        }
    });
    if !body.is_empty() {
        each(&body);
    }
}

/// The data set as Prometheus remote write 1.0 requests (uncompressed protobuf): each field a
/// metric `cpu_<field>` with the ten tags as labels (sorted by name, as Prometheus sorts them).
/// Each `TimeSeries` entry carries `samples_per_series` consecutive samples of one series in
/// time order (Prometheus itself sends one: each scraped sample its own entry); entries go
/// series after series, then on to the next samples; at most `samples_per_request` samples a
/// request (rounded to whole entries).
pub fn remote_write_requests(
    spec: Spec,
    samples_per_request: usize,
    samples_per_series: usize,
) -> Vec<Vec<u8>> {
    let per_series = samples_per_series.max(1);
    // the encoded labels of each (host, field) series, built once
    let mut labels: Vec<[Vec<u8>; 10]> = Vec::new();
    // samples waiting to be sent, per (host, field)
    let mut pending: Vec<[Vec<(f64, i64)>; 10]> = Vec::new();
    let mut out = Vec::new();
    let mut body = Vec::with_capacity(samples_per_request * 400);
    let mut samples = 0;
    let mut calls = 0usize;
    let mut flush = |labels: &[[Vec<u8>; 10]], pending: &mut [[Vec<(f64, i64)>; 10]]| {
        for (host, fields) in pending.iter_mut().enumerate() {
            for (f, series) in fields.iter_mut().enumerate() {
                if series.is_empty() {
                    continue;
                }
                let mut entry = labels[host][f].clone();
                for &(v, ms) in series.iter() {
                    let mut sample = Vec::with_capacity(16);
                    sample.push(0x09); // field 1, fixed64: the value
                    sample.extend_from_slice(&v.to_bits().to_le_bytes());
                    sample.push(0x10); // field 2, varint: the time in ms
                    proto_varint(&mut sample, ms as u64);
                    proto_bytes(&mut entry, 2, &sample);
                }
                proto_bytes(&mut body, 1, &entry);
                samples += series.len();
                series.clear();
                if samples >= samples_per_request {
                    out.push(std::mem::take(&mut body));
                    samples = 0;
                }
            }
        }
    };
    points(spec, |host, tags, values, time| {
        if labels.len() <= host {
            labels.push(std::array::from_fn(|f| {
                let mut pairs: Vec<(&str, String)> = TAGS
                    .iter()
                    .zip(tags)
                    .map(|(n, v)| (*n, v.clone()))
                    .collect();
                pairs.push(("__name__", format!("cpu_{}", FIELDS[f])));
                pairs.sort();
                let mut encoded = Vec::new();
                for (name, value) in pairs {
                    let mut label = Vec::new();
                    proto_bytes(&mut label, 1, name.as_bytes());
                    proto_bytes(&mut label, 2, value.as_bytes());
                    proto_bytes(&mut encoded, 1, &label);
                }
                encoded
            }));
            pending.push(Default::default());
        }
        for (f, v) in values.iter().enumerate() {
            pending[host][f].push((*v as f64, time / 1_000_000));
        }
        calls += 1;
        let step = calls / spec.hosts;
        if calls.is_multiple_of(spec.hosts)
            && (step.is_multiple_of(per_series) || step == spec.sent_steps())
        {
            flush(&labels, &mut pending);
        }
    });
    if !body.is_empty() {
        out.push(body);
    }
    out
}

/// The set as OTLP metrics export requests (protobuf), as a Collector batching many hosts
/// sends them: each field a gauge `cpu.<field>`; per host a resource (`service.name` "tsbs",
/// `service.instance.id` the hostname, and the host's region, datacenter, rack, os and arch)
/// and the other five tags as point attributes. A request holds about `values_per_request`
/// values: whole collection steps of every host, each host's gauges carrying one point per
/// step.
pub fn otlp_requests(spec: Spec, values_per_request: usize) -> Vec<Vec<u8>> {
    use prost::Message;
    use sluice_proto::otlp::{
        AnyValue, ExportMetricsServiceRequest, Gauge, InstrumentationScope, KeyValue, Metric,
        NumberDataPoint, Resource, ResourceMetrics, ScopeMetrics,
    };
    let kv = |key: &str, value: &str| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            string_value: Some(value.to_string()),
            ..Default::default()
        }),
    };
    let steps_per_request = (values_per_request / (spec.hosts * FIELDS.len())).max(1);
    // per host: its resource, point attributes, and the points waiting, per field
    type Host = (Resource, Vec<KeyValue>, [Vec<NumberDataPoint>; 10]);
    let mut hosts: Vec<Host> = Vec::new();
    let mut out = Vec::new();
    let flush = |hosts: &mut Vec<Host>, out: &mut Vec<Vec<u8>>| {
        let resource_metrics = hosts
            .iter_mut()
            .map(|(resource, _, points)| ResourceMetrics {
                resource: Some(resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "tsbs".into(),
                        ..Default::default()
                    }),
                    metrics: points
                        .iter_mut()
                        .enumerate()
                        .map(|(f, p)| Metric {
                            name: format!("cpu.{}", FIELDS[f]),
                            gauge: Some(Gauge {
                                data_points: std::mem::take(p),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect();
        out.push(ExportMetricsServiceRequest { resource_metrics }.encode_to_vec());
    };
    let mut calls = 0usize;
    points(spec, |host, tags, values, time| {
        if hosts.len() <= host {
            let mut resource = vec![
                kv("service.name", "tsbs"),
                kv("service.instance.id", &tags[0]),
            ];
            resource.extend((1..6).map(|i| kv(TAGS[i], &tags[i])));
            let attributes = (6..10).map(|i| kv(TAGS[i], &tags[i])).collect();
            hosts.push((
                Resource {
                    attributes: resource,
                    dropped_attributes_count: 0,
                },
                attributes,
                Default::default(),
            ));
        }
        let (_, attributes, pending) = &mut hosts[host];
        for (f, v) in values.iter().enumerate() {
            pending[f].push(NumberDataPoint {
                attributes: attributes.clone(),
                time_unix_nano: time as u64,
                as_double: Some(*v as f64),
                ..Default::default()
            });
        }
        calls += 1;
        let step = calls / spec.hosts;
        if calls.is_multiple_of(spec.hosts)
            && (step.is_multiple_of(steps_per_request) || step == spec.sent_steps())
        {
            flush(&mut hosts, &mut out);
        }
    });
    out
}

fn proto_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn proto_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    proto_varint(out, u64::from(field << 3 | 2));
    proto_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A TSBS query, in Sluice's SQL, in InfluxQL (for InfluxDB 1.x) and in PromQL (for
/// VictoriaMetrics, which maps line protocol's `cpu` field `usage_user` to the metric
/// `cpu_usage_user`).
#[derive(Debug, Clone)]
pub struct Query {
    /// The TSBS name.
    pub name: &'static str,
    pub sql: String,
    pub influxql: String,
    pub promql: PromQuery,
}

/// A PromQL query with the times it is evaluated at: an instant query at `start` when `step`
/// is `None`, else a range query from `start` to `end` (Unix seconds).
#[derive(Debug, Clone)]
pub struct PromQuery {
    pub query: String,
    pub start: i64,
    pub end: i64,
    pub step: Option<i64>,
}

impl PromQuery {
    /// The path and parameters of the request, for VictoriaMetrics' Prometheus API
    /// (`nocache=1`: its rollup cache would otherwise answer repeated runs).
    pub fn request(&self) -> (&'static str, Vec<(&'static str, String)>) {
        let mut params = vec![("query", self.query.clone()), ("nocache", "1".into())];
        match self.step {
            Some(step) => {
                params.push(("start", self.start.to_string()));
                params.push(("end", self.end.to_string()));
                params.push(("step", step.to_string()));
                ("/api/v1/query_range", params)
            }
            None => {
                params.push(("time", self.start.to_string()));
                ("/api/v1/query", params)
            }
        }
    }
}

/// A dashboard-sized PromQL range query (issue 21): every host's rate of `usage_user` over
/// the first day, a point a minute.
pub fn dashboard_promql() -> (&'static str, PromQuery) {
    let start = START_NANOS / 1_000_000_000;
    (
        "dashboard rate 24h",
        PromQuery {
            query: "sum by (hostname) (rate(cpu_usage_user[5m]))".into(),
            start,
            end: start + 24 * 3600,
            step: Some(60),
        },
    )
}

/// The TSBS cpu-only queries the benchmark times (issue 20's q1-q5), over the first day of
/// data: one host is `host_8`, one hour is 12:00-13:00, twelve hours are 06:00-18:00.
pub fn queries() -> Vec<Query> {
    let hour = "time >= '2026-01-01T12:00:00Z' AND time < '2026-01-01T13:00:00Z'";
    let twelve = "time >= '2026-01-01T06:00:00Z' AND time < '2026-01-01T18:00:00Z'";
    let means_sql: Vec<String> = FIELDS.iter().map(|f| format!("avg({f})")).collect();
    let means_iql: Vec<String> = FIELDS.iter().map(|f| format!("mean({f})")).collect();
    let at = |h: i64, m: i64| START_NANOS / 1_000_000_000 + h * 3600 + m * 60;
    let usage = "{__name__=~\"cpu_usage_.+\"}";
    vec![
        Query {
            name: "q1 single-groupby-1-1-1",
            sql: format!(
                "SELECT date_bin(INTERVAL '1 minute', time) AS minute, max(usage_user) AS max_usage_user \
                 FROM cpu WHERE hostname = 'host_8' AND {hour} GROUP BY minute ORDER BY minute"
            ),
            influxql: format!(
                "SELECT max(usage_user) FROM cpu WHERE hostname = 'host_8' AND {hour} GROUP BY time(1m)"
            ),
            promql: PromQuery {
                query: "max(max_over_time(cpu_usage_user{hostname=\"host_8\"}[1m])) by (__name__)"
                    .into(),
                start: at(12, 1),
                end: at(13, 0),
                step: Some(60),
            },
        },
        Query {
            name: "q2 double-groupby-all",
            sql: format!(
                "SELECT date_bin(INTERVAL '1 hour', time) AS hour, hostname, {} FROM cpu \
                 WHERE {twelve} GROUP BY hour, hostname ORDER BY hostname, hour",
                means_sql.join(", ")
            ),
            influxql: format!(
                "SELECT {} FROM cpu WHERE {twelve} GROUP BY time(1h), hostname",
                means_iql.join(", ")
            ),
            promql: PromQuery {
                query: format!(
                    "avg(avg_over_time({{__name__=~\"cpu_({})\"}}[1h])) by (__name__, hostname)",
                    FIELDS.join("|")
                ),
                start: at(7, 0),
                end: at(18, 0),
                step: Some(3600),
            },
        },
        Query {
            name: "q3 lastpoint",
            sql: "SELECT DISTINCT ON (hostname) * FROM cpu ORDER BY hostname, time DESC"
                .to_string(),
            influxql: "SELECT last(*) FROM cpu GROUP BY hostname".to_string(),
            promql: PromQuery {
                query: usage.to_string(),
                start: at(24, 0),
                end: at(24, 0),
                step: None,
            },
        },
        Query {
            name: "q4 high-cpu-1",
            sql: format!(
                "SELECT * FROM cpu WHERE usage_user > 90 AND hostname = 'host_8' AND {hour}"
            ),
            influxql: format!(
                "SELECT * FROM cpu WHERE usage_user > 90 AND hostname = 'host_8' AND {hour}"
            ),
            promql: PromQuery {
                query: "{__name__=~\"cpu_usage_.+\", hostname=\"host_8\"} and on (hostname) \
                        (cpu_usage_user{hostname=\"host_8\"} > 90)"
                    .into(),
                start: at(12, 0),
                end: at(12, 0) + 3590,
                step: Some(10),
            },
        },
        Query {
            name: "q5 high-cpu-all",
            sql: format!("SELECT * FROM cpu WHERE usage_user > 90 AND {hour}"),
            influxql: format!("SELECT * FROM cpu WHERE usage_user > 90 AND {hour}"),
            promql: PromQuery {
                query: format!("{usage} and on (hostname) (cpu_usage_user > 90)"),
                start: at(12, 0),
                end: at(12, 0) + 3590,
                step: Some(10),
            },
        },
    ]
}

/// The whole data set as bodies of at most `lines_per_body` lines.
pub fn bodies(spec: Spec, lines_per_body: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(spec.rows().div_ceil(lines_per_body));
    generate(spec, lines_per_body, |b| out.push(b.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_of_the_data() {
        let spec = Spec {
            hosts: 3,
            steps: 4,
            first_step: 0,
            unsent_steps: 0,
        };
        let bodies = bodies(spec, 5);
        assert_eq!(bodies.len(), 3);
        let lines: Vec<&str> = bodies.iter().flat_map(|b| b.lines()).collect();
        assert_eq!(lines.len(), spec.rows());
        let first = lines[0];
        assert!(first.starts_with("cpu,hostname=host_0,region="), "{first}");
        assert_eq!(first.split(' ').nth(1).unwrap().split(',').count(), 10);
        assert!(first.ends_with(&format!(" {START_NANOS}")));
        // time-major: the fourth line is host_0 again, ten seconds later
        assert!(lines[3].starts_with("cpu,hostname=host_0,"));
        assert!(lines[3].ends_with(&format!(" {}", START_NANOS + 10_000_000_000)));
        // deterministic
        assert_eq!(super::bodies(spec, 5), bodies);
    }

    #[test]
    fn a_set_sent_in_two_parts_is_the_set_sent_whole() {
        let lines = |spec: Spec| -> Vec<String> {
            bodies(spec, 7).concat().lines().map(String::from).collect()
        };
        let whole = lines(Spec::hours(3, 2));
        let mut parts = lines(Spec::hours(3, 1));
        parts.extend(lines(Spec::hours(3, 2).sending_after_hours(1)));
        assert_eq!(parts, whole);
        assert_eq!(Spec::hours(3, 2).sending_after_hours(1).rows(), 3 * 360);
    }

    #[test]
    fn remote_write_requests_carry_the_same_points_as_line_protocol() {
        use prost::Message;
        use sluice_proto::prometheus::v1::WriteRequest;
        let spec = Spec {
            hosts: 3,
            steps: 4,
            first_step: 0,
            unsent_steps: 0,
        };
        let requests = remote_write_requests(spec, 7, 1);
        assert_eq!(requests.len(), spec.values().div_ceil(7));
        let series: Vec<_> = requests
            .iter()
            .flat_map(|r| WriteRequest::decode(&r[..]).unwrap().timeseries)
            .collect();
        assert_eq!(series.len(), spec.values());
        let lines: Vec<String> = bodies(spec, 100)
            .concat()
            .lines()
            .map(String::from)
            .collect();
        // the first line's ten fields are the first ten series, at its time
        let first = &lines[0];
        for (f, ts) in series[..10].iter().enumerate() {
            let name = &ts.labels[0];
            assert_eq!(
                (name.name.as_str(), name.value.as_str()),
                ("__name__", format!("cpu_{}", FIELDS[f]).as_str())
            );
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            assert_eq!(ts.labels.len(), 11);
            let host = ts.labels.iter().find(|l| l.name == "hostname").unwrap();
            assert_eq!(host.value, "host_0");
            let [sample] = &ts.samples[..] else {
                panic!("{ts:?}")
            };
            assert_eq!(sample.timestamp * 1_000_000, START_NANOS);
            assert!(
                first.contains(&format!("{}={}i", FIELDS[f], sample.value)),
                "{first} {sample:?}"
            );
        }
        // grouped per series: the same samples, each entry holding consecutive ones
        let grouped: Vec<_> = remote_write_requests(spec, 7, 3)
            .iter()
            .flat_map(|r| WriteRequest::decode(&r[..]).unwrap().timeseries)
            .collect();
        assert_eq!(
            grouped.iter().map(|s| s.samples.len()).sum::<usize>(),
            spec.values()
        );
        assert_eq!(grouped[0].labels, series[0].labels);
        assert_eq!(grouped[0].samples.len(), 3);
        let times: Vec<i64> = grouped[0].samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(
            times,
            [0, 10_000, 20_000].map(|d| START_NANOS / 1_000_000 + d)
        );
        assert_eq!(grouped[0].samples[0], series[0].samples[0]);
    }
}
