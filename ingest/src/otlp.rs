//! OpenTelemetry OTLP metrics -> [`sluice_model::WriteBatch`].
//!
//! [`names`] turns OTLP metric names, units and attribute keys into the table and tag names a
//! Prometheus user expects, as the OpenTelemetry-to-Prometheus compatibility specification
//! describes; [`map`] turns an export request in protobuf into points, reading the bytes in
//! place; [`json`] reads the OTLP/JSON encoding into the prost types, which [`map::map`]
//! encodes and maps the same way.

pub mod json;
pub mod map;
pub mod names;
