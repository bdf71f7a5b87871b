//! `like` patterns: `*` matches any run of characters (including none), `\*` is a literal `*`.

use std::fmt;

/// A `like` pattern.
///
/// `*` is the only special character and matches zero or more characters; `\*` matches a
/// literal `*` and `\\` a literal backslash. Any other backslash is literal. Matching is on
/// whole strings (Unicode scalar values) and is case- and whitespace-sensitive.
///
/// ```
/// use zero_auth::policy::Pattern;
/// let p = Pattern::new(r"Alice\*, Bob*, Carol.");
/// assert!(p.matches("Alice*, Bob, Dan, Erin, Carol."));
/// assert!(!p.matches("Alice Cooper, Bob, Carol."));
/// ```
#[derive(Clone, PartialEq)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Token {
    Literal(char),
    Star,
}

impl Pattern {
    /// Compiles a pattern (every string is a valid pattern).
    pub fn new(source: &str) -> Self {
        let mut tokens = Vec::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&next @ ('*' | '\\')) => {
                        chars.next();
                        tokens.push(Token::Literal(next));
                    }
                    _ => tokens.push(Token::Literal('\\')),
                },
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Pattern {
            source: source.to_owned(),
            tokens,
        }
    }

    /// The pattern's text, exactly as given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `text` matches the pattern.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut t, mut p) = (0usize, 0usize);
        // Position in the pattern just after the last `*`, and the text position it resumes at.
        let mut backtrack: Option<(usize, usize)> = None;
        while let Some(&c) = text.get(t) {
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    p += 1;
                    backtrack = Some((p, t));
                }
                Some(Token::Literal(l)) if *l == c => {
                    p += 1;
                    t += 1;
                }
                _ => match backtrack {
                    Some((bp, bt)) => {
                        p = bp;
                        t = bt + 1;
                        backtrack = Some((bp, bt + 1));
                    }
                    None => return false,
                },
            }
        }
        while self.tokens.get(p) == Some(&Token::Star) {
            p += 1;
        }
        p == self.tokens.len()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_cases() {
        let p = Pattern::new(r"Alice\*, Bob*, Carol.");
        for ok in [
            "Alice*, Bob, Carol.",
            "Alice*, Bob, Dan, Erin, Carol.",
            "Alice*, Bob  , Carol.",
            "Alice*, Bob*, Carol.",
        ] {
            assert!(p.matches(ok), "{ok}");
        }
        for bad in [
            "Alice*, Bob, Carol",
            "Alice*, Bob*, Carol!",
            "Alice, Bob, Carol.",
            "Alice Cooper, Bob, Carol.",
            " Alice*, Bob, Carol. ",
        ] {
            assert!(!p.matches(bad), "{bad}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("*").matches("anything"));
        assert!(Pattern::new("").matches(""));
        assert!(!Pattern::new("").matches("x"));
        assert!(Pattern::new("*@example.com").matches("bob@example.com"));
        assert!(!Pattern::new("*@example.com").matches("carol@elsewhere.example.co"));
        assert!(Pattern::new("/data/*").matches("/data/a/b"));
        assert!(!Pattern::new("/data/*").matches("/datax"));
        assert!(Pattern::new("a*b*c").matches("aXbYbZc"));
        assert!(!Pattern::new("a*b*c").matches("aXcYb"));
        assert!(Pattern::new("**a**").matches("xax"));
        assert!(Pattern::new(r"\\*").matches(r"\anything"));
        assert!(Pattern::new(r"a\b").matches(r"a\b"));
        assert!(Pattern::new("é*ü").matches("éaü"));
    }
}
