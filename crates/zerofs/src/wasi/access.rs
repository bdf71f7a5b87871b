//! The capability rule of the filesystem provider: which rights cover which tenant paths, and
//! which directories a component sees as preopens.
//!
//! An operation with right `R` on tenant path `P` is allowed iff the component's chain allows
//! `/fs/<R>` with arguments `{tenant, component, path: P}` under zero-auth's rule for paths
//! ([`zero_auth::authorize_paths`]): a grant on a directory covers everything under it, and an
//! exclusion (`["!=", ".path", D]`, or a `not`) excludes `D` and everything under it. Answers
//! are cached per store (the chain cannot change while a store lives).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

use zero_auth::policy::{Quantified, Statement};
use zero_auth::{Chain, Command, Ipld};

use crate::TenantPath;

/// One filesystem right, named by its UCAN command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// `/fs/read`: read content, list directories, stat.
    Read,
    /// `/fs/write`: change the content of an existing file.
    Write,
    /// `/fs/create`: create a file or directory that does not exist.
    Create,
    /// `/fs/delete`: remove a file or directory, or move it away.
    Delete,
}

impl Right {
    /// Every right.
    pub const ALL: [Right; 4] = [Right::Read, Right::Write, Right::Create, Right::Delete];

    /// The UCAN command of this right.
    pub fn command(self) -> &'static str {
        match self {
            Right::Read => "/fs/read",
            Right::Write => "/fs/write",
            Right::Create => "/fs/create",
            Right::Delete => "/fs/delete",
        }
    }
}

/// Answers "does the chain allow right R on this path" (directory coverage included).
pub trait Grants: Send {
    /// Whether `right` is granted on `path`, by a grant on it or on a directory above it and
    /// not taken away by an exclusion of it or of a directory above it.
    fn grants(&self, right: Right, path: &str) -> bool;
    /// Candidate roots named by the grants' path policies (see [`roots_of_policies`]), and
    /// whether some grant names no path root at all.
    fn named_roots(&self) -> Vec<String>;
}

/// Grants shared by every store of a deployment (built once in the provider's per-app phase).
impl<G: Grants + Sync + ?Sized> Grants for Arc<G> {
    fn grants(&self, right: Right, path: &str) -> bool {
        (**self).grants(right, path)
    }

    fn named_roots(&self) -> Vec<String> {
        (**self).named_roots()
    }
}

/// The grants of a verified capability chain for one tenant and component.
pub struct ChainGrants {
    chain: Arc<Chain>,
    tenant: String,
    component: Option<String>,
    commands: [Option<Command>; 4],
}

impl ChainGrants {
    /// The grants `chain` gives to `component` of `tenant`.
    pub fn new(chain: Arc<Chain>, tenant: &str, component: Option<&str>) -> Self {
        let commands = Right::ALL.map(|r| Command::parse(r.command()).ok());
        ChainGrants {
            chain,
            tenant: tenant.to_string(),
            component: component.map(str::to_string),
            commands,
        }
    }
}

impl Grants for ChainGrants {
    fn grants(&self, right: Right, path: &str) -> bool {
        let Some(command) = &self.commands[right as usize] else {
            return false;
        };
        let mut args = BTreeMap::new();
        args.insert("tenant".to_string(), Ipld::String(self.tenant.clone()));
        if let Some(c) = &self.component {
            args.insert("component".to_string(), Ipld::String(c.clone()));
        }
        args.insert("path".to_string(), Ipld::String(path.to_string()));
        zero_auth::authorize_paths(self.chain.capabilities(), command, &Ipld::Map(args), "path")
            .is_ok()
    }

    fn named_roots(&self) -> Vec<String> {
        let fs = Command::parse("/fs").ok();
        let mut out = Vec::new();
        for cap in self.chain.capabilities() {
            // A link about another command tree (say /db) names no filesystem root.
            let related = fs
                .as_ref()
                .is_some_and(|fs| cap.command.covers(fs) || fs.covers(&cap.command));
            if related {
                out.extend(roots_of_policies(cap.policy.statements()));
            }
        }
        out
    }
}

/// The literal roots named by `.path` statements: the value of `==` statements, and for `like`
/// the literal prefix up to the last `/` before the first wildcard (`/site/*.html` → `/site`).
/// Statements under `not` are skipped (they take paths away, they do not grant them).
pub fn roots_of_policies(statements: &[Statement]) -> Vec<String> {
    let mut out = Vec::new();
    for s in statements {
        collect(s, &mut out);
    }
    out
}

fn collect(s: &Statement, out: &mut Vec<String>) {
    match s {
        Statement::Equal(sel, Ipld::String(v)) if sel.as_str() == ".path" => out.push(v.clone()),
        Statement::Like(sel, pattern) if sel.as_str() == ".path" => {
            if let Some(prefix) = like_prefix(pattern.as_str()) {
                out.push(prefix);
            }
        }
        Statement::And(items) | Statement::Or(items) => {
            for i in items {
                collect(i, out);
            }
        }
        Statement::Any(_, Quantified::Statement(b))
        | Statement::All(_, Quantified::Statement(b)) => collect(b, out),
        Statement::Any(_, Quantified::Policy(items))
        | Statement::All(_, Quantified::Policy(items)) => {
            for i in items {
                collect(i, out);
            }
        }
        _ => {}
    }
}

