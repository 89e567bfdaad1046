//! Samples and their summaries: count, median, p99.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::setups::Kind;

/// Summary of one series, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p99: f64,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(values: &[f64]) -> Summary {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Summary {
        n: v.len(),
        median,
        p99: percentile(&v, 99.0),
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One measured quantity across setups.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Samples in milliseconds, per setup.
    pub samples: BTreeMap<Kind, Vec<f64>>,
}

impl Row {
    pub fn push(&mut self, kind: Kind, value_ms: f64) {
        self.samples.entry(kind).or_default().push(value_ms);
    }

    pub fn summary(&self, kind: Kind) -> Option<Summary> {
        self.samples.get(&kind).map(|v| summarize(v))
    }

    pub fn to_json(&self) -> Value {
        let direct = self.summary(Kind::Direct);
        let mut out = serde_json::Map::new();
        for (kind, v) in &self.samples {
            let s = summarize(v);
            let mut o = json!({"n": s.n, "median_ms": s.median, "p99_ms": s.p99});
            if let Some(d) = direct {
                o["median_ratio_to_direct"] = json!(s.median / d.median);
                o["p99_ratio_to_direct"] = json!(s.p99 / d.p99);
            }
            out.insert(kind.name().to_owned(), o);
        }
        Value::Object(out)
    }
}

/// Page loads split into their steps (page GET, websocket and ACK, pull), in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Steps {
    pub page: Vec<f64>,
    pub socket: Vec<f64>,
    pub pull: Vec<f64>,
}

impl Steps {
    pub fn push(&mut self, t: &crate::client::LoadTimes) {
        self.page.push(ms(t.page));
        self.socket.push(ms(t.socket));
        self.pull.push(ms(t.pull));
    }

    /// Medians of the three steps.
    pub fn medians(&self) -> [f64; 3] {
        [&self.page, &self.socket, &self.pull].map(|v| summarize(v).median)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&v);
        assert_eq!(s.n, 100);
        assert_eq!(s.median, 50.5);
        assert_eq!(s.p99, 99.0);
        assert_eq!(summarize(&[3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(summarize(&[3.0, 1.0, 2.0]).p99, 3.0);
    }
}
