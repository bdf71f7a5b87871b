//! zerocache: the tenant's in-memory key-value cache (`zero:cache`).
//!
//! ```text
//! use std::time::Duration;
//! use zerosdk::cache;
//!
//! cache::set("greeting", "hello", Some(Duration::from_secs(30)))?;
//! let hit: Option<String> = cache::get_string("greeting")?;
//! cache::set_json("user:1", &user, None)?;
//! let views = cache::increment("views", 1, None)?;
//! cache::delete("greeting")?;
//! ```
//!
//! Entries live until their time to live runs out, they are deleted, the node restarts, or the
//! node's memory bound evicts them: keep in the cache only what can be computed again. Every
//! call is checked against the component's token (`/cache/read`, `/cache/write`); a refusal
//! is [`Error::PermissionDenied`] with the node's message saying what to grant.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod bindings {
    wit_bindgen::generate!({
        path: "wit/zero-cache",
        world: "zero:cache/imports",
    });
}

use bindings::zero::cache::cache as wit;

pub use wit::{LimitExceeded, LimitKind, PermissionDenied};

/// What went wrong: the node's answer, or a value that is not what the caller expected.
#[derive(Debug, Clone)]
pub enum Error {
    /// The token does not grant the command on the key; the message says what to grant.
    PermissionDenied(PermissionDenied),
    /// A limit was reached; the call had no effect.
    LimitExceeded(LimitExceeded),
    /// `increment` on a value that is not a decimal integer.
    NotAnInteger(String),
    /// `increment` would leave the signed 64-bit range.
    Overflow(String),
    /// A bad key (empty), time to live (zero) or argument.
    Invalid(String),
    /// A stored value is not the text or JSON the caller asked for.
    Mapping(String),
}

impl Error {
    /// The message.
    pub fn message(&self) -> String {
        match self {
            Error::PermissionDenied(p) => p.message.clone(),
            Error::LimitExceeded(l) => l.message.clone(),
            Error::NotAnInteger(m) | Error::Overflow(m) | Error::Invalid(m) | Error::Mapping(m) => {
                m.clone()
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zerocache: {}", self.message())
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Error {
        match e {
            wit::Error::PermissionDenied(p) => Error::PermissionDenied(p),
            wit::Error::LimitExceeded(l) => Error::LimitExceeded(l),
            wit::Error::NotAnInteger(m) => Error::NotAnInteger(m),
            wit::Error::Overflow(m) => Error::Overflow(m),
            wit::Error::Invalid(m) => Error::Invalid(m),
        }
    }
}

/// A time to live in whole milliseconds (rounded up, so that a positive duration never
/// becomes 0, which the node refuses).
fn ttl_ms(ttl: Option<Duration>) -> Result<Option<u64>, Error> {
    match ttl {
        None => Ok(None),
        Some(d) if d.is_zero() => Err(Error::Invalid(
            "a time to live of zero would expire at once: give a positive duration, or None for no expiry".into(),
        )),
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            Ok(Some(u64::try_from(ms).unwrap_or(u64::MAX)))
        }
    }
}

/// The value of `key`, or `None` when absent or expired.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(wit::get(key)?)
}

/// The value of `key` as UTF-8 text.
pub fn get_string(key: &str) -> Result<Option<String>, Error> {
    get(key)?
        .map(|b| {
            String::from_utf8(b)
                .map_err(|e| Error::Mapping(format!("the value of `{key}` is not UTF-8 text: {e}")))
        })
        .transpose()
}

/// The value of `key` parsed as JSON into `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    get(key)?
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| {
                Error::Mapping(format!(
                    "the value of `{key}` is not the JSON expected: {e}"
                ))
            })
        })
        .transpose()
}

/// The values of `keys`, in order. One refused key refuses the whole call.
pub fn get_many<K: AsRef<str>>(keys: &[K]) -> Result<Vec<Option<Vec<u8>>>, Error> {
    let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_string()).collect();
    Ok(wit::get_many(&keys)?)
}

/// Stores `value` under `key`, expiring after `ttl` (`None`: until deleted or evicted).
pub fn set(key: &str, value: impl AsRef<[u8]>, ttl: Option<Duration>) -> Result<(), Error> {
    Ok(wit::set(key, value.as_ref(), ttl_ms(ttl)?)?)
}

/// Stores `value` as JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
    ttl: Option<Duration>,
) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value).map_err(|e| {
        Error::Mapping(format!(
            "the value for `{key}` could not be serialized as JSON: {e}"
        ))
    })?;
    set(key, bytes, ttl)
}

/// Removes `key` (nothing happens when it is absent).
pub fn delete(key: &str) -> Result<(), Error> {
    Ok(wit::delete(key)?)
}

/// Adds `delta` to the integer under `key` (absent counts as 0 and is created with `ttl`) and
/// returns the new value, atomically.
pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, Error> {
    Ok(wit::increment(key, delta, ttl_ms(ttl)?)?)
}

/// Replaces the value of `key` with `new` if it is `expected` (`None`: absent), atomically;
/// returns whether it was replaced.
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: impl AsRef<[u8]>,
    ttl: Option<Duration>,
) -> Result<bool, Error> {
    Ok(wit::compare_and_swap(
        key,
        expected,
        new.as_ref(),
        ttl_ms(ttl)?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds_and_zero_is_refused() {
        assert_eq!(ttl_ms(None).unwrap(), None);
        assert_eq!(ttl_ms(Some(Duration::from_micros(1))).unwrap(), Some(1));
        assert_eq!(
            ttl_ms(Some(Duration::from_millis(1500))).unwrap(),
            Some(1500)
        );
        assert_eq!(
            ttl_ms(Some(Duration::from_secs(u64::MAX))).unwrap(),
            Some(u64::MAX)
        );
        let e = ttl_ms(Some(Duration::ZERO)).unwrap_err();
        assert!(e.message().contains("positive duration"), "{e}");
    }
}
