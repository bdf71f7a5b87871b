//! Tenant names and tenant-relative paths.

use std::fmt;

use crate::error::{Error, Result, truncate};

/// Longest accepted path, in bytes (as given, before normalization).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted path segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 255;
/// Longest accepted tenant name, in bytes.
pub const MAX_TENANT_LEN: usize = 63;

/// Checks a tenant name: 1 to 63 bytes of lowercase ASCII letters, digits, `-` and `_`.
pub fn validate_tenant(name: &str) -> Result<()> {
    let refuse = |reason: &str| Error::InvalidTenant {
        name: truncate(name),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(refuse("must not be empty"));
    }
    if name.len() > MAX_TENANT_LEN {
        return Err(refuse("must be at most 63 bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(refuse(
            "may contain only lowercase letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

/// The name of the reserved top-level directory of every tenant's namespace.
pub const RESERVED_NAME: &str = ".zero";

/// The reserved top-level directory of every tenant's namespace, where the node keeps the
/// tenant's deployed code: readable by the owner through the management API, never writable
/// through it, and invisible to components.
pub const RESERVED_DIR: &str = "/.zero";

/// A normalized absolute path inside one tenant's namespace, such as `/a/b.txt`.
///
/// Parsing resolves `.` and `..` segments; a `..` that would climb above the tenant root is
/// refused, so a `TenantPath` can never name anything outside its tenant. Empty segments (`//`,
/// a trailing `/` except for the root itself), NUL bytes, segments over 255 bytes and paths over
/// 4096 bytes are refused. The root is `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantPath(String);

impl TenantPath {
    /// The tenant root, `/`.
    pub fn root() -> Self {
        TenantPath("/".to_string())
    }

    /// Parses and normalizes a path string.
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() > MAX_PATH_LEN {
            return Err(Error::invalid_path(s, "longer than 4096 bytes"));
        }
        if s.contains('\0') {
            return Err(Error::invalid_path(s, "contains a NUL byte"));
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(Error::invalid_path(s, "must be absolute (start with '/')"));
        };
        let mut segments: Vec<&str> = Vec::new();
        if !rest.is_empty() {
            for seg in rest.split('/') {
                match seg {
                    "" => return Err(Error::invalid_path(s, "contains an empty segment")),
                    "." => {}
                    ".." => {
                        if segments.pop().is_none() {
                            return Err(Error::invalid_path(s, "'..' escapes the tenant root"));
                        }
                    }
                    _ if seg.len() > MAX_SEGMENT_LEN => {
                        return Err(Error::invalid_path(s, "a segment is longer than 255 bytes"));
                    }
                    _ => segments.push(seg),
                }
            }
        }
        let mut out = String::with_capacity(s.len());
        for seg in &segments {
            out.push('/');
            out.push_str(seg);
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(TenantPath(out))
    }

    /// The normalized path string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the tenant root `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The parent directory, or `None` for the root.
    pub fn parent(&self) -> Option<TenantPath> {
        self.split().map(|(p, _)| TenantPath(p.to_string()))
    }

    /// The last segment, or `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.split().map(|(_, n)| n)
    }

    /// The path's segments, from the root down.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// Appends one segment (which must be a valid, non-special name).
    pub fn join(&self, name: &str) -> Result<TenantPath> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(Error::invalid_path(name, "not a single path segment"));
        }
        let joined = if self.is_root() {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.0)
        };
        TenantPath::parse(&joined)
    }

    /// The path itself, then each of its ancestors up to the root.
    pub fn ancestors(&self) -> impl Iterator<Item = TenantPath> {
        std::iter::successors(Some(self.clone()), TenantPath::parent)
    }

    /// Whether this path is in the reserved [`RESERVED_DIR`] (deployed code), which only the
    /// node changes and components never see.
    pub fn is_reserved(&self) -> bool {
        self.segments().next() == Some(RESERVED_NAME)
    }

    /// Whether `self` is `other` or lies below it (component-wise, so `/ab` is not under `/a`).
    pub fn starts_with(&self, other: &TenantPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes()[other.0.len()] == b'/')
    }

    /// (parent string, last segment) for non-root paths.
    pub(crate) fn split(&self) -> Option<(&str, &str)> {
        if self.is_root() {
            return None;
        }
        let i = self.0.rfind('/')?;
        let parent = if i == 0 { "/" } else { &self.0[..i] };
        Some((parent, &self.0[i + 1..]))
    }
}

impl fmt::Display for TenantPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TenantPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TenantPath::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        TenantPath::parse(s).unwrap().as_str().to_string()
    }

    fn reason(s: &str) -> String {
        match TenantPath::parse(s) {
            Err(Error::InvalidPath { reason, .. }) => reason,
            other => panic!("{s:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn normalizes() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/a/b.txt"), "/a/b.txt");
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/../b"), "/b");
        assert_eq!(ok("/a/b/../../c"), "/c");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/a/..."), "/a/...");
        assert_eq!(ok("/ü/日本"), "/ü/日本");
    }

    #[test]
    fn refuses_escapes_and_bad_shapes() {
        assert!(reason("/..").contains("escapes"));
        assert!(reason("/../b").contains("escapes"));
        assert!(reason("/a/../../b").contains("escapes"));
        assert!(reason("/a/./../..").contains("escapes"));
        assert!(reason("a/b").contains("absolute"));
        assert!(reason("").contains("absolute"));
        assert!(reason("../x").contains("absolute"));
        assert!(reason("//a").contains("empty segment"));
        assert!(reason("/a//b").contains("empty segment"));
        assert!(reason("/a/").contains("empty segment"));
        assert!(reason("/a\0b").contains("NUL"));
        assert!(reason(&format!("/{}", "x".repeat(256))).contains("255"));
        assert_eq!(ok(&format!("/{}", "x".repeat(255))).len(), 256);
        let long = "/abcdefg".repeat(513);
        assert!(reason(&long).contains("4096"));
    }

    #[test]
    fn parent_name_join_starts_with() {
        let p = TenantPath::parse("/a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "/a/b");
        assert_eq!(p.file_name(), Some("c"));
        assert_eq!(
            TenantPath::parse("/a").unwrap().parent().unwrap(),
            TenantPath::root()
        );
        assert!(TenantPath::root().parent().is_none());
        assert_eq!(TenantPath::root().join("x").unwrap().as_str(), "/x");
        assert!(TenantPath::root().join("..").is_err());
        assert!(TenantPath::root().join("a/b").is_err());
        let a = TenantPath::parse("/a").unwrap();
        assert!(p.starts_with(&a));
        assert!(a.starts_with(&a));
        assert!(!TenantPath::parse("/ab").unwrap().starts_with(&a));
        assert!(a.starts_with(&TenantPath::root()));
        assert_eq!(p.segments().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn tenants() {
        for good in ["a", "acme", "t-1_x", &"a".repeat(63)] {
            validate_tenant(good).unwrap();
        }
        for bad in [
            "",
            "A",
            "a/b",
            "..",
            "a.b",
            "a b",
            "ä",
            &"a".repeat(64),
            "a\0",
        ] {
            assert!(
                matches!(validate_tenant(bad), Err(Error::InvalidTenant { .. })),
                "{bad:?}"
            );
        }
    }
}
