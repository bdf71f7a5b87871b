//! The in-memory store: per-tenant namespaces, the node-wide memory bound, LRU eviction with a
//! fair share per tenant, and TTL expiry on a [`Clock`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{CacheSettings, Clock, Error, LimitKind, Result, SystemClock};

/// Bytes of bookkeeping charged to every entry beside its key and value (hash-map slot, LRU and
/// expiry index nodes, the value's allocation header).
pub const ENTRY_OVERHEAD: u64 = 128;

/// What an entry is charged against the bounds: its key twice (the entry map and the LRU index
/// each hold a copy), its value and [`ENTRY_OVERHEAD`].
pub fn entry_charge(key: &str, value_len: usize) -> u64 {
    (key.len() as u64)
        .saturating_mul(2)
        .saturating_add(value_len as u64)
        .saturating_add(ENTRY_OVERHEAD)
}

struct Entry {
    value: Arc<[u8]>,
    /// Clock time (ms) at which the entry stops existing.
    expires: Option<u64>,
    /// Position in the LRU order (larger: used more recently); unique node-wide.
    tick: u64,
    charge: u64,
}

#[derive(Default)]
struct Space {
    entries: HashMap<String, Entry>,
    /// Least recently used first.
    lru: BTreeMap<u64, String>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    spaces: HashMap<Arc<str>, Space>,
    used: u64,
    next_tick: u64,
    /// (expiry time, tick) of every entry with a time to live, soonest first.
    expiries: BTreeMap<(u64, u64), Arc<str>>,
}

/// The node's cache: one namespace per tenant, in memory.
///
/// # Namespaces
///
/// Every call names the tenant; a key is only ever looked up in that tenant's namespace, so the
/// same key in two tenants names two unrelated entries.
///
/// # Sizes and the memory bound
///
/// Each entry is charged [`entry_charge`] (its key twice, its value, [`ENTRY_OVERHEAD`]). Keys
/// are 1 to `max_key_size` bytes, values at most `max_value_size`. All entries together are
/// charged at most `memory`, and one tenant's at most `tenant_quota` (default: `memory`).
///
/// # Eviction (the fairness rule)
///
/// A write that needs room does, in order:
///
/// 1. drops every expired entry of the node;
/// 2. refuses the entry if it alone is charged more than the tenant quota ([`LimitKind::Quota`]);
/// 3. if the tenant's entries plus the new one exceed the tenant quota, evicts the tenant's own
///    least recently used entries until it fits;
/// 4. while the node's total plus the new entry exceeds `memory`, evicts the least recently
///    used entry of the tenant that is furthest above its **fair share**, where the share is
///    `memory / n`, `n` being the number of tenants holding entries (counting the writer), and
///    the writer's usage counts the new entry. Other tenants are candidates only while they are
///    above their share; the writer is always a candidate for its own entries.
///
/// So a tenant holding no more than its fair share never loses an entry to another tenant's
/// write: a tenant filling the cache evicts its own entries (and those of tenants above their
/// share), never the others'. When room cannot be made that way (every other tenant is within
/// its share and the writer has nothing left to give), the write is refused with
/// [`LimitKind::Memory`] before anything is evicted. Reads move an entry to the most recently
/// used end.
///
/// # Time
///
/// Times to live are milliseconds on the cache's [`Clock`]; an entry whose time has come is
/// absent for every call from then on (and its memory is reclaimed on the next access or write).
pub struct Cache {
    settings: CacheSettings,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    /// Reads that found their key (the node's metrics).
    hits: prometheus_client::metrics::counter::Counter,
    /// Reads that did not (absent or expired).
    misses: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("settings", &self.settings)
            .field("used", &self.used())
            .finish()
    }
}

impl Cache {
    /// A cache with `settings` on the real clock. The settings should have passed
    /// [`CacheSettings::validate`].
    pub fn new(settings: CacheSettings) -> Self {
        Self::with_clock(settings, Arc::new(SystemClock::new()))
    }

