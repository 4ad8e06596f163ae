//! Property tests: ordering under concurrency, and the trie against a
//! reference matcher.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::json;
use tidings_core::name::tokens;
use tidings_core::trie::Trie;
use tidings_core::{Bus, Delivery, Pattern};

/// The obvious matcher, written independently of `Pattern::matches`: works
/// on raw strings, recursively.
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
    let p: Vec<&str> = tokens(pattern).collect();
    let n: Vec<&str> = tokens(name).collect();
    go(&p, &n)
}

fn name_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "room", "7"]), 1..5)
        .prop_flat_map(|toks| {
            let n = toks.len();
            (
                Just(toks),
                prop::collection::vec(prop::sample::select(vec![".", ":"]), n),
            )
                .prop_map(|(toks, seps)| {
                    let mut s = String::new();
                    for (i, t) in toks.iter().enumerate() {
                        if i > 0 {
                            s.push_str(seps[i]);
                        }
                        s.push_str(t);
                    }
                    s
                })
        })
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "c", "room", "7", "*"]),
            1..5,
        ),
        prop::sample::select(vec!["", ">", "**"]),
    )
        .prop_map(|(mut toks, tail)| {
            if !tail.is_empty() {
                toks.push(tail);
            }
            toks.join(".")
        })
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
            let a = Arc::new(Mutex::new(Vec::new()));
            let a2 = a.clone();
            subs.push(bus.on_async(p, move |e| {
                let a = a2.clone();
                async move { a.lock().unwrap().push(e.seq) }
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
        prop_assert_eq!(bus.sequence(), total);
        let committed = bus.history(usize::MAX, None).unwrap();
        prop_assert_eq!(committed.len() as u64, total);

        for (k, p) in PATTERNS.iter().enumerate() {
            let pat = Pattern::parse(p).unwrap();
            let want: Vec<u64> = committed.iter().filter(|e| pat.matches(&e.name)).map(|e| e.seq).collect();
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

            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while async_logs[k].lock().unwrap().len() < want.len() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            prop_assert_eq!(&*async_logs[k].lock().unwrap(), &want, "async {}", p);
        }
        drop(subs);
    }
}
