//! The protobuf messages Sluice accepts, as prost types: the `.proto` sources are beside this
//! crate (`proto/prometheus/`, `proto/opentelemetry/`), and the types here follow their field
//! numbers. The build
//! machines have no `protoc`, so the messages are written with `#[derive(prost::Message)]`
//! rather than generated.
//!
//! The server decodes remote write with its own zero-copy reader (`sluice_ingest::remote_write`);
//! these types are what tests decode with independently, and what clients and benchmarks encode
//! requests with.

pub mod otlp;
pub mod prometheus;
