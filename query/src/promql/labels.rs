//! A series' label set: names sorted, `__name__` among them, no empty values (Prometheus
//! treats an empty label as an absent one).

use std::sync::Arc;

/// The label that holds a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// Label pairs sorted by name, each name once.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<(Arc<str>, Arc<str>)>);

impl Labels {
    /// Labels from pairs in any order; empty values are left out, and of a repeated name the
    /// last value is kept.
    pub fn from_pairs<I, N, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<Arc<str>>,
        V: Into<Arc<str>>,
    {
        let mut v: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for (n, value) in pairs {
            let (n, value) = (n.into(), value.into());
            if let Some(at) = v.iter().position(|(k, _)| *k == n) {
                v.remove(at);
            }
            if !value.is_empty() {
                v.push((n, value));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Labels(v)
    }

    /// The pairs, sorted by name.
    pub fn pairs(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0
    }

    /// The value of `name`, `""` if it has none.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .map(|i| &*self.0[i].1)
            .unwrap_or("")
    }

    /// The metric name, `""` if none.
    pub fn name(&self) -> &str {
        self.get(METRIC_NAME)
    }

    /// These labels with `name` set to `value` (removed if `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut v = self.0.clone();
        match v.binary_search_by(|(k, _)| (**k).cmp(name)) {
            Ok(i) if value.is_empty() => {
                v.remove(i);
            }
            Ok(i) => v[i].1 = Arc::from(value),
            Err(_) if value.is_empty() => {}
            Err(i) => v.insert(i, (Arc::from(name), Arc::from(value))),
        }
        Labels(v)
    }

    /// These labels without the metric name.
    pub fn without_name(&self) -> Labels {
        if self.name().is_empty() {
            return self.clone();
        }
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| &**k != METRIC_NAME)
                .cloned()
                .collect(),
        )
    }

    /// Only the labels named in `names` (`include`), or all but those (`!include`).
    pub fn keep(&self, names: &[String], include: bool) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| names.iter().any(|n| **n == **k) == include)
                .cloned()
                .collect(),
        )
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.name();
        write!(f, "{name}{{")?;
        let mut first = true;
        for (k, v) in &self.0 {
            if &**k == METRIC_NAME {
                continue;
            }
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{k}={v:?}")?;
        }
        write!(f, "}}")
    }
}
