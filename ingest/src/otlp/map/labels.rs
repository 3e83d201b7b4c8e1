//! Attribute values as tag values, and floats as Prometheus writes them in `le` and
//! `quantile` labels.

use sluice_proto::otlp::AnyValue;

/// An attribute value as a tag value: strings as they are, numbers and booleans as text,
/// arrays and maps as JSON.
pub(super) fn value_string(value: Option<&AnyValue>) -> String {
    let Some(v) = value else {
        return String::new();
    };
    if let Some(s) = &v.string_value {
        s.clone()
    } else if let Some(b) = v.bool_value {
        b.to_string()
    } else if let Some(i) = v.int_value {
        i.to_string()
    } else if let Some(d) = v.double_value {
        float_label(d)
    } else if let Some(a) = &v.array_value {
        let items: Vec<String> = a.values.iter().map(|x| json(Some(x))).collect();
        format!("[{}]", items.join(","))
    } else if let Some(kv) = &v.kvlist_value {
        let items: Vec<String> = kv
            .values
            .iter()
            .map(|x| format!("{}:{}", json_string(&x.key), json(x.value.as_ref())))
            .collect();
        format!("{{{}}}", items.join(","))
    } else if let Some(b) = &v.bytes_value {
        b.iter().map(|x| format!("{x:02x}")).collect()
    } else {
        String::new()
    }
}

fn json(value: Option<&AnyValue>) -> String {
    match value {
        Some(v) if v.string_value.is_some() || v.bytes_value.is_some() => {
            json_string(&value_string(Some(v)))
        }
        Some(v) if v.double_value.is_some_and(|d| !d.is_finite()) => {
            json_string(&value_string(Some(v)))
        }
        Some(_) => value_string(value),
        None => "null".to_string(),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A float as Prometheus writes it in `le` and `quantile`: `+Inf`, `-Inf`, `NaN`, or the
/// shortest decimal that reads back the same.
pub(super) fn float_label(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}
