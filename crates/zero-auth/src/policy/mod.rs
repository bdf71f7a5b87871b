//! The UCAN 1.0 policy language.
//!
//! A delegation's `pol` field is a list of statements, all of which must hold on the `args` of
//! an eventual invocation. The wire form is IPLD lists such as `["==", ".a", 1]`:
//!
//! | statement | holds when |
//! |-----------|------------|
//! | `["==", sel, value]`, `["!=", sel, value]` | the selected value is (not) deeply equal to `value`; numbers compare by value (`1 == 1.0`) |
//! | `[">", sel, n]`, `[">=", …]`, `["<", …]`, `["<=", …]` | the selected value is a number in that order to `n` (a non-number gives false) |
//! | `["like", sel, pattern]` | the selected value is a string matching the [`Pattern`] (a non-string gives false) |
//! | `["not", stmt]` | `stmt` is false |
//! | `["and", [stmt…]]`, `["or", [stmt…]]` | all / at least one hold; an empty list holds for both (as the spec says) |
//! | `["all", sel, stmt]`, `["any", sel, stmt]` | `stmt` holds for every / some element of the selected list or value of the selected map; `all` of an empty collection holds, `any` does not; a non-collection gives false. A list of statements (a policy) is also accepted in place of `stmt` |
//!
//! Selectors are described in [`Selector`].
//!
//! **Unresolvable selectors fail closed.** When a selector cannot be resolved (for example
//! `.a.b` where `.a` is missing or not a map), the statement is *undetermined*, and so is a
//! `not` over it: evaluation follows three-valued (Kleene) logic, and only a policy that is
//! definitely true lets the invocation through. A `not` can therefore never turn a missing
//! value into a permission. (A missing map key itself selects `null`, as the spec requires, so
//! `["!=", ".role", "admin"]` holds when `role` is absent.)
//!
//! # Hierarchical paths
//!
//! Resources that nest (files in directories) are checked with [`Policy::check_hierarchical`],
//! which reads one top-level argument (for files, `.path`) as a path in a tree: a capability on
//! a directory covers everything under it, and an exclusion of a directory excludes everything
//! under it. For statements on that argument (other statements are unchanged):
//!
//! | statement | holds when the path `P` |
//! |-----------|-------------------------|
//! | `["==", ".path", D]` | is `D` or lies under `D` (`/a/b` is under `/a` and `/`, not under `/ab`) |
//! | `["!=", ".path", D]` | is neither `D` nor under `D`: the negation of `==` |
//! | `["like", ".path", G]` | or one of its ancestor directories matches `G` |
//!
//! `not`, `and` and `or` compose these as usual (three-valued, so an unresolvable selector
//! still fails closed). Quantifier bodies (`all`, `any`) select from elements, not from the
//! arguments, so they are evaluated plainly. Because coverage is decided per statement, a
//! negative statement can never be satisfied by evaluating it at an ancestor: `["!=", ".path",
//! "/secret"]` refuses `/secret` and everything under it, while it allows `/public/x`.

mod glob;
mod selector;

use std::cmp::Ordering;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ipld_core::ipld::Ipld;

pub use glob::Pattern;
pub use selector::{Selector, Unresolved};

use crate::did::truncate;
use crate::error::Error;

/// Deepest nesting of statements accepted in a policy.
pub const MAX_POLICY_DEPTH: usize = 32;

/// A policy: a list of statements that must all hold.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// One policy statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    /// `["==", selector, value]`: deep equality (numbers by value).
    Equal(Selector, Ipld),
    /// `["!=", selector, value]`: negated deep equality.
    NotEqual(Selector, Ipld),
    /// `[">", selector, number]`.
    GreaterThan(Selector, Number),
    /// `[">=", selector, number]`.
    GreaterOrEqual(Selector, Number),
    /// `["<", selector, number]`.
    LessThan(Selector, Number),
    /// `["<=", selector, number]`.
    LessOrEqual(Selector, Number),
    /// `["like", selector, pattern]`: string glob matching.
    Like(Selector, Pattern),
    /// `["not", statement]`.
    Not(Box<Statement>),
    /// `["and", [statement…]]`.
    And(Vec<Statement>),
    /// `["or", [statement…]]`.
    Or(Vec<Statement>),
    /// `["all", selector, statement]`: universal quantification over a collection.
    All(Selector, Quantified),
    /// `["any", selector, statement]`: existential quantification over a collection.
    Any(Selector, Quantified),
}

/// The body of a quantifier: a single statement (as in the spec's examples and fixtures) or a
/// list of statements that must all hold (as in the spec's grammar). The form is kept so that
/// encoding reproduces the original bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Quantified {
    /// A single statement.
    Statement(Box<Statement>),
    /// A list of statements, all of which must hold.
    Policy(Vec<Statement>),
}

/// A numeric literal of an inequality.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// An integer.
    Integer(i128),
    /// A float.
    Float(f64),
}

/// Why a policy does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The top-level statement that does not hold, as DAG-JSON-like text (truncated).
    pub statement: String,
    /// Why: false for these arguments, or a selector that cannot be resolved.
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.statement, self.reason)
    }
}