/// The directory part of a glob's literal prefix: `/site/*.html` → `/site`, `/a/b*` → `/a`,
/// `/*` → `/`, `/exact` (no wildcard) → `/exact`. `None` if the pattern is not absolute.
pub fn like_prefix(pattern: &str) -> Option<String> {
    // The literal text before the first unescaped `*`.
    let mut literal = String::new();
    let mut chars = pattern.chars().peekable();
    let mut wildcard = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*' | '\\')) => {
                if let Some(n) = chars.next() {
                    literal.push(n);
                }
            }
            '*' => {
                wildcard = true;
                break;
            }
            c => literal.push(c),
        }
    }
    if !literal.starts_with('/') {
        return None;
    }
    if !wildcard {
        return Some(literal);
    }
    let cut = literal.rfind('/')?;
    Some(if cut == 0 {
        "/".to_string()
    } else {
        literal[..cut].to_string()
    })
}

/// The per-store access oracle over [`Grants`], with cached answers.
pub struct Access {
    grants: Option<Box<dyn Grants>>,
    cache: HashMap<(Right, String), bool>,
    roots: Option<Vec<TenantPath>>,
}

impl Access {
    /// An oracle over `grants` (`None`: the component has no capabilities at all).
    pub fn new(grants: Option<Box<dyn Grants>>) -> Self {
        Access {
            grants,
            cache: HashMap::new(),
            roots: None,
        }
    }

    fn granted(&mut self, right: Right, path: &TenantPath) -> bool {
        let Some(grants) = &self.grants else {
            return false;
        };
        let key = (right, path.as_str().to_string());
        if let Some(&answer) = self.cache.get(&key) {
            return answer;
        }
        let answer = grants.grants(right, path.as_str());
        self.cache.insert(key, answer);
        answer
    }

    /// Whether `right` is allowed on `path` ([`Grants::grants`]). Nothing is ever allowed in
    /// the reserved directory (the tenant's deployed code).
    pub fn allowed(&mut self, right: Right, path: &TenantPath) -> bool {
        !path.is_reserved() && self.granted(right, path)
    }

    /// Whether some right covers `path`.
    pub fn covered(&mut self, path: &TenantPath) -> bool {
        Right::ALL.iter().any(|&r| self.allowed(r, path))
    }

    /// The granted roots: the literal roots named by the path policies that some right covers,
    /// or `/` when no root is named but a right covers the whole tenant. Sorted, deduplicated.
    pub fn roots(&mut self) -> Vec<TenantPath> {
        if let Some(r) = &self.roots {
            return r.clone();
        }
        let named = self
            .grants
            .as_ref()
            .map(|g| g.named_roots())
            .unwrap_or_default();
        let mut roots: Vec<TenantPath> = named
            .iter()
            .filter_map(|s| TenantPath::parse(s).ok())
            .collect();
        roots.retain(|r| self.covered(r));
        if roots.is_empty() && self.covered(&TenantPath::root()) {
            roots.push(TenantPath::root());
        }
        roots.sort();
        roots.dedup();
        self.roots = Some(roots.clone());
        roots
    }

    /// Whether `path` may be seen at all: some right covers it, or it is an ancestor of a
    /// granted root (so that the way down to a grant can be walked and listed).
    pub fn visible(&mut self, path: &TenantPath) -> bool {
        self.covered(path) || self.roots().iter().any(|r| r.starts_with(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zero_auth::Policy;

    /// Grants given as (right, path) pairs, each read as the policy `["==", ".path", path]`
    /// with zero-auth's rule for paths, plus named roots.
    struct Fixed(Vec<(Right, &'static str)>, Vec<&'static str>);

    impl Grants for Fixed {
        fn grants(&self, right: Right, path: &str) -> bool {
            let args = Ipld::Map([("path".to_string(), Ipld::String(path.into()))].into());
            self.0.iter().any(|(r, p)| {
                *r == right
                    && path_policy("==", p)
                        .check_hierarchical(&args, "path")
                        .is_ok()
            })
        }
        fn named_roots(&self) -> Vec<String> {
            self.1.iter().map(|s| s.to_string()).collect()
        }
    }

    fn path_policy(op: &str, path: &str) -> Policy {
        let s = |v: &str| Ipld::String(v.to_string());
        Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![
            s(op),
            s(".path"),
            s(path),
        ])]))
        .unwrap()
    }

    /// Every right, scoped by one policy.
    struct Scoped(Policy);

    impl Grants for Scoped {
        fn grants(&self, _right: Right, path: &str) -> bool {
            let args = Ipld::Map([("path".to_string(), Ipld::String(path.into()))].into());
            self.0.check_hierarchical(&args, "path").is_ok()
        }
        fn named_roots(&self) -> Vec<String> {
            roots_of_policies(self.0.statements())
        }
    }

