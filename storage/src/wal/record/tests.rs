//! The record format's tests: every value survives a round trip, older versions still read,
//! and damage is an error, never a panic.

use super::*;

/// The fixed-width encoding of the first WAL records, which [`decode_batch_fixed`] reads.
fn encode_batch_fixed(batch: &WriteBatch, out: &mut Vec<u8>) {
    let put_u32 = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    let symbols = &batch.symbols;
    put_u32(out, symbols.len() as u32);
    for end in symbols.ends() {
        put_u32(out, *end);
    }
    put_u32(out, symbols.data_len() as u32);
    out.extend_from_slice(symbols.data().as_bytes());
    put_u32(out, batch.all_tags().len() as u32);
    for t in batch.all_tags() {
        put_u32(out, t.key.0);
        put_u32(out, t.value.0);
    }
    put_u32(out, batch.all_fields().len() as u32);
    for f in batch.all_fields() {
        put_u32(out, f.key.0);
        let (kind, raw) = match f.value {
            FieldValue::F64(v) => (0, v.to_bits()),
            FieldValue::I64(v) => (1, v as u64),
            FieldValue::U64(v) => (2, v),
            FieldValue::Bool(v) => (3, u64::from(v)),
            FieldValue::Str(s) => (4, u64::from(s.0)),
        };
        out.push(kind);
        out.extend_from_slice(&raw.to_le_bytes());
    }
    put_u32(out, batch.points().len() as u32);
    for p in batch.points() {
        put_u32(out, p.table.0);
        out.extend_from_slice(&p.time.to_le_bytes());
        put_u32(out, p.line);
        let (t, f) = (p.tag_span(), p.field_span());
        for v in [t.0, t.1, f.0, f.1] {
            put_u32(out, v);
        }
    }
}

/// A batch with what the encoding has to carry: every field kind, a tag range shared by
/// points, times going back and to the extremes, and gaps left by dropped points.
fn awkward_batch() -> WriteBatch {
    let mut b = WriteBatch::new();
    let cpu = b.symbols.intern("cpu");
    let host = b.symbols.intern("host");
    let a = b.symbols.intern("a");
    let snow = b.symbols.intern("snö");
    let t = b.begin_tags();
    b.push_tag(host, a);
    let tags = b.end_tags(t);
    let t = b.begin_tags();
    b.push_tag(host, snow);
    let other_tags = b.end_tags(t);
    let k = b.symbols.intern("v");
    let s = b.symbols.push_unique("hello");
    let f = b.begin_fields();
    b.push_field(k, FieldValue::F64(1.5));
    for v in [
        0.0,
        -0.0,
        42.0,
        -7.0,
        1e300,
        f64::NAN,
        -f64::INFINITY,
        2f64.powi(60),
    ] {
        b.push_field(k, FieldValue::F64(v));
    }
    b.push_field(k, FieldValue::Str(s));
    b.push_field(k, FieldValue::I64(-3));
    b.push_field(k, FieldValue::U64(u64::MAX));
    b.push_field(k, FieldValue::Bool(true));
    b.push_point(cpu, tags, f, 42, 1);
    for (i, time) in [i64::MIN, i64::MAX, -5, 0, 1_700_000_000_000_000_000]
        .into_iter()
        .enumerate()
    {
        let f = b.begin_fields();
        b.push_field(k, FieldValue::I64(i64::MIN + i as i64));
        let tags = if i % 2 == 0 { other_tags } else { tags };
        b.push_point(cpu, tags, f, time, 10 - i as u32);
    }
    b.retain_points(|i| i != 2);
    b
}

fn assert_same(d: &WriteBatch, b: &WriteBatch) {
    assert_eq!(d.points(), b.points());
    assert_eq!(
        d.symbols.iter().collect::<Vec<_>>(),
        b.symbols.iter().collect::<Vec<_>>()
    );
    for (p, q) in d.points().iter().zip(b.points()) {
        assert_eq!(d.tags_of(p), b.tags_of(q));
        // bit for bit: NaN is not equal to itself, and -0.0 is equal to 0.0
        let bits = |fields: &[Field]| -> Vec<(Sym, String)> {
            fields
                .iter()
                .map(|f| match f.value {
                    FieldValue::F64(v) => (f.key, format!("f{:x}", v.to_bits())),
                    other => (f.key, format!("{other:?}")),
                })
                .collect()
        };
        assert_eq!(bits(d.fields_of(p)), bits(b.fields_of(q)));
    }
}

