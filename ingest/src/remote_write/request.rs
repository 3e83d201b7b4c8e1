//! What a remote write request is, how its body is unpacked, and what decoding it gives.

use sluice_model::{MetricMetadata, WriteBatch};

pub use sluice_model::staleness::STALE_NAN_BITS;

/// The label that names the table.
pub const NAME_LABEL: &str = "__name__";

/// The `Content-Type` of a remote write 2.0 request.
pub const V2_CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// The field every sample is stored in.
pub const VALUE_FIELD: &str = "value";

/// Which message a request carries, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `prometheus.WriteRequest` (remote write 1.0).
    V1,
    /// `io.prometheus.write.v2.Request` (remote write 2.0).
    V2,
}

impl Version {
    /// The version a `Content-Type` asks for: `application/x-protobuf` with no `proto`
    /// parameter (or none at all) is 1.0, as the 2.0 specification says. `None` for anything
    /// else.
    pub fn from_content_type(content_type: Option<&str>) -> Option<Version> {
        let Some(ct) = content_type else {
            return Some(Version::V1);
        };
        let mut parts = ct.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return None;
        }
        let mut version = Version::V1;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("proto") {
                version = match v.trim().trim_matches('"') {
                    "prometheus.WriteRequest" => Version::V1,
                    "io.prometheus.write.v2.Request" => Version::V2,
                    _ => return None,
                };
            }
        }
        Some(version)
    }
}

/// Limits on what one series may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Labels per series, `__name__` included.
    pub max_labels_per_series: usize,
    /// Bytes of a label name.
    pub max_label_name_bytes: usize,
    /// Bytes of a label value.
    pub max_label_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_labels_per_series: 64,
            max_label_name_bytes: 256,
            max_label_value_bytes: 4096,
        }
    }
}

/// A series that was not stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesError {
    /// 1-based position of the series in the request.
    pub series: u32,
    /// Its labels, as `{a="b", ...}`, for the error message.
    pub labels: String,
    pub message: String,
}

/// A decoded request.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The points to store: a point's `line` is its series' 1-based position.
    pub batch: WriteBatch,
    pub series: usize,
    /// Float samples in the request, stale markers included.
    pub samples: usize,
    /// Stale markers: stored apart from the values, in the metric's stale-marker table
    /// ([`sluice_model::staleness`]).
    pub stale_markers: usize,
    /// Native histogram samples, not stored.
    pub histograms: usize,
    /// Exemplars, not stored.
    pub exemplars: usize,
    /// Metadata: (metric family name, what the sender says of it), at most one per family
    /// (the last one sent).
    pub metadata: Vec<(String, MetricMetadata)>,
    pub errors: Vec<SeriesError>,
}

/// Why a request could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the body is not snappy block format (Content-Encoding: snappy): {0}")]
    NotSnappy(String),
    #[error(
        "the decompressed body would be {len} bytes, more than the limit of {limit}; send \
         smaller requests (remote_write queue_config max_samples_per_send)"
    )]
    TooLarge { len: usize, limit: usize },
    #[error("malformed {version:?} remote write request: {message}")]
    Malformed { version: Version, message: String },
}

/// Decompresses a snappy block-format body (what Prometheus sends, `Content-Encoding:
/// snappy`), refusing one that would be larger than `limit` bytes before allocating for it.
pub fn decompress_snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, RequestError> {
    let mut out = Vec::new();
    decompress_snappy_into(body, limit, &mut out)?;
    Ok(out)
}

/// [`decompress_snappy`] into `out` (replacing what it held), so that a caller can reuse one
/// buffer from request to request instead of having fresh pages zeroed for each.
pub fn decompress_snappy_into(
    body: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), RequestError> {
    let not_snappy = |e: snap::Error| RequestError::NotSnappy(e.to_string());
    let len = snap::raw::decompress_len(body).map_err(not_snappy)?;
    if len > limit {
        return Err(RequestError::TooLarge { len, limit });
    }
    out.clear();
    out.resize(len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(body, out)
        .map_err(not_snappy)?;
    out.truncate(n);
    Ok(())
}
