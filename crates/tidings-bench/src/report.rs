//! The one-line JSON result every scenario prints last.
//!
//! # Contract
//!
//! * One line, one JSON object, the fixed fields first (see [`Report`]).
//! * A compared report ([`Report::compared`]) carries the median of each
//!   side as `tidings_per_s` / `peer_per_s`, the ratio of the medians,
//!   and each side's median, min, max and every run (`tidings_runs`,
//!   `peer_runs`); its `goal_met` comes from [`repeat::verdict`], and
//!   when that blocked the goal, `goal_blocked_by` says why.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::repeat::{self, Alternated, Series};

/// The result of one scenario. Serialized with the fixed fields first, in
/// this order, then the scenario's own fields (sorted by name).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario's name (`inproc`, `patterns`, ...).
    pub scenario: String,
    /// Tidings' figure, "higher is better" (events/s, or 1/latency, or
    /// connections per GiB: see the scenario).
    pub tidings_per_s: f64,
    /// What Tidings was compared with ("none" if nothing).
    pub peer: String,
    /// The peer's figure in the same unit; `null` without a peer.
    pub peer_per_s: Option<f64>,
    /// `tidings_per_s / peer_per_s`; `null` without a peer.
    pub ratio: Option<f64>,
    /// The goal, in words.
    pub goal: String,
    /// Whether every part of the goal was met.
    pub goal_met: bool,
    /// Scenario-specific figures (raw latencies, losses, settings...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Report {
    /// A report with a peer; `ratio` is computed.
    pub fn new(scenario: &str, tidings_per_s: f64, peer: &str, peer_per_s: Option<f64>) -> Report {
        let ratio = peer_per_s.filter(|p| *p > 0.0).map(|p| tidings_per_s / p);
        Report {
            scenario: scenario.to_owned(),
            tidings_per_s,
            peer: peer.to_owned(),
            peer_per_s,
            ratio,
            goal: String::new(),
            goal_met: false,
            extra: BTreeMap::new(),
        }
    }

    /// A report from repeated runs: medians as the headline figures, the
    /// ratio of the medians, every run, and `goal_met` =
    /// `met_on_medians` guarded by [`repeat::verdict`].
    pub fn compared(
        scenario: &str,
        peer_name: &str,
        goal: &str,
        met_on_medians: bool,
        tidings: &Series,
        peer: Option<&Series>,
    ) -> Report {
        let (met, why) = repeat::verdict(met_on_medians, tidings, peer);
        let t = tidings.median();
        let p = peer.and_then(Series::median);
        let mut r = Report {
            scenario: scenario.to_owned(),
            tidings_per_s: t.unwrap_or(f64::NAN),
            peer: if peer.is_some() { peer_name } else { "none" }.to_owned(),
            peer_per_s: p,
            ratio: repeat::ratio(t, p),
            goal: goal.to_owned(),
            goal_met: met,
            extra: BTreeMap::new(),
        }
        .with("tidings_runs", tidings.to_json());
        if let Some(p) = peer {
            r = r.with("peer_runs", p.to_json());
        }
        if !why.is_empty() {
            r = r.with("goal_blocked_by", why);
        }
        r
    }

    /// Adds `why` (reasons from [`repeat::unsound`] or [`repeat::verdict`]
    /// for a side or pair beside the headline, each prefixed with `label`
    /// when it is not empty) to `goal_blocked_by`; any reason makes the goal
    /// unmet. So every side of a scenario can block its goal and fail the
    /// run, not only the headline pair.
    pub fn blocked_also(mut self, label: &str, why: Vec<String>) -> Report {
        if why.is_empty() {
            return self;
        }
        self.goal_met = false;
        let entry = self
            .extra
            .entry("goal_blocked_by".to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.extend(why.into_iter().map(|w| {
                Value::String(if label.is_empty() {
                    w
                } else {
                    format!("{label}: {w}")
                })
            }));
        }
        self
    }

    /// Why the goal is blocked (a side failed a run or lost events), if it
    /// is: the `goal_blocked_by` field, as one line.
    pub fn blocked_by(&self) -> Option<String> {
        self.extra.get("goal_blocked_by").map(|why| match why {
            Value::Array(reasons) => reasons
                .iter()
                .map(|r| r.as_str().map_or_else(|| r.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })
    }

    /// Adds `runs` and the order each run measured the sides in.
    pub fn orders(self, a: &Alternated) -> Report {
        self.with("runs", a.orders.len())
            .with("run_orders", serde_json::json!(a.orders))
    }

    /// Sets the goal text and whether it was met.
    pub fn goal(mut self, text: &str, met: bool) -> Report {
        self.goal = text.to_owned();
        self.goal_met = met;
        self
    }

    /// Adds a scenario-specific field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Report {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The report as one line of JSON (floats rounded to 4 significant
    /// decimals where that keeps them readable).
    pub fn to_line(&self) -> String {
        let mut v = serde_json::to_value(self).expect("a report always serializes");
        round_floats(&mut v);
        // `to_value` sorts keys (serde_json without preserve_order); write the
        // fixed fields first by hand so the line reads naturally.
        let obj = v.as_object().expect("a report is an object");
        let fixed = [
            "scenario",
            "tidings_per_s",
            "peer",
            "peer_per_s",
            "ratio",
            "goal",
            "goal_met",
        ];
        let mut out = String::from("{");
        let mut first = true;
        let keys = fixed
            .iter()
            .map(|k| k.to_string())
            .chain(obj.keys().filter(|k| !fixed.contains(&k.as_str())).cloned());
        for k in keys {
            if let Some(val) = obj.get(&k) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&serde_json::to_string(&k).expect("a key serializes"));
                out.push(':');
                out.push_str(&serde_json::to_string(val).expect("a value serializes"));
            }
        }
        out.push('}');
        out
    }
}

