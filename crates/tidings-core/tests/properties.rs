//! Property tests: ordering under concurrency, and the trie against a
//! reference matcher.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::json;
use tidings_core::fuzzing::Trie;
use tidings_core::{Bus, Delivery, Pattern, PatternError};

/// Splits on `.` and `:`, the two separators of the design rules (written
/// here rather than taken from the crate, so the reference shares no code
/// with what it checks).
fn split_tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '.' || c == ':' {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// The design rules for a pattern, on raw strings: non-empty, no empty
/// token, `*` a whole token anywhere, `>` or `**` a whole token and last,
/// no other token containing `*` or `>`. (The generators stay far below
/// the length and token-count limits and use no whitespace.)
fn reference_valid(pattern: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    let toks = split_tokens(pattern);
    let last = toks.len() - 1;
    toks.iter().enumerate().all(|(i, t)| match *t {
        "" => false,
        "*" => true,
        ">" | "**" => i == last,
        t => !t.contains(['*', '>']),
    })
}

/// The obvious matcher from the design rules, on raw strings, recursively:
/// `*` is one token, a last `>`/`**` is one or more, a pattern that is only
/// `*` matches everything. Shares no code with `Pattern` or the trie.
fn reference_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[&str], n: &[&str]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(&">") | Some(&"**"), Some(_)) => p.len() == 1,
            (Some(&"*"), Some(_)) => go(&p[1..], &n[1..]),
            (Some(lit), Some(tok)) => lit == tok && go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    if pattern == "*" {
        return true;
    }
    go(&split_tokens(pattern), &split_tokens(name))
}

/// Joins tokens with separators drawn from `.` and `:`.
fn joined(toks: Vec<&'static str>) -> impl Strategy<Value = String> {
    let n = toks.len();
    prop::collection::vec(prop::sample::select(vec![".", ":"]), n).prop_map(move |seps| {
        let mut s = String::new();
        for (i, t) in toks.iter().enumerate() {
            if i > 0 {
                s.push_str(seps[i]);
            }
            s.push_str(t);
        }
        s
    })
}

fn name_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "room", "7"]), 1..5)
        .prop_flat_map(joined)
}

/// Valid patterns: literal and `*` tokens with either separator, optionally
/// ending in `>` or `**`, plus the lone `*`, `>` and `**`.
fn pattern_strategy() -> impl Strategy<Value = String> {
    let built = (
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "c", "room", "7", "*"]),
            1..5,
        ),
        prop::sample::select(vec!["", ">", "**"]),
    )
        .prop_flat_map(|(mut toks, tail)| {
            if !tail.is_empty() {
                toks.push(tail);
            }
            joined(toks)
        });
    prop_oneof![
        8 => built,
        1 => Just(">".to_owned()),
        1 => Just("**".to_owned()),
        1 => Just("*".to_owned()),
    ]
}

/// How an invalid pattern was made from a valid one, and the error it must
/// get.
#[derive(Debug, Clone, Copy)]
enum Flaw {
    /// A token with `*` or `>` in it that is not a whole wildcard.
    PartialWildcard,
    /// `>` or `**` followed by another token.
    RestNotLast,
    /// An empty token (leading, trailing or doubled separator).
    EmptyToken,
}

/// Patterns with exactly one flaw, each tagged with it; the empty pattern
/// is checked on its own.
fn invalid_pattern_strategy() -> impl Strategy<Value = (String, Flaw)> {
    let toks = prop::collection::vec(prop::sample::select(vec!["a", "b", "7", "*"]), 1..4);
    let partial = (
        toks.clone(),
        prop::sample::select(vec![
            "a*", "*a", "a>", ">a", "***", "x**y", ">>", "*>", "**>",
        ]),
        any::<prop::sample::Index>(),
    )
        .prop_flat_map(|(mut toks, bad, at)| {
            let i = at.index(toks.len() + 1);
            toks.insert(i, bad);
            joined(toks).prop_map(|p| (p, Flaw::PartialWildcard))
        });
    let rest_not_last = (
        toks.clone(),
        prop::sample::select(vec![">", "**"]),
        any::<prop::sample::Index>(),
    )
        .prop_flat_map(|(mut toks, rest, at)| {
            // Anywhere but last: at least one token follows it.
            let i = at.index(toks.len());
            toks.insert(i, rest);
            joined(toks).prop_map(|p| (p, Flaw::RestNotLast))
        });
    let empty = (toks, any::<prop::sample::Index>()).prop_flat_map(|(mut toks, at)| {
        let i = at.index(toks.len() + 1);
        toks.insert(i, "");
        joined(toks).prop_map(|p| (p, Flaw::EmptyToken))
    });
    prop_oneof![partial, rest_not_last, empty]
}

