//! Policy selectors: the jq-inspired paths that pick a value out of an invocation's `args`.

use std::borrow::Cow;
use std::fmt;

use ipld_core::ipld::Ipld;

use crate::did::truncate;
use crate::error::Error;

/// Most segments a selector may have (keeps evaluation and recursion bounded).
const MAX_SEGMENTS: usize = 64;

/// A parsed selector such as `.`, `.to[0]`, `.["content-type"]`, `.items[].id`, `.tags[1:3]`
/// or `.bcc?`.
///
/// Supported forms (UCAN 1.0 delegation spec, "Selectors"):
///
/// | form | meaning |
/// |------|---------|
/// | `.` | identity: the whole value |
/// | `.name` | map field (letters, digits, `_`, `-`; not starting with a digit or `-`) |
/// | `."any key"`, `.["any key"]` (or `["any key"]` after another segment) | map field by arbitrary key (`\"` and `\\` escapes) |
/// | `[2]`, `[-1]` | list element (negative: from the end), or byte of a bytes value (as an integer) |
/// | `[2:5]`, `[2:]`, `[:-1]` | slice of a list, bytes or string (clamped like jq, end excluded) |
/// | `[]` | every element of a list or every value of a map; the rest of the selector is applied to each and the results are collected in a list |
/// | `?` after any segment | optional: if that segment fails, the whole selection is `null` |
///
/// Semantics: a missing map key selects `null`; applying a segment to a value of the wrong
/// kind, or an index out of bounds, fails the selection unless the segment is optional. A
/// selector must start with `.`; `..` (recursive descent) is refused. Indexing into a map is
/// not supported (it fails like any other wrong-kind access).
#[derive(Clone, PartialEq)]
pub struct Selector {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq)]
struct Segment {
    step: Step,
    optional: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Iterate,
}

/// Why a selector could not be resolved against a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved(pub String);

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Selector {
    /// Parses a selector.
    ///
    /// ```
    /// use zero_auth::policy::Selector;
    /// use zero_auth::Ipld;
    /// let sel = Selector::parse(".to[-1]")?;
    /// let args = Ipld::Map([("to".to_string(), Ipld::List(vec![
    ///     Ipld::String("bob".into()), Ipld::String("carol".into()),
    /// ]))].into());
    /// assert_eq!(sel.select(&args).unwrap().into_owned(), Ipld::String("carol".into()));
    /// assert!(Selector::parse("to").is_err());
    /// # Ok::<(), zero_auth::Error>(())
    /// ```
    pub fn parse(source: &str) -> Result<Self, Error> {
        let segments = Parser::new(source).parse()?;
        Ok(Selector {
            source: source.to_owned(),
            segments,
        })
    }

    /// The selector `.name` of one map field; `name` must be a plain identifier (letters,
    /// digits, `_`, `-`, not starting with a digit or `-`) so that the text parses back to it.
    pub(crate) fn field(name: &str) -> Self {
        Selector {
            source: format!(".{name}"),
            segments: vec![Segment {
                step: Step::Field(name.to_owned()),
                optional: false,
            }],
        }
    }

    /// The selector's text, exactly as parsed.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether this is the identity selector (selects the whole value).
    pub fn is_identity(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether this selector picks exactly the top-level map field `name` (`.name`,
    /// `.["name"]`, optional or not).
    pub fn is_field(&self, name: &str) -> bool {
        matches!(self.segments.as_slice(), [Segment { step: Step::Field(f), .. }] if f == name)
    }

    /// Whether this selector may select from the top-level map field `name`: it starts with
    /// that field, or is the identity, or starts by indexing or iterating the whole value.
    /// Conservative: `false` only when the selected value surely does not depend on `name`.
    pub fn may_reach_field(&self, name: &str) -> bool {
        match self.segments.first() {
            None => true,
            Some(Segment {
                step: Step::Field(f),
                ..
            }) => f == name,
            Some(_) => true,
        }
    }

    /// Applies the selector to a value.
    pub fn select<'a>(&self, value: &'a Ipld) -> Result<Cow<'a, Ipld>, Unresolved> {
        select_from(&self.segments, value).map_err(|why| {
            Unresolved(format!(
                "selector `{}` cannot be resolved: {why}",
                truncate(&self.source, 80)
            ))
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({:?})", self.source)
    }
}

fn kind_name(v: &Ipld) -> &'static str {
    match v {
        Ipld::Null => "null",
        Ipld::Bool(_) => "a boolean",
        Ipld::Integer(_) => "an integer",
        Ipld::Float(_) => "a float",
        Ipld::String(_) => "a string",
        Ipld::Bytes(_) => "bytes",
        Ipld::List(_) => "a list",
        Ipld::Map(_) => "a map",
        Ipld::Link(_) => "a link",
    }
}

fn select_from<'a>(segments: &[Segment], root: &'a Ipld) -> Result<Cow<'a, Ipld>, String> {
    let mut cur: Cow<'a, Ipld> = Cow::Borrowed(root);
    for (i, seg) in segments.iter().enumerate() {
        let rest = segments.get(i + 1..).unwrap_or_default();
        let outcome = match cur {
            Cow::Borrowed(v) => apply(&seg.step, v, rest),
            Cow::Owned(ref v) => {
                apply(&seg.step, v, rest).map(|(next, done)| (Cow::Owned(next.into_owned()), done))
            }
        };
        match outcome {
            Ok((next, done)) => {
                if done {
                    return Ok(next);
                }
                cur = next;
            }
            Err(_) if seg.optional => return Ok(Cow::Owned(Ipld::Null)),
            Err(why) => return Err(why),
        }
    }
    Ok(cur)
}

