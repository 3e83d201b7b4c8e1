//! Lock-free counters and histograms, and their Prometheus text rendering.
//!
//! Storage updates these on its hot paths (WAL fsync, buffered rows); the server keeps its own
//! request metrics with the same types and renders everything at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket upper bounds in seconds, from 100 µs to 10 s: covers an fsync and a slow query.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A histogram of durations with fixed buckets ([`DURATION_BUCKETS`]).
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: DURATION_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends this histogram as Prometheus text samples of `name` with `labels` (already
    /// formatted as `k="v",...`, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// Appends a `# HELP` and `# TYPE` header.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// What storage measures about itself.
#[derive(Debug, Default)]
pub struct StorageMetrics {
    /// Duration of each WAL fsync.
    pub wal_fsync: Histogram,
    /// Bytes appended to the WAL.
    pub wal_bytes: Counter,
    /// WAL records appended.
    pub wal_records: Counter,
    /// Writes acknowledged by one fsync, summed: divided by fsync count, the group size.
    pub wal_grouped_writes: Counter,
    /// Parquet files written by persistence.
    pub persisted_files: Counter,
    /// Rows written to Parquet by persistence.
    pub persisted_rows: Counter,
    /// Persist rounds that failed (and were retried later).
    pub persist_errors: Counter,
    /// Buffer partitions that a persist could not write (and left for the next one).
    pub persist_partition_errors: Counter,
    /// Files replaced by compaction.
    pub compacted_files: Counter,
    /// Compaction rounds that failed.
    pub compaction_errors: Counter,
    /// Writes that waited for persistence to make room in the buffer.
    pub write_waits: Counter,
    /// Time writes waited for room in the buffer, in microseconds.
    pub write_wait_micros: Counter,
}

impl StorageMetrics {
    /// Appends storage's metrics in Prometheus text format.
    pub fn render(&self, out: &mut String, buffer_rows: u64, buffer_bytes: u64) {
        header(
            out,
            "sluice_wal_fsync_duration_seconds",
            "histogram",
            "Duration of WAL fsyncs (one per group of concurrent writes).",
        );
        self.wal_fsync
            .render(out, "sluice_wal_fsync_duration_seconds", "");
        for (name, help, v) in [
            (
                "sluice_wal_bytes_total",
                "Bytes appended to the write-ahead log.",
                self.wal_bytes.get(),
            ),
            (
                "sluice_wal_records_total",
                "Records appended to the write-ahead log.",
                self.wal_records.get(),
            ),
            (
                "sluice_wal_grouped_writes_total",
                "Writes made durable, summed over fsyncs (divide by the fsync count for the \
                 mean group size).",
                self.wal_grouped_writes.get(),
            ),
            (
                "sluice_persisted_files_total",
                "Parquet files written by persistence.",
                self.persisted_files.get(),
            ),
            (
                "sluice_persisted_rows_total",
                "Rows written to Parquet by persistence.",
                self.persisted_rows.get(),
            ),
            (
                "sluice_persist_errors_total",
                "Persist rounds that failed; their rows stay buffered and are retried.",
                self.persist_errors.get(),
            ),
            (
                "sluice_persist_partition_errors_total",
                "Buffer partitions a persist could not write while it wrote the others; \
                 their rows stay buffered and are retried.",
                self.persist_partition_errors.get(),
            ),
            (
                "sluice_compacted_files_total",
                "Parquet files merged away by compaction.",
                self.compacted_files.get(),
            ),
            (
                "sluice_compaction_errors_total",
                "Compaction rounds that failed; the files stay as they were.",
                self.compaction_errors.get(),
            ),
            (
                "sluice_write_buffer_waits_total",
                "Writes that found the buffer over half its limit and waited for persistence \
                 to make room.",
                self.write_waits.get(),
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        header(
            out,
            "sluice_write_buffer_wait_seconds_total",
            "counter",
            "Time writes waited for persistence to make room in the buffer.",
        );
        let _ = writeln!(
            out,
            "sluice_write_buffer_wait_seconds_total {}",
            self.write_wait_micros.get() as f64 / 1e6
        );
        header(
            out,
            "sluice_buffer_rows",
            "gauge",
            "Rows held in the in-memory write buffer.",
        );
        let _ = writeln!(out, "sluice_buffer_rows {buffer_rows}");
        header(
            out,
            "sluice_buffer_bytes",
            "gauge",
            "Approximate bytes held in the in-memory write buffer.",
        );
        let _ = writeln!(out, "sluice_buffer_bytes {buffer_bytes}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
    }
}
