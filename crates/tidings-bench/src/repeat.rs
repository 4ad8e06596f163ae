//! Repetition: every compared figure is measured `--runs` times, the sides
//! taking turns at going first, and summarized as median, min and max.
//!
//! # Contract
//!
//! * [`alternate`] runs each side once per run. Run 0 goes in the order
//!   given, run 1 in reverse, run 2 as given again, and so on, so no side
//!   always enjoys (or suffers) going first. The order each run used is
//!   kept in [`Alternated::orders`].
//! * A side whose measurement fails does not stop the others: the failure
//!   is recorded in its [`Series`] and every later run still measures it.
//! * [`Series`] summaries are over the runs that succeeded; a series with
//!   no successful run has no median (`None`), never 0.
//! * [`verdict`] is the only place a goal becomes "met": a goal that held
//!   on the medians is still **not met** when either side failed a run or
//!   lost an event, or when the peer's median is 0 or not finite (a ratio
//!   against it means nothing). Each such reason is returned in words, and
//!   the report prints them as `goal_blocked_by`.

use serde_json::{json, Value};

use crate::stats::median;

/// What one side measured in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The figure compared (its unit and direction are the scenario's).
    pub value: f64,
    /// Events this side failed to deliver (or acknowledge) in this run.
    pub lost: u64,
    /// The run's own figures, kept in the report as they are.
    pub detail: Value,
}

impl Run {
    /// A run with a value, no loss and no detail.
    pub fn of(value: f64) -> Run {
        Run {
            value,
            lost: 0,
            detail: Value::Null,
        }
    }

    /// Sets the events lost.
    pub fn lost(mut self, lost: u64) -> Run {
        self.lost = lost;
        self
    }

    /// Sets the run's detail.
    pub fn detail(mut self, detail: Value) -> Run {
        self.detail = detail;
        self
    }
}

/// Every run of one side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// The side's name in the report.
    pub name: String,
    /// Values of the runs that succeeded, in run order.
    pub values: Vec<f64>,
    /// Events lost, summed over all runs.
    pub lost: u64,
    /// `"run K: error"` for each run that failed.
    pub failures: Vec<String>,
    /// The detail of each successful run, in run order.
    pub details: Vec<Value>,
}

impl Series {
    /// An empty series named `name`.
    pub fn new(name: &str) -> Series {
        Series {
            name: name.to_owned(),
            ..Series::default()
        }
    }

    /// Records the outcome of run `k`.
    pub fn record(&mut self, k: usize, outcome: anyhow::Result<Run>) {
        match outcome {
            Ok(r) => {
                self.values.push(r.value);
                self.lost += r.lost;
                if !r.detail.is_null() {
                    self.details.push(r.detail);
                }
            }
            Err(e) => self.failures.push(format!("run {k}: {e:#}")),
        }
    }

    /// The median of the successful runs; `None` if none succeeded.
    pub fn median(&self) -> Option<f64> {
        (!self.values.is_empty()).then(|| median(&self.values))
    }

    /// The smallest value; `None` if no run succeeded.
    pub fn min(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::min)
    }

    /// The largest value; `None` if no run succeeded.
    pub fn max(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::max)
    }

    /// `{"median":..,"min":..,"max":..,"runs":[..],"lost":..,"failures":[..]}`
    /// (`details` only when a run recorded one).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "median": self.median(),
            "min": self.min(),
            "max": self.max(),
            "runs": self.values,
            "lost": self.lost,
            "failures": self.failures,
        });
        if !self.details.is_empty() {
            v["details"] = Value::Array(self.details.clone());
        }
        v
    }
}

/// The series of every side, and the order each run measured them in.
#[derive(Debug, Clone)]
pub struct Alternated {
    pub series: Vec<Series>,
    /// For each run, the side names in the order they ran.
    pub orders: Vec<Vec<String>>,
}

/// A side to measure: its name and its measurement of run `k`.
pub type Side<'a> = (&'a str, &'a mut dyn FnMut(usize) -> anyhow::Result<Run>);

