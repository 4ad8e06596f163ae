//! The linear-scan peer of the `patterns` scenario: what seed 001 does
//! (for each event, test every subscription's pattern, one after another).
//!
//! Two matchers, both applied linearly over every subscription:
//!
//! * [`TokenPattern`] (the peer the ratio is computed against): the
//!   pattern is split into tokens once, at subscribe time; per event the
//!   name is split once and compared token by token against every pattern.
//!   Same semantics as Tidings (`*` one token, `>`/`**` last = one or more,
//!   `.` ≡ `:`), so its match counts must equal Tidings' — the scenario
//!   checks that. This is the *strongest* linear peer: no per-event parsing
//!   of patterns, no allocation per comparison.
//! * [`glob_match`]: seed 001 literally (`fnmatch.fnmatch(name, pattern)`):
//!   `*` matches any run of characters (dots included), `?` one character.
//!   Tidings patterns are rewritten for it with [`to_glob`] (`>` and `**`
//!   become `*`), so it matches a superset (`room.1.*` also takes
//!   `room.1.a.b`). Reported as a second figure, not the ratio's peer.

/// One token of a pre-split pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Literal(Box<str>),
    One,
    Rest,
}

/// A pattern split into tokens once, matched by a linear scan.
#[derive(Debug, Clone)]
pub struct TokenPattern {
    toks: Vec<Tok>,
}

fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(['.', ':'])
}

impl TokenPattern {
    /// Splits `pattern` (assumed valid for Tidings).
    pub fn new(pattern: &str) -> TokenPattern {
        let parts: Vec<&str> = split(pattern).collect();
        let last = parts.len() - 1;
        let mut toks: Vec<Tok> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| match *p {
                "*" => Tok::One,
                ">" | "**" if i == last => Tok::Rest,
                lit => Tok::Literal(lit.into()),
            })
            .collect();
        if toks == [Tok::One] {
            toks = vec![Tok::Rest];
        }
        TokenPattern { toks }
    }

    /// Whether the name given as its tokens matches.
    pub fn matches_tokens(&self, name: &[&str]) -> bool {
        let mut i = 0;
        for t in &self.toks {
            match t {
                Tok::Rest => return i < name.len(),
                Tok::One => {
                    if i >= name.len() {
                        return false;
                    }
                }
                Tok::Literal(l) => {
                    if name.get(i) != Some(&&**l) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == name.len()
    }

    /// Whether `name` matches (splits it; the scan splits once per event).
    pub fn matches(&self, name: &str) -> bool {
        let toks: Vec<&str> = split(name).collect();
        self.matches_tokens(&toks)
    }
}

/// Every subscription's pattern, scanned one after another per event.
pub struct LinearScan {
    patterns: Vec<TokenPattern>,
}

impl LinearScan {
    /// A scan over `patterns`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> LinearScan {
        LinearScan {
            patterns: patterns
                .iter()
                .map(|p| TokenPattern::new(p.as_ref()))
                .collect(),
        }
    }

    /// Calls `f(index)` for every matching subscription; returns how many.
    pub fn for_each_match(&self, name: &str, mut f: impl FnMut(usize)) -> usize {
        let toks: Vec<&str> = split(name).collect();
        let mut n = 0;
        for (i, p) in self.patterns.iter().enumerate() {
            if p.matches_tokens(&toks) {
                f(i);
                n += 1;
            }
        }
        n
    }
}

/// A Tidings pattern as seed 001 would have written it for `fnmatch`:
/// `>` and `**` become `*`.
pub fn to_glob(pattern: &str) -> String {
    split(pattern)
        .map(|t| if t == ">" || t == "**" { "*" } else { t })
        .collect::<Vec<_>>()
        .join(".")
}

/// `fnmatch`-style glob: `*` matches any run of characters (including
/// `.`), `?` exactly one; everything else literally. Iterative with one
/// backtrack point (linear-ish, no recursion).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let s = name.as_bytes();
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Seed 001's scan: every glob string tested against the name.
pub struct GlobScan {
    globs: Vec<String>,
}

impl GlobScan {
    /// A scan over the Tidings `patterns`, rewritten with [`to_glob`].
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> GlobScan {
        GlobScan {
            globs: patterns.iter().map(|p| to_glob(p.as_ref())).collect(),
        }
    }

    /// Calls `f(index)` for every matching glob; returns how many.
    pub fn for_each_match(&self, name: &str, mut f: impl FnMut(usize)) -> usize {
        let mut n = 0;
        for (i, g) in self.globs.iter().enumerate() {
            if glob_match(g, name) {
                f(i);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::Pattern;

    const PATTERNS: &[&str] = &[
        "room.7.*",
        "player.3.>",
        "chat.12.message",
        "*",
        ">",
        "a:b",
        "a.*.c",
        "a.**",
        "game.*.round.*",
        "x",
    ];
    const NAMES: &[&str] = &[
        "room.7.join",
        "room.7",
        "room.7.join.late",
        "room.8.join",
        "player.3.move",
        "player.3",
        "player.3.a.b.c",
        "chat.12.message",
        "chat.12.messages",
        "chat:12:message",
        "a.b",
        "a.x.c",
        "a.x.y.c",
        "a",
        "game.1.round.start",
        "game.1.round",
        "x",
        "x.y",
    ];

    #[test]
    fn token_matcher_agrees_with_tidings_pattern() {
        for p in PATTERNS {
            let tidings = Pattern::parse(p).unwrap();
            let ours = TokenPattern::new(p);
            for n in NAMES {
                assert_eq!(ours.matches(n), tidings.matches(n), "pattern {p} name {n}");
            }
        }
    }

    #[test]
    fn linear_scan_counts_like_the_tidings_patterns() {
        let scan = LinearScan::new(PATTERNS);
        for n in NAMES {
            let expected = PATTERNS
                .iter()
                .filter(|p| Pattern::parse(p).unwrap().matches(n))
                .count();
            let mut seen = Vec::new();
            assert_eq!(scan.for_each_match(n, |i| seen.push(i)), expected, "{n}");
            assert_eq!(seen.len(), expected);
        }
    }

    #[test]
    fn glob_is_fnmatch_like() {
        assert!(glob_match("room.7.*", "room.7.join"));
        assert!(glob_match("room.7.*", "room.7.join.late"), "* crosses dots");
        assert!(!glob_match("room.7.*", "room.7"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*.message", "chat.1.message"));
        assert!(!glob_match("chat.1.message", "chat.1.messages"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert_eq!(to_glob("player.3.>"), "player.3.*");
        assert_eq!(to_glob("a:**"), "a.*");
    }

    #[test]
    fn glob_scan_matches_a_superset_of_the_token_scan() {
        let token = LinearScan::new(PATTERNS);
        let glob = GlobScan::new(PATTERNS);
        for n in NAMES {
            let n = n.replace(':', ".");
            let mut t = Vec::new();
            let mut g = Vec::new();
            token.for_each_match(&n, |i| t.push(i));
            glob.for_each_match(&n, |i| g.push(i));
            assert!(t.iter().all(|i| g.contains(i)), "{n}: {t:?} vs {g:?}");
        }
    }
}
