//! Event names and subscription patterns.
//!
//! # The rules
//!
//! * A **name** is one or more tokens separated by `.` or `:`; the two
//!   separators are equivalent, so `player:move` and `player.move` have the
//!   same tokens (both seed conventions work, and a pattern written with one
//!   separator matches names written with the other).
//! * A **pattern** is a name in which a whole token may be a wildcard:
//!   `*` matches exactly one token; `>` (alias `**`) matches one or more
//!   tokens and must be the last token. A pattern that is only `*` matches
//!   every event (seed 001's catch-all), exactly like `>`.
//! * Refused, with a [`NameError`] / [`PatternError`] saying why: the empty
//!   string, an empty token (`a..b`, `.a`, `a.`), whitespace or control
//!   characters, more than [`MAX_LEN`] bytes or [`MAX_TOKENS`] tokens, a
//!   wildcard character inside a name, and in patterns a wildcard that is not
//!   a whole token (`a*`) or a `>` that is not last.
//!
//! The name is kept exactly as written (so a `player:move` event is stored
//! and shown as `player:move`); only matching looks at tokens.

use std::fmt;
use std::sync::Arc;

/// Longest accepted name or pattern, in bytes.
pub const MAX_LEN: usize = 255;
/// Most tokens accepted in a name or pattern.
pub const MAX_TOKENS: usize = 32;

/// Splits a name or pattern into tokens (`.` and `:` both separate).
pub(crate) fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(['.', ':'])
}

/// Why a string is not a valid event name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("event name is empty")]
    Empty,
    /// The name is longer than [`MAX_LEN`] bytes.
    #[error("event name is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    /// The name has more than [`MAX_TOKENS`] tokens.
    #[error("event name {name:?} has {count} tokens; the limit is {max}")]
    TooManyTokens {
        name: String,
        count: usize,
        max: usize,
    },
    /// Two separators in a row, or a separator at either end.
    #[error("event name {name:?} has an empty token (token {index}): separators '.' and ':' must sit between non-empty tokens")]
    EmptyToken { name: String, index: usize },
    /// Whitespace or a control character.
    #[error("event name {name:?} contains whitespace or a control character at byte {at}")]
    BadChar { name: String, at: usize },
    /// `*` or `>` in a name: those belong to patterns.
    #[error("event name {name:?} contains a wildcard character ('*' or '>'); wildcards belong in subscription patterns, not in names")]
    Wildcard { name: String },
}

/// Why a string is not a valid subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("pattern is empty")]
    Empty,
    /// The pattern is longer than [`MAX_LEN`] bytes.
    #[error("pattern is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    /// The pattern has more than [`MAX_TOKENS`] tokens.
    #[error("pattern {pattern:?} has {count} tokens; the limit is {max}")]
    TooManyTokens {
        pattern: String,
        count: usize,
        max: usize,
    },
    /// Two separators in a row, or a separator at either end.
    #[error("pattern {pattern:?} has an empty token (token {index}): separators '.' and ':' must sit between non-empty tokens")]
    EmptyToken { pattern: String, index: usize },
    /// Whitespace or a control character.
    #[error("pattern {pattern:?} contains whitespace or a control character at byte {at}")]
    BadChar { pattern: String, at: usize },
    /// `>` or `**` somewhere other than the last token.
    #[error(
        "pattern {pattern:?} has '>' (or '**') at token {index}, but it may only be the last token"
    )]
    RestNotLast { pattern: String, index: usize },
    /// A wildcard character inside a longer token, as in `trivia*`.
    #[error("pattern {pattern:?} has token {token:?} mixing a wildcard with other characters; '*', '>' and '**' must be whole tokens (write 'trivia.*', not 'trivia*')")]
    PartialWildcard { pattern: String, token: String },
}

/// Checks length and characters shared by names and patterns; returns the
/// byte offset of the first bad character.
fn first_bad_char(s: &str) -> Option<usize> {
    s.char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
        .map(|(i, _)| i)
}

