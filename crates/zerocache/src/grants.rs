//! Which keys a caller may read and write: the caller's UCAN chain asked with the command
//! (`/cache/read` or `/cache/write`) and the arguments `{tenant, component, key}`, through
//! [`zero_auth::ScopedChain`], the checker every provider shares.

use std::sync::Arc;

use zero_auth::{Command, ScopedChain};

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

/// The refusal of `op` on `key` in the words of the app manifest: what was not granted and
/// the `[capabilities.cache]` line that grants it (the key itself, a prefix of itself; `read`
/// for reading, `write` for writing, which `write` grants with reading).
pub fn refusal_hint(op: Op, key: &str) -> String {
    let field = match op {
        Op::Read => "read",
        Op::Write => "write",
    };
    zero_provider::not_granted(
        &format!("{} on key `{key}`", op.command()),
        &format!(
            "[capabilities.cache] {field} = {}",
            zero_provider::toml_list(key)
        ),
    )
}

/// The capabilities of one caller: its [`ScopedChain`] (the one checker every provider uses,
/// made once per deployment with the caller's `tenant` and `component`), asked with the command
/// (`/cache/read` or `/cache/write`) and the argument `key`. Any policy of the policy language
/// scopes keys; a prefix is `["like", ".key", "session:*"]`. Keys are flat strings, not paths:
/// no directory coverage applies. A caller without a token gets nothing.
#[derive(Debug, Clone)]
pub struct CacheGrants {
    chain: Arc<ScopedChain>,
    /// `/cache/read` and `/cache/write`, parsed once per deployment rather than per call.
    commands: [Option<Command>; 2],
}

impl CacheGrants {
    /// The grants of `chain`.
    pub fn new(chain: Arc<ScopedChain>) -> Self {
        CacheGrants {
            chain,
            commands: [Op::Read, Op::Write].map(|op| Command::parse(op.command()).ok()),
        }
    }

    /// Checks `op` on `key`, with the reason on refusal ([`Error::PermissionDenied`]).
    pub fn check(&self, op: Op, key: &str) -> Result<(), Error> {
        let denied = |reason: String| Error::PermissionDenied {
            key: key.to_owned(),
            command: op.command(),
            reason,
        };
        if !self.chain.has_token() {
            return Err(denied(
                "the component carries no capability token (a component without one gets no \
                 cache access)"
                    .into(),
            ));
        }
        let Some(cmd) = &self.commands[op as usize] else {
            return Err(denied(format!("`{}` is not a command", op.command())));
        };
        self.chain
            .allows(cmd, &[("key", key)])
            .map_err(|e| denied(e.to_string()))
    }
}