impl Policy {
    /// A policy of the given statements.
    pub fn new(statements: Vec<Statement>) -> Self {
        Policy { statements }
    }

    /// The empty policy, which allows any arguments.
    pub fn empty() -> Self {
        Policy::default()
    }

    /// The statements.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// Parses the wire form (an IPLD list of statements), with an error naming the first
    /// malformed statement.
    pub fn from_ipld(ipld: &Ipld) -> Result<Self, Error> {
        let Ipld::List(items) = ipld else {
            return Err(malformed(ipld, "a policy must be a list of statements"));
        };
        let statements = items
            .iter()
            .map(|item| Statement::from_ipld_at(item, 1))
            .collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }

    /// The wire form.
    pub fn to_ipld(&self) -> Ipld {
        Ipld::List(self.statements.iter().map(Statement::to_ipld).collect())
    }

    /// Whether `args` satisfy every statement.
    pub fn matches(&self, args: &Ipld) -> bool {
        self.check(args).is_ok()
    }

    /// Checks `args` against every statement, returning the first that does not hold.
    pub fn check(&self, args: &Ipld) -> Result<(), Mismatch> {
        self.check_in(args, None)
    }

    /// Checks `args` against every statement with the top-level argument `field` read as a
    /// path in a tree (see [Hierarchical paths](self#hierarchical-paths)): `==` on it covers a
    /// directory and everything under it, `!=` excludes them, `like` holds when the path or
    /// one of its ancestors matches.
    ///
    /// ```
    /// use zero_auth::{Ipld, Policy};
    /// let s = |v: &str| Ipld::String(v.into());
    /// let not_secret = Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![
    ///     s("!="), s(".path"), s("/secret"),
    /// ])]))?;
    /// let args = |p: &str| Ipld::Map([("path".to_string(), s(p))].into());
    /// assert!(not_secret.check_hierarchical(&args("/public/x"), "path").is_ok());
    /// assert!(not_secret.check_hierarchical(&args("/secret/x"), "path").is_err());
    /// // The plain check compares strings only: "/secret/x" is not "/secret".
    /// assert!(not_secret.check(&args("/secret/x")).is_ok());
    /// # Ok::<(), zero_auth::Error>(())
    /// ```
    pub fn check_hierarchical(&self, args: &Ipld, field: &str) -> Result<(), Mismatch> {
        self.check_in(args, Some(field))
    }

    fn check_in(&self, args: &Ipld, tree: Option<&str>) -> Result<(), Mismatch> {
        for statement in &self.statements {
            match statement.evaluate_in(args, tree) {
                Truth::True => {}
                Truth::False => {
                    let reason = match tree {
                        Some(field) if statement.mentions(field) => format!(
                            "the statement is false for these arguments (`.{field}` is read as \
                             a path: `==` covers a directory and everything under it, `!=` \
                             excludes a directory and everything under it, `like` holds when \
                             the path or one of its directories matches)"
                        ),
                        _ => "the statement is false for these arguments".into(),
                    };
                    return Err(Mismatch {
                        statement: statement.to_string(),
                        reason,
                    });
                }
                Truth::Unknown(why) => {
                    return Err(Mismatch {
                        statement: statement.to_string(),
                        reason: why,
                    });
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(&self.to_ipld(), 2000))
    }
}

/// Three-valued truth: `Unknown` carries why a selector could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Truth {
    True,
    False,
    Unknown(String),
}

impl Truth {
    fn from_bool(b: bool) -> Self {
        if b { Truth::True } else { Truth::False }
    }

    fn not(self) -> Self {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            unknown => unknown,
        }
    }
}

/// Kleene conjunction over lazily evaluated items: false wins, then unknown.
fn all_of<I: Iterator<Item = Truth>>(items: I) -> Truth {
    let mut unknown = None;
    for t in items {
        match t {
            Truth::True => {}
            Truth::False => return Truth::False,
            Truth::Unknown(why) => {
                unknown.get_or_insert(why);
            }
        }
    }
    unknown.map_or(Truth::True, Truth::Unknown)
}

/// Kleene disjunction over lazily evaluated items: true wins, then unknown.
fn any_of<I: Iterator<Item = Truth>>(items: I) -> Truth {
    let mut unknown = None;
    for t in items {
        match t {
            Truth::True => return Truth::True,
            Truth::False => {}
            Truth::Unknown(why) => {
                unknown.get_or_insert(why);
            }
        }
    }
    unknown.map_or(Truth::False, Truth::Unknown)
}

fn malformed(at: &Ipld, why: &str) -> Error {
    Error::malformed(
        None,
        format!("malformed policy statement {}: {why}", render(at, 200)),
    )
}

fn selector_arg(list: &[Ipld], at: &Ipld) -> Result<Selector, Error> {
    match list.get(1) {
        Some(Ipld::String(s)) => Selector::parse(s).map_err(|e| match e {
            Error::Malformed { reason, .. } => malformed(at, &reason),
            other => other,
        }),
        _ => Err(malformed(
            at,
            "the second element must be a selector string",
        )),
    }
}

impl Statement {
    /// Parses one statement from its wire form.
    pub fn from_ipld(ipld: &Ipld) -> Result<Self, Error> {
        Statement::from_ipld_at(ipld, 1)
    }

