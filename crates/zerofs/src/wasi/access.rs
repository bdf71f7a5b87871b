//! The capability rule of the filesystem provider: which actions cover which tenant paths, and
//! which directories a component sees as preopens.
//!
//! An operation with action `A` on tenant path `P` is allowed iff the component's capability
//! checker ([`zero_auth::ScopedChain`], made once per deployment with the tenant and the
//! component hash) allows `/fs/<A>` with `{path: P}`: a grant on a directory covers everything
//! under it, and an exclusion (`["!=", ".path", D]`, or a `not`) excludes `D` and everything
//! under it. The checker memoizes its answers (the chain cannot change while the app is
//! deployed).

use std::sync::Arc;

use zero_auth::policy::{Quantified, Statement};
use zero_auth::{Action, Command, Ipld, ScopedChain};

use crate::TenantPath;

/// The namespace of the file commands (`/fs/read`, `/fs/write`, `/fs/create`, `/fs/delete`).
pub const FS_NAMESPACE: &str = "/fs";

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

/// The per-store access oracle over the component's [`ScopedChain`]. Made once per deployment
/// (the file commands parsed then) and cloned into each store.
#[derive(Clone)]
pub struct Access {
    grants: Arc<ScopedChain>,
    commands: Arc<[Option<Command>; 4]>,
    roots: Option<Vec<TenantPath>>,
}

impl Access {
    /// An oracle over `grants` (one without a token allows nothing).
    pub fn new(grants: Arc<ScopedChain>) -> Self {
        Access {
            grants,
            commands: Arc::new(Action::ALL.map(|a| a.command(FS_NAMESPACE).ok())),
            roots: None,
        }
    }

    fn granted(&self, action: Action, path: &TenantPath) -> bool {
        let Some(command) = &self.commands[action as usize] else {
            return false;
        };
        self.grants
            .allows(command, &[("path", path.as_str())])
            .is_ok()
    }

    /// Candidate roots named by the grants' path policies (see [`roots_of_policies`]).
    fn named_roots(&self) -> Vec<String> {
        let fs = Command::parse(FS_NAMESPACE).ok();
        let mut out = Vec::new();
        for cap in self.grants.chains().flatten() {
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

    /// Whether `action` is allowed on `path`, by a grant on it or on a directory above it and
    /// not taken away by an exclusion of it or of a directory above it. Nothing is ever allowed
    /// in the reserved directory (the tenant's deployed code).
    pub fn allowed(&mut self, action: Action, path: &TenantPath) -> bool {
        !path.is_reserved() && self.granted(action, path)
    }

    /// Whether some action covers `path`.
    pub fn covered(&mut self, path: &TenantPath) -> bool {
        Action::ALL.iter().any(|&a| self.allowed(a, path))
    }

    /// The granted roots: the literal roots named by the path policies that some action covers,
    /// or `/` when no root is named but an action covers the whole tenant. Sorted, deduplicated.
    pub fn roots(&mut self) -> Vec<TenantPath> {
        if let Some(r) = &self.roots {
            return r.clone();
        }
        let named = self.named_roots();
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

    /// Whether `path` may be seen at all: some action covers it, or it is an ancestor of a
    /// granted root (so that the way down to a grant can be walked and listed).
    pub fn visible(&mut self, path: &TenantPath) -> bool {
        self.covered(path) || self.roots().iter().any(|r| r.starts_with(path))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use zero_auth::{Capability, Cid, Keypair, Policy};

    fn s(v: &str) -> Ipld {
        Ipld::String(v.to_string())
    }

    fn path_policy(op: &str, path: &str) -> Policy {
        Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![
            s(op),
            s(".path"),
            s(path),
        ])]))
        .unwrap()
    }

