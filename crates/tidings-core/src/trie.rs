//! A token trie of subscription patterns (the shape of NATS's sublist).
//!
//! Matching a name walks at most one literal branch and one `*` branch per
//! token, so its cost depends on the name's length and on how many patterns
//! actually match, never on how many subscriptions exist. The bus keeps a
//! bounded cache of results in front of it.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use crate::name::{tokens, Pattern, PatternToken};

/// Tokens a name may have before matching spills them to the heap: every
/// valid name fits (`matches` also takes unvalidated names).
const STACK_TOKENS: usize = crate::name::MAX_TOKENS;

struct Node<T> {
    /// Hashed with foldhash (seeded per process): tokens are short, and
    /// SipHash was a visible share of every match.
    literals: HashMap<Box<str>, Node<T>, RandomState>,
    one: Option<Box<Node<T>>>,
    /// Values whose pattern ends with `>` right after this node.
    rest: Vec<T>,
    /// Values whose pattern ends exactly at this node.
    here: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literals: HashMap::default(),
            one: None,
            rest: Vec::new(),
            here: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literals.is_empty()
            && self.one.is_none()
            && self.rest.is_empty()
            && self.here.is_empty()
    }
}

/// Patterns mapped to values.
pub struct Trie<T> {
    root: Node<T>,
    /// Invariant: the number of values stored.
    len: usize,
}

impl<T> Default for Trie<T> {
    fn default() -> Self {
        Trie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T: PartialEq + Clone> Trie<T> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of values stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `pattern`.
    pub fn insert(&mut self, pattern: &Pattern, value: T) {
        let mut node = &mut self.root;
        for tok in pattern.tokens() {
            match tok {
                PatternToken::Literal(l) => node = node.literals.entry(l.clone()).or_default(),
                PatternToken::One => node = node.one.get_or_insert_with(Default::default),
                PatternToken::Rest => {
                    node.rest.push(value);
                    self.len += 1;
                    return;
                }
            }
        }
        node.here.push(value);
        self.len += 1;
    }

    /// Removes one `value` stored under `pattern`; prunes emptied branches.
    /// Returns whether it was found.
    pub fn remove(&mut self, pattern: &Pattern, value: &T) -> bool {
        let found = Self::remove_at(&mut self.root, pattern.tokens(), value);
        if found {
            self.len -= 1;
        }
        found
    }

    fn remove_at(node: &mut Node<T>, toks: &[PatternToken], value: &T) -> bool {
        let take = |v: &mut Vec<T>| match v.iter().position(|x| x == value) {
            Some(i) => {
                v.remove(i);
                true
            }
            None => false,
        };
        let Some((first, rest)) = toks.split_first() else {
            return take(&mut node.here);
        };
        match first {
            PatternToken::Rest => take(&mut node.rest),
            PatternToken::One => {
                let Some(child) = node.one.as_mut() else {
                    return false;
                };
                let found = Self::remove_at(child, rest, value);
                if child.is_empty() {
                    node.one = None;
                }
                found
            }
            PatternToken::Literal(l) => {
                let Some(child) = node.literals.get_mut(l) else {
                    return false;
                };
                let found = Self::remove_at(child, rest, value);
                if child.is_empty() {
                    node.literals.remove(l);
                }
                found
            }
        }
    }

    /// Appends to `out` every value whose pattern matches `name`.
    pub fn matches(&self, name: &str, out: &mut Vec<T>) {
        let mut stack = [""; STACK_TOKENS];
        let mut n = 0;
        let mut rest = tokens(name);
        for t in rest.by_ref() {
            stack[n] = t;
            n += 1;
            if n == STACK_TOKENS {
                break;
            }
        }
        if n < STACK_TOKENS {
            Self::collect(&self.root, &stack[..n], out);
        } else {
            let mut toks = stack.to_vec();
            toks.extend(rest);
            Self::collect(&self.root, &toks, out);
        }
    }

    fn collect(node: &Node<T>, toks: &[&str], out: &mut Vec<T>) {
        let Some((first, rest)) = toks.split_first() else {
            out.extend(node.here.iter().cloned());
            return;
        };
        out.extend(node.rest.iter().cloned());
        if let Some(child) = node.literals.get(*first) {
            Self::collect(child, rest, out);
        }
        if let Some(child) = &node.one {
            Self::collect(child, rest, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    fn matching(t: &Trie<u32>, name: &str) -> Vec<u32> {
        let mut v = Vec::new();
        t.matches(name, &mut v);
        v.sort();
        v
    }

    #[test]
    fn names_longer_than_the_stack_buffer() {
        let name = |len: usize| {
            (0..len)
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join(".")
        };
        let mut t = Trie::new();
        t.insert(&p("t0.>"), 1);
        t.insert(&p(&name(STACK_TOKENS)), 2);
        t.insert(&p(&name(STACK_TOKENS).replacen("t1.", "*.", 1)), 3);
        t.insert(&p(&name(STACK_TOKENS - 1)), 4);
        assert_eq!(matching(&t, &name(STACK_TOKENS)), vec![1, 2, 3]);
        assert_eq!(matching(&t, &name(STACK_TOKENS - 1)), vec![1, 4]);
        // Longer than any valid name: spills to the heap, still matches.
        assert_eq!(matching(&t, &name(STACK_TOKENS + 9)), vec![1]);
    }

    #[test]
    fn literal_one_and_rest() {
        let mut t = Trie::new();
        t.insert(&p("a.b"), 1);
        t.insert(&p("a.*"), 2);
        t.insert(&p("a.>"), 3);
        t.insert(&p("*"), 4);
        t.insert(&p("b.*"), 5);
        assert_eq!(matching(&t, "a.b"), vec![1, 2, 3, 4]);
        assert_eq!(matching(&t, "a:c"), vec![2, 3, 4]);
        assert_eq!(matching(&t, "a.b.c"), vec![3, 4]);
        assert_eq!(matching(&t, "a"), vec![4]);
        assert_eq!(matching(&t, "c"), vec![4]);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn remove_prunes_and_keeps_others() {
        let mut t = Trie::new();
        t.insert(&p("a.b.c"), 1);
        t.insert(&p("a.b.c"), 2);
        t.insert(&p("a.*.c"), 3);
        assert!(t.remove(&p("a.b.c"), &1));
        assert!(!t.remove(&p("a.b.c"), &1));
        assert!(!t.remove(&p("x.y"), &2));
        assert_eq!(matching(&t, "a.b.c"), vec![2, 3]);
        assert!(t.remove(&p("a.b.c"), &2));
        assert!(t.remove(&p("a.*.c"), &3));
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "emptied branches are pruned");
    }

    #[test]
    fn duplicates_are_kept_separately() {
        let mut t = Trie::new();
        t.insert(&p("x"), 7);
        t.insert(&p("x"), 7);
        assert_eq!(matching(&t, "x"), vec![7, 7]);
        t.remove(&p("x"), &7);
        assert_eq!(matching(&t, "x"), vec![7]);
    }
}
