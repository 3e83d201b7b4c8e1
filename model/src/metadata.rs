//! What a sender says about a metric family: its type, help text and unit.

/// The type of a metric family, as Prometheus names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MetricType {
    #[default]
    Unknown,
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
}

impl MetricType {
    /// Every type, in Prometheus' numbering (remote write's `MetricMetadata.MetricType`).
    pub const ALL: [MetricType; 8] = [
        MetricType::Unknown,
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Histogram,
        MetricType::GaugeHistogram,
        MetricType::Summary,
        MetricType::Info,
        MetricType::StateSet,
    ];

    /// The name Prometheus gives it (`counter`, `gaugehistogram`, ...), as its HTTP API
    /// and the catalog write it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Unknown => "unknown",
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
        }
    }

    /// The type named `name` ([`MetricType::as_str`]); `unknown` for a name it does not know.
    pub fn from_name(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .unwrap_or_default()
    }

    /// The type numbered `n` in remote write's enumeration; `unknown` past its end.
    pub fn from_number(n: u64) -> Self {
        usize::try_from(n)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or_default()
    }
}

impl std::fmt::Display for MetricType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metadata of one metric family (named where it is kept: a family may name no table,
/// as a histogram's samples are in `<name>_bucket`, `_sum` and `_count`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricMetadata {
    pub metric_type: MetricType,
    pub help: String,
    pub unit: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_read_back_from_their_names_and_numbers() {
        for (n, t) in MetricType::ALL.into_iter().enumerate() {
            assert_eq!(MetricType::from_name(t.as_str()), t);
            assert_eq!(MetricType::from_number(n as u64), t);
        }
        assert_eq!(MetricType::from_number(3), MetricType::Histogram);
        assert_eq!(MetricType::from_number(99), MetricType::Unknown);
        assert_eq!(MetricType::from_name("gauge"), MetricType::Gauge);
        assert_eq!(MetricType::from_name("Gauge"), MetricType::Unknown);
    }
}