    /// An oracle over a one-link chain: `cmd` scoped by `policy`, for tenant `acme`.
    fn access(cmd: &str, policy: Policy) -> Access {
        let link = Capability {
            delegation: Cid::default(),
            issuer: Keypair::from_seed(&[3; 32]).did().clone(),
            command: Command::parse(cmd).unwrap(),
            policy,
        };
        let base = BTreeMap::from([("tenant".to_string(), s("acme"))]);
        Access::new(Arc::new(ScopedChain::new(Some(vec![link]), base, None)))
    }

    fn p(s: &str) -> TenantPath {
        TenantPath::parse(s).unwrap()
    }

    #[test]
    fn directory_grant_covers_descendants_only() {
        let mut a = access("/fs/read", path_policy("==", "/site"));
        assert!(a.allowed(Action::Read, &p("/site")));
        assert!(a.allowed(Action::Read, &p("/site/a/b.html")));
        assert!(!a.allowed(Action::Read, &p("/sites")));
        assert!(!a.allowed(Action::Read, &p("/")));
        assert!(!a.allowed(Action::Write, &p("/site/a")));
        assert!(a.visible(&p("/")), "an ancestor of a root is visible");
        assert!(!a.visible(&p("/secret")));
        assert_eq!(a.roots(), vec![p("/site")]);
    }

    #[test]
    fn file_grant_covers_the_file_only() {
        let mut a = access("/fs/write", path_policy("==", "/d/f.txt"));
        assert!(a.allowed(Action::Write, &p("/d/f.txt")));
        assert!(!a.allowed(Action::Write, &p("/d/g.txt")));
        assert!(!a.allowed(Action::Write, &p("/d")));
        assert!(a.visible(&p("/d")));
        assert!(!a.visible(&p("/d/g.txt")));
    }

    #[test]
    fn whole_tenant_grant_preopens_root_and_none_sees_nothing() {
        let mut a = access("/fs/read", Policy::empty());
        assert_eq!(a.roots(), vec![TenantPath::root()]);
        assert!(a.allowed(Action::Read, &p("/any/thing")));
        let mut none = Access::new(Arc::new(ScopedChain::default()));
        assert!(none.roots().is_empty());
        assert!(!none.visible(&TenantPath::root()));
        // A named root the grants do not actually cover is not a root.
        let other_tenant = Policy::from_ipld(&Ipld::List(vec![
            Ipld::List(vec![s("=="), s(".path"), s("/x")]),
            Ipld::List(vec![s("=="), s(".tenant"), s("beta")]),
        ]))
        .unwrap();
        let mut stale = access("/fs", other_tenant);
        assert!(stale.roots().is_empty());
    }

    #[test]
    fn the_reserved_directory_is_never_allowed_nor_visible() {
        let mut a = access("/fs", Policy::empty());
        for r in Action::ALL {
            assert!(!a.allowed(r, &p("/.zero")), "{r:?}");
            assert!(!a.allowed(r, &p("/.zero/code/x.wasm")), "{r:?}");
        }
        assert!(!a.visible(&p("/.zero")));
        assert!(
            a.allowed(Action::Read, &p("/.zeroth")),
            "only the exact name is reserved"
        );
        let mut named = access("/fs/read", path_policy("==", "/.zero/code"));
        assert!(
            named.roots().is_empty(),
            "a grant naming it preopens nothing"
        );
    }

    #[test]
    fn an_excluded_directory_stays_excluded_below_it_and_is_not_listed() {
        let mut a = access("/fs", path_policy("!=", "/secret"));
        assert!(a.allowed(Action::Read, &p("/public/x")));
        assert!(a.allowed(Action::Read, &p("/")));
        for hidden in ["/secret", "/secret/x", "/secret/a/b"] {
            assert!(!a.allowed(Action::Read, &p(hidden)), "{hidden}");
            assert!(!a.visible(&p(hidden)), "{hidden}");
        }
        assert_eq!(a.roots(), vec![TenantPath::root()]);
    }

    #[test]
    fn a_link_about_another_command_tree_names_no_root() {
        let mut a = access("/db", path_policy("==", "/site"));
        assert!(a.roots().is_empty());
        assert!(!a.allowed(Action::Read, &p("/site")));
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
