//! An OTLP export request (protobuf bytes, read in place) -> the points of a [`WriteBatch`],
//! as DESIGN.md's mapping says:
//!
//! - gauges and sums: table `<name>` with field `value`; ints and doubles both as Float64;
//! - explicit-bucket histograms: `<name>_bucket` (tag `le`, cumulative counts, ending at
//!   `+Inf`), `<name>_sum` (when the point has a sum) and `<name>_count`;
//! - summaries: `<name>` (tag `quantile`), `<name>_sum`, `<name>_count`;
//! - tags: the point's attributes; `job` (`service.namespace/service.name`) and `instance`
//!   (`service.instance.id`) from the resource; `otel_scope_name`, `otel_scope_version`; the
//!   resource attributes named in [`Options::promote`];
//! - each resource with other attributes also gets a `target_info` row (value 1, at its newest
//!   point's time) holding them as tags, beside `job` and `instance`.
//!
//! What Prometheus cannot represent is not stored, and counted with a reason, for the
//! response's `partial_success`: delta or unspecified temporality (Prometheus series are
//! cumulative), exponential histograms (they would be native histograms), points without a
//! time. Points flagged "no recorded value" are the OTLP form of a stale marker: skipped, and
//! not counted as rejected.

mod cache;
mod labels;
mod options;
mod points;
mod walk;

use prost::Message;
use sluice_proto::otlp::ExportMetricsServiceRequest;

pub use cache::{CACHE_BUDGET, Cache};
pub use options::Options;
pub use walk::{MapError, Mapped};

use walk::Mapper;

/// Maps an export request in protobuf (`ExportMetricsServiceRequest`); see the module
/// documentation. The bytes are read in place. Each resource-and-scope and each attribute set
/// under it is resolved to tags once and kept in `cache` (see [`Cache`]); within a request a
/// repeated attribute set costs one hash and one compare.
pub fn map_protobuf(body: &[u8], options: &Options, cache: &mut Cache) -> Result<Mapped, MapError> {
    cache.prepare(options);
    let mut m = Mapper::new(body, options, cache);
    m.request().map_err(|e| MapError(e.to_string()))?;
    Ok(m.into_mapped())
}

/// Maps a decoded request (OTLP/JSON arrives this way): encoded, then read as
/// [`map_protobuf`] reads a body, so that both encodings map alike.
pub fn map(
    request: &ExportMetricsServiceRequest,
    options: &Options,
    cache: &mut Cache,
) -> Result<Mapped, MapError> {
    map_protobuf(&request.encode_to_vec(), options, cache)
}

#[cfg(test)]
mod tests;
