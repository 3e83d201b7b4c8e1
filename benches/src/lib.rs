//! Shared pieces of Sluice's benchmarks: the TSBS-shaped data generator used by both the
//! criterion benches and the end-to-end load benchmark (`sluice-load`).

pub mod tsbs;
