//! RSS samples of the soak's server and the flatness check on them.

#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub(super) t: f64,
    pub(super) rss: u64,
    pub(super) anon: u64,
    pub(super) file: u64,
    pub(super) ws: Option<i64>,
    pub(super) sse: Option<i64>,
    pub(super) published: u64,
}

/// Whether every sample from the first at or after `warmup` on is within
/// `tol` of that first one; (flat, baseline KiB, min, max).
pub(super) fn rss_flat(
    samples: &[(f64, u64)],
    warmup: f64,
    tol: f64,
) -> Option<(bool, u64, u64, u64)> {
    let after: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= warmup)
        .map(|(_, r)| *r)
        .collect();
    let base = *after.first()?;
    let min = *after.iter().min()?;
    let max = *after.iter().max()?;
    let lo = base as f64 * (1.0 - tol);
    let hi = base as f64 * (1.0 + tol);
    Some((
        min as f64 >= lo && max as f64 <= hi && after.len() >= 2,
        base,
        min,
        max,
    ))
}

/// Least-squares slope of (t, kib) in KiB per minute.
pub(super) fn slope_kib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mt = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mr = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let cov: f64 = samples.iter().map(|s| (s.0 - mt) * (s.1 as f64 - mr)).sum();
    let var: f64 = samples.iter().map(|s| (s.0 - mt).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var * 60.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_flatness_uses_the_first_sample_after_warmup() {
        let s = [(0.0, 50), (10.0, 100), (20.0, 105), (30.0, 109)];
        assert_eq!(rss_flat(&s, 10.0, 0.1), Some((true, 100, 100, 109)));
        let s = [(10.0, 100), (20.0, 111)];
        assert!(!rss_flat(&s, 10.0, 0.1).unwrap().0);
        assert!((slope_kib_per_min(&[(0.0, 0), (60.0, 100)]) - 100.0).abs() < 1e-9);
    }
}