    /// A cache with `settings` on `clock` (a [`crate::ManualClock`] in tests).
    pub fn with_clock(settings: CacheSettings, clock: Arc<dyn Clock>) -> Self {
        Cache {
            settings,
            clock,
            inner: Mutex::new(Inner::default()),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    fn count_read<T>(&self, found: &Option<T>) {
        match found {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        };
    }

    /// The settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code path panics while holding the lock; a poisoned lock still holds a
        // consistent store.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes charged by every entry of the node (expired ones included until reclaimed).
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Bytes charged by `tenant`'s entries.
    pub fn tenant_used(&self, tenant: &str) -> u64 {
        self.lock().spaces.get(tenant).map_or(0, |s| s.used)
    }

    /// Number of entries `tenant` holds (expired ones included until reclaimed).
    pub fn tenant_len(&self, tenant: &str) -> usize {
        self.lock()
            .spaces
            .get(tenant)
            .map_or(0, |s| s.entries.len())
    }

    fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::Invalid(format!(
                "the key is empty; use a key of 1 to {} bytes",
                self.settings.max_key_size
            )));
        }
        let limit = self.settings.max_key_size;
        if key.len() as u64 > limit {
            return Err(Error::LimitExceeded {
                kind: LimitKind::KeySize,
                limit,
                requested: key.len() as u64,
            });
        }
        Ok(())
    }

    fn check_value(&self, len: usize) -> Result<()> {
        let limit = self.settings.max_value_size;
        if len as u64 > limit {
            return Err(Error::LimitExceeded {
                kind: LimitKind::ValueSize,
                limit,
                requested: len as u64,
            });
        }
        Ok(())
    }

    fn expiry(&self, ttl_ms: Option<u64>) -> Result<Option<u64>> {
        match ttl_ms {
            None => Ok(None),
            Some(0) => Err(Error::Invalid(
                "the time to live is 0 ms: give a positive number of milliseconds, or none for \
                 an entry that lives until deleted or evicted"
                    .into(),
            )),
            Some(ttl) => Ok(Some(self.clock.now_ms().saturating_add(ttl))),
        }
    }

    /// The value of `key` in `tenant`, or `None` when absent or expired.
    pub fn get(&self, tenant: &str, key: &str) -> Result<Option<Arc<[u8]>>> {
        self.check_key(key)?;
        let now = self.clock.now_ms();
        let found = self
            .lock()
            .lookup(tenant, key, now)
            .map(|e| e.value.clone());
        self.count_read(&found);
        Ok(found)
    }

    /// The values of `keys` in `tenant`, in order. At most `max_batch_keys` keys, and the values
    /// found at most `max_batch_bytes` together.
    pub fn get_many(&self, tenant: &str, keys: &[String]) -> Result<Vec<Option<Arc<[u8]>>>> {
        let limit = self.settings.max_batch_keys as u64;
        if keys.len() as u64 > limit {
            return Err(Error::LimitExceeded {
                kind: LimitKind::BatchKeys,
                limit,
                requested: keys.len() as u64,
            });
        }
        for k in keys {
            self.check_key(k)?;
        }
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        // Sized before anything is touched, so that a refused batch changes nothing (not even
        // the LRU order).
        let total: u64 = keys
            .iter()
            .filter_map(|k| inner.peek(tenant, k, now))
            .map(|e| e.value.len() as u64)
            .sum();
        let limit = self.settings.max_batch_bytes;
        if total > limit {
            return Err(Error::LimitExceeded {
                kind: LimitKind::BatchSize,
                limit,
                requested: total,
            });
        }
        let found: Vec<Option<Arc<[u8]>>> = keys
            .iter()
            .map(|k| inner.lookup(tenant, k, now).map(|e| e.value.clone()))
            .collect();
        drop(inner);
        for f in &found {
            self.count_read(f);
        }
        Ok(found)
    }

    /// Stores `value` under `key` in `tenant`, expiring `ttl_ms` milliseconds from now (`None`:
    /// never), replacing any previous value.
    pub fn set(&self, tenant: &str, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<()> {
        self.check_key(key)?;
        self.check_value(value.len())?;
        let expires = self.expiry(ttl_ms)?;
        let now = self.clock.now_ms();
        self.lock()
            .store(&self.settings, tenant, key, Arc::from(value), expires, now)
    }

    /// Removes `key` from `tenant` (nothing happens when it is absent).
    pub fn delete(&self, tenant: &str, key: &str) -> Result<()> {
        self.check_key(key)?;
        self.lock().remove(tenant, key);
        Ok(())
    }

    /// Adds `delta` to the decimal integer stored under `key` and returns the new value. An
    /// absent or expired key counts as 0 and is created expiring after `ttl_ms`; an existing
    /// key keeps its expiry.
    pub fn increment(
        &self,
        tenant: &str,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64> {
        self.check_key(key)?;
        let created_expiry = self.expiry(ttl_ms)?;
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let (current, expires) = match inner.lookup(tenant, key, now) {
            None => (0, created_expiry),
            Some(e) => (parse_integer(key, &e.value)?, e.expires),
        };
        let next = current.checked_add(delta).ok_or_else(|| Error::Overflow {
            key: key.to_owned(),
            current,
            delta,
        })?;
        let text = next.to_string();
        inner.store(
            &self.settings,
            tenant,
            key,
            Arc::from(text.as_bytes()),
            expires,
            now,
        )?;
        Ok(next)
    }

    /// Replaces the value of `key` with `new` (expiring after `ttl_ms`, as [`Cache::set`]) if
    /// its current value is `expected` (`None`: absent or expired). Returns whether it did.
    pub fn compare_and_swap(
        &self,
        tenant: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<bool> {
        self.check_key(key)?;
        self.check_value(new.len())?;
        let expires = self.expiry(ttl_ms)?;
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let current = inner.lookup(tenant, key, now).map(|e| e.value.clone());
        let matches = match (current.as_deref(), expected) {
            (None, None) => true,
            (Some(c), Some(e)) => c == e,
            _ => false,
        };
        if matches {
            inner.store(&self.settings, tenant, key, Arc::from(new), expires, now)?;
        }
        Ok(matches)
    }
}

/// The integer value of an entry for `increment`: its decimal text (ASCII, optional sign).
fn parse_integer(key: &str, value: &[u8]) -> Result<i64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            let head: Vec<u8> = value.iter().take(24).copied().collect();
            let mut shown = format!("{:?}", String::from_utf8_lossy(&head));
            if value.len() > head.len() {
                shown.push_str(" (…)");
            }
            Error::NotAnInteger {
                key: key.to_owned(),
                shown,
            }
        })
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    /// The live entry of `key`, without moving it in the LRU order.
    fn peek(&self, tenant: &str, key: &str, now: u64) -> Option<&Entry> {
        let entry = self.spaces.get(tenant)?.entries.get(key)?;
        entry.expires.is_none_or(|t| t > now).then_some(entry)
    }

    /// The live entry of `key`, moved to the most recently used end; an expired one is removed.
    fn lookup(&mut self, tenant: &str, key: &str, now: u64) -> Option<&Entry> {
        let expired = self
            .spaces
            .get(tenant)?
            .entries
            .get(key)?
            .expires
            .is_some_and(|t| t <= now);
        if expired {
            self.remove(tenant, key);
            return None;
        }
        let tick = self.tick();
        let name = self.spaces.get_key_value(tenant)?.0.clone();
        let space = self.spaces.get_mut(tenant)?;
        let entry = space.entries.get_mut(key)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let k = space.lru.remove(&old).unwrap_or_else(|| key.to_owned());
        space.lru.insert(tick, k);
        if let Some(exp) = entry.expires {
            self.expiries.remove(&(exp, old));
            self.expiries.insert((exp, tick), name);
        }
        Some(entry)
    }

    /// Removes `key` from `tenant`, returning its charge.
    fn remove(&mut self, tenant: &str, key: &str) -> Option<u64> {
        let space = self.spaces.get_mut(tenant)?;
        let entry = space.entries.remove(key)?;
        space.lru.remove(&entry.tick);
        space.used = space.used.saturating_sub(entry.charge);
        let empty = space.entries.is_empty();
        if empty {
            self.spaces.remove(tenant);
        }
        if let Some(exp) = entry.expires {
            self.expiries.remove(&(exp, entry.tick));
        }
        self.used = self.used.saturating_sub(entry.charge);
        Some(entry.charge)
    }

    /// Removes `tenant`'s least recently used entry, returning its charge.
    fn evict_lru(&mut self, tenant: &str) -> Option<u64> {
        let key = self.spaces.get(tenant)?.lru.values().next()?.clone();
        self.remove(tenant, &key)
    }

    /// Drops every entry whose time has come.
    fn purge_expired(&mut self, now: u64) {
        while let Some((&(exp, tick), tenant)) = self.expiries.first_key_value() {
            if exp > now {
                break;
            }
            let tenant = tenant.clone();
            let key = self
                .spaces
                .get(&*tenant)
                .and_then(|s| s.lru.get(&tick))
                .cloned();
            match key {
                Some(key) => {
                    self.remove(&tenant, &key);
                }
                // Not indexed any more: drop the stale index entry itself.
                None => {
                    self.expiries.remove(&(exp, tick));
                }
            }
        }
    }

    /// Stores an entry, making room first by the rule documented on [`Cache`]. Nothing is
    /// evicted when the entry is refused.
    fn store(
        &mut self,
        settings: &CacheSettings,
        tenant: &str,
        key: &str,
        value: Arc<[u8]>,
        expires: Option<u64>,
        now: u64,
    ) -> Result<()> {
        self.purge_expired(now);
        let need = entry_charge(key, value.len());
        let quota = settings.effective_tenant_quota();
        if need > quota {
            return Err(Error::LimitExceeded {
                kind: LimitKind::Quota,
                limit: quota,
                requested: need,
            });
        }
        let memory = settings.memory;
        let old = self
            .spaces
            .get(tenant)
            .and_then(|s| s.entries.get(key))
            .map_or(0, |e| e.charge);
        let writer_used = self.spaces.get(tenant).map_or(0, |s| s.used);
        let tenants = self.spaces.len() + usize::from(!self.spaces.contains_key(tenant));
        let share = memory / tenants.max(1) as u64;
        // Refuse before evicting anything when the rule cannot make room: what may go is all of
        // the writer's entries and, of every other tenant, what it holds above its share.
        let after = self.used - old + need;
        if after > memory {
            let others: u64 = self
                .spaces
                .iter()
                .filter(|(t, _)| &***t != tenant)
                .map(|(_, s)| s.used.saturating_sub(share))
                .sum();
            let available = (writer_used - old).saturating_add(others);
            if after - memory > available {
                return Err(Error::LimitExceeded {
                    kind: LimitKind::Memory,
                    limit: memory,
                    requested: need,
                });
            }
        }
        self.remove(tenant, key);
        while self.spaces.get(tenant).map_or(0, |s| s.used) + need > quota {
            if self.evict_lru(tenant).is_none() {
                break;
            }
        }
        while self.used + need > memory {
            let Some(victim) = self.victim(tenant, need, share) else {
                // Unreachable after the check above; refuse rather than exceed the bound.
                return Err(Error::LimitExceeded {
                    kind: LimitKind::Memory,
                    limit: memory,
                    requested: need,
                });
            };
            self.evict_lru(&victim);
        }
        let tick = self.tick();
        let name: Arc<str> = match self.spaces.get_key_value(tenant) {
            Some((name, _)) => name.clone(),
            None => Arc::from(tenant),
        };
        if let Some(exp) = expires {
            self.expiries.insert((exp, tick), name.clone());
        }
        let space = self.spaces.entry(name).or_default();
        space.lru.insert(tick, key.to_owned());
        space.entries.insert(
            key.to_owned(),
            Entry {
                value,
                expires,
                tick,
                charge: need,
            },
        );
        space.used += need;
        self.used += need;
        Ok(())
    }

    /// The tenant to evict from: the one furthest above `share` (the writer's usage counting
    /// `need`), among the writer (if it holds entries) and the tenants above their share.
    fn victim(&self, writer: &str, need: u64, share: u64) -> Option<Arc<str>> {
        self.spaces
            .iter()
            .filter(|(_, s)| !s.entries.is_empty())
            .map(|(t, s)| {
                let is_writer = &**t == writer;
                let usage = s.used + if is_writer { need } else { 0 };
                (t, is_writer, i128::from(usage) - i128::from(share))
            })
            .filter(|(_, is_writer, over)| *is_writer || *over > 0)
            // Furthest above first; on a tie, the writer; then by name, for determinism.
            .max_by(|a, b| a.2.cmp(&b.2).then(a.1.cmp(&b.1)).then_with(|| b.0.cmp(a.0)))
            .map(|(t, _, _)| t.clone())
    }
}

impl zero_provider::metrics::Metrics for Cache {
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "hits",
            "Cache reads that found their key (hit ratio: hits / (hits + misses))",
            self.hits.clone(),
        );
        registry.register(
            "misses",
            "Cache reads that found nothing (absent, expired or evicted)",
            self.misses.clone(),
        );
    }
}