    fn from_ipld_at(ipld: &Ipld, depth: usize) -> Result<Self, Error> {
        if depth > MAX_POLICY_DEPTH {
            return Err(malformed(
                ipld,
                &format!("statements are nested more than {MAX_POLICY_DEPTH} deep"),
            ));
        }
        let Ipld::List(list) = ipld else {
            return Err(malformed(ipld, "a statement must be a list"));
        };
        let Some(Ipld::String(op)) = list.first() else {
            return Err(malformed(
                ipld,
                "a statement must start with an operator string",
            ));
        };
        let arity = |n: usize| -> Result<(), Error> {
            if list.len() == n {
                Ok(())
            } else {
                Err(malformed(
                    ipld,
                    &format!(
                        "`{op}` takes {} argument(s), found {}",
                        n - 1,
                        list.len() - 1
                    ),
                ))
            }
        };
        let number = || -> Result<Number, Error> {
            match list.get(2) {
                Some(Ipld::Integer(i)) => Ok(Number::Integer(*i)),
                Some(Ipld::Float(f)) if f.is_finite() => Ok(Number::Float(*f)),
                _ => Err(malformed(ipld, &format!("`{op}` compares with a number"))),
            }
        };
        let nested = |item: Option<&Ipld>| -> Result<Statement, Error> {
            match item {
                Some(inner) => Statement::from_ipld_at(inner, depth + 1),
                None => Err(malformed(ipld, "missing inner statement")),
            }
        };
        let statement_list = |item: Option<&Ipld>| -> Result<Vec<Statement>, Error> {
            match item {
                Some(Ipld::List(items)) => items
                    .iter()
                    .map(|s| Statement::from_ipld_at(s, depth + 1))
                    .collect(),
                _ => Err(malformed(
                    ipld,
                    &format!("`{op}` takes a list of statements"),
                )),
            }
        };
        let statement = match op.as_str() {
            "==" | "!=" => {
                arity(3)?;
                let sel = selector_arg(list, ipld)?;
                let value = list.get(2).cloned().unwrap_or(Ipld::Null);
                if op == "==" {
                    Statement::Equal(sel, value)
                } else {
                    Statement::NotEqual(sel, value)
                }
            }
            ">" | ">=" | "<" | "<=" => {
                arity(3)?;
                let sel = selector_arg(list, ipld)?;
                let n = number()?;
                match op.as_str() {
                    ">" => Statement::GreaterThan(sel, n),
                    ">=" => Statement::GreaterOrEqual(sel, n),
                    "<" => Statement::LessThan(sel, n),
                    _ => Statement::LessOrEqual(sel, n),
                }
            }
            "like" => {
                arity(3)?;
                let sel = selector_arg(list, ipld)?;
                match list.get(2) {
                    Some(Ipld::String(p)) => Statement::Like(sel, Pattern::new(p)),
                    _ => return Err(malformed(ipld, "`like` takes a pattern string")),
                }
            }
            "not" => {
                arity(2)?;
                Statement::Not(Box::new(nested(list.get(1))?))
            }
            "and" | "or" => {
                arity(2)?;
                let items = statement_list(list.get(1))?;
                if op == "and" {
                    Statement::And(items)
                } else {
                    Statement::Or(items)
                }
            }
            "all" | "any" => {
                arity(3)?;
                let sel = selector_arg(list, ipld)?;
                let body = match list.get(2) {
                    // A statement starts with its operator string; otherwise a list of
                    // statements.
                    Some(Ipld::List(items)) if matches!(items.first(), Some(Ipld::String(_))) => {
                        Quantified::Statement(Box::new(nested(list.get(2))?))
                    }
                    Some(Ipld::List(_)) => Quantified::Policy(statement_list(list.get(2))?),
                    _ => {
                        return Err(malformed(
                            ipld,
                            &format!("`{op}` takes a statement as third element"),
                        ));
                    }
                };
                if op == "all" {
                    Statement::All(sel, body)
                } else {
                    Statement::Any(sel, body)
                }
            }
            other => {
                return Err(malformed(
                    ipld,
                    &format!(
                        "unknown operator `{}` (expected one of ==, !=, >, >=, <, <=, like, \
                         not, and, or, all, any)",
                        truncate(other, 20)
                    ),
                ));
            }
        };
        Ok(statement)
    }

    /// The wire form.
    pub fn to_ipld(&self) -> Ipld {
        let op = |s: &str| Ipld::String(s.to_owned());
        let sel = |s: &Selector| Ipld::String(s.as_str().to_owned());
        match self {
            Statement::Equal(s, v) => Ipld::List(vec![op("=="), sel(s), v.clone()]),
            Statement::NotEqual(s, v) => Ipld::List(vec![op("!="), sel(s), v.clone()]),
            Statement::GreaterThan(s, n) => Ipld::List(vec![op(">"), sel(s), n.to_ipld()]),
            Statement::GreaterOrEqual(s, n) => Ipld::List(vec![op(">="), sel(s), n.to_ipld()]),
            Statement::LessThan(s, n) => Ipld::List(vec![op("<"), sel(s), n.to_ipld()]),
            Statement::LessOrEqual(s, n) => Ipld::List(vec![op("<="), sel(s), n.to_ipld()]),
            Statement::Like(s, p) => Ipld::List(vec![
                op("like"),
                sel(s),
                Ipld::String(p.as_str().to_owned()),
            ]),
            Statement::Not(inner) => Ipld::List(vec![op("not"), inner.to_ipld()]),
            Statement::And(items) => Ipld::List(vec![
                op("and"),
                Ipld::List(items.iter().map(Statement::to_ipld).collect()),
            ]),
            Statement::Or(items) => Ipld::List(vec![
                op("or"),
                Ipld::List(items.iter().map(Statement::to_ipld).collect()),
            ]),
            Statement::All(s, body) => Ipld::List(vec![op("all"), sel(s), body.to_ipld()]),
            Statement::Any(s, body) => Ipld::List(vec![op("any"), sel(s), body.to_ipld()]),
        }
    }

