//! The open resources (descriptors, directory listings, streams) of an instance, counted
//! against the instance's limit and the tenant's and node's budgets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::FsResult;
use super::types::ErrorCode;

/// The open resources of every instance of the node, in all and per tenant.
#[derive(Debug)]
pub(super) struct OpenBudget {
    pub(super) max_total: usize,
    pub(super) max_per_tenant: usize,
    /// In all, and per tenant (entries at zero are removed).
    pub(super) held: Mutex<(usize, HashMap<String, usize>)>,
}

/// Which budget refused a resource.
enum OverBudget {
    Node(usize),
    Tenant(usize),
}

impl OpenBudget {
    /// An empty budget of `max_total` resources, `max_per_tenant` per tenant.
    pub(super) fn new(max_total: usize, max_per_tenant: usize) -> Self {
        OpenBudget {
            max_total,
            max_per_tenant,
            held: Mutex::new((0, HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<String, usize>)> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire(&self, tenant: &str) -> Result<(), OverBudget> {
        let mut held = self.lock();
        let (total, tenants) = &mut *held;
        let of_tenant = tenants.get(tenant).copied().unwrap_or(0);
        if of_tenant >= self.max_per_tenant {
            return Err(OverBudget::Tenant(self.max_per_tenant));
        }
        if *total >= self.max_total {
            return Err(OverBudget::Node(self.max_total));
        }
        *total += 1;
        tenants.insert(tenant.to_string(), of_tenant + 1);
        Ok(())
    }

    fn release(&self, tenant: &str) {
        let mut held = self.lock();
        let (total, tenants) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(n) = tenants.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                tenants.remove(tenant);
            }
        }
    }
}

/// How many resources an instance holds open, against its limit.
pub(super) struct OpenCount {
    pub(super) open: AtomicUsize,
    pub(super) max: usize,
    /// The node's and the tenant's budgets, shared by every instance.
    pub(super) budget: Arc<OpenBudget>,
    /// Whether the refusal was logged already (once per instance).
    pub(super) warned: AtomicBool,
    pub(super) tenant: String,
    pub(super) request_id: String,
}

/// One open resource of an instance; dropping it frees its place.
pub(super) struct Slot(Arc<OpenCount>);

impl OpenCount {
    /// Takes a place for one more resource, or refuses with `insufficient-memory` at the
    /// instance's limit, the tenant's or the node's.
    pub(super) fn acquire(self: &Arc<Self>) -> FsResult<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        let refused = match taken {
            Err(_) => format!(
                "the instance holds {} open descriptors, directory listings and streams (limit [fs] max_open_per_instance = {})",
                self.max, self.max
            ),
            Ok(_) => match self.budget.acquire(&self.tenant) {
                Ok(()) => return Ok(Slot(self.clone())),
                Err(over) => {
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    match over {
                        OverBudget::Tenant(max) => format!(
                            "the tenant's instances hold {max} open descriptors, directory listings and streams together (limit [fs] max_open_files_per_tenant = {max})"
                        ),
                        OverBudget::Node(max) => format!(
                            "the node's instances hold {max} open descriptors, directory listings and streams together (limit [fs] max_open_files = {max})"
                        ),
                    }
                }
            },
        };
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                tenant = %self.tenant, request_id = %self.request_id,
                "too many open files: {refused}; further opens fail with insufficient-memory \
                 until some are closed"
            );
        }
        Err(ErrorCode::InsufficientMemory)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.budget.release(&self.0.tenant);
    }
}
