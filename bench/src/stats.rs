//! Latency samples and the figures reported from them.

use std::time::Duration;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    pub ops: usize,
    pub errors: usize,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Summarises one run: `samples` are per-operation latencies.
pub fn figures(mut samples: Vec<Duration>, errors: usize, elapsed: Duration) -> Figures {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        ms(samples[i])
    };
    let seconds = elapsed.as_secs_f64();
    Figures {
        ops: samples.len(),
        errors,
        seconds,
        ops_per_sec: if seconds > 0.0 {
            samples.len() as f64 / seconds
        } else {
            0.0
        },
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: samples.last().map(|d| ms(*d)).unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_hand() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let f = figures(samples, 2, Duration::from_secs(2));
        assert_eq!(f.ops, 100);
        assert_eq!(f.errors, 2);
        assert_eq!(f.ops_per_sec, 50.0);
        assert_eq!(f.p50_ms, 50.0);
        assert_eq!(f.p99_ms, 99.0);
        assert_eq!(f.max_ms, 100.0);
        let empty = figures(vec![], 0, Duration::ZERO);
        assert_eq!(empty.p99_ms, 0.0);
    }
}