    /// Whether the statement holds on `value` (an undetermined statement does not hold).
    pub fn holds(&self, value: &Ipld) -> bool {
        self.evaluate(value) == Truth::True
    }

    /// Whether the statement (outside quantifier bodies) has a selector on `field`.
    fn mentions(&self, field: &str) -> bool {
        self.any_selector(&|s| s.is_field(field))
    }

    /// Whether the statement's value may depend on the top-level argument `field` (see
    /// [`Selector::may_reach_field`]; quantifier bodies are covered by their selector).
    pub fn may_read_field(&self, field: &str) -> bool {
        self.any_selector(&|s| s.may_reach_field(field))
    }

    /// Whether `pred` holds for a selector of the statement (outside quantifier bodies).
    fn any_selector(&self, pred: &dyn Fn(&Selector) -> bool) -> bool {
        match self {
            Statement::Equal(s, _)
            | Statement::NotEqual(s, _)
            | Statement::GreaterThan(s, _)
            | Statement::GreaterOrEqual(s, _)
            | Statement::LessThan(s, _)
            | Statement::LessOrEqual(s, _)
            | Statement::Like(s, _)
            | Statement::All(s, _)
            | Statement::Any(s, _) => pred(s),
            Statement::Not(inner) => inner.any_selector(pred),
            Statement::And(items) | Statement::Or(items) => {
                items.iter().any(|s| s.any_selector(pred))
            }
        }
    }

    fn evaluate(&self, value: &Ipld) -> Truth {
        self.evaluate_in(value, None)
    }

    /// Evaluates on `value`; with `tree`, statements on that top-level field read it as a
    /// path (see [Hierarchical paths](self#hierarchical-paths)).
    fn evaluate_in(&self, value: &Ipld, tree: Option<&str>) -> Truth {
        let select = |s: &Selector, f: &dyn Fn(&Ipld) -> bool| match s.select(value) {
            Ok(v) => Truth::from_bool(f(&v)),
            Err(why) => Truth::Unknown(why.0),
        };
        let on_tree = |s: &Selector| tree.is_some_and(|field| s.is_field(field));
        match self {
            // A directory that is not absolute names no place in the tree: undetermined, so
            // that neither `==` nor `!=` (nor a `not` over them) grants anything by it.
            Statement::Equal(_, Ipld::String(dir)) | Statement::NotEqual(_, Ipld::String(dir))
                if on_tree_statement(self, tree) && !dir.starts_with('/') =>
            {
                Truth::Unknown(format!(
                    "`{dir}` is not an absolute path, so it names no directory (write `/{dir}`)"
                ))
            }
            Statement::Equal(s, Ipld::String(dir)) if on_tree(s) => select(s, &|v| match v {
                Ipld::String(path) => is_within(path, dir),
                _ => false,
            }),
            Statement::NotEqual(s, Ipld::String(dir)) if on_tree(s) => select(s, &|v| match v {
                Ipld::String(path) => !is_within(path, dir),
                _ => true,
            }),
            Statement::Like(s, p) if on_tree(s) => select(
                s,
                &|v| matches!(v, Ipld::String(path) if path_and_ancestors(path).any(|a| p.matches(a))),
            ),
            Statement::Equal(s, lit) => select(s, &|v| ipld_eq(v, lit)),
            Statement::NotEqual(s, lit) => select(s, &|v| !ipld_eq(v, lit)),
            Statement::GreaterThan(s, n) => {
                select(s, &|v| numeric_cmp(v, n) == Some(Ordering::Greater))
            }
            Statement::GreaterOrEqual(s, n) => select(s, &|v| {
                matches!(numeric_cmp(v, n), Some(Ordering::Greater | Ordering::Equal))
            }),
            Statement::LessThan(s, n) => select(s, &|v| numeric_cmp(v, n) == Some(Ordering::Less)),
            Statement::LessOrEqual(s, n) => select(s, &|v| {
                matches!(numeric_cmp(v, n), Some(Ordering::Less | Ordering::Equal))
            }),
            Statement::Like(s, p) => {
                select(s, &|v| matches!(v, Ipld::String(text) if p.matches(text)))
            }
            Statement::Not(inner) => inner.evaluate_in(value, tree).not(),
            Statement::And(items) => all_of(items.iter().map(|s| s.evaluate_in(value, tree))),
            Statement::Or(items) => {
                if items.is_empty() {
                    Truth::True
                } else {
                    any_of(items.iter().map(|s| s.evaluate_in(value, tree)))
                }
            }
            Statement::All(s, body) | Statement::Any(s, body) => {
                let selected = match s.select(value) {
                    Ok(v) => v,
                    Err(why) => return Truth::Unknown(why.0),
                };
                let elements: Vec<&Ipld> = match selected.as_ref() {
                    Ipld::List(l) => l.iter().collect(),
                    Ipld::Map(m) => m.values().collect(),
                    _ => return Truth::False,
                };
                let results = elements.into_iter().map(|e| body.evaluate(e));
                if matches!(self, Statement::All(..)) {
                    all_of(results)
                } else {
                    any_of(results)
                }
            }
        }
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(&self.to_ipld(), 300))
    }
}

