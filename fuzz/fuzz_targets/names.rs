//! Event names and subscription patterns: `validate_name`, `Pattern::parse`,
//! `Pattern::matches` and the subscription `Trie`, each checked against a
//! small reference model written here from the rules in `name.rs`'s docs.
//!
//! Input: UTF-8 text, lines separated by `\n` (never valid inside a name or
//! pattern, so it costs the fuzzer nothing). Line 0 is a pattern, line 1 a
//! name; every line is also tried as both; all valid patterns go into one
//! trie, which must agree with `Pattern::matches` for every line as a name.
#![no_main]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use libfuzzer_sys::fuzz_target;
use tidings_core::name::{validate_name, NameError, PatternToken, MAX_LEN, MAX_TOKENS};
use tidings_core::fuzzing::Trie;
use tidings_core::{Pattern, PatternError};

/// A reference token: what the rules say a pattern token is.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(String),
    One,
    Rest,
}

fn split(s: &str) -> Vec<&str> {
    s.split(|c| c == '.' || c == ':').collect()
}

fn bad_char(s: &str) -> bool {
    s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The rules for names, written independently of the parser.
fn model_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LEN
        && !bad_char(s)
        && !s.contains('*')
        && !s.contains('>')
        && split(s).len() <= MAX_TOKENS
        && split(s).iter().all(|t| !t.is_empty())
}

/// The rules for patterns; `None` if refused.
fn model_pattern(s: &str) -> Option<Vec<Tok>> {
    if s.is_empty() || s.len() > MAX_LEN || bad_char(s) {
        return None;
    }
    let parts = split(s);
    if parts.len() > MAX_TOKENS {
        return None;
    }
    let last = parts.len() - 1;
    let mut out = Vec::new();
    for (i, t) in parts.iter().enumerate() {
        let tok = match *t {
            "" => return None,
            "*" => Tok::One,
            ">" | "**" if i == last => Tok::Rest,
            ">" | "**" => return None,
            t if t.contains('*') || t.contains('>') => return None,
            t => Tok::Lit(t.to_owned()),
        };
        out.push(tok);
    }
    if out == [Tok::One] {
        out = vec![Tok::Rest];
    }
    Some(out)
}

/// Reference matching over token lists.
fn model_matches(p: &[Tok], n: &[&str]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((Tok::Rest, _)) => !n.is_empty(),
        Some((Tok::One, rest)) => !n.is_empty() && model_matches(rest, &n[1..]),
        Some((Tok::Lit(l), rest)) => n.first() == Some(&l.as_str()) && model_matches(rest, &n[1..]),
    }
}

fn to_model(p: &Pattern) -> Vec<Tok> {
    p.tokens()
        .iter()
        .map(|t| match t {
            PatternToken::Literal(l) => Tok::Lit(l.to_string()),
            PatternToken::One => Tok::One,
            PatternToken::Rest => Tok::Rest,
        })
        .collect()
}