#[test]
fn encode_then_decode_gives_the_same_batch() {
    let b = awkward_batch();
    let mut out = Vec::new();
    encode_batch(&b, &mut out);
    let d = decode_batch(&out).unwrap();
    assert_same(&d, &b);
    assert_eq!(d.str(d.tags_of(&d.points()[1])[0].value), "snö");
    for cut in 0..out.len() {
        assert!(decode_batch(&out[..cut]).is_err(), "cut at {cut}");
    }
    // damage anywhere is an error or a batch whose references hold, never a panic
    for at in 0..out.len() {
        let mut bad = out.clone();
        bad[at] ^= 0x55;
        if let Ok(d) = decode_batch(&bad) {
            for p in d.points() {
                let _ = (d.tags_of(p), d.fields_of(p), d.str(p.table));
            }
        }
    }
}

#[test]
fn whole_floats_take_their_varint_not_eight_bytes() {
    let mut b = WriteBatch::new();
    let (m, v) = (b.symbols.intern("m"), b.symbols.intern("value"));
    let tags = b.end_tags(b.begin_tags());
    for i in 0..1000 {
        let f = b.begin_fields();
        b.push_field(v, FieldValue::F64(f64::from(i % 100)));
        b.push_point(m, tags, f, 1_000 + i64::from(i), 1);
    }
    let mut out = Vec::new();
    encode_batch(&b, &mut out);
    // a point's own numbers are about seven bytes; a float would add nine more
    assert!(out.len() < 1000 * 11, "{} bytes", out.len());
    assert_same(&decode_batch(&out).unwrap(), &b);
}

#[test]
fn batches_of_the_fixed_width_encoding_still_decode() {
    let b = awkward_batch();
    let mut fixed = Vec::new();
    encode_batch_fixed(&b, &mut fixed);
    assert_same(&decode_batch_fixed(&fixed).unwrap(), &b);
    let mut compact = Vec::new();
    encode_batch(&b, &mut compact);
    assert!(
        compact.len() < fixed.len(),
        "{} {}",
        compact.len(),
        fixed.len()
    );
}

/// The plain varint encoding, byte by byte: what `put_varint` must write.
fn write_varint(buf: &mut [u8], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    n + 1
}

#[test]
fn varints_of_every_length_read_back() {
    let mut values = vec![0, 1, 127, 128, 300, u64::MAX, i64::MAX as u64];
    for bits in 1..64 {
        values.extend([(1u64 << bits) - 1, 1 << bits, (1 << bits) + 1]);
    }
    let mut out = Vec::new();
    for &v in &values {
        put_varint(&mut out, v);
    }
    let mut r = Reader { buf: &out, pos: 0 };
    for &v in &values {
        let mut one = Vec::new();
        put_varint(&mut one, v);
        let mut expected = [0u8; 10];
        let n = write_varint(&mut expected, v);
        assert_eq!(one, &expected[..n], "{v}");
        assert_eq!(r.varint().unwrap(), v);
    }
    assert_eq!(r.pos, out.len());
}

/// Records of the current format (Snappy over the batch encoding) read back as the batch,
/// records of the uncompressed format 2 still read, and damage is an error, never a panic.
#[test]
fn records_round_trip_and_older_formats_still_read() {
    let batch = crate::test_util::batch(
        &(0..500)
            .map(|i| format!("cpu_usage_user,host=h{} value={}.0 {}", i % 7, i % 3, i))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let record = encode_record("db", &batch);
    assert_eq!(record[0], RECORD_VERSION);
    let mut plain = Vec::new();
    encode_batch(&batch, &mut plain);
    assert!(
        record.len() * 2 < plain.len(),
        "{} vs {}",
        record.len(),
        plain.len()
    );
    let same = |(db, b): (Arc<str>, WriteBatch)| {
        assert_eq!(&*db, "db");
        let mut again = Vec::new();
        encode_batch(&b, &mut again);
        assert_eq!(again, plain);
    };
    same(decode_record(&record).expect("decodes"));

    let mut v2 = vec![2u8];
    v2.extend_from_slice(&2u16.to_le_bytes());
    v2.extend_from_slice(b"db");
    v2.extend_from_slice(&plain);
    same(decode_record(&v2).expect("format 2 decodes"));

    for at in 0..record.len() {
        let mut bad = record.clone();
        bad[at] ^= 0x5a;
        let _ = decode_record(&bad);
    }
    assert!(decode_record(&record[..record.len() / 2]).is_err());
    assert!(matches!(
        decode_record(&[9, 0, 0]),
        Err(RecordError::UnknownVersion(9))
    ));
}