    fn p(s: &str) -> TenantPath {
        TenantPath::parse(s).unwrap()
    }

    #[test]
    fn directory_grant_covers_descendants_only() {
        let mut a = Access::new(Some(Box::new(Fixed(
            vec![(Right::Read, "/site")],
            vec!["/site"],
        ))));
        assert!(a.allowed(Right::Read, &p("/site")));
        assert!(a.allowed(Right::Read, &p("/site/a/b.html")));
        assert!(!a.allowed(Right::Read, &p("/sites")));
        assert!(!a.allowed(Right::Read, &p("/")));
        assert!(!a.allowed(Right::Write, &p("/site/a")));
        assert!(a.visible(&p("/")), "an ancestor of a root is visible");
        assert!(!a.visible(&p("/secret")));
        assert_eq!(a.roots(), vec![p("/site")]);
    }

    #[test]
    fn file_grant_covers_the_file_only() {
        let mut a = Access::new(Some(Box::new(Fixed(
            vec![(Right::Write, "/d/f.txt")],
            vec!["/d/f.txt"],
        ))));
        assert!(a.allowed(Right::Write, &p("/d/f.txt")));
        assert!(!a.allowed(Right::Write, &p("/d/g.txt")));
        assert!(!a.allowed(Right::Write, &p("/d")));
        assert!(a.visible(&p("/d")));
        assert!(!a.visible(&p("/d/g.txt")));
    }

    #[test]
    fn whole_tenant_grant_preopens_root_and_none_sees_nothing() {
        let mut a = Access::new(Some(Box::new(Fixed(vec![(Right::Read, "/")], vec![]))));
        assert_eq!(a.roots(), vec![TenantPath::root()]);
        assert!(a.allowed(Right::Read, &p("/any/thing")));
        let mut none = Access::new(None);
        assert!(none.roots().is_empty());
        assert!(!none.visible(&TenantPath::root()));
        // A named root the grants do not actually cover is not a root.
        let mut stale = Access::new(Some(Box::new(Fixed(vec![], vec!["/x"]))));
        assert!(stale.roots().is_empty());
    }

    #[test]
    fn the_reserved_directory_is_never_allowed_nor_visible() {
        let all: Vec<(Right, &str)> = Right::ALL.iter().map(|&r| (r, "/")).collect();
        let mut a = Access::new(Some(Box::new(Fixed(all, vec![]))));
        for r in Right::ALL {
            assert!(!a.allowed(r, &p("/.zero")), "{r:?}");
            assert!(!a.allowed(r, &p("/.zero/code/x.wasm")), "{r:?}");
        }
        assert!(!a.visible(&p("/.zero")));
        assert!(
            a.allowed(Right::Read, &p("/.zeroth")),
            "only the exact name is reserved"
        );
        let mut named = Access::new(Some(Box::new(Fixed(
            vec![(Right::Read, "/.zero/code")],
            vec!["/.zero/code"],
        ))));
        assert!(
            named.roots().is_empty(),
            "a grant naming it preopens nothing"
        );
    }

    #[test]
    fn an_excluded_directory_stays_excluded_below_it_and_is_not_listed() {
        let mut a = Access::new(Some(Box::new(Scoped(path_policy("!=", "/secret")))));
        assert!(a.allowed(Right::Read, &p("/public/x")));
        assert!(a.allowed(Right::Read, &p("/")));
        for hidden in ["/secret", "/secret/x", "/secret/a/b"] {
            assert!(!a.allowed(Right::Read, &p(hidden)), "{hidden}");
            assert!(!a.visible(&p(hidden)), "{hidden}");
        }
        assert_eq!(a.roots(), vec![TenantPath::root()]);
    }

    #[test]
    fn extracts_roots_from_policies() {
        let policy = |json: Ipld| Policy::from_ipld(&json).unwrap();
        let s = |v: &str| Ipld::String(v.to_string());
        let l = |v: Vec<Ipld>| Ipld::List(v);
        let pol = policy(l(vec![
            l(vec![s("=="), s(".path"), s("/site")]),
            l(vec![s("=="), s(".tenant"), s("acme")]),
            l(vec![s("like"), s(".path"), s("/logs/2026-*.txt")]),
            l(vec![
                s("or"),
                l(vec![l(vec![s("=="), s(".path"), s("/a/b.txt")])]),
            ]),
            l(vec![
                s("not"),
                l(vec![s("=="), s(".path"), s("/site/private")]),
            ]),
        ]));
        assert_eq!(
            roots_of_policies(pol.statements()),
            vec!["/site", "/logs", "/a/b.txt"]
        );
        assert_eq!(like_prefix("/*").as_deref(), Some("/"));
        assert_eq!(like_prefix("/a/b*").as_deref(), Some("/a"));
        assert_eq!(like_prefix("/exact").as_deref(), Some("/exact"));
        assert_eq!(like_prefix(r"/a\*b/*").as_deref(), Some("/a*b"));
        assert_eq!(like_prefix("*"), None);
    }
}
