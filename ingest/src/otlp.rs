//! OpenTelemetry OTLP metrics -> [`crate::WriteBatch`] (issue 5, in progress).
//!
//! [`names`] turns OTLP metric names, units and attribute keys into the table and tag names a
//! Prometheus user expects, as the OpenTelemetry-to-Prometheus compatibility specification
//! describes; [`map`] turns a decoded export request into points; [`json`] reads the OTLP/JSON
//! encoding into the same types as the protobuf one.

pub mod json;
pub mod map;
pub mod names;
