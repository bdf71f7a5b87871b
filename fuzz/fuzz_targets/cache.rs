//! The cache store, driven by arbitrary operations of two tenants on the same keys, against a
//! reference model. Nothing panics; a read returns the value the reference holds for that
//! tenant or nothing (an entry may be evicted, never altered), so one tenant never reads
//! another's value and an expired entry is never returned; the node-wide memory bound and the
//! per-tenant quota always hold.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use zerocache::{Cache, CacheSettings, Clock, ManualClock};

const TENANTS: &[&str] = &["acme", "beta"];
const KEYS: &[&str] = &["a", "b", "note:1", "note:2", ""];

/// What the reference knows about one entry.
#[derive(Clone, Debug)]
enum Known {
    /// This value, until this time (ms; `None`: no expiry).
    Value(Vec<u8>, Option<u64>),
    /// Changed by an operation the reference does not model byte for byte (increment).
    Unknown,
}

fn key(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 10)? {
        String::arbitrary(u)
    } else {
        Ok((*u.choose(KEYS)?).to_owned())
    }
}

fn value(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let len = u.int_in_range(0..=700)?;
    Ok(vec![u8::arbitrary(u)?; len])
}

fn ttl(u: &mut Unstructured<'_>) -> Result<Option<u64>> {
    Ok(if bool::arbitrary(u)? {
        Some(u.int_in_range(0..=5_000)?)
    } else {
        None
    })
}

/// Checks a read of `key` by `tenant` against the reference and updates it with what was seen.
fn saw(
    model: &mut HashMap<(usize, String), Known>,
    now: u64,
    t: usize,
    key: &str,
    got: Option<&[u8]>,
) {
    let slot = (t, key.to_owned());
    match (model.get(&slot), got) {
        (_, None) => {
            model.remove(&slot);
        }
        (Some(Known::Value(v, exp)), Some(g)) => {
            assert!(
                exp.is_none_or(|e| now <= e),
                "{key}: an expired entry was returned"
            );
            assert_eq!(
                v.as_slice(),
                g,
                "{key} of {}: a value it never set",
                TENANTS[t]
            );
        }
        (Some(Known::Unknown), Some(_)) => {}
        (None, Some(_)) => panic!("{key} of {}: read a value nobody set", TENANTS[t]),
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let settings = CacheSettings {
        memory: 4096,
        tenant_quota: if bool::arbitrary(u)? {
            Some(2500)
        } else {
            None
        },
        max_key_size: 64,
        max_value_size: 512,
        max_batch_keys: 4,
        max_batch_bytes: 1024,
    };
    let clock = Arc::new(ManualClock::new());
    let cache = Cache::with_clock(settings.clone(), clock.clone());
    let mut model: HashMap<(usize, String), Known> = HashMap::new();
    for _ in 0..u.int_in_range(1..=64)? {
        let t = u.int_in_range(0..=1)?;
        let tenant = TENANTS[t];
        let now = clock.now_ms();
        match u.int_in_range(0..=6)? {
            0 => {
                let (k, v, ttl) = (key(u)?, value(u)?, ttl(u)?);
                if cache.set(tenant, &k, &v, ttl).is_ok() {
                    model.insert((t, k), Known::Value(v, ttl.map(|d| now.saturating_add(d))));
                }
            }
            1 => {
                let k = key(u)?;
                if let Ok(got) = cache.get(tenant, &k) {
                    saw(&mut model, now, t, &k, got.as_deref());
                }
            }
            2 => {
                let k = key(u)?;
                if cache.delete(tenant, &k).is_ok() {
                    model.remove(&(t, k));
                }
            }
            3 => {
                let keys = (0..u.int_in_range(0..=5)?)
                    .map(|_| key(u))
                    .collect::<Result<Vec<_>>>()?;
                if let Ok(got) = cache.get_many(tenant, &keys) {
                    assert_eq!(got.len(), keys.len());
                    for (k, g) in keys.iter().zip(&got) {
                        saw(&mut model, now, t, k, g.as_deref());
                    }
                }
            }
            4 => clock.advance(Duration::from_millis(u.int_in_range(0..=3_000)?)),
            5 => {
                let k = key(u)?;
                if cache
                    .increment(tenant, &k, i64::arbitrary(u)?, ttl(u)?)
                    .is_ok()
                {
                    model.insert((t, k), Known::Unknown);
                }
            }
            _ => {
                let k = key(u)?;
                let expected = if bool::arbitrary(u)? {
                    Some(value(u)?)
                } else {
                    None
                };
                let (new, ttl) = (value(u)?, ttl(u)?);
                if let Ok(swapped) =
                    cache.compare_and_swap(tenant, &k, expected.as_deref(), &new, ttl)
                {
                    if swapped {
                        model.insert(
                            (t, k),
                            Known::Value(new, ttl.map(|d| now.saturating_add(d))),
                        );
                    } else {
                        let slot = (t, k);
                        match (model.get(&slot), &expected) {
                            // What the reference holds was expected: it must have been evicted
                            // or have expired.
                            (Some(Known::Value(v, _)), Some(e)) if v == e => {
                                model.remove(&slot);
                            }
                            (None, None) => panic!(
                                "{} of {tenant}: compare-and-swap saw a value nobody set",
                                slot.1
                            ),
                            _ => {}
                        }
                    }
                }
            }
        }
        assert!(cache.used() <= settings.memory, "over the node-wide bound");
        for tenant in TENANTS {
            assert!(
                cache.tenant_used(tenant) <= settings.effective_tenant_quota(),
                "over quota"
            );
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
