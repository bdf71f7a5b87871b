//! zerochrono: run on schedules (`zero:chrono`).
//!
//! ```text
//! use zerosdk::zerochrono::{self, Tick};
//!
//! #[zerochrono::handler]
//! fn tick(t: Tick) -> Result<(), String> {
//!     println!("tick of {} due at {}", t.schedule, t.scheduled_ms);
//!     Ok(())
//! }
//! ```
//!
//! The schedules are declared when the app is deployed; the node calls the handler at each
//! tick in a fresh instance, with a request's limits. An `Err` is logged with the run id and
//! not retried (a panic or a timeout is retried, as the schedule says). A component may have
//! both a tick handler and a `#[zeroproxy::handler]`.

use std::fmt::Display;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/zero-chrono",
        world: "zero:chrono/scheduled",
        pub_export_macro: true,
        export_macro_name: "__export_tick_handler",
        default_bindings_module: "::zerosdk::zerochrono::__private::bindings",
    });
}

/// One tick of a schedule: its name, when it was due and when this attempt started (ms since
/// the Unix epoch, UTC), the attempt (1, then 2 for the first retry, …) and the run id.
pub use bindings::exports::zero::chrono::tick_handler::Tick;

/// A schedule of this app as it was declared.
pub use bindings::zero::chrono::types::Schedule;

/// Marks the app's tick handler: `#[zerochrono::handler] fn tick(t: Tick) -> R` (or
/// `async fn`), where `R` is `()` or `Result<(), E: Display>`. It exports
/// `zero:chrono/tick-handler` calling the function.
pub use zerosdk_macros::tick_handler as handler;

/// The schedules of this app (nobody else's), in declaration order.
pub fn schedules() -> Vec<Schedule> {
    bindings::zero::chrono::schedules::all()
}

/// What a tick handler may return: `()` (success) or `Result<(), E>` with `E: Display` (an
/// error, logged with the run id).
pub trait IntoTickResult {
    /// The result the node gets.
    fn into_tick_result(self) -> Result<(), String>;
}

impl IntoTickResult for () {
    fn into_tick_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> IntoTickResult for Result<(), E> {
    fn into_tick_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// What `#[zerochrono::handler]` expands to; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use super::bindings;
    pub use super::bindings::__export_tick_handler as export;
    pub use super::bindings::exports::zero::chrono::tick_handler::Guest;

    use super::Tick;

    /// Runs a sync tick handler.
    pub fn run(tick: Tick, handler: impl FnOnce(Tick) -> Result<(), String>) -> Result<(), String> {
        handler(tick)
    }

    /// Runs an async tick handler on the reactor.
    pub fn run_async<F>(tick: Tick, handler: F) -> Result<(), String>
    where
        F: AsyncFnOnce(Tick) -> Result<(), String>,
    {
        wstd::runtime::block_on(handler(tick))
    }
}
