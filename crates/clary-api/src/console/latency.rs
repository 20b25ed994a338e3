//! Recent invocation latencies per endpoint variant and second, for the console's p50/p99
//! charts. The stored per-second aggregates (`clary_control::endpoint_metrics`) keep count,
//! sum, minimum and maximum, which give no percentile; this keeps, in memory, a histogram per
//! second with buckets 2^(1/4) apart (a percentile within ~9%), for the last
//! [`KEEP_SECS`] seconds. Recording is a lock and an array increment.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Seconds of history kept per variant.
pub const KEEP_SECS: i64 = 900;
/// Buckets per doubling, and how many: 10 µs × 2^(k/4) reaches ~11 minutes.
const PER_DOUBLING: f64 = 4.0;
const BUCKETS: usize = 104;
const FLOOR_MICROS: f64 = 10.0;

type Histogram = [u32; BUCKETS];
/// One variant's seconds, oldest first.
type Seconds = VecDeque<(i64, Box<Histogram>)>;

fn bucket(micros: f64) -> usize {
    if micros <= FLOOR_MICROS {
        return 0;
    }
    (((micros / FLOOR_MICROS).log2() * PER_DOUBLING).ceil() as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `k`, in microseconds.
fn upper(k: usize) -> f64 {
    FLOOR_MICROS * 2f64.powf(k as f64 / PER_DOUBLING)
}

/// The `q` quantile of a histogram, in microseconds (the geometric middle of its bucket).
fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    let total: u64 = h.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (k, &c) in h.iter().enumerate() {
        seen += u64::from(c);
        if seen >= rank {
            let lower = if k == 0 { upper(0) / 2.0 } else { upper(k - 1) };
            return Some((lower * upper(k)).sqrt());
        }
    }
    None
}

#[derive(Default)]
pub struct RecentLatencies {
    /// endpoint → variant → seconds, oldest first (looked up by `&str`: no allocation once a
    /// variant is known).
    series: Mutex<HashMap<String, HashMap<String, Seconds>>>,
}

impl RecentLatencies {
    /// One invocation that took `micros` in all, ended at epoch second `second`.
    pub fn record(&self, endpoint: &str, variant: &str, second: i64, micros: f64) {
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if !all.get(endpoint).is_some_and(|v| v.contains_key(variant)) {
            all.entry(endpoint.to_string())
                .or_default()
                .insert(variant.to_string(), Seconds::new());
        }
        let Some(seconds) = all.get_mut(endpoint).and_then(|v| v.get_mut(variant)) else {
            return;
        };
        match seconds.back_mut() {
            Some((s, h)) if *s == second => h[bucket(micros)] += 1,
            _ => {
                let mut h = Box::new([0u32; BUCKETS]);
                h[bucket(micros)] += 1;
                seconds.push_back((second, h));
                while seconds
                    .front()
                    .is_some_and(|(s, _)| *s < second - KEEP_SECS)
                {
                    seconds.pop_front();
                }
            }
        }
    }

    /// `(second, p50 ms, p99 ms)` of the seconds in `[start, end)` that had invocations.
    pub fn percentiles(
        &self,
        endpoint: &str,
        variant: &str,
        start: i64,
        end: i64,
    ) -> Vec<(i64, f64, f64)> {
        let all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let Some(seconds) = all.get(endpoint).and_then(|v| v.get(variant)) else {
            return Vec::new();
        };
        seconds
            .iter()
            .filter(|(s, _)| *s >= start && *s < end)
            .filter_map(|(s, h)| Some((*s, quantile(h, 0.5)? / 1e3, quantile(h, 0.99)? / 1e3)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_within_a_bucket() {
        let r = RecentLatencies::default();
        // 98 calls of 2 ms and 2 of 80 ms in one second.
        for i in 0..100 {
            r.record("e", "v", 10, if i < 98 { 2000.0 } else { 80_000.0 });
        }
        r.record("e", "v", 11, 500.0);
        let p = r.percentiles("e", "v", 10, 12);
        assert_eq!(p.len(), 2);
        let (s, p50, p99) = p[0];
        assert_eq!(s, 10);
        assert!((p50 - 2.0).abs() / 2.0 < 0.1, "{p50}");
        assert!((p99 - 80.0).abs() / 80.0 < 0.1, "{p99}");
        assert!(r.percentiles("e", "v", 12, 20).is_empty());
        assert!(r.percentiles("e", "other", 0, 20).is_empty());
        // Old seconds are forgotten.
        r.record("e", "v", 10 + KEEP_SECS + 5, 1.0);
        assert!(r.percentiles("e", "v", 0, 12).is_empty());
    }
}