/// Rounds floats to keep the line short: 4 decimals below 10, 2 below
/// 10,000, whole numbers above.
fn round_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            let r = if f.abs() < 10.0 {
                (f * 1e4).round() / 1e4
            } else if f.abs() < 1e4 {
                (f * 100.0).round() / 100.0
            } else {
                f.round()
            };
            if let Some(n) = serde_json::Number::from_f64(r) {
                *v = Value::Number(n);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(round_floats),
        Value::Object(o) => o.values_mut().for_each(round_floats),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_has_the_fixed_fields_first_and_is_one_json_object() {
        let r = Report::new(
            "inproc",
            2_000_000.0,
            "tokio::sync::broadcast",
            Some(1_000_000.0),
        )
        .goal("ratio >= 1.0", true)
        .with("window", 1024)
        .with("p99_ns", 12_345.678);
        let line = r.to_line();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(
            r#"{"scenario":"inproc","tidings_per_s":2000000.0,"peer":"tokio::sync::broadcast","peer_per_s":1000000.0,"ratio":2.0,"goal":"ratio >= 1.0","goal_met":true,"#
        ));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["scenario"], "inproc");
        assert_eq!(v["ratio"], 2.0);
        assert_eq!(v["window"], 1024);
        assert_eq!(v["p99_ns"], 12_346.0);
        for k in ["scenario", "tidings_per_s", "peer", "peer_per_s", "ratio"] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
    }

    #[test]
    fn no_peer_gives_null_ratio() {
        let r = Report::new("replay", 1.5e6, "none", None).goal("x", false);
        let v: Value = serde_json::from_str(&r.to_line()).unwrap();
        assert!(v["ratio"].is_null());
        assert!(v["peer_per_s"].is_null());
        assert_eq!(v["goal_met"], false);
    }

    #[test]
    fn compared_reports_medians_and_blocks_unsound_goals() {
        use crate::repeat::Run;
        let mut t = Series::new("tidings");
        let mut p = Series::new("peer x");
        for (k, (a, b)) in [(4.0, 1.0), (6.0, 2.0), (5.0, 3.0)].into_iter().enumerate() {
            t.record(k, Ok(Run::of(a)));
            p.record(k, Ok(Run::of(b)));
        }
        let clean = Report::compared("s", "peer x", "g", true, &t, Some(&p));
        assert_eq!(clean.blocked_by(), None);
        let v: Value = serde_json::from_str(&clean.to_line()).unwrap();
        assert_eq!(v["tidings_per_s"], 5.0);
        assert_eq!(v["peer_per_s"], 2.0);
        assert_eq!(v["ratio"], 2.5);
        assert_eq!(v["peer"], "peer x");
        assert_eq!(v["goal_met"], true);
        assert_eq!(v["tidings_runs"]["min"], 4.0);
        assert_eq!(v["peer_runs"]["max"], 3.0);
        assert!(v.get("goal_blocked_by").is_none());

        let mut zero = Series::new("peer x");
        zero.record(0, Ok(Run::of(0.0)));
        let blocked = Report::compared("s", "peer x", "g", true, &t, Some(&zero));
        assert!(blocked.blocked_by().unwrap().contains("measured 0"));
        let v: Value = serde_json::from_str(&blocked.to_line()).unwrap();
        assert_eq!(v["goal_met"], false);
        assert!(v["ratio"].is_null());
        assert!(v["goal_blocked_by"][0]
            .as_str()
            .unwrap()
            .contains("measured 0"));

        let mut lossy = p.clone();
        lossy.record(3, Ok(Run::of(2.0).lost(7)));
        let blocked = Report::compared("s", "peer x", "g", true, &t, Some(&lossy));
        assert!(blocked.blocked_by().unwrap().contains("lost 7"));
        // A side beside the headline adds its reasons and blocks the goal.
        let side = clean
            .clone()
            .blocked_also("window 1024", vec!["tidings lost 2 event(s)".into()]);
        assert!(!side.goal_met);
        assert_eq!(
            side.blocked_by().as_deref(),
            Some("window 1024: tidings lost 2 event(s)")
        );
        let both = blocked
            .clone()
            .blocked_also("", vec!["redis lost 1 event(s)".into()]);
        assert!(both.blocked_by().unwrap().contains("lost 7"));
        assert!(both
            .blocked_by()
            .unwrap()
            .ends_with("; redis lost 1 event(s)"));
        assert!(clean.clone().blocked_also("x", vec![]).goal_met);
        let v: Value = serde_json::from_str(&blocked.to_line()).unwrap();
        assert_eq!(v["goal_met"], false);
        assert!(v["goal_blocked_by"][0].as_str().unwrap().contains("lost 7"));
    }

    #[test]
    fn small_ratios_keep_their_decimals() {
        let r = Report::new("x", 1.0, "p", Some(3.0));
        let v: Value = serde_json::from_str(&r.to_line()).unwrap();
        assert_eq!(v["ratio"], 0.3333);
    }
}
