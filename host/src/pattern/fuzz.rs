//! Property tests standing in for a fuzzer (cargo-fuzz needs nightly): arbitrary patterns
//! and paths, checked against a plain backtracking matcher. Each property runs
//! proptest's default 256 cases; for a longer run:
//! `PROPTEST_CASES=100000 cargo test -p wshost --lib fuzz`.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Patterns dense in metacharacters, over a small alphabet so they often match.
const PATTERN: &str = "([ab/*?!^\\-\\]\\\\]|\\[){0,12}";
const PATH: &str = "[ab/*?\\-\\]\\[]{0,12}";

/// Makes every character of `path` literal.
fn escape(path: &str) -> String {
    let mut escaped = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The obvious exponential matcher: every star tries every end, shortest first.
fn reference(tokens: &[Token], text: &[char], spans: &mut Vec<(usize, usize)>) -> bool {
    fn go(t: &[Token], s: usize, text: &[char], spans: &mut Vec<(usize, usize)>) -> bool {
        match t.split_first() {
            None => s == text.len(),
            Some((Token::Star, rest)) => (s..=text.len()).any(|end| {
                spans.push((s, end));
                go(rest, end, text, spans) || spans.pop().is_none()
            }),
            Some((token, rest)) => {
                s < text.len() && token_matches(token, text[s]) && go(rest, s + 1, text, spans)
            }
        }
    }
    go(tokens, 0, text, spans)
}

proptest! {
    #[test]
    fn compiling_never_panics(source in any::<String>(), dense in PATTERN) {
        for source in [source, dense] {
            if let Ok(pattern) = PathPattern::new(&source) {
                prop_assert_eq!(pattern.as_str(), source.as_str());
            }
        }
    }

    #[test]
    fn an_escaped_path_matches_exactly_itself(path in any::<String>(), extra in any::<char>()) {
        let pattern = PathPattern::new(&escape(&path)).expect("escaped paths compile");
        prop_assert_eq!(pattern.captures(&path), Some(Vec::new()));
        let (longer, earlier) = (format!("{path}{extra}"), format!("{extra}{path}"));
        prop_assert!(!pattern.is_match(&longer));
        prop_assert!(!pattern.is_match(&earlier));
        let mut shorter = path.clone();
        if shorter.pop().is_some() {
            prop_assert!(!pattern.is_match(&shorter));
        }
    }

    #[test]
    fn a_path_without_metacharacters_is_its_own_pattern(path in "[^*?\\[\\\\]{0,24}") {
        let pattern = PathPattern::new(&path).expect("plain paths compile");
        prop_assert_eq!(pattern.captures(&path), Some(Vec::new()));
    }

    #[test]
    fn a_lone_star_matches_and_captures_every_path(path in any::<String>()) {
        let pattern = PathPattern::new("*").expect("`*` compiles");
        prop_assert_eq!(pattern.captures(&path), Some(vec![path]));
    }

    #[test]
    fn matching_agrees_with_plain_backtracking(source in PATTERN, path in PATH) {
        let Ok(pattern) = PathPattern::new(&source) else {
            return Ok(());
        };
        let text: Vec<char> = path.chars().collect();
        let mut spans = Vec::new();
        let expected = reference(&pattern.tokens, &text, &mut spans).then(|| {
            spans.iter().map(|&(s, e)| text[s..e].iter().collect::<String>()).collect::<Vec<_>>()
        });
        let captures = pattern.captures(&path);
        if let Some(captures) = &captures {
            let stars = pattern.tokens.iter().filter(|t| **t == Token::Star).count();
            prop_assert_eq!(captures.len(), stars);
        }
        prop_assert_eq!(captures, expected);
    }

    #[test]
    fn captures_fill_the_stars_back_into_the_path(
        parts in vec(("\\PC{1,4}", "\\PC{0,4}"), 1..5),
        tail in "\\PC{0,4}",
    ) {
        // A star after each non-empty literal (`**` is one star): the path puts
        // `fill` where each star is.
        let mut source = String::new();
        let mut path = String::new();
        for (literal, fill) in &parts {
            source.push_str(&escape(literal));
            source.push('*');
            path.push_str(literal);
            path.push_str(fill);
        }
        source.push_str(&escape(&tail));
        path.push_str(&tail);
        let pattern = PathPattern::new(&source).expect("escaped pieces compile");
        let captures = pattern.captures(&path);
        prop_assert!(captures.is_some(), "{source:?} must match {path:?}");
        let captures = captures.unwrap_or_default();
        prop_assert_eq!(captures.len(), parts.len());
        let mut rebuilt = String::new();
        for ((literal, _), captured) in parts.iter().zip(&captures) {
            rebuilt.push_str(literal);
            rebuilt.push_str(captured);
        }
        rebuilt.push_str(&tail);
        prop_assert_eq!(rebuilt, path);
    }
}
