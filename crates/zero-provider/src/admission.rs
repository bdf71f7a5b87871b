//! Run slots shared by every event provider: how many runs (HTTP requests, scheduled ticks,
//! any event that makes the core run a component) the node and each tenant may have in flight.
//!
//! The node's instance pool is sized from the node's slot count (`[http]
//! max_concurrent_requests`), so every event provider must take its slots here: a run that
//! bypassed them (a schedule's tick, say) would take an instance that an admitted request of
//! another tenant then fails to get. One [`Admission`] is made by the node assembly and handed
//! to each event provider; a tenant's slots are one semaphore, whichever provider takes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The node's run slots and every tenant's (see the module documentation). Shared by `Arc`.
#[derive(Debug)]
pub struct Admission {
    node: Arc<Semaphore>,
    node_limit: usize,
    tenant_limit: usize,
    /// Every tenant's slots, kept for the node's life so that runs in flight keep counting
    /// against the same limit whatever providers reload.
    tenants: Mutex<HashMap<Arc<str>, TenantSlots>>,
}

/// One tenant's run slots (cheap to clone): look them up once, take one per run.
#[derive(Debug, Clone)]
pub struct TenantSlots(Arc<Semaphore>);

/// Which limit refused a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node has its limit of runs in flight (the number).
    Node(usize),
    /// The tenant has its limit of runs in flight (the number).
    Tenant(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Node(n) => write!(
                f,
                "the node has [http] max_concurrent_requests ({n}) runs in flight"
            ),
            Refused::Tenant(n) => write!(
                f,
                "the tenant has [http] max_concurrent_requests_per_tenant ({n}) runs in flight"
            ),
        }
    }
}

/// A run's node slot and tenant slot, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    _node: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
}

/// Largest limit a tokio semaphore holds.
const MAX_SLOTS: usize = Semaphore::MAX_PERMITS;

impl Admission {
    /// At most `node_limit` runs on the node and `tenant_limit` per tenant (each at least 1, at
    /// most what a semaphore holds).
    pub fn new(node_limit: usize, tenant_limit: usize) -> Arc<Admission> {
        let node_limit = node_limit.clamp(1, MAX_SLOTS);
        Arc::new(Admission {
            node: Arc::new(Semaphore::new(node_limit)),
            node_limit,
            tenant_limit: tenant_limit.clamp(1, MAX_SLOTS),
            tenants: Mutex::new(HashMap::new()),
        })
    }

    /// No practical limit (tests and embedded uses that bound runs otherwise).
    pub fn unbounded() -> Arc<Admission> {
        Admission::new(MAX_SLOTS, MAX_SLOTS)
    }

    /// The node's limit.
    pub fn node_limit(&self) -> usize {
        self.node_limit
    }

    /// Each tenant's limit.
    pub fn tenant_limit(&self) -> usize {
        self.tenant_limit
    }

    /// `tenant`'s slots (made on first use).
    pub fn tenant(&self, tenant: &Arc<str>) -> TenantSlots {
        let mut all = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(tenant.clone())
            .or_insert_with(|| TenantSlots(Arc::new(Semaphore::new(self.tenant_limit))))
            .clone()
    }

    /// One of the node's slots, if one is free (the caller takes the tenant's next).
    pub fn node_slot(&self) -> Result<OwnedSemaphorePermit, Refused> {
        self.node
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Node(self.node_limit))
    }

    /// One of `tenant`'s slots, if one is free.
    pub fn tenant_slot(&self, tenant: &TenantSlots) -> Result<OwnedSemaphorePermit, Refused> {
        tenant
            .0
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Tenant(self.tenant_limit))
    }

    /// A node slot and one of `tenant`'s, or which limit refused (neither is taken then).
    pub fn admit(&self, tenant: &TenantSlots) -> Result<Admitted, Refused> {
        let node = self.node_slot()?;
        let tenant = self.tenant_slot(tenant)?;
        Ok(Admitted {
            _node: node,
            _tenant: tenant,
        })
    }

    /// Runs in flight on the node.
    pub fn in_flight(&self) -> usize {
        self.node_limit - self.node.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_at_its_limit_leaves_the_nodes_other_slots_to_others() {
        let a = Admission::new(3, 2);
        let acme = a.tenant(&Arc::from("acme"));
        let globex = a.tenant(&Arc::from("globex"));
        let one = a.admit(&acme).unwrap();
        let _two = a.admit(&acme).unwrap();
        assert_eq!(a.admit(&acme).unwrap_err(), Refused::Tenant(2));
        // The refusal gave the node slot it took back.
        assert_eq!(a.in_flight(), 2);
        let _three = a.admit(&globex).unwrap();
        assert_eq!(a.admit(&globex).unwrap_err(), Refused::Node(3));
        drop(one);
        assert!(a.admit(&globex).is_ok());
    }

    #[test]
    fn a_tenants_slots_are_the_same_whoever_looks_them_up() {
        let a = Admission::new(10, 1);
        let name: Arc<str> = Arc::from("acme");
        let _held = a.admit(&a.tenant(&name)).unwrap();
        assert_eq!(a.admit(&a.tenant(&name)).unwrap_err(), Refused::Tenant(1));
    }

    #[test]
    fn limits_are_clamped_to_what_a_semaphore_holds() {
        let a = Admission::new(0, usize::MAX);
        assert_eq!(a.node_limit(), 1);
        assert_eq!(a.tenant_limit(), MAX_SLOTS);
        let u = Admission::unbounded();
        assert_eq!(u.node_limit(), MAX_SLOTS);
    }
}
