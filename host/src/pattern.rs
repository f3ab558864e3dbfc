//! Path patterns of routes: fnmatch-style globs that also report what each `*` captured.
//!
//! The seed routes with PHP's `fnmatch()` without flags, so `*` matches any run of
//! characters *including* `/`, `?` matches exactly one character and `[...]` a character
//! class (`[abc]`, `[a-z]`, negated with `!` or `^`). A backslash makes the next character
//! literal. What each `*` matched is returned in order, so `/chat/*` on `/chat/lobby`
//! captures `lobby`; when several stars could split a path differently, earlier stars
//! take the shortest match.

use std::fmt;

/// A compiled route pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    Star,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// Why a pattern could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A `[` without its closing `]`.
    #[error("unclosed `[` at character {0}")]
    UnclosedClass(usize),
    /// A backslash at the very end, escaping nothing.
    #[error("trailing `\\` escapes nothing")]
    TrailingEscape,
}

impl PathPattern {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        let chars: Vec<char> = source.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // `**` is the same as `*` but would capture an always-empty segment.
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::AnyOne),
                '\\' => {
                    i += 1;
                    let c = *chars.get(i).ok_or(PatternError::TrailingEscape)?;
                    tokens.push(Token::Literal(c));
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i)?;
                    tokens.push(token);
                    i = next;
                    continue;
                }
                c => tokens.push(Token::Literal(c)),
            }
            i += 1;
        }
        Ok(Self {
            source: source.to_owned(),
            tokens,
        })
    }

    /// The pattern as written in routes.toml.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// How many `*` capture something: the length of what [`Self::captures`] returns.
    pub fn stars(&self) -> usize {
        self.tokens.iter().filter(|t| **t == Token::Star).count()
    }

    /// Matches `path`; on success returns what each `*` captured, in order.
    pub fn captures(&self, path: &str) -> Option<Vec<String>> {
        let text: Vec<char> = path.chars().collect();
        // For each star token, the smallest text position from which it is known to fail.
        // A star entered at `i` can do everything a star entered at `j > i` can, so one
        // number per star is enough, and matching stays about linear in the path length
        // whatever the number of stars (a naive backtracker is exponential).
        let mut fails_from = vec![usize::MAX; self.tokens.len()];
        let mut spans = Vec::new();
        self.match_from(0, 0, &text, &mut fails_from, &mut spans)
            .then(|| {
                spans
                    .iter()
                    .map(|&(start, end)| text[start..end].iter().collect())
                    .collect()
            })
    }

    /// Whether `path` matches.
    pub fn is_match(&self, path: &str) -> bool {
        self.captures(path).is_some()
    }

    /// Matches tokens from `ti` against text from `si`. Literal runs are walked in a loop
    /// and only stars recurse, so the recursion depth is bounded by the number of stars.
    fn match_from(
        &self,
        mut ti: usize,
        mut si: usize,
        text: &[char],
        fails_from: &mut [usize],
        spans: &mut Vec<(usize, usize)>,
    ) -> bool {
        loop {
            match self.tokens.get(ti) {
                None => return si == text.len(),
                Some(Token::Star) => {
                    let known_bad = fails_from[ti];
                    if si >= known_bad {
                        return false;
                    }
                    // Ends at or beyond `known_bad` were all tried by an earlier entry.
                    let last = text.len().min(known_bad.saturating_sub(1));
                    for end in si..=last {
                        spans.push((si, end));
                        if self.match_from(ti + 1, end, text, fails_from, spans) {
                            return true;
                        }
                        spans.pop();
                    }
                    fails_from[ti] = si;
                    return false;
                }
                Some(token) => {
                    if si < text.len() && token_matches(token, text[si]) {
                        ti += 1;
                        si += 1;
                    } else {
                        return false;
                    }
                }
            }
        }
    }
}

fn token_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyOne => true,
        Token::Class { negated, items } => {
            items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
        Token::Star => unreachable!("stars are handled by the matcher"),
    }
}

/// Parses the class starting at `chars[open] == '['`; returns it and the index after `]`.
fn parse_class(chars: &[char], open: usize) -> Result<(Token, usize), PatternError> {
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i).ok_or(PatternError::UnclosedClass(open))?;
        // A `]` right after the opening is a literal member, as in fnmatch.
        if c == ']' && !first {
            return Ok((Token::Class { negated, items }, i + 1));
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *chars.get(i).ok_or(PatternError::UnclosedClass(open))?
        } else {
            c
        };
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&h| h != ']') {
            items.push((lo, chars[i + 2]));
            i += 3;
        } else {
            items.push((lo, lo));
            i += 1;
        }
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({:?})", self.source)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, path: &str) -> Option<Vec<String>> {
        PathPattern::new(p).unwrap().captures(path)
    }

    #[test]
    fn star_matches_across_slashes_like_fnmatch_without_flags() {
        assert_eq!(caps("/echo/*", "/echo/a/b"), Some(vec!["a/b".to_owned()]));
        assert_eq!(caps("/echo/*", "/echo/"), Some(vec![String::new()]));
        assert_eq!(caps("/echo/*", "/echo"), None);
        assert_eq!(caps("*", "/anything"), Some(vec!["/anything".to_owned()]));
    }

    #[test]
    fn earlier_stars_take_the_shortest_match() {
        assert_eq!(
            caps("/*/*", "/a/b/c"),
            Some(vec!["a".to_owned(), "b/c".to_owned()])
        );
        assert_eq!(
            caps("/room-*-*", "/room-x-y-z"),
            Some(vec!["x".to_owned(), "y-z".to_owned()])
        );
    }

    #[test]
    fn question_mark_and_classes() {
        assert!(PathPattern::new("/v?/x").unwrap().is_match("/v1/x"));
        assert!(!PathPattern::new("/v?/x").unwrap().is_match("/v12/x"));
        let p = PathPattern::new("/[a-c]x[!0-9]").unwrap();
        assert!(p.is_match("/bxz"));
        assert!(!p.is_match("/dxz"));
        assert!(!p.is_match("/bx5"));
        assert!(PathPattern::new("/[]]").unwrap().is_match("/]"));
        assert!(PathPattern::new("/[^a]").unwrap().is_match("/b"));
        assert!(PathPattern::new("/[a-]").unwrap().is_match("/-"));
    }

    #[test]
    fn escapes_make_metacharacters_literal() {
        let p = PathPattern::new(r"/a\*b").unwrap();
        assert!(p.is_match("/a*b"));
        assert!(!p.is_match("/axb"));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        assert_eq!(
            PathPattern::new("/[ab").unwrap_err(),
            PatternError::UnclosedClass(1)
        );
        assert_eq!(
            PathPattern::new("/a\\").unwrap_err(),
            PatternError::TrailingEscape
        );
    }

    #[test]
    fn many_stars_on_a_long_path_stay_fast() {
        // Without the per-star failure bound this is exponential.
        let p = PathPattern::new("*a*a*a*a*a*a*a*a*b").unwrap();
        let path = "a".repeat(16 * 1024);
        assert!(!p.is_match(&path));
        let path = format!("{}b", "a".repeat(16 * 1024));
        assert!(p.is_match(&path));
    }
}

#[cfg(test)]
mod fuzz;
