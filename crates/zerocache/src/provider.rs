//! The `zero:cache` host provider (`wit/zero-cache`, package `zero:cache@0.1.0`): the WIT glue
//! and the grant checks, nothing else. Once per deployment (its per-app phase) it takes the
//! component's capability checker ([`CacheGrants`] over the deployment's `ScopedChain`), shared
//! by its stores; each call checks its keys (`/cache/read`, `/cache/write`) and then runs on
//! the node's [`Cache`] within the component's tenant.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};
use zero_provider::{AppContext, HasView, Invocation, ResourceProvider, View};

use crate::{Cache, CacheGrants, Error, LimitKind, Op};

// Generated code: the WIT types carry the WIT's docs; the generated glue has none of its own.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/zero-cache",
        world: "zero:cache/imports",
        imports: { default: trappable },
    });
}

/// The WIT types of `zero:cache/cache`, as generated for the host.
pub use bindings::zero::cache::cache as wit;

/// The WIT interface this provider supplies.
pub const INTERFACE: &str = "zero:cache/cache";

/// The zerocache resource provider.
pub struct CacheProvider {
    cache: Arc<Cache>,
}

impl CacheProvider {
    /// A provider serving `cache` to components.
    pub fn new(cache: Arc<Cache>) -> Self {
        CacheProvider { cache }
    }
}

/// What the provider keeps per deployment: the grants of the component's chain.
pub struct CacheApp {
    grants: Arc<CacheGrants>,
}

/// What the provider keeps per store: the node's cache and the deployment's grants.
pub struct CacheInstance {
    cache: Arc<Cache>,
    grants: Arc<CacheGrants>,
}

/// What the host functions of `zero:cache` see: the store's [`CacheInstance`] and invocation.
pub type CacheView<'a> = View<'a, CacheInstance>;

/// The [`HasData`] of `zero:cache`'s host functions: they run on a [`CacheView`].
struct CacheData;

impl HasData for CacheData {
    type Data<'a> = CacheView<'a>;
}

impl ResourceProvider for CacheProvider {
    type App = CacheApp;
    type Instance = CacheInstance;

    fn name(&self) -> &'static str {
        "zerocache"
    }

    fn interfaces(&self) -> Vec<String> {
        vec![INTERFACE.to_owned()]
    }

    fn add_to_linker<T: HasView<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
        wit::add_to_linker::<T, CacheData>(linker, T::view)?;
        Ok(())
    }

    fn prepare(&self, app: &AppContext<'_>) -> anyhow::Result<CacheApp> {
        Ok(CacheApp {
            grants: Arc::new(CacheGrants::new(app.settings.grants.clone())),
        })
    }

    fn instance(
        &self,
        app: &Arc<CacheApp>,
        _invocation: &Invocation,
    ) -> anyhow::Result<CacheInstance> {
        Ok(CacheInstance {
            cache: self.cache.clone(),
            grants: app.grants.clone(),
        })
    }
}

/// Converts a cache error into the WIT error variant.
pub fn to_wit_error(e: Error) -> wit::Error {
    let message = e.to_string();
    match e {
        Error::PermissionDenied { key, command, .. } => {
            wit::Error::PermissionDenied(wit::PermissionDenied {
                key,
                command: command.to_owned(),
                message,
            })
        }
        Error::LimitExceeded {
            kind,
            limit,
            requested,
        } => wit::Error::LimitExceeded(wit::LimitExceeded {
            kind: match kind {
                LimitKind::KeySize => wit::LimitKind::KeySize,
                LimitKind::ValueSize => wit::LimitKind::ValueSize,
                LimitKind::BatchKeys => wit::LimitKind::BatchKeys,
                LimitKind::BatchSize => wit::LimitKind::BatchSize,
                LimitKind::Quota => wit::LimitKind::Quota,
                LimitKind::Memory => wit::LimitKind::Memory,
            },
            limit,
            requested,
            message,
        }),
        Error::NotAnInteger { .. } => wit::Error::NotAnInteger(message),
        Error::Overflow { .. } => wit::Error::Overflow(message),
        Error::Invalid(_) => wit::Error::Invalid(message),
    }
}

/// Checks `ops` on every key, then runs `f` on the cache within the component's tenant.
fn run<T>(
    view: &CacheView<'_>,
    ops: &[Op],
    keys: &[&str],
    f: impl FnOnce(&Cache, &str) -> crate::Result<T>,
) -> wasmtime::Result<Result<T, wit::Error>> {
    let store = &*view.instance;
    let checked = keys
        .iter()
        .try_for_each(|k| ops.iter().try_for_each(|op| store.grants.check(*op, k)));
    if let Err(e) = checked {
        return Ok(Err(refusal(view.invocation, e)));
    }
    Ok(f(&store.cache, &view.invocation.tenant).map_err(to_wit_error))
}

/// The WIT error of a refused check; a refused capability is logged in the app's log line
/// with the `zero.toml` line that grants it, and the guest's message carries the same line.
fn refusal(invocation: &Invocation, e: Error) -> wit::Error {
    let hint = match &e {
        Error::PermissionDenied { key, command, .. } => {
            let op = if *command == Op::Read.command() {
                Op::Read
            } else {
                Op::Write
            };
            crate::grants::refusal_hint(op, key)
        }
        _ => return to_wit_error(e),
    };
    tracing::warn!(
        tenant = %invocation.tenant,
        app = %invocation.app,
        request_id = %invocation.request_id,
        "zerocache: {hint}"
    );
    match to_wit_error(e) {
        wit::Error::PermissionDenied(mut p) => {
            p.message = format!("{}; {hint}", p.message);
            wit::Error::PermissionDenied(p)
        }
        other => other,
    }
}

fn to_vec(v: Option<Arc<[u8]>>) -> Option<Vec<u8>> {
    v.map(|v| v.to_vec())
}

impl wit::Host for CacheView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, wit::Error>> {
        run(self, &[Op::Read], &[&key], |c, t| {
            c.get(t, &key).map(to_vec)
        })
    }

    fn get_many(
        &mut self,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, wit::Error>> {
        // The count is checked before any key is, so a huge batch costs no grant checks.
        let limit = self.instance.cache.settings().max_batch_keys;
        if keys.len() > limit {
            return Ok(Err(to_wit_error(Error::LimitExceeded {
                kind: LimitKind::BatchKeys,
                limit: limit as u64,
                requested: keys.len() as u64,
            })));
        }
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        run(self, &[Op::Read], &names, |c, t| {
            c.get_many(t, &keys)
                .map(|vs| vs.into_iter().map(to_vec).collect())
        })
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        run(self, &[Op::Write], &[&key], |c, t| {
            c.set(t, &key, &value, ttl_ms)
        })
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), wit::Error>> {
        run(self, &[Op::Write], &[&key], |c, t| c.delete(t, &key))
    }

    fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, wit::Error>> {
        run(self, &[Op::Read, Op::Write], &[&key], |c, t| {
            c.increment(t, &key, delta, ttl_ms)
        })
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, wit::Error>> {
        run(self, &[Op::Read, Op::Write], &[&key], |c, t| {
            c.compare_and_swap(t, &key, expected.as_deref(), &new, ttl_ms)
        })
    }
}
