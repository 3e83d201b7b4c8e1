//! Wire formats -> protocol-neutral writes.
//!
//! Every format Sluice accepts decodes into a [`sluice_model::WriteBatch`]: the points of one
//! request, with their strings interned once per batch. Storage validates and stores batches
//! without knowing which format they came in. The functions here are pure: bytes in, values
//! out, no I/O and no locks.

mod bytes_map;
pub mod line_protocol;
pub mod otlp;
mod protowire;
pub mod remote_write;
