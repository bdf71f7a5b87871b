//! `zero:chrono/schedules` for components (`wit/zero-chrono`): an app reads its own schedules,
//! never another app's. The only file of the crate that knows wasmtime's linker.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};
use zero_provider::{AppContext, HasView, Invocation, ResourceProvider, View};

use crate::Chrono;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/zero-chrono",
        world: "zero:chrono/imports",
        imports: { default: trappable },
    });
}

use bindings::zero::chrono::schedules as wit;
use bindings::zero::chrono::types as wit_types;

/// The WIT interface this provider supplies.
pub const INTERFACE: &str = "zero:chrono/schedules";

/// The `zero:chrono/schedules` resource provider.
pub struct ChronoProvider {
    chrono: Chrono,
}

impl ChronoProvider {
    /// A provider answering from `chrono`'s schedules.
    pub fn new(chrono: Chrono) -> Self {
        ChronoProvider { chrono }
    }
}

/// What the provider keeps per store: the schedules, asked with the store's tenant and app.
pub struct ChronoInstance {
    chrono: Chrono,
}

/// What the host functions of `zero:chrono/schedules` see.
pub type ChronoView<'a> = View<'a, ChronoInstance>;

struct ChronoData;

impl HasData for ChronoData {
    type Data<'a> = ChronoView<'a>;
}

impl ResourceProvider for ChronoProvider {
    type App = ();
    type Instance = ChronoInstance;

    fn name(&self) -> &'static str {
        "zerochrono"
    }

    fn interfaces(&self) -> Vec<String> {
        vec![INTERFACE.to_owned(), "zero:chrono/types".to_owned()]
    }

    fn add_to_linker<T: HasView<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
        wit_types::add_to_linker::<T, ChronoData>(linker, T::view)?;
        wit::add_to_linker::<T, ChronoData>(linker, T::view)?;
        Ok(())
    }

    fn prepare(&self, _app: &AppContext<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    fn instance(&self, _app: &Arc<()>, _invocation: &Invocation) -> anyhow::Result<ChronoInstance> {
        Ok(ChronoInstance {
            chrono: self.chrono.clone(),
        })
    }
}

impl wit_types::Host for ChronoView<'_> {}

impl wit::Host for ChronoView<'_> {
    fn all(&mut self) -> wasmtime::Result<Vec<wit::Schedule>> {
        let inv = self.invocation;
        Ok(self
            .instance
            .chrono
            .list(&inv.tenant, Some(&inv.app))
            .into_iter()
            .map(|s| wit::Schedule {
                name: s.decl.name,
                expression: s.decl.schedule,
                time_zone: s.decl.time_zone.unwrap_or_else(|| "UTC".into()),
                catch_up: s.decl.catch_up == crate::CatchUp::Last,
                retries: s.decl.retries,
                next_ms: s.next_ms.and_then(|ms| u64::try_from(ms).ok()),
            })
            .collect())
    }
}
