//! Parse-and-buffer throughput on TSBS line protocol, on one core: the work a write request
//! does between reading its body and handing it to the WAL, plus the buffer append the WAL
//! thread does after. Compared with parsing alone and with the `influxdb-line-protocol`
//! crate, which this parser replaced.
//!
//! Run: `cargo bench -p sluice-bench --bench parse_and_buffer`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_bench::tsbs::{self, Spec};
use sluice_ingest::line_protocol::{self, ParseOptions, Precision};
use sluice_storage::catalog::validate;
use sluice_storage::{CatalogSnapshot, Limits, TableBuffer};

const LINES_PER_BODY: usize = 5_000;

fn opts() -> ParseOptions {
    ParseOptions {
        precision: Precision::Nanosecond,
        default_time: 0,
        max_line_bytes: 1 << 20,
    }
}

fn bench(c: &mut Criterion) {
    // 100 hosts x 3 h: 108,000 lines in 22 bodies, about 34 MB
    let bodies = tsbs::bodies(Spec::hours(100, 3), LINES_PER_BODY);
    let bytes: usize = bodies.iter().map(|b| b.len()).sum();
    // the catalog after the first write, as it is for every later one
    let first = line_protocol::parse(bodies[0].as_bytes(), &opts());
    let catalog: CatalogSnapshot = validate(
        &CatalogSnapshot::default(),
        "bench",
        &first.batch,
        &Limits::default(),
        true,
    )
    .and_then(|v| v.catalog)
    .expect("first write creates the table");
    let schema = catalog.table("bench", "cpu").expect("cpu table").clone();

    let mut group = c.benchmark_group("tsbs_line_protocol");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);

    group.bench_function("parse_validate_buffer", |b| {
        b.iter(|| {
            let buffer = TableBuffer::new();
            for body in &bodies {
                let parsed = line_protocol::parse(body.as_bytes(), &opts());
                let v = validate(&catalog, "bench", &parsed.batch, &Limits::default(), true)
                    .expect("database exists");
                assert!(v.rejected.is_empty() && v.catalog.is_none());
                buffer.apply(&schema, &parsed.batch, parsed.batch.points().iter(), 1);
            }
            black_box(buffer.rows())
        })
    });

    group.bench_function("parse", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(line_protocol::parse(body.as_bytes(), &opts()).batch.len());
            }
        })
    });

    group.bench_function("influxdb_line_protocol_crate_parse", |b| {
        b.iter(|| {
            for body in &bodies {
                for line in influxdb_line_protocol::parse_lines(body) {
                    black_box(line.expect("valid line"));
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
