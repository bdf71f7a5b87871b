//! `like` patterns (`*` any run, `\*` a literal star, `\\` a literal backslash) against a
//! reference matcher written from the UCAN policy spec: every pattern compiles, matching never
//! panics, and the result agrees with the reference on every pattern and text.
#![no_main]

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use zero_auth::policy::Pattern;

/// A pattern piece of the reference: a literal character or a star.
#[derive(Clone, Copy, PartialEq)]
enum Piece {
    Lit(char),
    Star,
}

/// Reads a pattern's text into pieces, per the spec: `\*` and `\\` are escapes, any other
/// backslash is literal.
fn pieces(source: &str) -> Vec<Piece> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if matches!(chars.get(i + 1), Some('*' | '\\')) => {
                out.push(Piece::Lit(chars[i + 1]));
                i += 2;
            }
            '*' => {
                out.push(Piece::Star);
                i += 1;
            }
            c => {
                out.push(Piece::Lit(c));
                i += 1;
            }
        }
    }
    out
}

/// Whole-string match by dynamic programming over (pattern, text) positions.
fn reference(pattern: &[Piece], text: &[char]) -> bool {
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for piece in pattern {
        let mut next = vec![false; text.len() + 1];
        for j in 0..=text.len() {
            next[j] = match piece {
                Piece::Star => row[j] || (j > 0 && next[j - 1]),
                Piece::Lit(c) => j > 0 && row[j - 1] && text[j - 1] == *c,
            };
        }
        row = next;
    }
    row[text.len()]
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(source), Ok(text)) = (String::arbitrary(&mut u), String::arbitrary(&mut u)) else {
        return;
    };
    // Bound the reference's quadratic work; the matcher itself has no such bound.
    if source.len() > 256 || text.len() > 256 {
        return;
    }
    let pattern = Pattern::new(&source);
    assert_eq!(pattern.as_str(), source);
    let chars: Vec<char> = text.chars().collect();
    assert_eq!(
        pattern.matches(&text),
        reference(&pieces(&source), &chars),
        "pattern {source:?} on {text:?}"
    );
});