impl Quantified {
    fn to_ipld(&self) -> Ipld {
        match self {
            Quantified::Statement(s) => s.to_ipld(),
            Quantified::Policy(items) => Ipld::List(items.iter().map(Statement::to_ipld).collect()),
        }
    }

    fn evaluate(&self, value: &Ipld) -> Truth {
        match self {
            Quantified::Statement(s) => s.evaluate(value),
            Quantified::Policy(items) => all_of(items.iter().map(|s| s.evaluate(value))),
        }
    }
}

impl Number {
    fn to_ipld(self) -> Ipld {
        match self {
            Number::Integer(i) => Ipld::Integer(i),
            Number::Float(f) => Ipld::Float(f),
        }
    }
}

/// Compares an integer with a float exactly (no rounding of large integers).
fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // i128 spans about ±1.7e38; beyond that the float is larger/smaller than any integer.
    if f >= 1.7e38 {
        return Some(Ordering::Less);
    }
    if f <= -1.7e38 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    // In range, so the conversion is exact.
    let whole_int = whole as i128;
    match i.cmp(&whole_int) {
        Ordering::Equal => {
            let frac = f - whole;
            if frac > 0.0 {
                Some(Ordering::Less)
            } else if frac < 0.0 {
                Some(Ordering::Greater)
            } else {
                Some(Ordering::Equal)
            }
        }
        other => Some(other),
    }
}

/// Orders a selected value against a numeric literal; `None` when the value is not a number.
fn numeric_cmp(value: &Ipld, n: &Number) -> Option<Ordering> {
    match (value, n) {
        (Ipld::Integer(a), Number::Integer(b)) => Some(a.cmp(b)),
        (Ipld::Float(a), Number::Float(b)) => a.partial_cmp(b),
        (Ipld::Integer(a), Number::Float(b)) => cmp_int_float(*a, *b),
        (Ipld::Float(a), Number::Integer(b)) => cmp_int_float(*b, *a).map(Ordering::reverse),
        _ => None,
    }
}

