//! Which keys a caller may read and write: the caller's UCAN chain asked with the command
//! (`/cache/read` or `/cache/write`) and the arguments `{tenant, component, key}`.

use std::collections::BTreeMap;

use zero_auth::{Capability, Command, Ipld};

use crate::Error;

/// A cache operation's capability command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `/cache/read`: `get`, `get-many` (and, with write, `increment` and `compare-and-swap`).
    Read,
    /// `/cache/write`: `set`, `delete` (and, with read, `increment` and `compare-and-swap`).
    Write,
}

impl Op {
    /// The UCAN command (`/cache/read` or `/cache/write`).
    pub fn command(self) -> &'static str {
        match self {
            Op::Read => "/cache/read",
            Op::Write => "/cache/write",
        }
    }
}

/// The capabilities of one caller (a component's embedded chain, for one request).
///
/// Each key is asked as `zero_auth::authorize(chain, command, {tenant, component, key})`, so
/// any policy of the policy language scopes keys; a prefix is `["like", ".key", "session:*"]`.
/// Keys are flat strings, not paths: no directory coverage applies.
#[derive(Debug, Clone)]
pub struct CacheGrants {
    capabilities: Option<Vec<Capability>>,
    base: BTreeMap<String, Ipld>,
    expiration: Option<u64>,
}

impl CacheGrants {
    /// Grants from `capabilities` (a validated chain's, root first; `None`: no token, nothing
    /// is granted; an empty list: the subject itself, everything is granted), asked with the
    /// fixed arguments `base` (`tenant`, and `component` for a component), refused after the
    /// Unix time `expiration`.
    pub fn new(
        capabilities: Option<Vec<Capability>>,
        base: BTreeMap<String, Ipld>,
        expiration: Option<u64>,
    ) -> Self {
        CacheGrants {
            capabilities,
            base,
            expiration,
        }
    }

    /// Checks `op` on `key`, with the reason on refusal ([`Error::PermissionDenied`]).
    pub fn check(&self, op: Op, key: &str) -> Result<(), Error> {
        let denied = |reason: String| Error::PermissionDenied {
            key: key.to_owned(),
            command: op.command(),
            reason,
        };
        let Some(caps) = &self.capabilities else {
            return Err(denied(
                "the component carries no capability token (a component without one gets no \
                 cache access)"
                    .into(),
            ));
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.expiration.is_some_and(|exp| exp <= now) {
            return Err(denied(
                "the component's capability token has expired".into(),
            ));
        }
        let cmd = Command::parse(op.command()).map_err(|e| denied(e.to_string()))?;
        let mut args = self.base.clone();
        args.insert("key".to_owned(), Ipld::String(key.to_owned()));
        zero_auth::authorize(caps, &cmd, &Ipld::Map(args)).map_err(|e| denied(e.to_string()))
    }
}
