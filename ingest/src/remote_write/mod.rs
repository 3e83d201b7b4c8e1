//! Prometheus remote write 1.0 and 2.0 -> [`WriteBatch`].
//!
//! A series becomes points of table `__name__`, with its other labels as tags and one field
//! `value` (Float64) per sample, at the sample's millisecond time. The request is read in place:
//! label names and values are slices of the decompressed body, interned once per series into
//! the batch's symbols, and every sample of the series shares that series' tag range, so
//! decoding allocates per request and per distinct string, never per sample. A 1.0 series seen
//! in an earlier request comes from the caller's [`SeriesCache`] (its label bytes to its checked
//! labels) without being parsed or checked again.
//!
//! Stale markers (the NaN Prometheus writes when a series disappears; other NaNs are values)
//! are points of the metric's stale-marker table ([`sluice_model::staleness`]), not values of
//! its own. What is not stored is counted, never dropped silently: native histograms and
//! exemplars.
//! A series that breaks a rule (no `__name__`, a repeated or invalid label name, a limit) is
//! reported with its position and labels, and the request's other series are kept. Bytes that
//! are not a well-formed message refuse the whole request.
//!
//! The messages are those of `proto/prometheus/remote_write_v{1,2}.proto`; `sluice_proto` has
//! them as prost types, which the tests decode with independently.

mod decoder;
mod request;
mod series_cache;
mod v1;
mod v2;

pub use request::{
    Decoded, Limits, NAME_LABEL, RequestError, STALE_NAN_BITS, SeriesError, V2_CONTENT_TYPE,
    VALUE_FIELD, Version, decompress_snappy, decompress_snappy_into,
};
pub use series_cache::SeriesCache;

use decoder::Decoder;

/// Decodes a decompressed request body of `version`. `cache` holds the series of earlier
/// requests (1.0 only), and learns this one's: pass the same one from request to request, one
/// per concurrent decode.
pub fn decode(
    body: &[u8],
    version: Version,
    limits: &Limits,
    cache: &mut SeriesCache,
) -> Result<Decoded, RequestError> {
    cache.begin(limits);
    let mut d = Decoder::new(limits, cache);
    match version {
        Version::V1 => v1::request(&mut d, body),
        Version::V2 => v2::request(&mut d, body),
    }
    .map_err(|e| RequestError::Malformed {
        version,
        message: e.to_string(),
    })?;
    Ok(d.out)
}

/// What a decode keeps for the next one: the series cache, and the buffer the body is
/// decompressed into (kept up to [`Scratch::KEEP_BYTES`]). A server keeps one per decode in
/// progress at once.
#[derive(Debug, Default)]
pub struct Scratch {
    cache: SeriesCache,
    message: Vec<u8>,
}

impl Scratch {
    /// The largest decompression buffer kept for the next request.
    const KEEP_BYTES: usize = 16 << 20;

    /// Decompresses `raw` (at most `limit` bytes decompressed) and decodes it as a request
    /// of `version`, with this scratch's series cache.
    pub fn decode(
        &mut self,
        raw: &[u8],
        limit: usize,
        version: Version,
        limits: &Limits,
    ) -> Result<Decoded, RequestError> {
        decompress_snappy_into(raw, limit, &mut self.message)?;
        let decoded = decode(&self.message, version, limits, &mut self.cache);
        if self.message.capacity() > Self::KEEP_BYTES {
            self.message = Vec::new();
        }
        decoded
    }
}

#[cfg(test)]
mod tests;
