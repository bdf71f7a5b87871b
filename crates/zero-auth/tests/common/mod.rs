//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use zero_auth::{Command, Delegation, InvocationToken, Ipld, Keypair, Policy};

/// The UCAN 1.0.0 conformance fixtures (`shared/fixtures/ucan-1.0.0` beside the project root;
/// CI has the same layout).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/ucan-1.0.0"
    ))
}

/// A fixed evaluation time (2025-06-15).
pub const NOW: u64 = 1_750_000_000;

pub fn key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

pub fn cmd(s: &str) -> Command {
    Command::parse(s).unwrap()
}

pub fn s(text: &str) -> Ipld {
    Ipld::String(text.to_owned())
}

pub fn l(items: Vec<Ipld>) -> Ipld {
    Ipld::List(items)
}

pub fn policy(statements: Vec<Ipld>) -> Policy {
    Policy::from_ipld(&Ipld::List(statements)).unwrap()
}

pub fn map(entries: &[(&str, Ipld)]) -> BTreeMap<String, Ipld> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A JSON parser for the fixtures that also accepts the one known defect of `policy.json`: an
/// object written directly inside an object, without a key. Its entries are merged into the
/// enclosing object (the evident intent), and each repair is recorded with its path so the
/// test can check that exactly the known case was repaired. Numbers without `.`, `e` or `E`
/// become IPLD integers, others floats.
pub struct LenientJson<'a> {
    text: &'a [u8],
    pos: usize,
    path: Vec<String>,
    /// The paths of the objects into which a key-less object was merged.
    pub repairs: Vec<String>,
}

impl<'a> LenientJson<'a> {
    pub fn parse(text: &'a str) -> Result<(Ipld, Vec<String>), String> {
        let mut p = LenientJson {
            text: text.as_bytes(),
            pos: 0,
            path: Vec::new(),
            repairs: Vec::new(),
        };
        let value = p.value()?;
        p.ws();
        if p.pos != p.text.len() {
            return Err(p.err("trailing data"));
        }
        Ok((value, p.repairs))
    }

    fn err(&self, what: &str) -> String {
        format!("{what} at byte {}", self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", b as char)))
        }
    }

    fn value(&mut self) -> Result<Ipld, String> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Ipld::String),
            Some(b't') => self.literal("true", Ipld::Bool(true)),
            Some(b'f') => self.literal("false", Ipld::Bool(false)),
            Some(b'n') => self.literal("null", Ipld::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Ipld) -> Result<Ipld, String> {
        if self.text.get(self.pos..self.pos + word.len()) == Some(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err("bad literal"))
        }
    }

    fn number(&mut self) -> Result<Ipld, String> {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.text[start..self.pos]).map_err(|e| e.to_string())?;
        if text.contains(['.', 'e', 'E']) {
            text.parse::<f64>()
                .map(Ipld::Float)
                .map_err(|e| e.to_string())
        } else {
            text.parse::<i128>()
                .map(Ipld::Integer)
                .map_err(|e| e.to_string())
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = self.peek().ok_or_else(|| self.err("unterminated string"))?;
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.peek().ok_or_else(|| self.err("bad escape"))?;
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = std::str::from_utf8(&self.text[self.pos..self.pos + 4])
                                .map_err(|e| e.to_string())?;
                            self.pos += 4;
                            char::from_u32(u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?)
                                .ok_or_else(|| self.err("unsupported \\u escape"))?
                        }
                        _ => return Err(self.err("bad escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    fn array(&mut self) -> Result<Ipld, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Ipld::List(items));
        }
        loop {
            self.path.push(format!("[{}]", items.len()));
            items.push(self.value()?);
            self.path.pop();
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Ipld::List(items));
                }
                _ => return Err(self.err("expected `,` or `]`")),
            }
        }
    }

    fn object(&mut self) -> Result<Ipld, String> {
        self.expect(b'{')?;
        let mut entries = BTreeMap::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Ipld::Map(entries));
        }
        loop {
            self.ws();
            if self.peek() == Some(b'{') {
                // The known defect: an object without a key. Merge its entries.
                self.repairs.push(self.path.join("."));
                match self.object()? {
                    Ipld::Map(inner) => entries.extend(inner),
                    _ => unreachable!("object() returns a map"),
                }
            } else {
                let key = self.string()?;
                self.expect(b':')?;
                self.path.push(key.clone());
                let value = self.value()?;
                self.path.pop();
                entries.insert(key, value);
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Ipld::Map(entries));
                }
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
    }
}

/// Builds a signed delegation with a fixed nonce.
pub fn delegate(
    issuer: &Keypair,
    audience: &Keypair,
    subject: Option<&Keypair>,
    command: &str,
    pol: Policy,
    exp: Option<u64>,
) -> Delegation {
    let mut b = Delegation::builder(audience.did().clone(), cmd(command), exp).policy(pol);
    b = match subject {
        Some(sub) => b.subject(sub.did().clone()),
        None => b.powerline(),
    };
    b.sign(issuer).unwrap()
}

/// Builds a signed invocation.
pub fn invoke(
    invoker: &Keypair,
    subject: &Keypair,
    command: &str,
    args: &[(&str, Ipld)],
    proofs: &[&Delegation],
    exp: Option<u64>,
) -> InvocationToken {
    InvocationToken::builder(subject.did().clone(), cmd(command), exp)
        .args(map(args))
        .proofs(proofs.iter().map(|d| *d.cid()).collect())
        .sign(invoker)
        .unwrap()
}
