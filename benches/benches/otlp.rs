//! OTLP decode-and-buffer throughput on the TSBS set as an OpenTelemetry SDK sends it (each
//! field a gauge, see `tsbs::otlp_requests`), on one core: mapping the protobuf to a batch,
//! validation and the table-buffer append, per field value; and, apart, the encoding of each
//! request's batch for its WAL record (`encode`, before compression). The same split as
//! `parse_and_buffer` (line protocol) and `remote_write`, without the HTTP and WAL work of the
//! end-to-end benchmark (`sluice-load --protocol otlp`).
//!
//! Run: `cargo bench -p sluice-bench --bench otlp` (groups `tsbs_otlp_2000` and
//! `tsbs_otlp_8192`: requests of 2,000 and 8,192 values).

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_bench::tsbs::{self, Spec};
use sluice_ingest::otlp::map::{self, Options};
use sluice_storage::catalog::validate;
use sluice_storage::{CatalogSnapshot, Limits, TableBuffer};

/// Values per request: the load benchmark's default, and the Collector's batch size.
const VALUES_PER_REQUEST: [usize; 2] = [2_000, 8_192];

fn bench(c: &mut Criterion) {
    for values_per_request in VALUES_PER_REQUEST {
        bench_requests(c, values_per_request);
    }
}

fn bench_requests(c: &mut Criterion, values_per_request: usize) {
    let spec = Spec::hours(100, 1);
    let bodies = tsbs::otlp_requests(spec, values_per_request);
    let options = Options::default();
    // one cache for every request, as a server thread keeps it: after the first pass over
    // the bodies, every resource and attribute set comes from it (the steady state of an SDK
    // that exports the same series every interval)
    let cache = std::cell::RefCell::new(map::Cache::default());
    let decode =
        |body: &[u8]| map::map_protobuf(body, &options, &mut cache.borrow_mut()).expect("maps");
    // the catalog after the first write, as it is for every later one
    let first = decode(&bodies[0]);
    let catalog: CatalogSnapshot = validate(
        &CatalogSnapshot::default(),
        "bench",
        &first.batch,
        &Limits::default(),
        true,
    )
    .and_then(|v| v.catalog)
    .expect("first write creates the tables");

    let mut group = c.benchmark_group(format!("tsbs_otlp_{values_per_request}"));
    group.throughput(Throughput::Elements(spec.values() as u64));
    group.sample_size(10);
    group.bench_function("decode", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(decode(body).batch.len());
            }
        })
    });
    // the WAL record of each request's batch (before compression)
    let batches: Vec<_> = bodies.iter().map(|b| decode(b).batch).collect();
    group.bench_function("encode", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for batch in &batches {
                out.clear();
                sluice_storage::wal::record::encode_batch(batch, &mut out);
                black_box(out.len());
            }
        })
    });
    group.bench_function("decode_validate_buffer", |b| {
        b.iter(|| {
            let mut buffers: HashMap<String, TableBuffer> = HashMap::new();
            for body in &bodies {
                let m = decode(body);
                let v = validate(&catalog, "bench", &m.batch, &Limits::default(), true)
                    .expect("database exists");
                assert!(v.rejected.is_empty() && v.catalog.is_none());
                let mut by_table: HashMap<&str, Vec<usize>> = HashMap::new();
                for (i, p) in m.batch.points().iter().enumerate() {
                    by_table.entry(m.batch.str(p.table)).or_default().push(i);
                }
                for (table, rows) in by_table {
                    let schema = catalog.table("bench", table).expect("table");
                    let points = rows.iter().map(|&i| &m.batch.points()[i]);
                    buffers
                        .entry(table.to_string())
                        .or_default()
                        .apply(schema, &m.batch, points, 1);
                }
            }
            black_box(buffers.values().map(|b| b.rows()).sum::<usize>())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