/// Validates an event name.
///
/// ```
/// use tidings_core::name::{validate_name, NameError};
/// assert!(validate_name("player:move").is_ok());
/// assert!(matches!(validate_name("a..b"), Err(NameError::EmptyToken { .. })));
/// ```
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if fast_name_ok(name.as_bytes()) {
        return Ok(());
    }
    validate_name_slow(name)
}

/// Byte classes of the fast path: [`TOKEN`] a byte of a token,
/// [`SEPARATOR`] `.` or `:`, [`OTHER`] a byte it does not accept (refused
/// in every name, or non-ASCII, which the slow path judges).
const NAME_BYTES: [u8; 256] = {
    let mut t = [TOKEN; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match i as u8 {
            b'.' | b':' => SEPARATOR,
            0..=0x20 | 0x7f..=0xff | b'*' | b'>' => OTHER,
            _ => TOKEN,
        };
        i += 1;
    }
    t
};
const TOKEN: u8 = 0;
const SEPARATOR: u8 = 1;
const OTHER: u8 = 2;

/// One branch-free pass over a name: true if it is ASCII and valid (the
/// slow path then only runs to explain a refusal, or for non-ASCII
/// names). Emit runs it for every event.
fn fast_name_ok(b: &[u8]) -> bool {
    if b.is_empty() || b.len() > MAX_LEN {
        return false;
    }
    let (mut other, mut empty, mut separators) = (0u8, 0u8, 0usize);
    // 1 if the byte before was a separator; the start counts as one, so a
    // leading separator makes an empty token.
    let mut after_separator = SEPARATOR;
    for &c in b {
        let class = NAME_BYTES[c as usize];
        let separator = class & SEPARATOR;
        other |= class & OTHER;
        empty |= separator & after_separator;
        after_separator = separator;
        separators += separator as usize;
    }
    other == 0 && empty == 0 && after_separator == 0 && separators < MAX_TOKENS
}

fn validate_name_slow(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_LEN {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_LEN,
        });
    }
    if let Some(at) = first_bad_char(name) {
        return Err(NameError::BadChar {
            name: name.to_owned(),
            at,
        });
    }
    if name.contains(['*', '>']) {
        return Err(NameError::Wildcard {
            name: name.to_owned(),
        });
    }
    let mut count = 0;
    for (index, tok) in tokens(name).enumerate() {
        if tok.is_empty() {
            return Err(NameError::EmptyToken {
                name: name.to_owned(),
                index,
            });
        }
        count += 1;
    }
    if count > MAX_TOKENS {
        return Err(NameError::TooManyTokens {
            name: name.to_owned(),
            count,
            max: MAX_TOKENS,
        });
    }
    Ok(())
}

/// One token of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternToken {
    /// Matches exactly this token.
    Literal(Box<str>),
    /// `*`: matches any one token.
    One,
    /// `>` or `**` (last only): matches one or more tokens.
    Rest,
}

/// A validated subscription pattern.
///
/// Cheap to clone. Equality and hashing look at tokens, so `a:b` and `a.b`
/// are the same pattern.
#[derive(Clone)]
pub struct Pattern {
    /// The pattern as the caller wrote it (for display and listings).
    raw: Arc<str>,
    /// Invariant: non-empty; `Rest` appears at most once and only last; the
    /// catch-all `*` is stored as `[Rest]`.
    tokens: Arc<[PatternToken]>,
}