/// The order of run `k` over `n` sides: as given for even `k`, reversed
/// for odd `k`.
pub fn order(k: usize, n: usize) -> Vec<usize> {
    let mut o: Vec<usize> = (0..n).collect();
    if k % 2 == 1 {
        o.reverse();
    }
    o
}

/// Runs every side `runs` times (at least once), alternating the order
/// (see [`order`]); `on_step` is called after each measurement.
pub fn alternate(runs: usize, sides: &mut [Side<'_>], mut on_step: impl FnMut()) -> Alternated {
    let mut series: Vec<Series> = sides.iter().map(|(n, _)| Series::new(n)).collect();
    let mut orders = Vec::new();
    for k in 0..runs.max(1) {
        let o = order(k, sides.len());
        orders.push(o.iter().map(|&i| sides[i].0.to_owned()).collect());
        for i in o {
            let outcome = (sides[i].1)(k);
            if let Err(e) = &outcome {
                eprintln!("{} run {k} failed: {e:#}", sides[i].0);
            }
            series[i].record(k, outcome);
            on_step();
        }
    }
    Alternated { series, orders }
}

/// Whether a goal is met, and if not because of the measurement (not the
/// figures), why. `met_on_medians` is the scenario's goal evaluated on the
/// medians; it only counts when nothing in the list below holds.
pub fn verdict(
    met_on_medians: bool,
    tidings: &Series,
    peer: Option<&Series>,
) -> (bool, Vec<String>) {
    let mut why = faults("tidings", tidings);
    if let Some(p) = peer {
        let label = format!("peer {}", p.name);
        why.extend(faults(&label, p));
        if let Some(m) = p.median().filter(|m| *m == 0.0 || !m.is_finite()) {
            why.push(format!("{label} measured {m}: no ratio"));
        }
    }
    (met_on_medians && why.is_empty(), why)
}

/// Why a side beside the headline pair makes a measurement unsound (no
/// run succeeded, a run failed, an event was lost), named by the side's
/// own name; empty when it is sound. Scenarios add these to the report
/// with [`crate::Report::blocked_also`].
pub fn unsound(side: &Series) -> Vec<String> {
    faults(&side.name, side)
}

/// The faults of `side`, each starting with `label`.
fn faults(label: &str, side: &Series) -> Vec<String> {
    let mut why = Vec::new();
    if side.median().is_none() {
        why.push(format!("{label}: no run succeeded"));
    }
    if !side.failures.is_empty() {
        why.push(format!(
            "{label} failed {} run(s): {}",
            side.failures.len(),
            side.failures.join("; ")
        ));
    }
    if side.lost > 0 {
        why.push(format!("{label} lost {} event(s)", side.lost));
    }
    why
}

/// `a / b` when both are finite and `b` is not 0.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Series {
        let mut s = Series::new("s");
        for (k, v) in values.iter().enumerate() {
            s.record(k, Ok(Run::of(*v)));
        }
        s
    }

    #[test]
    fn order_alternates() {
        assert_eq!(order(0, 3), vec![0, 1, 2]);
        assert_eq!(order(1, 3), vec![2, 1, 0]);
        assert_eq!(order(2, 2), vec![0, 1]);
        assert_eq!(order(3, 2), vec![1, 0]);
    }

    #[test]
    fn alternate_takes_turns_and_keeps_failures() {
        let mut log = Vec::new();
        let (mut a_calls, mut b_calls) = (Vec::new(), Vec::new());
        let mut a = |k: usize| -> anyhow::Result<Run> {
            a_calls.push(k);
            Ok(Run::of(10.0 + k as f64))
        };
        let mut b = |k: usize| -> anyhow::Result<Run> {
            b_calls.push(k);
            if k == 1 {
                anyhow::bail!("boom")
            }
            Ok(Run::of(5.0).lost(2))
        };
        let out = alternate(3, &mut [("a", &mut a), ("b", &mut b)], || log.push(()));
        assert_eq!(log.len(), 6);
        assert_eq!(
            out.orders,
            vec![vec!["a", "b"], vec!["b", "a"], vec!["a", "b"]]
        );
        assert_eq!(out.series[0].values, vec![10.0, 11.0, 12.0]);
        assert_eq!(out.series[1].values, vec![5.0, 5.0]);
        assert_eq!(out.series[1].lost, 4);
        assert_eq!(out.series[1].failures, vec!["run 1: boom"]);
        assert_eq!(a_calls, vec![0, 1, 2]);
        assert_eq!(b_calls, vec![0, 1, 2]);
    }

    #[test]
    fn summaries_are_over_successful_runs() {
        let s = series(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!(s.median(), Some(2.5));
        assert_eq!(s.min(), Some(1.0));
        assert_eq!(s.max(), Some(10.0));
        let empty = Series::new("e");
        assert_eq!(
            (empty.median(), empty.min(), empty.max()),
            (None, None, None)
        );
        let v = s.to_json();
        assert_eq!(v["median"], 2.5);
        assert_eq!(v["runs"], json!([3.0, 1.0, 2.0, 10.0]));
        assert!(empty.to_json()["median"].is_null());
    }

    #[test]
    fn negative_values_are_kept() {
        let s = series(&[-120.0, 40.0, -3.0]);
        assert_eq!(s.median(), Some(-3.0));
        assert_eq!(s.min(), Some(-120.0));
    }

    #[test]
    fn verdict_met_only_when_the_measurement_is_sound() {
        let t = series(&[2.0, 2.0, 2.0]);
        let p = series(&[1.0, 1.0, 1.0]);
        assert_eq!(verdict(true, &t, Some(&p)), (true, vec![]));
        assert_eq!(verdict(false, &t, Some(&p)), (false, vec![]));
        assert_eq!(verdict(true, &t, None), (true, vec![]));

        // A peer at 0 gives no ratio and never "meets" a goal.
        let zero = series(&[0.0, 0.0, 0.0]);
        let (met, why) = verdict(true, &t, Some(&zero));
        assert!(!met);
        assert!(why[0].contains("measured 0"), "{why:?}");

        // Peer loss blocks the goal.
        let mut lossy = series(&[1.0]);
        lossy.record(1, Ok(Run::of(1.0).lost(10)));
        let (met, why) = verdict(true, &t, Some(&lossy));
        assert!(!met);
        assert!(why[0].contains("lost 10"), "{why:?}");

        // A failed peer run blocks it too, even if others succeeded.
        let mut failed = series(&[1.0]);
        failed.record(1, Err(anyhow::anyhow!("no server")));
        let (met, why) = verdict(true, &t, Some(&failed));
        assert!(!met);
        assert!(why[0].contains("no server"), "{why:?}");

        // A peer with no run at all.
        let none = Series::new("p");
        assert!(!verdict(true, &t, Some(&none)).0);

        // Tidings' own loss and failures.
        let mut tl = series(&[2.0]);
        tl.record(1, Ok(Run::of(2.0).lost(1)));
        let (met, why) = verdict(true, &tl, Some(&p));
        assert!(!met);
        assert!(why[0].contains("tidings lost 1"), "{why:?}");
        let mut tf = series(&[2.0]);
        tf.record(1, Err(anyhow::anyhow!("x")));
        assert!(!verdict(true, &tf, Some(&p)).0);
        assert!(!verdict(true, &Series::new("t"), None).0);

        // A side beside the headline pair, by its own name.
        assert!(unsound(&p).is_empty());
        let mut side = series(&[1.0]);
        side.record(1, Ok(Run::of(1.0).lost(3)));
        assert_eq!(unsound(&side), ["s lost 3 event(s)"]);
        assert_eq!(unsound(&Series::new("x")), ["x: no run succeeded"]);
    }

    #[test]
    fn ratio_is_guarded() {
        assert_eq!(ratio(Some(2.0), Some(1.0)), Some(2.0));
        assert_eq!(ratio(Some(2.0), Some(0.0)), None);
        assert_eq!(ratio(Some(2.0), None), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(f64::INFINITY), Some(1.0)), None);
        assert_eq!(ratio(Some(-2.0), Some(4.0)), Some(-0.5));
    }
}