fn hash_of(p: &Pattern) -> u64 {
    let mut h = DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

fn check_name(s: &str) {
    let got = validate_name(s);
    assert_eq!(
        got.is_ok(),
        model_name_ok(s),
        "validate_name({s:?}) = {got:?}"
    );
    // Each refusal names a reason that actually holds.
    match &got {
        Ok(()) => {}
        Err(NameError::Empty) => assert!(s.is_empty()),
        Err(NameError::TooLong { len, .. }) => assert!(*len == s.len() && *len > MAX_LEN),
        Err(NameError::TooManyTokens { count, .. }) => {
            assert!(*count == split(s).len() && *count > MAX_TOKENS)
        }
        Err(NameError::EmptyToken { index, .. }) => assert_eq!(split(s)[*index], ""),
        Err(NameError::BadChar { at, .. }) => {
            let c = s[*at..].chars().next().unwrap();
            assert!(c.is_whitespace() || c.is_control(), "{c:?}");
        }
        Err(NameError::Wildcard { .. }) => assert!(s.contains(['*', '>'])),
    }
    // `.` and `:` are the same separator.
    let dotted = s.replace(':', ".");
    let coloned = s.replace('.', ":");
    assert_eq!(
        validate_name(&dotted).is_ok(),
        got.is_ok(),
        "{s:?} vs {dotted:?}"
    );
    assert_eq!(
        validate_name(&coloned).is_ok(),
        got.is_ok(),
        "{s:?} vs {coloned:?}"
    );
    if got.is_ok() {
        // A valid name is a valid literal pattern matching exactly itself,
        // in either separator form.
        let p = Pattern::parse(s).expect("a valid name is a valid pattern");
        assert!(p.is_literal(), "{s:?}");
        assert!(
            p.matches(s) && p.matches(&dotted) && p.matches(&coloned),
            "{s:?}"
        );
    }
}

fn check_pattern(s: &str) -> Option<Pattern> {
    let got = Pattern::parse(s);
    let model = model_pattern(s);
    assert_eq!(
        got.is_ok(),
        model.is_some(),
        "Pattern::parse({s:?}) = {got:?}"
    );
    match &got {
        Ok(_) => {}
        Err(PatternError::Empty) => assert!(s.is_empty()),
        Err(PatternError::TooLong { len, .. }) => assert!(*len == s.len() && *len > MAX_LEN),
        Err(PatternError::TooManyTokens { count, .. }) => {
            assert!(*count == split(s).len() && *count > MAX_TOKENS)
        }
        Err(PatternError::EmptyToken { index, .. }) => assert_eq!(split(s)[*index], ""),
        Err(PatternError::BadChar { at, .. }) => {
            let c = s[*at..].chars().next().unwrap();
            assert!(c.is_whitespace() || c.is_control(), "{c:?}");
        }
        Err(PatternError::RestNotLast { index, .. }) => {
            let parts = split(s);
            assert!(matches!(parts[*index], ">" | "**") && *index + 1 < parts.len());
        }
        Err(PatternError::PartialWildcard { token, .. }) => {
            assert!(token.contains(['*', '>']) && !matches!(token.as_str(), "*" | ">" | "**"));
            assert!(split(s).contains(&token.as_str()));
        }
    }
    let dotted = s.replace(':', ".");
    let coloned = s.replace('.', ":");
    let d = Pattern::parse(&dotted);
    let c = Pattern::parse(&coloned);
    assert_eq!(d.is_ok(), got.is_ok(), "{s:?} vs {dotted:?}");
    assert_eq!(c.is_ok(), got.is_ok(), "{s:?} vs {coloned:?}");
    let p = got.ok()?;
    assert_eq!(to_model(&p), model.unwrap(), "{s:?}");
    // Kept exactly as written, and re-parses to the same pattern.
    assert_eq!(p.as_str(), s);
    assert_eq!(p.to_string(), s);
    let again = Pattern::parse(p.as_str()).expect("as_str re-parses");
    assert_eq!(again, p);
    assert_eq!(hash_of(&again), hash_of(&p));
    // Separator forms are equal patterns (and hash alike).
    for other in [d.unwrap(), c.unwrap()] {
        assert_eq!(other, p, "{s:?}");
        assert_eq!(hash_of(&other), hash_of(&p), "{s:?}");
    }
    assert_eq!(
        p.is_literal(),
        p.tokens()
            .iter()
            .all(|t| matches!(t, PatternToken::Literal(_)))
    );
    let catch_all = p == Pattern::all();
    assert_eq!(catch_all, matches!(s, "*" | ">" | "**"), "{s:?}");
    Some(p)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').take(16).collect();
    let mut patterns = Vec::new();
    for l in &lines {
        check_name(l);
        if let Some(p) = check_pattern(l) {
            patterns.push(p);
        }
    }
    let mut trie: Trie<usize> = Trie::new();
    for (i, p) in patterns.iter().enumerate() {
        trie.insert(p, i);
    }
    assert_eq!(trie.len(), patterns.len());
    // Names are matched unvalidated too: the trie and `matches` must agree
    // with the model for any text.
    for name in &lines {
        let name_toks = split(name);
        let mut got = Vec::new();
        trie.matches(name, &mut got);
        got.sort_unstable();
        let mut want = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let m = p.matches(name);
            assert_eq!(
                m,
                model_matches(&to_model(p), &name_toks),
                "{p:?} on {name:?}"
            );
            let dotted = name.replace(':', ".");
            assert_eq!(p.matches(&dotted), m, "{p:?} on {name:?} vs {dotted:?}");
            if m {
                want.push(i);
            }
        }
        assert_eq!(got, want, "trie vs matches for {name:?}");
    }
    // Removing every value empties the trie; a second removal finds nothing.
    for (i, p) in patterns.iter().enumerate() {
        assert!(trie.remove(p, &i), "{p:?}");
    }
    assert!(trie.is_empty());
    if let Some(p) = patterns.first() {
        assert!(!trie.remove(p, &0));
    }
});
