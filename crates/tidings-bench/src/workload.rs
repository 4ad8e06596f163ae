//! Deterministic workloads: payloads, subscription patterns, event names.

use serde_json::{json, Value};

/// The payload of the in-process benchmarks (the same as
/// `tidings-core/benches/inproc.rs`).
pub fn payload() -> Value {
    json!({"username": "Gribnak", "from_room": "tavern", "to_room": "street"})
}

/// A small deterministic PRNG (xorshift64*), so every run and both sides of
/// a comparison see the same sequence.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced by a fixed constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The shapes of subscription patterns, as a game/chat server's clients
/// would subscribe (one entity each): `{}` is the entity id.
pub const PATTERN_SHAPES: &[&str] = &[
    "room.{}.*",
    "player.{}.>",
    "chat.{}.message",
    "game.{}.round.*",
    "user.{}.notify.>",
    "match.{}.score",
    "lobby.*.player.{}",
    "trivia.{}.>",
];

/// `n` subscription patterns cycling through [`PATTERN_SHAPES`], entity
/// ids `0..n/shapes`; for example `room.0.*`, `player.0.>`, ...
pub fn patterns(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let shape = PATTERN_SHAPES[i % PATTERN_SHAPES.len()];
            shape.replace("{}", &(i / PATTERN_SHAPES.len()).to_string())
        })
        .collect()
}

/// `count` event names for subscriptions made by [`patterns`]`(subs)`:
/// each picks a shape and an entity id in `0..2 * subs/shapes` (so about
/// half name an entity nobody subscribed to) and a verb. With 10,000
/// subscriptions, 65,536 names drawn hold about 32,000 distinct ones: many
/// more than the bus's match cache (4,096 names), so the trie is
/// exercised, not only the cache.
pub fn event_names(subs: usize, count: usize, seed: u64) -> Vec<String> {
    let per_shape = (subs / PATTERN_SHAPES.len()).max(1) as u64;
    let ids = per_shape * 2;
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let id = rng.below(ids);
            let verb = rng.below(3);
            match rng.below(8) {
                0 => format!("room.{id}.{}", ["join", "leave", "say"][verb as usize]),
                1 => match verb {
                    0 => format!("player.{id}.move"),
                    1 => format!("player.{id}.score"),
                    _ => format!("player.{id}.inventory.add"),
                },
                2 => format!("chat.{id}.message"),
                3 => format!(
                    "game.{id}.round.{}",
                    ["start", "end", "tick"][verb as usize]
                ),
                4 => format!(
                    "user.{id}.notify.{}",
                    ["mail", "friend", "system"][verb as usize]
                ),
                5 => format!("match.{id}.score"),
                6 => format!("lobby.{verb}.player.{id}"),
                _ => format!("trivia.{id}.question"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::Pattern;

    #[test]
    fn the_patterns_scenario_draws_far_more_names_than_the_cache_holds() {
        let names = event_names(10_000, 65_536, 0x5EED);
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        // 32,197 with this seed: about 8 times the bus's match cache.
        assert!(distinct.len() > 7 * 4_096, "{} distinct", distinct.len());
    }

    #[test]
    fn patterns_are_valid_and_distinct() {
        let p = patterns(10_000);
        assert_eq!(p.len(), 10_000);
        let set: std::collections::HashSet<_> = p.iter().collect();
        assert_eq!(set.len(), 10_000);
        for s in &p {
            Pattern::parse(s).unwrap();
        }
        assert_eq!(p[0], "room.0.*");
        assert_eq!(p[9], "player.1.>");
    }

    #[test]
    fn names_are_valid_deterministic_and_some_match() {
        let a = event_names(10_000, 2000, 7);
        assert_eq!(a, event_names(10_000, 2000, 7));
        for n in &a {
            tidings_core::name::validate_name(n).unwrap();
        }
        let scan = crate::matcher::LinearScan::new(&patterns(10_000));
        let matched = a
            .iter()
            .filter(|n| scan.for_each_match(n, |_| {}) > 0)
            .count();
        assert!(matched > 500 && matched < 1800, "{matched}");
    }
}