impl Pattern {
    /// Parses and validates a pattern.
    ///
    /// ```
    /// use tidings_core::Pattern;
    /// let p = Pattern::parse("room.*.>").unwrap();
    /// assert!(p.matches("room.7.player.joined"));
    /// assert!(!p.matches("room.7"));
    /// assert!(Pattern::parse("room.>.x").is_err());
    /// ```
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > MAX_LEN {
            return Err(PatternError::TooLong {
                len: pattern.len(),
                max: MAX_LEN,
            });
        }
        if let Some(at) = first_bad_char(pattern) {
            return Err(PatternError::BadChar {
                pattern: pattern.to_owned(),
                at,
            });
        }
        let raw_tokens: Vec<&str> = tokens(pattern).collect();
        if raw_tokens.len() > MAX_TOKENS {
            return Err(PatternError::TooManyTokens {
                pattern: pattern.to_owned(),
                count: raw_tokens.len(),
                max: MAX_TOKENS,
            });
        }
        let last = raw_tokens.len() - 1;
        let mut parsed = Vec::with_capacity(raw_tokens.len());
        for (index, tok) in raw_tokens.iter().enumerate() {
            let t = match *tok {
                "" => {
                    return Err(PatternError::EmptyToken {
                        pattern: pattern.to_owned(),
                        index,
                    })
                }
                "*" => PatternToken::One,
                ">" | "**" if index == last => PatternToken::Rest,
                ">" | "**" => {
                    return Err(PatternError::RestNotLast {
                        pattern: pattern.to_owned(),
                        index,
                    })
                }
                t if t.contains(['*', '>']) => {
                    return Err(PatternError::PartialWildcard {
                        pattern: pattern.to_owned(),
                        token: t.to_owned(),
                    })
                }
                t => PatternToken::Literal(t.into()),
            };
            parsed.push(t);
        }
        if parsed == [PatternToken::One] {
            parsed = vec![PatternToken::Rest];
        }
        Ok(Pattern {
            raw: pattern.into(),
            tokens: parsed.into(),
        })
    }

    /// The pattern that matches every event.
    pub fn all() -> Pattern {
        Pattern {
            raw: ">".into(),
            tokens: Arc::new([PatternToken::Rest]),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parsed tokens.
    pub fn tokens(&self) -> &[PatternToken] {
        &self.tokens
    }

    /// True if the pattern has no wildcard (it names exactly one event name).
    pub fn is_literal(&self) -> bool {
        self.tokens
            .iter()
            .all(|t| matches!(t, PatternToken::Literal(_)))
    }

    /// Whether `name` (assumed valid) matches this pattern. Linear in the
    /// number of tokens; the bus uses a trie instead of calling this per
    /// subscription.
    pub fn matches(&self, name: &str) -> bool {
        let mut name_tokens = tokens(name);
        for pt in self.tokens.iter() {
            match pt {
                PatternToken::Rest => return name_tokens.next().is_some(),
                PatternToken::One => {
                    if name_tokens.next().is_none() {
                        return false;
                    }
                }
                PatternToken::Literal(l) => {
                    if name_tokens.next() != Some(&**l) {
                        return false;
                    }
                }
            }
        }
        name_tokens.next().is_none()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.tokens == other.tokens
    }
}
impl Eq for Pattern {}
impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.tokens.hash(state)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", &*self.raw)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

/// Anything a subscribing call accepts as a pattern: a `&str`, a `String`
/// or an already parsed [`Pattern`].
pub trait IntoPattern {
    /// Parses (or passes through) the pattern.
    fn into_pattern(self) -> Result<Pattern, PatternError>;
}
impl IntoPattern for Pattern {
    fn into_pattern(self) -> Result<Pattern, PatternError> {
        Ok(self)
    }
}
impl IntoPattern for &Pattern {
    fn into_pattern(self) -> Result<Pattern, PatternError> {
        Ok(self.clone())
    }
}
impl IntoPattern for &str {
    fn into_pattern(self) -> Result<Pattern, PatternError> {
        Pattern::parse(self)
    }
}
impl IntoPattern for String {
    fn into_pattern(self) -> Result<Pattern, PatternError> {
        Pattern::parse(&self)
    }
}
impl IntoPattern for &String {
    fn into_pattern(self) -> Result<Pattern, PatternError> {
        Pattern::parse(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names near every limit: random bytes, long runs of separators and
    /// wildcards, and 28 to 39 tokens (the limit is 32) of up to 6 bytes.
    fn names() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[ -~\\t]{0,12}",
            "[a-c.:*>]{0,300}",
            proptest::collection::vec("[a-z]{1,6}", 28..40).prop_map(|t| t.join(".")),
        ]
    }

    proptest::proptest! {
        /// The fast path accepts exactly the ASCII names the full check
        /// accepts (it may send any other name to the full check).
        #[test]
        fn fast_path_agrees_with_the_full_check(name in names()) {
            let full = validate_name_slow(&name).is_ok();
            proptest::prop_assert_eq!(fast_name_ok(name.as_bytes()), full, "{:?}", name);
        }
    }

    #[test]
    fn valid_names() {
        for n in [
            "a",
            "player:move",
            "trivia.started",
            "a.b:c.d",
            "ünïcode.名前",
            "x-y_z",
        ] {
            assert_eq!(validate_name(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn invalid_names_say_why() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(
            validate_name("a..b"),
            Err(NameError::EmptyToken { index: 1, .. })
        ));
        assert!(matches!(
            validate_name(".a"),
            Err(NameError::EmptyToken { index: 0, .. })
        ));
        assert!(matches!(
            validate_name("a:"),
            Err(NameError::EmptyToken { index: 1, .. })
        ));
        assert!(matches!(
            validate_name("a b"),
            Err(NameError::BadChar { at: 1, .. })
        ));
        assert!(matches!(
            validate_name("a\u{7}"),
            Err(NameError::BadChar { .. })
        ));
        assert!(matches!(
            validate_name("a.*"),
            Err(NameError::Wildcard { .. })
        ));
        assert!(matches!(
            validate_name("a.>"),
            Err(NameError::Wildcard { .. })
        ));
        let long = "a".repeat(MAX_LEN + 1);
        assert!(matches!(
            validate_name(&long),
            Err(NameError::TooLong { .. })
        ));
        let many = vec!["a"; MAX_TOKENS + 1].join(".");
        assert!(matches!(
            validate_name(&many),
            Err(NameError::TooManyTokens { .. })
        ));
        let msg = validate_name("a..b").unwrap_err().to_string();
        assert!(msg.contains("empty token"), "{msg}");
    }

    #[test]
    fn invalid_patterns_say_why() {
        assert_eq!(Pattern::parse("").unwrap_err(), PatternError::Empty);
        assert!(matches!(
            Pattern::parse("a.>.b"),
            Err(PatternError::RestNotLast { index: 1, .. })
        ));
        assert!(matches!(
            Pattern::parse("**.b"),
            Err(PatternError::RestNotLast { index: 0, .. })
        ));
        assert!(matches!(
            Pattern::parse("trivia*"),
            Err(PatternError::PartialWildcard { .. })
        ));
        assert!(matches!(
            Pattern::parse("a.b>"),
            Err(PatternError::PartialWildcard { .. })
        ));
        assert!(matches!(
            Pattern::parse("a..*"),
            Err(PatternError::EmptyToken { .. })
        ));
        assert!(matches!(
            Pattern::parse("a\t*"),
            Err(PatternError::BadChar { .. })
        ));
        assert!(matches!(
            Pattern::parse(&"a".repeat(300)),
            Err(PatternError::TooLong { .. })
        ));
    }

    #[test]
    fn star_matches_one_token() {
        let p = Pattern::parse("trivia.*").unwrap();
        assert!(p.matches("trivia.started"));
        assert!(p.matches("trivia:ended"));
        assert!(!p.matches("trivia"));
        assert!(!p.matches("trivia.a.b"));
        assert!(!p.matches("quote.added"));
    }

    #[test]
    fn rest_matches_one_or_more() {
        for p in ["player.>", "player.**", "player:>"] {
            let p = Pattern::parse(p).unwrap();
            assert!(p.matches("player.move"));
            assert!(p.matches("player:a:b:c"));
            assert!(!p.matches("player"));
        }
    }

    #[test]
    fn lone_star_and_rest_match_everything() {
        for p in ["*", ">", "**"] {
            let p = Pattern::parse(p).unwrap();
            assert!(p.matches("a"));
            assert!(p.matches("a.b.c"));
            assert_eq!(p, Pattern::all());
        }
    }

    #[test]
    fn separators_are_equivalent() {
        assert_eq!(
            Pattern::parse("a:b").unwrap(),
            Pattern::parse("a.b").unwrap()
        );
        assert!(Pattern::parse("player.move")
            .unwrap()
            .matches("player:move"));
        assert_eq!(Pattern::parse("a:b").unwrap().as_str(), "a:b");
    }

    #[test]
    fn literal_detection() {
        assert!(Pattern::parse("a.b").unwrap().is_literal());
        assert!(!Pattern::parse("a.*").unwrap().is_literal());
    }
}
