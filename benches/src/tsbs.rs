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
}

impl Spec {
    /// `hosts` hosts over `hours` hours.
    pub fn hours(hosts: usize, hours: usize) -> Self {
        Spec {
            hosts,
            steps: hours * 3600 / INTERVAL_SECS as usize,
            first_step: 0,
        }
    }

    /// The same data set starting `hours` later.
    pub fn starting_after_hours(mut self, hours: usize) -> Self {
        self.first_step = hours * 3600 / INTERVAL_SECS as usize;
        self
    }

    /// Rows (points) in total.
    pub fn rows(&self) -> usize {
        self.hosts * self.steps
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

/// A host's static tags, as the series-key part of a line (`cpu,hostname=...`).
fn series_key(i: usize, rng: &mut Rng) -> String {
    let (region, dcs) = REGIONS[rng.below(REGIONS.len() as u64) as usize];
    format!(
        "cpu,hostname=host_{i},region={region},datacenter={},rack={},os={},arch={},team={},\
         service={},service_version={},service_environment={}",
        dcs[rng.below(3) as usize],
        rng.below(100),
        OSES[rng.below(OSES.len() as u64) as usize],
        ARCHES[rng.below(ARCHES.len() as u64) as usize],
        TEAMS[rng.below(TEAMS.len() as u64) as usize],
        rng.below(20),
        rng.below(2),
        ENVIRONMENTS[rng.below(ENVIRONMENTS.len() as u64) as usize],
    )
}

/// Streams the data set as line-protocol bodies of at most `lines_per_body` lines each,
/// calling `each` with every body. Timestamps are nanoseconds.
pub fn generate(spec: Spec, lines_per_body: usize, mut each: impl FnMut(&str)) {
    let mut rng = Rng(42);
    let keys: Vec<String> = (0..spec.hosts).map(|i| series_key(i, &mut rng)).collect();
    let mut state: Vec<[i64; 10]> = (0..spec.hosts)
        .map(|_| std::array::from_fn(|_| rng.below(101) as i64))
        .collect();
    let mut body = String::with_capacity(lines_per_body * 320);
    let mut lines = 0;
    for step in 0..spec.steps {
        let time = START_NANOS + (spec.first_step + step) as i64 * INTERVAL_SECS * 1_000_000_000;
        for (host, key) in keys.iter().enumerate() {
            body.push_str(key);
            for (f, name) in FIELDS.iter().enumerate() {
                let v = &mut state[host][f];
                *v = (*v + rng.below(11) as i64 - 5).clamp(0, 100);
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
        }
    }
    if !body.is_empty() {
        each(&body);
    }
}

/// A TSBS query, in Sluice's SQL and in InfluxQL (for InfluxDB 1.x).
#[derive(Debug, Clone)]
pub struct Query {
    /// The TSBS name.
    pub name: &'static str,
    pub sql: String,
    pub influxql: String,
}

/// The TSBS cpu-only queries the benchmark times, over the first day of data: one host is
/// `host_8`, one hour is 12:00-13:00, twelve hours are 06:00-18:00.
pub fn queries() -> Vec<Query> {
    let hour = "time >= '2026-01-01T12:00:00Z' AND time < '2026-01-01T13:00:00Z'";
    let twelve = "time >= '2026-01-01T06:00:00Z' AND time < '2026-01-01T18:00:00Z'";
    let means_sql: Vec<String> = FIELDS.iter().map(|f| format!("avg({f}) AS {f}")).collect();
    let means_iql: Vec<String> = FIELDS.iter().map(|f| format!("mean({f})")).collect();
    vec![
        Query {
            name: "single-groupby-1-1-1",
            sql: format!(
                "SELECT date_bin(INTERVAL '1 minute', time) AS minute, max(usage_user) AS max_usage_user \
                 FROM cpu WHERE hostname = 'host_8' AND {hour} GROUP BY minute ORDER BY minute"
            ),
            influxql: format!(
                "SELECT max(usage_user) FROM cpu WHERE hostname = 'host_8' AND {hour} GROUP BY time(1m)"
            ),
        },
        Query {
            name: "double-groupby-all",
            sql: format!(
                "SELECT date_bin(INTERVAL '1 hour', time) AS hour, hostname, {} FROM cpu \
                 WHERE {twelve} GROUP BY hour, hostname ORDER BY hour, hostname",
                means_sql.join(", ")
            ),
            influxql: format!(
                "SELECT {} FROM cpu WHERE {twelve} GROUP BY time(1h), hostname",
                means_iql.join(", ")
            ),
        },
        // The newest row of each host from the newest rows Sluice keeps per series
        // (`last_cache`), then the same query over the whole table for comparison.
        Query {
            name: "lastpoint",
            sql: "SELECT DISTINCT ON (hostname) * FROM last_cache('cpu') \
                  ORDER BY hostname, time DESC"
                .to_string(),
            influxql: "SELECT last(*) FROM cpu GROUP BY hostname".to_string(),
        },
        Query {
            name: "lastpoint-scan",
            sql: "SELECT DISTINCT ON (hostname) * FROM cpu ORDER BY hostname, time DESC"
                .to_string(),
            influxql: "SELECT last(*) FROM cpu GROUP BY hostname".to_string(),
        },
        Query {
            name: "high-cpu-1",
            sql: format!(
                "SELECT * FROM cpu WHERE usage_user > 90 AND hostname = 'host_8' AND {hour} \
                 ORDER BY time"
            ),
            influxql: format!(
                "SELECT * FROM cpu WHERE usage_user > 90 AND hostname = 'host_8' AND {hour}"
            ),
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
}
