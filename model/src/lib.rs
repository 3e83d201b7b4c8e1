//! The protocol-neutral write: what every wire format decodes into and storage consumes.
//!
//! Every format Sluice accepts (line protocol, Prometheus remote write, OTLP) decodes into a
//! [`WriteBatch`]: the points of one request, with their strings interned once per batch
//! ([`Symbols`]). Storage validates and stores batches without knowing which format they came
//! in, and keeps what senders say of their metrics as [`MetricMetadata`]. This crate sits
//! below both and depends on nothing of Sluice's, so that neither side depends on the other.

mod batch;
mod metadata;
pub mod staleness;
mod symbols;

pub use batch::{Field, FieldType, FieldValue, Point, Tag, TagSetId, WriteBatch};
pub use metadata::{MetricMetadata, MetricType};
pub use symbols::{InvalidBatch, Sym, Symbols};
