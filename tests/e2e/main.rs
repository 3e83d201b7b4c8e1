//! End-to-end tests: the real `sluice` binary, started on port 0 with a temporary folder, used
//! over HTTP (and from its own CLI) the way agents and users use it.
//!
//! Everything lives in this one test binary so that the heavy link happens once.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod auth;
mod cli;
mod crash;
mod durability;
mod flight;
mod grafana;
mod grafana_prometheus;
mod hostile;
mod influxdb;
mod otlp;
mod otlp_grpc;
mod persistence;
mod promql;
mod query;
mod remote_write;
mod retention;
mod write;
