//! Remote write decode-and-buffer throughput on the TSBS set as Prometheus sends it, on one
//! core: snappy, decoding into a batch, validation and the table-buffer append, per sample.
//! The same split as `parse_and_buffer` for line protocol, without the HTTP and WAL work of
//! the end-to-end benchmark (`benches/remote-write.sh`), and without its noise.
//!
//! Run: `cargo bench -p sluice-bench --bench remote_write`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_bench::tsbs::{self, Spec};
use sluice_ingest::remote_write::{self, Limits as LabelLimits, SeriesCache, Version};
use sluice_storage::catalog::validate;
use sluice_storage::{CatalogSnapshot, Limits, TableBuffer};

const SAMPLES_PER_REQUEST: usize = 2_000;

fn bench(c: &mut Criterion) {
    let spec = Spec::hours(100, 1);
    for per_series in [1, 60] {
        let mut encoder = snap::raw::Encoder::new();
        let bodies: Vec<Vec<u8>> =
            tsbs::remote_write_requests(spec, SAMPLES_PER_REQUEST, per_series)
                .iter()
                .map(|r| encoder.compress_vec(r).expect("snappy"))
                .collect();
        // one series cache for every request, as a server thread keeps it: after the first
        // pass over the bodies, every series comes from it (the steady state of a Prometheus
        // that sends the same series each scrape)
        let cache = std::cell::RefCell::new(SeriesCache::default());
        let decode = |body: &[u8]| {
            let raw = remote_write::decompress_snappy(body, 1 << 26).expect("snappy");
            let limits = LabelLimits::default();
            remote_write::decode(&raw, Version::V1, &limits, &mut cache.borrow_mut())
                .expect("decodes")
        };
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

        let mut group = c.benchmark_group(format!("tsbs_remote_write_{per_series}_per_entry"));
        group.throughput(Throughput::Elements(spec.values() as u64));
        group.sample_size(10);
        group.bench_function("decode", |b| {
            b.iter(|| {
                for body in &bodies {
                    black_box(decode(body).batch.len());
                }
            })
        });
        group.bench_function("decode_validate_buffer", |b| {
            b.iter(|| {
                let buffers: HashMap<&str, TableBuffer> = tsbs::FIELDS
                    .iter()
                    .map(|f| (*f, TableBuffer::new()))
                    .collect();
                for body in &bodies {
                    let d = decode(body);
                    let v = validate(&catalog, "bench", &d.batch, &Limits::default(), true)
                        .expect("database exists");
                    assert!(v.rejected.is_empty() && v.catalog.is_none());
                    for field in tsbs::FIELDS {
                        let table = format!("cpu_{field}");
                        let schema = catalog.table("bench", &table).expect("table");
                        let points = d
                            .batch
                            .points()
                            .iter()
                            .filter(|p| d.batch.str(p.table) == table);
                        buffers[field].apply(schema, &d.batch, points, 1);
                    }
                }
                black_box(buffers.values().map(|b| b.rows()).sum::<usize>())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