/// Applies one step. Returns the new value and whether the rest of the selector was consumed
/// (the iterator applies the rest to each element itself).
fn apply<'a>(step: &Step, v: &'a Ipld, rest: &[Segment]) -> Result<(Cow<'a, Ipld>, bool), String> {
    match step {
        Step::Field(name) => match v {
            Ipld::Map(m) => Ok((
                m.get(name).map_or(Cow::Owned(Ipld::Null), Cow::Borrowed),
                false,
            )),
            other => Err(format!(
                "cannot select field `{}` on {}",
                truncate(name, 40),
                kind_name(other)
            )),
        },
        Step::Index(i) => {
            let len = match v {
                Ipld::List(l) => l.len(),
                Ipld::Bytes(b) => b.len(),
                other => return Err(format!("cannot index {} with [{i}]", kind_name(other))),
            };
            let at = resolve_index(*i, len)
                .ok_or_else(|| format!("index [{i}] is out of bounds (length {len})"))?;
            match v {
                Ipld::List(l) => l
                    .get(at)
                    .map(|x| (Cow::Borrowed(x), false))
                    .ok_or_else(|| format!("index [{i}] is out of bounds")),
                Ipld::Bytes(b) => b
                    .get(at)
                    .map(|x| (Cow::Owned(Ipld::Integer(i128::from(*x))), false))
                    .ok_or_else(|| format!("index [{i}] is out of bounds")),
                other => Err(format!("cannot index {}", kind_name(other))),
            }
        }
        Step::Slice(start, end) => match v {
            Ipld::List(l) => {
                let (s, e) = slice_bounds(*start, *end, l.len());
                Ok((
                    Cow::Owned(Ipld::List(l.get(s..e).unwrap_or_default().to_vec())),
                    false,
                ))
            }
            Ipld::Bytes(b) => {
                let (s, e) = slice_bounds(*start, *end, b.len());
                Ok((
                    Cow::Owned(Ipld::Bytes(b.get(s..e).unwrap_or_default().to_vec())),
                    false,
                ))
            }
            Ipld::String(text) => {
                let count = text.chars().count();
                let (s, e) = slice_bounds(*start, *end, count);
                let sub: String = text.chars().skip(s).take(e.saturating_sub(s)).collect();
                Ok((Cow::Owned(Ipld::String(sub)), false))
            }
            other => Err(format!("cannot slice {}", kind_name(other))),
        },
        Step::Iterate => {
            let children: Vec<&Ipld> = match v {
                Ipld::List(l) => l.iter().collect(),
                Ipld::Map(m) => m.values().collect(),
                other => return Err(format!("cannot iterate over {}", kind_name(other))),
            };
            let mut out = Vec::with_capacity(children.len());
            for child in children {
                out.push(select_from(rest, child)?.into_owned());
            }
            Ok((Cow::Owned(Ipld::List(out)), true))
        }
    }
}

/// Resolves a possibly negative index against a length.
fn resolve_index(i: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let at = if i < 0 { len.checked_add(i)? } else { i };
    if (0..len).contains(&at) {
        usize::try_from(at).ok()
    } else {
        None
    }
}