/// Deep equality where integers and floats compare by numeric value.
fn ipld_eq(a: &Ipld, b: &Ipld) -> bool {
    match (a, b) {
        (Ipld::Integer(x), Ipld::Float(y)) | (Ipld::Float(y), Ipld::Integer(x)) => {
            cmp_int_float(*x, *y) == Some(Ordering::Equal)
        }
        (Ipld::List(x), Ipld::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| ipld_eq(p, q))
        }
        (Ipld::Map(x), Ipld::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| ipld_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Whether a statement of the hierarchical mode is on the tree field.
fn on_tree_statement(st: &Statement, tree: Option<&str>) -> bool {
    match st {
        Statement::Equal(s, _) | Statement::NotEqual(s, _) => {
            tree.is_some_and(|field| s.is_field(field))
        }
        _ => false,
    }
}

/// Whether `path` is `dir` or lies under it. Only an absolute `dir` has anything under it;
/// `/` has every absolute path under it; a trailing `/` on `dir` is ignored (`/secret/` is the
/// directory `/secret`, so `!=` excludes it and everything under it as well).
fn is_within(path: &str, dir: &str) -> bool {
    let dir = match dir.strip_suffix('/') {
        Some(d) if !d.is_empty() => d,
        _ => dir,
    };
    if path == dir {
        return true;
    }
    if !dir.starts_with('/') {
        return false;
    }
    if dir == "/" {
        return path.starts_with('/');
    }
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// `path`, then each of its ancestor directories up to `/` (`/a/b` → `/a/b`, `/a`, `/`). A
/// relative path yields only itself.
fn path_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| {
        if *p == "/" || !p.starts_with('/') {
            return None;
        }
        match p.rfind('/') {
            Some(0) => Some("/"),
            Some(i) => Some(&p[..i]),
            None => None,
        }
    })
}

/// Renders IPLD as DAG-JSON-like text for messages, cut at about `max` characters.
pub(crate) fn render(value: &Ipld, max: usize) -> String {
    let mut out = String::new();
    write_ipld(&mut out, value, max);
    if out.len() > max {
        truncate(&out, max)
    } else {
        out
    }
}

fn write_ipld(out: &mut String, value: &Ipld, max: usize) {
    if out.len() > max {
        return;
    }
    match value {
        Ipld::Null => out.push_str("null"),
        Ipld::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Ipld::Integer(i) => out.push_str(&i.to_string()),
        Ipld::Float(f) => out.push_str(&format!("{f:?}")),
        Ipld::String(s) => write_json_string(out, s),
        Ipld::Bytes(b) => {
            out.push_str("{\"/\":{\"bytes\":\"");
            out.push_str(&STANDARD_NO_PAD.encode(b));
            out.push_str("\"}}");
        }
        Ipld::Link(cid) => {
            out.push_str("{\"/\":\"");
            out.push_str(&cid.to_string());
            out.push_str("\"}");
        }
        Ipld::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_ipld(out, item, max);
            }
            out.push(']');
        }
        Ipld::Map(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json_string(out, k);
                out.push_str(": ");
                write_ipld(out, v, max);
            }
            out.push('}');
        }
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Ipld {
        Ipld::String(text.into())
    }

    fn l(items: Vec<Ipld>) -> Ipld {
        Ipld::List(items)
    }

    fn stmt(items: Vec<Ipld>) -> Statement {
        Statement::from_ipld(&l(items)).unwrap()
    }

    fn args() -> Ipld {
        Ipld::Map(
            [
                ("b".to_string(), Ipld::Integer(1)),
                ("f".to_string(), Ipld::Float(2.5)),
                ("name".to_string(), s("Katie")),
                (
                    "list".to_string(),
                    l(vec![Ipld::Integer(1), Ipld::Integer(2)]),
                ),
                ("empty".to_string(), l(vec![])),
            ]
            .into(),
        )
    }

    #[test]
    fn numbers_compare_by_value() {
        let a = args();
        assert!(stmt(vec![s("=="), s(".b"), Ipld::Float(1.0)]).holds(&a));
        assert!(stmt(vec![s("<"), s(".b"), Ipld::Float(1.5)]).holds(&a));
        assert!(stmt(vec![s(">"), s(".f"), Ipld::Integer(2)]).holds(&a));
        assert!(!stmt(vec![s(">"), s(".f"), Ipld::Integer(3)]).holds(&a));
        assert!(stmt(vec![s("<="), s(".f"), Ipld::Float(2.5)]).holds(&a));
        assert!(!stmt(vec![s(">"), s(".name"), Ipld::Integer(0)]).holds(&a));
        assert_eq!(cmp_int_float(i128::MAX, 1e300), Some(Ordering::Less));
        assert_eq!(
            cmp_int_float(9_007_199_254_740_993, 9_007_199_254_740_992.0),
            Some(Ordering::Greater)
        );
        assert_eq!(cmp_int_float(-3, -2.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(0, f64::NAN), None);
    }

    #[test]
    fn unresolved_fails_closed_even_under_not() {
        let a = args();
        let inner = stmt(vec![s("=="), s(".name.first"), s("K")]);
        assert_eq!(inner.evaluate(&a), Truth::Unknown(
            "selector `.name.first` cannot be resolved: cannot select field `first` on a string".into()
        ));
        let negated = Statement::Not(Box::new(inner.clone()));
        assert!(!negated.holds(&a));
        // `or` with a true branch still holds; with only false/unknown it does not.
        let t = stmt(vec![s("=="), s(".b"), Ipld::Integer(1)]);
        let f = stmt(vec![s("=="), s(".b"), Ipld::Integer(2)]);
        assert!(Statement::Or(vec![inner.clone(), t.clone()]).holds(&a));
        assert!(!Statement::Or(vec![inner.clone(), f.clone()]).holds(&a));
        assert!(!Statement::Not(Box::new(Statement::Or(vec![inner.clone(), f]))).holds(&a));
        // `and` with a false branch is false, so `not` of it holds.
        let and = Statement::And(vec![inner, stmt(vec![s("=="), s(".b"), Ipld::Integer(5)])]);
        assert!(Statement::Not(Box::new(and)).holds(&a));
    }

    #[test]
    fn missing_key_is_null() {
        let a = args();
        assert!(stmt(vec![s("=="), s(".nope"), Ipld::Null]).holds(&a));
        assert!(stmt(vec![s("!="), s(".nope"), s("admin")]).holds(&a));
        assert!(!stmt(vec![s("like"), s(".nope"), s("*")]).holds(&a));
    }

    #[test]
    fn quantifiers() {
        let a = args();
        let gt0 = l(vec![s(">"), s("."), Ipld::Integer(0)]);
        let gt1 = l(vec![s(">"), s("."), Ipld::Integer(1)]);
        assert!(stmt(vec![s("all"), s(".list"), gt0.clone()]).holds(&a));
        assert!(!stmt(vec![s("all"), s(".list"), gt1.clone()]).holds(&a));
        assert!(stmt(vec![s("any"), s(".list"), gt1.clone()]).holds(&a));
        assert!(stmt(vec![s("all"), s(".empty"), gt1.clone()]).holds(&a));
        assert!(!stmt(vec![s("any"), s(".empty"), gt0.clone()]).holds(&a));
        assert!(!stmt(vec![s("all"), s(".name"), gt0.clone()]).holds(&a));
        // Policy-form body.
        let p = stmt(vec![
            s("all"),
            s(".list"),
            l(vec![gt0.clone(), l(vec![s("<"), s("."), Ipld::Integer(3)])]),
        ]);
        assert!(matches!(p, Statement::All(_, Quantified::Policy(_))));
        assert!(p.holds(&a));
        assert!(stmt(vec![s("all"), s(".list"), l(vec![])]).holds(&a));
    }

    #[test]
    fn malformed_policies_are_refused() {
        let bad = vec![
            s("=="),
            l(vec![]),
            l(vec![Ipld::Integer(1)]),
            l(vec![s("=="), s(".a")]),
            l(vec![s("=="), s("a"), Ipld::Integer(1)]),
            l(vec![s(">"), s(".a"), s("x")]),
            l(vec![s(">"), s(".a"), Ipld::Float(f64::INFINITY)]),
            l(vec![s("like"), s(".a"), Ipld::Integer(1)]),
            l(vec![s("not")]),
            l(vec![s("and"), s("x")]),
            l(vec![s("or"), l(vec![Ipld::Integer(1)])]),
            l(vec![s("all"), s(".a"), Ipld::Integer(1)]),
            l(vec![s("xor"), s(".a"), Ipld::Integer(1)]),
        ];
        for b in bad {
            let err = Policy::from_ipld(&l(vec![b.clone()])).unwrap_err();
            assert_eq!(err.name(), "Malformed", "{b:?}");
            assert!(
                err.to_string().contains("malformed policy statement"),
                "{err}"
            );
        }
        assert!(Policy::from_ipld(&s("nope")).is_err());
        // Depth limit.
        let mut deep = l(vec![s("=="), s("."), Ipld::Null]);
        for _ in 0..MAX_POLICY_DEPTH {
            deep = l(vec![s("not"), deep]);
        }
        assert!(Policy::from_ipld(&l(vec![deep])).is_err());
    }

    #[test]
    fn round_trip_and_display() {
        let wire = l(vec![
            l(vec![
                s("=="),
                s(".a"),
                l(vec![Ipld::Integer(1), Ipld::Float(2.0)]),
            ]),
            l(vec![
                s("not"),
                l(vec![s("like"), s(".[\"x\"]"), s("a\\*b*")]),
            ]),
            l(vec![s("any"), s(".to[]?"), l(vec![s("or"), l(vec![])])]),
            l(vec![s("all"), s(".to"), l(vec![])]),
        ]);
        let p = Policy::from_ipld(&wire).unwrap();
        assert_eq!(p.to_ipld(), wire);
        assert_eq!(
            p.statements()[1].to_string(),
            r#"["not", ["like", ".[\"x\"]", "a\\*b*"]]"#
        );
        let err = p.check(&Ipld::Map(Default::default())).unwrap_err();
        assert_eq!(err.statement, r#"["==", ".a", [1, 2.0]]"#);
    }
    fn tree_args(path: &str) -> Ipld {
        Ipld::Map(
            [
                ("tenant".to_string(), s("acme")),
                ("path".to_string(), s(path)),
            ]
            .into(),
        )
    }

    fn tree_policy(items: Vec<Ipld>) -> Policy {
        Policy::from_ipld(&l(items)).unwrap()
    }

    fn grants(policy: &Policy, path: &str) -> bool {
        policy.check_hierarchical(&tree_args(path), "path").is_ok()
    }

    #[test]
    fn hierarchical_equality_covers_a_subtree_and_inequality_excludes_it() {
        let eq = tree_policy(vec![l(vec![s("=="), s(".path"), s("/site")])]);
        for yes in ["/site", "/site/a", "/site/a/b.html"] {
            assert!(grants(&eq, yes), "{yes}");
        }
        for no in ["/", "/sites", "/sit", "/other/site"] {
            assert!(!grants(&eq, no), "{no}");
        }
        let ne = tree_policy(vec![l(vec![s("!="), s(".path"), s("/secret")])]);
        for no in ["/secret", "/secret/x", "/secret/a/b"] {
            assert!(!grants(&ne, no), "{no}");
        }
        for yes in ["/", "/public/x", "/secrets", "/a/secret"] {
            assert!(grants(&ne, yes), "{yes}");
        }
        let not_eq = tree_policy(vec![l(vec![
            s("not"),
            l(vec![s("=="), s(".path"), s("/secret")]),
        ])]);
        assert!(!grants(&not_eq, "/secret/x"));
        assert!(grants(&not_eq, "/public/x"));
        // `/` covers every path; a relative directory names nothing, so neither `==` nor `!=`
        // (nor `not`) grants anything by it.
        let root = tree_policy(vec![l(vec![s("=="), s(".path"), s("/")])]);
        assert!(grants(&root, "/") && grants(&root, "/a/b"));
        for odd in ["", "site", "secret"] {
            for op in ["==", "!="] {
                let p = tree_policy(vec![l(vec![s(op), s(".path"), s(odd)])]);
                assert!(!grants(&p, "/site/a"), "{op} {odd:?}");
                assert!(!grants(&p, "/a"), "{op} {odd:?}");
                let not = tree_policy(vec![l(vec![s("not"), l(vec![s(op), s(".path"), s(odd)])])]);
                assert!(!grants(&not, "/a"), "not {op} {odd:?}");
            }
        }
        // A trailing `/` names the directory itself: `!=` still excludes it and everything
        // under it, `==` still covers it.
        let ne = tree_policy(vec![l(vec![s("!="), s(".path"), s("/secret/")])]);
        for no in ["/secret", "/secret/x", "/secret/a/b"] {
            assert!(!grants(&ne, no), "{no}");
        }
        assert!(grants(&ne, "/public/x"));
        let eq = tree_policy(vec![l(vec![s("=="), s(".path"), s("/site/")])]);
        assert!(grants(&eq, "/site") && grants(&eq, "/site/a") && !grants(&eq, "/sites"));
    }

    #[test]
    fn hierarchical_like_matches_the_path_or_an_ancestor() {
        let html = tree_policy(vec![l(vec![s("like"), s(".path"), s("/site/*.html")])]);
        assert!(grants(&html, "/site/a.html"));
        assert!(
            grants(&html, "/site/a.html/inside"),
            "a matching directory covers its tree"
        );
        assert!(!grants(&html, "/site/a.css"));
        let not_private = tree_policy(vec![
            l(vec![s("=="), s(".path"), s("/site")]),
            l(vec![
                s("not"),
                l(vec![s("like"), s(".path"), s("/site/private*")]),
            ]),
        ]);
        assert!(grants(&not_private, "/site/index.html"));
        assert!(!grants(&not_private, "/site/private"));
        assert!(!grants(&not_private, "/site/private-2/deep/x"));
    }

    #[test]
    fn hierarchical_mode_leaves_other_statements_and_fail_closed_logic_alone() {
        let p = tree_policy(vec![
            l(vec![s("=="), s(".tenant"), s("acme")]),
            l(vec![s("!="), s(".path"), s("/secret")]),
        ]);
        assert!(grants(&p, "/ok"));
        let other_tenant = Ipld::Map(
            [
                ("tenant".to_string(), s("beta")),
                ("path".to_string(), s("/ok")),
            ]
            .into(),
        );
        assert!(p.check_hierarchical(&other_tenant, "path").is_err());
        // An unresolvable selector stays undetermined under `not`.
        let unresolved = tree_policy(vec![l(vec![
            s("not"),
            l(vec![s("=="), s(".path.x"), s("/a")]),
        ])]);
        assert!(!grants(&unresolved, "/b"));
        // The refusal explains how paths are read.
        let err = p
            .check_hierarchical(&tree_args("/secret/x"), "path")
            .unwrap_err();
        assert_eq!(err.statement, r#"["!=", ".path", "/secret"]"#);
        assert!(
            err.reason
                .contains("excludes a directory and everything under it"),
            "{err}"
        );
        // Quantifier bodies select from elements: no tree reading there.
        let any = tree_policy(vec![l(vec![
            s("any"),
            s(".paths"),
            l(vec![s("=="), s("."), s("/a")]),
        ])]);
        let list = Ipld::Map([("paths".to_string(), l(vec![s("/a/b")]))].into());
        assert!(any.check_hierarchical(&list, "path").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Normalized absolute paths over a few names, some prefixes of others (`a`, `ab`).
        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(vec!["a", "ab", "b", "secret"]), 0..4)
                .prop_map(|segs| format!("/{}", segs.join("/")))
        }

        fn join(dir: &str, rest: &str) -> String {
            if dir == "/" {
                rest.to_string()
            } else if rest == "/" {
                dir.to_string()
            } else {
                format!("{dir}{rest}")
            }
        }

        /// The reference: `path` is `dir` or under it, by segments.
        fn under(path: &str, dir: &str) -> bool {
            let segs = |p: &str| -> Vec<String> {
                p.split('/')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            let (p, d) = (segs(path), segs(dir));
            p.len() >= d.len() && p[..d.len()] == d[..]
        }

        proptest! {
            #[test]
            fn inequality_never_grants_anything_under_the_excluded_directory(
                dir in path(), rest in path(),
            ) {
                let ne = tree_policy(vec![l(vec![s("!="), s(".path"), s(&dir)])]);
                prop_assert!(!grants(&ne, &join(&dir, &rest)));
            }

            #[test]
            fn equality_grants_exactly_the_subtree(dir in path(), p in path()) {
                let eq = tree_policy(vec![l(vec![s("=="), s(".path"), s(&dir)])]);
                let ne = tree_policy(vec![l(vec![s("!="), s(".path"), s(&dir)])]);
                prop_assert_eq!(grants(&eq, &p), under(&p, &dir));
                prop_assert_eq!(grants(&ne, &p), !under(&p, &dir));
            }

            #[test]
            fn positive_grants_match_the_ancestor_walk(dir in path(), p in path()) {
                // A positive statement covers exactly what evaluating it plainly at the path or
                // one of its ancestors covered (the rule before the hierarchical mode).
                for stmt in [
                    l(vec![s("=="), s(".path"), s(&dir)]),
                    l(vec![s("like"), s(".path"), s(&format!("{}*", dir.trim_end_matches('/')))]),
                ] {
                    let policy = tree_policy(vec![stmt]);
                    let walk = path_and_ancestors(&p).any(|a| policy.check(&tree_args(a)).is_ok());
                    prop_assert_eq!(grants(&policy, &p), walk);
                }
            }
        }
    }
}