#[test]
fn the_reference_follows_the_rules_on_known_cases() {
    for p in [
        "*", ">", "**", "a", "a.*", "a:*.b", "*.>", "a.**", "room:7:>",
    ] {
        assert!(reference_valid(p), "{p}");
    }
    for p in [
        "", "a*", ">.a", "a.>.b", "**.a", "a..b", ".a", "a.", "a:.b", "a>b",
    ] {
        assert!(!reference_valid(p), "{p}");
    }
    assert!(matches!(Pattern::parse(""), Err(PatternError::Empty)));
    assert!(reference_match("*", "a.b.c") && reference_match("a:>", "a.b.c"));
    assert!(reference_match("**", "a") && !reference_match("a.>", "a"));
    assert!(reference_match("a.*", "a:b") && !reference_match("a.*", "a.b.c"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn trie_agrees_with_the_reference_matcher(
        patterns in prop::collection::vec(pattern_strategy(), 1..40),
        names in prop::collection::vec(name_strategy(), 1..40),
        removals in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut trie = Trie::new();
        let mut live: Vec<(usize, String)> = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(&Pattern::parse(p).unwrap(), i);
            live.push((i, p.clone()));
        }
        for r in removals {
            if live.is_empty() { break; }
            let (i, p) = live.remove(r.index(live.len()));
            prop_assert!(trie.remove(&Pattern::parse(&p).unwrap(), &i));
        }
        prop_assert_eq!(trie.len(), live.len());
        for n in &names {
            let mut got = Vec::new();
            trie.matches(n, &mut got);
            got.sort_unstable();
            let mut want: Vec<usize> = live.iter().filter(|(_, p)| reference_match(p, n)).map(|(i, _)| *i).collect();
            want.sort_unstable();
            prop_assert_eq!(&got, &want, "name {}", n);
            for (_, p) in &live {
                prop_assert_eq!(Pattern::parse(p).unwrap().matches(n), reference_match(p, n));
            }
        }
    }

    #[test]
    fn lone_star_matches_everything(name in name_strategy()) {
        prop_assert!(Pattern::parse("*").unwrap().matches(&name));
    }

    #[test]
    fn generated_patterns_are_valid_by_the_rules(p in pattern_strategy()) {
        prop_assert!(reference_valid(&p), "generator made {:?}", p);
        prop_assert!(Pattern::parse(&p).is_ok(), "{:?} refused", p);
    }

    #[test]
    fn invalid_wildcards_and_empty_tokens_are_refused((p, flaw) in invalid_pattern_strategy()) {
        prop_assert!(!reference_valid(&p), "generator made a valid {:?}", p);
        let got = Pattern::parse(&p);
        let right = matches!(
            (&got, flaw),
            (Err(PatternError::PartialWildcard { .. }), Flaw::PartialWildcard)
                | (Err(PatternError::RestNotLast { .. }), Flaw::RestNotLast)
                | (Err(PatternError::EmptyToken { .. }), Flaw::EmptyToken)
        );
        prop_assert!(right, "{:?} ({:?}): got {:?}", p, flaw, got.map(|p| p.as_str().to_owned()));
    }

    #[test]
    fn parse_accepts_exactly_what_the_rules_allow(
        toks in prop::collection::vec(
            prop::sample::select(vec!["a", "7", "*", ">", "**", "", "a*", ">a"]),
            1..5,
        ).prop_flat_map(joined),
    ) {
        prop_assert_eq!(Pattern::parse(&toks).is_ok(), reference_valid(&toks), "{:?}", toks);
    }
}

/// One step of the subscription-churn property.
#[derive(Debug, Clone)]
enum Op {
    Subscribe(String),
    Unsubscribe(prop::sample::Index),
    Emit(String),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    // Few names, so they repeat and the match cache is hit and invalidated.
    let names = prop::sample::select(vec!["a.b", "a:c", "b.b", "a.b.c", "room.7", "c"]);
    prop_oneof![
        2 => pattern_strategy().prop_map(Op::Subscribe),
        1 => any::<prop::sample::Index>().prop_map(Op::Unsubscribe),
        4 => names.prop_map(|n| Op::Emit(n.to_owned())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Subscribing and unsubscribing between emits, with a tiny match
    /// cache: every handler gets exactly the matching events emitted while
    /// it was subscribed (the reference decides what matches).
    #[test]
    fn subscribe_churn_keeps_deliveries_exact(
        ops in prop::collection::vec(op_strategy(), 1..120),
        cache in 1usize..6,
    ) {
        let bus = Bus::builder().cache_capacity(cache).build().unwrap();
        // (pattern, subscription, seqs received, seqs expected)
        type Live = (String, tidings_core::Subscription, Arc<Mutex<Vec<u64>>>, Vec<u64>);
        let mut live: Vec<Live> = Vec::new();
        let check = |(p, _, got, want): &Live| -> Result<(), TestCaseError> {
            prop_assert_eq!(&*got.lock().unwrap(), want, "pattern {}", p);
            Ok(())
        };
        for op in ops {
            match op {
                Op::Subscribe(p) => {
                    let got = Arc::new(Mutex::new(Vec::new()));
                    let g = got.clone();
                    let sub = bus.on(p.as_str(), move |e| g.lock().unwrap().push(e.seq)).unwrap();
                    live.push((p, sub, got, Vec::new()));
                }
                Op::Unsubscribe(i) => {
                    if !live.is_empty() {
                        let l = live.remove(i.index(live.len()));
                        check(&l)?;
                    }
                }
                Op::Emit(n) => {
                    let e = bus.emit(n.as_str(), json!(null)).unwrap();
                    for (p, _, _, want) in live.iter_mut() {
                        if reference_match(p, &n) {
                            want.push(e.seq);
                        }
                    }
                }
            }
        }
        for l in &live {
            check(l)?;
        }
    }
}

/// Names emitted by the concurrency property, and the subscribers' patterns.
const NAMES: [&str; 4] = [
    "order.placed",
    "order.paid",
    "user:signup",
    "audit.log.entry",
];
const PATTERNS: [&str; 4] = ["order.*", ">", "user.signup", "audit.>"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// With several threads emitting concurrently, every subscriber (sync,
    /// async, stream) receives exactly the matching committed seqs, in
    /// order, without gap or duplicate — including when tiny queues force
    /// streams and async handlers onto the log.
    #[test]
    fn concurrent_emitters_every_subscriber_sees_seq_order(
        threads in 2usize..5,
        per_thread in 1usize..60,
        name_picks in prop::collection::vec(0usize..4, 1..32),
        capacity in 1usize..16,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let bus = Bus::builder().stream_capacity(capacity).runtime(rt.handle().clone()).build().unwrap();

        let mut sync_logs = Vec::new();
        let mut async_logs = Vec::new();
        let mut subs = Vec::new();
        let mut streams = Vec::new();
        for p in PATTERNS {
            let l = Arc::new(Mutex::new(Vec::new()));
            let l2 = l.clone();
            subs.push(bus.on(p, move |e| l2.lock().unwrap().push(e.seq)).unwrap());
            sync_logs.push(l);
            // Seqs the async handler got, and a condvar signalled on each.
            let a = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
            let a2 = a.clone();
            subs.push(bus.on_async(p, move |e| {
                let a = a2.clone();
                async move {
                    a.0.lock().unwrap().push(e.seq);
                    a.1.notify_all();
                }
            }).unwrap());
            async_logs.push(a);
            streams.push(bus.subscribe(p).unwrap());
        }

        // Half the emitters are OS threads using sync `emit`, half are tasks
        // on the runtime using `emit_async`.
        let handles: Vec<_> = (0..threads).map(|t| {
            let bus = bus.clone();
            let picks = name_picks.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let name = NAMES[picks[(i + t) % picks.len()]];
                    bus.emit(name, json!({"t": t, "i": i})).unwrap();
                }
            })
        }).collect();
        let tasks: Vec<_> = (0..threads).map(|t| {
            let bus = bus.clone();
            let picks = name_picks.clone();
            rt.spawn(async move {
                for i in 0..per_thread {
                    let name = NAMES[picks[(i + t + 1) % picks.len()]];
                    bus.emit_async(name, json!({"task": t, "i": i})).await.unwrap();
                }
            })
        }).collect();
        for h in handles { h.join().unwrap(); }
        rt.block_on(async { for t in tasks { t.await.unwrap(); } });

        let total = (2 * threads * per_thread) as u64;
        prop_assert_eq!(bus.last_seq(), total);
        let committed = bus.history(usize::MAX, None).unwrap();
        prop_assert_eq!(committed.len() as u64, total);

        for (k, p) in PATTERNS.iter().enumerate() {
            let pat = Pattern::parse(p).unwrap();
            let want: Vec<u64> = committed.iter().filter(|e| reference_match(p, &e.name)).map(|e| e.seq).collect();
            prop_assert!(committed.iter().all(|e| pat.matches(&e.name) == reference_match(p, &e.name)));
            prop_assert_eq!(&*sync_logs[k].lock().unwrap(), &want, "sync {}", p);

            let stream = &mut streams[k];
            let got: Vec<u64> = rt.block_on(async {
                let mut got = Vec::new();
                while got.len() < want.len() {
                    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                        Ok(Some(Ok(Delivery::Event(e)))) => got.push(e.seq),
                        other => panic!("stream {p}: unexpected {other:?}"),
                    }
                }
                got
            });
            prop_assert_eq!(&got, &want, "stream {}", p);

            let (got, cv) = &*async_logs[k];
            let (got, _) = cv
                .wait_timeout_while(got.lock().unwrap(), Duration::from_secs(5), |g| g.len() < want.len())
                .unwrap();
            prop_assert_eq!(&*got, &want, "async {}", p);
        }
        drop(subs);
    }
}
