//! Percentiles, medians and small JSON-scanning helpers shared by scenarios.

/// Latency percentiles of a set of samples, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// Nearest-rank percentile of ascending `sorted` samples: the smallest
/// sample such that at least `p` percent of the samples are `<=` it.
/// `None` for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // The epsilon keeps float error (99.9 / 100 * 1000 = 999.0000000000001)
    // from moving the rank up by one.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50 / p99 / p99.9 / max / mean of `samples` (sorted in place).
pub fn percentiles(samples: &mut [u64]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let sum: u128 = samples.iter().map(|&s| s as u128).sum();
    Some(Percentiles {
        count: samples.len(),
        p50: percentile(samples, 50.0)?,
        p99: percentile(samples, 99.0)?,
        p999: percentile(samples, 99.9)?,
        max: *samples.last()?,
        mean: sum as f64 / samples.len() as f64,
    })
}

/// The median of `values` (the mean of the two middle ones for an even
/// count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The unsigned integer value of the first `"key":` in a JSON text, for
/// the frames subscribers receive (no full parse). Sound only where the key
/// occurs once: in an event frame (WebSocket, SSE, NATS) `seq` is the
/// envelope's first field and no bench payload has a `seq`, `t`, `s` or
/// `soak_n` key of its own. Not for POST answers or history pages, which
/// are lists with sorted keys: parse those as JSON. `None` if absent.
pub fn json_u64(text: &str, key: &str) -> Option<u64> {
    let needle = format!("\"{key}\":");
    let at = text.find(&needle)? + needle.len();
    let digits = text[at..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), Some(500));
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&v, 99.9), Some(999));
        assert_eq!(percentile(&v, 100.0), Some(1000));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 99.9), Some(7));
        // Two samples: p50 is the first, p99 the second.
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2], 99.0), Some(2));
    }

    #[test]
    fn percentiles_sort_and_summarize() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let p = percentiles(&mut v).unwrap();
        assert_eq!(
            (p.count, p.p50, p.p99, p.p999, p.max),
            (100, 50, 99, 100, 100)
        );
        assert!((p.mean - 50.5).abs() < 1e-9);
        assert!(percentiles(&mut []).is_none());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn json_u64_reads_the_first_key() {
        let s = r#"{"seq":42,"id":"x","data":{"seq":7,"t": 123}}"#;
        assert_eq!(json_u64(s, "seq"), Some(42));
        assert_eq!(json_u64(s, "t"), Some(123));
        assert_eq!(json_u64(s, "nope"), None);
        assert_eq!(json_u64(r#"{"seq":"a"}"#, "seq"), None);
    }
}
