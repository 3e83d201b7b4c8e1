//! Where Prometheus's stale markers are kept.
//!
//! A stale marker (the NaN whose bits are [`STALE_NAN_BITS`]) says a series ended: PromQL
//! stops answering it at once instead of for the lookback window. Markers are not values, so
//! they are not kept in the metric's table (SQL would show them as NaN); a marker of metric
//! `m` is a row of the table [`stale_table`]`(m)`, with the series' tags and the marker in
//! `value`. Those tables are left out of SQL's table lists and of PromQL's metrics.

/// The bits of the NaN Prometheus writes as a stale marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The start of every stale-marker table's name (`__` starts the names Prometheus reserves,
/// so no metric's table starts so).
pub const STALE_TABLE_PREFIX: &str = "__stale_";

/// The table that keeps the stale markers of `metric`'s table.
pub fn stale_table(metric: &str) -> String {
    format!("{STALE_TABLE_PREFIX}{metric}")
}

/// Whether `table` keeps stale markers.
pub fn is_stale_table(table: &str) -> bool {
    table.starts_with(STALE_TABLE_PREFIX)
}

/// Whether `v` is a stale marker.
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}
