use super::*;
use sluice_model::FieldValue as V;

/// A point as plain values, for comparisons.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    table: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, Val)>,
    time: i64,
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    F(f64),
    I(i64),
    U(u64),
    B(bool),
    S(String),
}

const NOW: i64 = 1_700_000_000_123_456_789;

fn opts(precision: Precision) -> ParseOptions {
    ParseOptions {
        precision,
        default_time: NOW,
        max_line_bytes: 1 << 20,
    }
}

fn rows_of(batch: &WriteBatch) -> Vec<Row> {
    batch
        .points()
        .iter()
        .map(|p| Row {
            table: batch.str(p.table).to_string(),
            tags: batch
                .tags_of(p)
                .iter()
                .map(|t| (batch.str(t.key).to_string(), batch.str(t.value).to_string()))
                .collect(),
            fields: batch
                .fields_of(p)
                .iter()
                .map(|f| {
                    let v = match f.value {
                        V::F64(v) => Val::F(v),
                        V::I64(v) => Val::I(v),
                        V::U64(v) => Val::U(v),
                        V::Bool(v) => Val::B(v),
                        V::Str(s) => Val::S(batch.str(s).to_string()),
                    };
                    (batch.str(f.key).to_string(), v)
                })
                .collect(),
            time: p.time,
        })
        .collect()
}

fn parse_ok(body: &str) -> Vec<Row> {
    let out = parse(body.as_bytes(), &opts(Precision::Nanosecond));
    assert!(out.errors.is_empty(), "unexpected errors: {:?}", out.errors);
    rows_of(&out.batch)
}

fn one(body: &str) -> Row {
    let rows = parse_ok(body);
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.into_iter().next().unwrap()
}