/// jq-style slice bounds: negative from the end, clamped to `0..=len`, empty when reversed.
fn slice_bounds(start: Option<i64>, end: Option<i64>, len: usize) -> (usize, usize) {
    let clamp = |i: i64| -> usize {
        let len_i = i64::try_from(len).unwrap_or(i64::MAX);
        let at = if i < 0 { len_i.saturating_add(i) } else { i };
        usize::try_from(at.clamp(0, len_i)).unwrap_or(0)
    };
    let s = start.map_or(0, clamp);
    let e = end.map_or(len, clamp);
    if s > e { (0, 0) } else { (s, e) }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0 }
    }

    fn err(&self, why: &str) -> Error {
        Error::malformed(
            None,
            format!(
                "selector `{}` is invalid at byte {}: {why}",
                truncate(self.src, 80),
                self.pos
            ),
        )
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|s| s.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat_optional(&mut self) -> bool {
        let mut optional = false;
        while self.peek() == Some('?') {
            self.bump();
            optional = true;
        }
        optional
    }

    fn parse(mut self) -> Result<Vec<Segment>, Error> {
        if self.peek() != Some('.') {
            return Err(self.err("a selector must start with `.`"));
        }
        let mut segments = Vec::new();
        while let Some(c) = self.peek() {
            let step = match c {
                '.' => {
                    self.bump();
                    match self.peek() {
                        // `.` alone, or a trailing `.`: identity, nothing to do.
                        None => break,
                        Some('?') => {
                            self.eat_optional();
                            continue;
                        }
                        Some('.') => {
                            return Err(self.err("`..` (recursive descent) is not supported"));
                        }
                        Some('[') => {
                            self.bump();
                            self.bracket()?
                        }
                        Some('"') => Step::Field(self.quoted()?),
                        Some(c) if c.is_alphabetic() || c == '_' => Step::Field(self.ident()),
                        Some(c) => {
                            return Err(self.err(&format!("unexpected character `{c}` after `.`")));
                        }
                    }
                }
                '[' => {
                    self.bump();
                    self.bracket()?
                }
                c => {
                    return Err(
                        self.err(&format!("unexpected character `{c}`, expected `.` or `[`"))
                    );
                }
            };
            let optional = self.eat_optional();
            segments.push(Segment { step, optional });
            if segments.len() > MAX_SEGMENTS {
                return Err(self.err(&format!("more than {MAX_SEGMENTS} segments")));
            }
        }
        Ok(segments)
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                self.bump();
            } else {
                break;
            }
        }
        self.src.get(start..self.pos).unwrap_or_default().to_owned()
    }

    /// A double-quoted key; the opening quote is the next character.
    fn quoted(&mut self) -> Result<String, Error> {
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err("unterminated quoted field name")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some(c @ ('"' | '\\')) => out.push(c),
                    _ => return Err(self.err("only `\\\"` and `\\\\` escapes are supported")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// The inside of `[...]`; the `[` has been consumed.
    fn bracket(&mut self) -> Result<Step, Error> {
        match self.peek() {
            Some(']') => {
                self.bump();
                Ok(Step::Iterate)
            }
            Some('"') => {
                let key = self.quoted()?;
                if self.bump() != Some(']') {
                    return Err(self.err("expected `]` after the quoted field name"));
                }
                Ok(Step::Field(key))
            }
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c == ']' {
                        break;
                    }
                    self.bump();
                }
                let inner = self.src.get(start..self.pos).unwrap_or_default();
                if self.bump() != Some(']') {
                    return Err(self.err("unterminated `[`"));
                }
                if let Some((a, b)) = inner.split_once(':') {
                    let a = self.int_or_empty(a)?;
                    let b = self.int_or_empty(b)?;
                    if a.is_none() && b.is_none() {
                        return Err(
                            self.err("a slice needs a start or an end (`[:]` is not valid)")
                        );
                    }
                    Ok(Step::Slice(a, b))
                } else {
                    match self.int_or_empty(inner)? {
                        Some(i) => Ok(Step::Index(i)),
                        None => Err(self.err("empty index")),
                    }
                }
            }
        }
    }

    fn int_or_empty(&self, text: &str) -> Result<Option<i64>, Error> {
        if text.is_empty() {
            return Ok(None);
        }
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(&format!("`{}` is not an integer index", truncate(text, 40))));
        }
        text.parse::<i64>()
            .map(Some)
            .map_err(|_| self.err("index out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Ipld {
        Ipld::String(text.into())
    }

    fn args() -> Ipld {
        Ipld::Map(
            [
                ("from".to_string(), s("alice@example.com")),
                (
                    "to".to_string(),
                    Ipld::List(vec![
                        s("bob@example.com"),
                        s("carol@not.example.com"),
                        s("dan@example.com"),
                    ]),
                ),
                ("title".to_string(), s("Meeting")),
                ("content-type".to_string(), s("text/plain")),
                ("raw".to_string(), Ipld::Bytes(vec![0xd6, 0xa9, 0xc1, 0x8c])),
                (
                    "items".to_string(),
                    Ipld::List(vec![
                        Ipld::Map([("id".to_string(), Ipld::Integer(1))].into()),
                        Ipld::Map([("id".to_string(), Ipld::Integer(2))].into()),
                    ]),
                ),
            ]
            .into(),
        )
    }

    fn sel(text: &str) -> Result<Ipld, Unresolved> {
        let args = args();
        Selector::parse(text)
            .unwrap()
            .select(&args)
            .map(Cow::into_owned)
    }

    #[test]
    fn spec_examples() {
        assert_eq!(sel(".").unwrap(), args());
        assert_eq!(sel(".title").unwrap(), s("Meeting"));
        assert_eq!(sel(".to[1]").unwrap(), s("carol@not.example.com"));
        assert_eq!(sel(".to[-1]").unwrap(), s("dan@example.com"));
        assert_eq!(sel(".to[99]?").unwrap(), Ipld::Null);
        assert!(sel(".to[99]").is_err());
        assert_eq!(sel(".raw[3]").unwrap(), Ipld::Integer(140));
        assert_eq!(sel(".raw.[-4]").unwrap(), Ipld::Integer(0xd6));
    }

    #[test]
    fn fields_and_quoting() {
        assert_eq!(sel(".[\"title\"]").unwrap(), s("Meeting"));
        assert!(
            Selector::parse("[\"title\"]").is_err(),
            "must start with a dot"
        );
        assert_eq!(sel(".\"content-type\"").unwrap(), s("text/plain"));
        assert_eq!(sel(".content-type").unwrap(), s("text/plain"));
        // Missing key selects null; going further without `?` fails.
        assert_eq!(sel(".bcc").unwrap(), Ipld::Null);
        assert_eq!(sel(".bcc?").unwrap(), Ipld::Null);
        assert!(sel(".bcc.x").is_err());
        assert_eq!(sel(".bcc.x?").unwrap(), Ipld::Null);
        // Field on a list fails unless optional.
        assert!(sel(".to.x").is_err());
        assert_eq!(sel(".to.x???").unwrap(), Ipld::Null);
        // An optional failure makes the whole selection null.
        assert_eq!(sel(".to.x?.y").unwrap(), Ipld::Null);
    }

    #[test]
    fn slices_and_iterators() {
        assert_eq!(
            sel(".to[1:]").unwrap(),
            Ipld::List(vec![s("carol@not.example.com"), s("dan@example.com")])
        );
        assert_eq!(
            sel(".to[:-2]").unwrap(),
            Ipld::List(vec![s("bob@example.com")])
        );
        assert_eq!(sel(".to[2:1]").unwrap(), Ipld::List(vec![]));
        assert_eq!(sel(".to[-100:100]").unwrap(), sel(".to").unwrap());
        assert_eq!(sel(".title[1:4]").unwrap(), s("eet"));
        assert_eq!(sel(".raw[1:2]").unwrap(), Ipld::Bytes(vec![0xa9]));
        assert_eq!(
            sel(".items[].id").unwrap(),
            Ipld::List(vec![Ipld::Integer(1), Ipld::Integer(2)])
        );
        assert_eq!(sel(".to[]").unwrap(), sel(".to").unwrap());
        assert!(sel(".title[]").is_err());
        assert_eq!(sel(".title[]?").unwrap(), Ipld::Null);
        assert!(sel(".items[].id.x").is_err());
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "a",
            "..",
            ".a..b",
            ".[",
            ".[1",
            ".[x]",
            ".[1.5]",
            ".[:]",
            ".[+1]",
            ".\"open",
            ".\"bad\\n\"",
            ".a b",
            ".[]x",
            ".1a",
            ".[\"a\"x]",
        ] {
            let err = Selector::parse(bad).unwrap_err();
            assert_eq!(err.name(), "Malformed", "{bad:?}");
        }
        let deep = ".a".repeat(MAX_SEGMENTS + 1);
        assert!(Selector::parse(&deep).is_err());
        for ok in [
            ".",
            ".?",
            ".a.",
            ".a?",
            ".[0]",
            ".a[0][1:2][]",
            ".[\"a\\\"b\"]",
            ".é_1",
        ] {
            assert!(Selector::parse(ok).is_ok(), "{ok:?}");
        }
    }
}
