//! The cache's errors: each says what is wrong and how to fix it.

use std::fmt;

/// Which limit a call ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// The key is longer than `[cache] max_key_size`.
    KeySize,
    /// The value is larger than `[cache] max_value_size`.
    ValueSize,
    /// A batch names more keys than `[cache] max_batch_keys`.
    BatchKeys,
    /// A batch's values take more than `[cache] max_batch_bytes`.
    BatchSize,
    /// The entry alone is charged more than the tenant's quota (`[cache] tenant_quota`).
    Quota,
    /// The node's bound (`[cache] memory`) is reached and the rest is other tenants' fair share.
    Memory,
}

impl LimitKind {
    /// The `[cache]` setting that sets this limit.
    pub fn setting(self) -> &'static str {
        match self {
            LimitKind::KeySize => "max_key_size",
            LimitKind::ValueSize => "max_value_size",
            LimitKind::BatchKeys => "max_batch_keys",
            LimitKind::BatchSize => "max_batch_bytes",
            LimitKind::Quota => "tenant_quota",
            LimitKind::Memory => "memory",
        }
    }
}

/// What can go wrong in a cache call. Nothing changed when a call fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The caller's capability chain does not grant `command` on `key`.
    #[error(
        "permission denied: `{command}` on key `{key}`: {reason}; sign the component with a \
         capability for it, e.g. `zero sign --cmd {command} --policy '[[\"like\", \".key\", \"{prefix}*\"]]'`",
        prefix = key_prefix(key)
    )]
    PermissionDenied {
        /// The key.
        key: String,
        /// The command that is not granted (`/cache/read` or `/cache/write`).
        command: &'static str,
        /// Why: no token, an expired one, or the failed check of the chain.
        reason: String,
    },
    /// A limit was reached.
    #[error("{}", limit_message(*kind, *limit, *requested))]
    LimitExceeded {
        /// Which limit.
        kind: LimitKind,
        /// Its configured value (bytes or a count).
        limit: u64,
        /// What the call asked for (bytes or a count).
        requested: u64,
    },
    /// `increment` on a value that is not a decimal integer.
    #[error(
        "increment of key `{key}`: its value {shown} is not a decimal integer; increment only \
         keys that hold integers (set the key to \"0\" first, or use another key)"
    )]
    NotAnInteger {
        /// The key.
        key: String,
        /// The start of the value, quoted for the message.
        shown: String,
    },
    /// `increment` would leave the signed 64-bit range.
    #[error(
        "increment of key `{key}`: {current} + {delta} leaves the signed 64-bit range \
         (-9223372036854775808 to 9223372036854775807); reset the counter with set"
    )]
    Overflow {
        /// The key.
        key: String,
        /// Its current value.
        current: i64,
        /// The delta asked for.
        delta: i64,
    },
    /// A bad argument; the message says which and why.
    #[error("{0}")]
    Invalid(String),
}

/// The part of `key` up to and including its first `:` (or the whole key), for the example
/// policy in a permission error.
fn key_prefix(key: &str) -> String {
    let end = key.find(':').map_or(key.len(), |i| i + 1);
    key.get(..end).unwrap_or(key).replace(['"', '\''], "")
}

fn limit_message(kind: LimitKind, limit: u64, requested: u64) -> String {
    let knob = kind.setting();
    match kind {
        LimitKind::KeySize => format!(
            "the key is {requested} bytes, longer than this node allows ({limit} bytes, [cache] \
             {knob}); use a shorter key (for example a hash of the long one)"
        ),
        LimitKind::ValueSize => format!(
            "the value is {requested} bytes, larger than this node allows ({limit} bytes, [cache] \
             {knob}); store smaller values, or split one into several keys"
        ),
        LimitKind::BatchKeys => format!(
            "the batch names {requested} keys, more than this node allows ({limit}, [cache] \
             {knob}); split it into smaller batches"
        ),
        LimitKind::BatchSize => format!(
            "the values of the batch take {requested} bytes, more than this node returns at once \
             ({limit} bytes, [cache] {knob}); ask for fewer keys per batch"
        ),
        LimitKind::Quota => format!(
            "the entry is charged {requested} bytes (its key twice, its value and {} bytes of \
             bookkeeping), more than the tenant's whole quota ({limit} bytes, [cache] {knob}); \
             store a smaller value",
            crate::ENTRY_OVERHEAD
        ),
        LimitKind::Memory => format!(
            "the cache is full: the entry needs {requested} bytes and the rest of the node's \
             cache ({limit} bytes, [cache] {knob}) is held by other tenants within their fair \
             share, which is never evicted for another tenant; store a smaller value, delete \
             some of this tenant's entries, or ask the operator to raise [cache] {knob}"
        ),
    }
}

impl Error {
    /// A short name for the error, as the management API reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Error::PermissionDenied { .. } => "PermissionDenied",
            Error::LimitExceeded { .. } => "LimitExceeded",
            Error::NotAnInteger { .. } => "NotAnInteger",
            Error::Overflow { .. } => "Overflow",
            Error::Invalid(_) => "InvalidArgs",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.setting())
    }
}

/// A cache result.
pub type Result<T> = std::result::Result<T, Error>;