fn parse_err(body: &str) -> LineError {
    let out = parse(body.as_bytes(), &opts(Precision::Nanosecond));
    assert!(out.batch.is_empty(), "expected no point from {body:?}");
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    out.errors.into_iter().next().unwrap()
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn simple_line_with_tags_fields_and_timestamp() {
    let r = one("cpu,host=a,region=west usage=1.5,count=3i 1000");
    assert_eq!(r.table, "cpu");
    assert_eq!(r.tags, vec![(s("host"), s("a")), (s("region"), s("west"))]);
    assert_eq!(
        r.fields,
        vec![(s("usage"), Val::F(1.5)), (s("count"), Val::I(3))]
    );
    assert_eq!(r.time, 1000);
}

#[test]
fn line_without_tags_or_timestamp_gets_the_request_time() {
    let r = one("mem used=5i");
    assert!(r.tags.is_empty());
    assert_eq!(r.time, NOW);
    // every line of a body without a timestamp gets the same time
    let rows = parse_ok("a v=1\nb v=2\n");
    assert_eq!(rows[0].time, NOW);
    assert_eq!(rows[1].time, NOW);
}

// The escape rules are InfluxDB 1.x's; each case below was checked against InfluxDB 1.6, and
// tests/e2e/influxdb.rs checks generated lines against it.

#[test]
fn escapes_in_measurement() {
    assert_eq!(one(r"my\ cpu\,x v=1").table, "my cpu,x");
    // '=' needs no escape in a measurement, and `\=` and `\"` lose their backslash
    assert_eq!(one(r"a=b v=1").table, "a=b");
    assert_eq!(one(r#"a\=b\"c v=1"#).table, r#"a=b"c"#);
    // any other backslash stays, `\\` included
    assert_eq!(one(r"a\\b\x v=1").table, r"a\\b\x");
    // a backslash escapes the byte after it even when it follows another backslash; InfluxDB
    // 1.x acknowledges such a measurement and then no query finds it, so it is refused
    let lines = [
        r"cpu\\ x v=1",
        r"a\\,b v=1",
        r"a\\\,b v=1",
        r"a\\=b v=1",
        r#"a\\"b v=1"#,
    ];
    for line in lines {
        assert!(
            parse_err(line).message.contains("two backslashes before a"),
            "{line}"
        );
    }
}

#[test]
fn escapes_in_tag_keys_and_values() {
    let r = one(r"m,k\ 1=v\ 1,k\,2=v\,2,k\=3=v\=3,path=C:\temp f=1");
    assert_eq!(
        r.tags,
        vec![
            (s("k 1"), s("v 1")),
            (s("k,2"), s("v,2")),
            (s("k=3"), s("v=3")),
            (s("path"), s(r"C:\temp")),
        ]
    );
    // InfluxDB stores `east\ ` for `east\\ ` (the space is escaped, one backslash stays)
    // and `two\\ words` for `two\\\ words`; `\"` keeps its backslash in tags
    assert_eq!(
        one(r"cpu,regions=east\\  value=1.0").tags,
        vec![(s("regions"), s(r"east\ "))]
    );
    assert_eq!(
        one(r#"cpu,host=two\\\ words,q=a\"b value=42"#).tags,
        vec![(s("host"), s(r"two\\ words")), (s("q"), s(r#"a\"b"#))]
    );
    // a value may start with '=' but holds no other unescaped one
    assert_eq!(one("m,t==x f=1").tags, vec![(s("t"), s("=x"))]);
    assert!(
        parse_err("m,expr=a=b f=1")
            .message
            .contains("unescaped '=' in its value")
    );
}

#[test]
fn escapes_in_field_keys() {
    let r = one(r#"m field\ one=1,field\,two=2,field\=three=3,q\"x\y=4"#);
    let keys: Vec<_> = r.fields.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        keys,
        vec!["field one", "field,two", "field=three", r#"q"x\y"#]
    );
}

#[test]
fn floats_as_influxdb_1_reads_them() {
    let r = one("m a=1.,b=.1,c=-0.,d=.0E4,e=1.e5,f=-.5,g=-0,h=007,i=1e-400");
    let got: Vec<_> = r.fields.iter().map(|f| f.1.clone()).collect();
    assert_eq!(
        got,
        [1.0, 0.1, -0.0, 0.0, 1e5, -0.5, -0.0, 7.0, 0.0].map(Val::F)
    );
    assert!(matches!(&r.fields[2].1, Val::F(v) if v.is_sign_negative()));
    assert!(matches!(&r.fields[6].1, Val::F(v) if v.is_sign_negative()));
}

#[test]
fn string_fields_with_escaped_quotes_backslashes_and_delimiters() {
    let r = one(r#"m s="say \"hi\", a\\b, c\d e=f" 1"#);
    assert_eq!(
        r.fields,
        vec![(s("s"), Val::S(s(r#"say "hi", a\b, c\d e=f"#)))]
    );
    assert_eq!(r.time, 1);
    assert_eq!(one(r#"m s="""#).fields[0].1, Val::S(String::new()));
    assert_eq!(one("m s=\"ünïcödé ✓\"").fields[0].1, Val::S(s("ünïcödé ✓")));
}

#[test]
fn string_field_may_span_lines() {
    let rows = parse_ok("m s=\"line one\nline two\" 5\nm v=1 6");
    assert_eq!(rows[0].fields[0].1, Val::S(s("line one\nline two")));
    assert_eq!(rows[1].time, 6);
}

#[test]
fn numeric_field_types() {
    let r = one(
        "m a=1,b=-1.5,c=1e3,d=-2.5E-2,e=3i,f=-9223372036854775808i,g=18446744073709551615u,h=0,i=1.0e+2",
    );
    assert_eq!(
        r.fields.iter().map(|f| f.1.clone()).collect::<Vec<_>>(),
        vec![
            Val::F(1.0),
            Val::F(-1.5),
            Val::F(1000.0),
            Val::F(-0.025),
            Val::I(3),
            Val::I(i64::MIN),
            Val::U(u64::MAX),
            Val::F(0.0),
            Val::F(100.0),
        ]
    );
}

#[test]
fn every_boolean_spelling() {
    let r = one("m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE");
    let got: Vec<_> = r.fields.iter().map(|f| f.1.clone()).collect();
    let mut want = vec![Val::B(true); 5];
    want.extend(vec![Val::B(false); 5]);
    assert_eq!(got, want);
}

#[test]
fn comments_blank_lines_and_whitespace() {
    let body = "# a comment\n\n   \n\t# indented comment\n  m v=1 1\r\nm v=2 2   \nm v=3   \n";
    let out = parse(body.as_bytes(), &opts(Precision::Nanosecond));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.lines, 3);
    let rows = rows_of(&out.batch);
    assert_eq!(
        rows.iter().map(|r| r.time).collect::<Vec<_>>(),
        vec![1, 2, NOW]
    );
}

#[test]
fn line_numbers_count_every_physical_line() {
    let out = parse(
        b"# header\nm v=1 1\n\nm v=oops 2\nm v=3 3",
        &opts(Precision::Nanosecond),
    );
    assert_eq!(out.batch.len(), 2);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].line_number, 4);
    assert_eq!(out.errors[0].original_line, "m v=oops 2");
    assert_eq!(out.batch.points()[1].line, 5);
}

#[test]
fn line_text_finds_lines_by_number() {
    let body = b"# c\nm v=1 1\r\nm s=\"two\nlines\" 2\nlast v=1";
    assert_eq!(
        line_texts(body, &[2, 3, 3, 4, 9]),
        [
            "m v=1 1",
            "m s=\"two\nlines\" 2",
            "m s=\"two\nlines\" 2",
            "last v=1",
            ""
        ]
    );
}

#[test]
fn split_lines_cuts_only_between_lines() {
    let body = b"a v=1 1\nb s=\"x\ny\" 2\nc v=3 3\nd v=4 4";
    let pieces = split_lines(body, 12);
    let texts: Vec<(u32, &str)> = pieces
        .iter()
        .map(|(n, p)| (*n, std::str::from_utf8(p).unwrap()))
        .collect();
    assert_eq!(
        texts,
        vec![
            (0, "a v=1 1\n"),
            (1, "b s=\"x\ny\" 2\n"),
            (2, "c v=3 3\n"),
            (3, "d v=4 4")
        ]
    );
    let whole: Vec<u8> = pieces.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    assert_eq!(whole, body);
    // a big limit keeps the body whole
    assert_eq!(split_lines(body, 1 << 20), vec![(0, &body[..])]);
    assert!(split_lines(b"", 10).is_empty());
}

#[test]
fn precisions() {
    let at = |p, body: &str| rows_of(&parse(body.as_bytes(), &opts(p)).batch)[0].time;
    assert_eq!(at(Precision::Nanosecond, "m v=1 1"), 1);
    assert_eq!(at(Precision::Microsecond, "m v=1 1"), 1_000);
    assert_eq!(at(Precision::Millisecond, "m v=1 1"), 1_000_000);
    assert_eq!(at(Precision::Second, "m v=1 1"), 1_000_000_000);
    assert_eq!(at(Precision::Minute, "m v=1 1"), 60_000_000_000);
    assert_eq!(at(Precision::Hour, "m v=1 1"), 3_600_000_000_000);
    // auto guesses from magnitude
    let secs = 1_767_225_600i64;
    assert_eq!(
        at(Precision::Auto, &format!("m v=1 {secs}")),
        secs * 1_000_000_000
    );
    assert_eq!(
        at(Precision::Auto, &format!("m v=1 {}", secs * 1000)),
        secs * 1_000_000_000
    );
    assert_eq!(
        at(Precision::Auto, &format!("m v=1 {}", secs * 1_000_000)),
        secs * 1_000_000_000
    );
    assert_eq!(
        at(Precision::Auto, &format!("m v=1 {}", secs * 1_000_000_000)),
        secs * 1_000_000_000
    );
    assert_eq!(at(Precision::Auto, "m v=1 -5"), -5_000_000_000);
    // lines without a timestamp keep the request time whatever the precision
    assert_eq!(at(Precision::Second, "m v=1"), NOW);
}

#[test]
fn precision_names() {
    assert_eq!(Precision::parse_v3("auto"), Some(Precision::Auto));
    assert_eq!(
        Precision::parse_v3("millisecond"),
        Some(Precision::Millisecond)
    );
    assert_eq!(Precision::parse_v3("h"), None);
    assert_eq!(Precision::parse_v2("us"), Some(Precision::Microsecond));
    assert_eq!(Precision::parse_v2("auto"), None);
    assert_eq!(Precision::parse_v1("u"), Some(Precision::Microsecond));
    assert_eq!(Precision::parse_v1("h"), Some(Precision::Hour));
    assert_eq!(Precision::parse_v1("x"), None);
}

#[test]
fn errors_name_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("cpu", "missing fields"),
        ("cpu,host=a", "missing fields"),
        ("cpu ", "has no '=value'"),
        (",host=a v=1", "missing measurement"),
        ("cpu,host v=1", "tag 'host' has no '=value'"),
        ("cpu,host= v=1", "empty value"),
        ("cpu,=a v=1", "empty tag key"),
        ("cpu,host=a, v=1", "empty tag key"),
        ("cpu v", "field 'v' has no '=value'"),
        ("cpu =1", "empty field key"),
        ("cpu v=", "has no value"),
        ("cpu v=abc", "invalid value 'abc' for field 'v'"),
        ("cpu v=.", "invalid value '.'"),
        ("cpu v=-.", "invalid value '-.'"),
        ("cpu v=.e5", "invalid value '.e5'"),
        ("cpu v=1e", "invalid value '1e'"),
        ("cpu v=1e400", "float '1e400' for field 'v' is out of range"),
        (
            "cpu v=-1e400",
            "float '-1e400' for field 'v' is out of range",
        ),
        ("cpu v=+5", "invalid value '+5'"),
        ("cpu v=NaN", "invalid value 'NaN'"),
        ("cpu v=tru", "invalid value 'tru'"),
        ("cpu v=1.5i", "invalid value '1.5i'"),
        ("cpu v=-1u", "invalid value '-1u'"),
        (
            "cpu v=9223372036854775808i",
            "integer '9223372036854775808i' for field 'v' is out of range",
        ),
        ("cpu v=18446744073709551616u", "unsigned integer"),
        ("cpu v=\"open", "no closing double quote"),
        (
            "cpu v=\"a\"b",
            "unexpected 'b' after the value of field 'v'",
        ),
        ("cpu v=1 12x", "invalid timestamp '12x'"),
        ("cpu v=1 1 2", "unexpected text after the timestamp"),
        ("cpu v=1 99999999999999999999", "invalid timestamp"),
        ("cpu\\ v=1", "missing fields"),
        ("cp\tu v=1", "measurement 'cp\tu' contains a tab"),
        ("cpu,host=a\\ v=1", "unescaped '=' in its value"),
        ("cpu,host=a\\\\ v=1", "unescaped '=' in its value"),
        ("cpu,ho st=a v=1", "tag 'ho' has no '=value'"),
        ("cpu,ho,st=a v=1", "tag 'ho' has no '=value'"),
        ("cpu v\\\\=1", "ends in backslashes right before a '='"),
        ("cpu a,b=1", "field key 'a' is followed by an unescaped ','"),
    ];
    for (line, want) in cases {
        let e = parse_err(line);
        assert!(
            e.message.contains(want),
            "line {line:?}: message {:?} should contain {want:?}",
            e.message
        );
        assert_eq!(e.line_number, 1);
        assert_eq!(e.original_line, *line);
    }
}

#[test]
fn timestamp_overflowing_nanoseconds_is_rejected() {
    let out = parse(b"m v=1 9223372036854775", &opts(Precision::Second));
    assert_eq!(out.errors.len(), 1);
    assert!(
        out.errors[0].message.contains("out of range"),
        "{:?}",
        out.errors
    );
}

#[test]
fn long_lines_and_invalid_utf8_are_rejected_alone() {
    let mut o = opts(Precision::Nanosecond);
    o.max_line_bytes = 20;
    let out = parse(
        b"m v=1 1\nm,host=aaaaaaaaaaaaaaaaaaaaaaaaaaaaa v=1 2\nm v=3 3",
        &o,
    );
    assert_eq!(out.batch.len(), 2);
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0].message.contains("--max-line-bytes"));
    assert_eq!(out.errors[0].line_number, 2);

    let out = parse(
        b"m v=1 1\nm,host=\xff\xfe v=2 2\n",
        &opts(Precision::Nanosecond),
    );
    assert_eq!(out.batch.len(), 1);
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0].message.contains("UTF-8"));
}

#[test]
fn failed_line_does_not_leave_tags_behind() {
    // line 2 introduces a new series, then fails in its fields: a later line of the same
    // series must still get its own, correct tags.
    let out = parse(
        b"m,host=a v=1 1\nm,host=b v=bad 2\nm,host=c v=3 3\nm,host=b v=4 4",
        &opts(Precision::Nanosecond),
    );
    let rows = rows_of(&out.batch);
    assert_eq!(out.errors.len(), 1);
    let hosts: Vec<_> = rows.iter().map(|r| r.tags[0].1.clone()).collect();
    assert_eq!(hosts, vec!["a", "c", "b"]);
}

#[test]
fn repeated_series_share_tags() {
    let out = parse(
        b"m,h=a v=1 1\nm,h=b v=1 1\nm,h=a v=2 2",
        &opts(Precision::Nanosecond),
    );
    let p = out.batch.points();
    assert_eq!(p[0].tag_range(), p[2].tag_range());
    assert_ne!(p[0].tag_range(), p[1].tag_range());
}

// ---------------------------------------------------------------------------------------
// Differential tests against the influxdb-line-protocol crate, over lines where it agrees
// with InfluxDB 1.x: names without backslashes (the crate reads `\\` as one backslash,
// InfluxDB 1.x as two). Mutated lines, where the two differ more, are compared with InfluxDB
// 1.6 itself in tests/e2e/influxdb.rs.

fn oracle(body: &str) -> Vec<Result<Row, String>> {
    use influxdb_line_protocol as ilp;
    ilp::parse_lines(body)
        .map(|r| {
            r.map(|l| Row {
                table: l.series.measurement.as_str().to_string(),
                tags: l
                    .series
                    .tag_set
                    .map(|ts| {
                        ts.iter()
                            .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
                fields: l
                    .field_set
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            ilp::FieldValue::F64(v) => Val::F(*v),
                            ilp::FieldValue::I64(v) => Val::I(*v),
                            ilp::FieldValue::U64(v) => Val::U(*v),
                            ilp::FieldValue::Boolean(v) => Val::B(*v),
                            ilp::FieldValue::String(v) => Val::S(v.as_str().to_string()),
                        };
                        (k.as_str().to_string(), v)
                    })
                    .collect(),
                time: l.timestamp.unwrap_or(NOW),
            })
            .map_err(|e| e.to_string())
        })
        .collect()
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

const NAME_CHARS: &[&str] = &[
    "a", "b", "z", "_", "-", "0", "9", ".", ":", "é", "✓", "日", ",", " ", "=", "\"", "#",
];

fn gen_name(rng: &mut Rng) -> String {
    let n = 1 + rng.below(8);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(rng.pick(NAME_CHARS));
    }
    s
}

fn escape(s: &str, specials: &[char]) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if specials.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn gen_line(rng: &mut Rng) -> String {
    let mut table = gen_name(rng);
    if table.starts_with('#') {
        table.insert(0, 'm');
    }
    let mut line = escape(&table, &[',', ' ']);
    for _ in 0..rng.below(4) {
        line.push(',');
        line.push_str(&escape(&gen_name(rng), &[',', '=', ' ']));
        line.push('=');
        line.push_str(&escape(&gen_name(rng), &[',', '=', ' ']));
    }
    line.push(' ');
    for i in 0..1 + rng.below(4) {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&escape(&gen_name(rng), &[',', '=', ' ']));
        line.push('=');
        let v = match rng.below(9) {
            0 => format!("{}", rng.next() as i64 % 1000),
            1 => format!("{}.{}", rng.next() as i64 % 1000, rng.below(1000)),
            2 => format!("{}e{}", rng.below(100), rng.below(20) as i64 - 10),
            3 => format!("{}i", rng.next() as i64),
            4 => format!("{}u", rng.next()),
            5 => rng
                .pick(&[
                    "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE",
                ])
                .to_string(),
            6 => format!("{}.{}E+{}", rng.below(10), rng.below(10), rng.below(30)),
            _ => {
                let mut st = String::from("\"");
                for _ in 0..rng.below(10) {
                    match rng.below(6) {
                        0 => st.push_str("\\\""),
                        1 => st.push_str("\\\\"),
                        2 => st.push_str(", ="),
                        _ => st.push_str(rng.pick(NAME_CHARS).trim_matches(['"', '\\'])),
                    }
                }
                st.push('"');
                st
            }
        };
        line.push_str(&v);
    }
    if rng.below(3) > 0 {
        line.push(' ');
        line.push_str(&(rng.next() as i64 >> rng.below(40)).to_string());
    }
    line
}

#[test]
fn generated_lines_parse_as_the_crate_parses_them() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for _ in 0..200 {
        let lines: Vec<String> = (0..25).map(|_| gen_line(&mut rng)).collect();
        let body = lines.join("\n");
        let want: Vec<Row> = oracle(&body)
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("oracle rejected generated body: {e}\n{body}")))
            .collect();
        let out = parse(body.as_bytes(), &opts(Precision::Nanosecond));
        assert!(out.errors.is_empty(), "{:?}\n{body}", out.errors);
        let got = rows_of(&out.batch);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "body:\n{body}");
        }
    }
}

#[test]
fn telegraf_fixture_parses_as_the_crate_parses_it() {
    // The directory cargo runs the test from, not the one it was built in: a shared target
    // directory may hold a binary built from another checkout.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let body = std::fs::read_to_string(format!(
        "{dir}/../tests/fixtures/line-protocol/telegraf-system.lp"
    ))
    .expect("fixture tests/fixtures/line-protocol/telegraf-system.lp");
    let want: Vec<Row> = oracle(&body).into_iter().map(|r| r.unwrap()).collect();
    let out = parse(body.as_bytes(), &opts(Precision::Nanosecond));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(rows_of(&out.batch), want);
    assert_eq!(want.len(), 216);
    let docker = want
        .iter()
        .find(|r| r.table == "docker_container_status")
        .unwrap();
    assert!(
        docker
            .tags
            .contains(&(s("container_name"), s("edge proxy")))
    );
    assert!(
        docker
            .fields
            .contains(&(s("container_id"), Val::S(s(r#"3f2a"b\c"#))))
    );
}
