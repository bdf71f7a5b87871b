//! `tickprobe`: a schedule-only test component. Its tick handler does what the schedule's name
//! says: `panic*` panics on the first attempt of each run (and succeeds on a retry), `spin*`
//! loops until the CPU limit stops it, `fail*` returns an error, anything else succeeds. Every
//! tick prints one line with its schedule, attempt and run id.

mod chrono {
    wit_bindgen::generate!({
        path: "../../../wit/zero-chrono",
        world: "zero:chrono/ticker",
    });
}

use chrono::exports::zero::chrono::tick_handler::{Guest, Tick};

struct Component;

chrono::export!(Component with_types_in chrono);

impl Guest for Component {
    fn handle_tick(tick: Tick) -> Result<(), String> {
        println!(
            "tick {} attempt {} run {}",
            tick.schedule, tick.attempt, tick.run_id
        );
        if tick.schedule.starts_with("panic") && tick.attempt == 1 {
            panic!("tickprobe panics on the first attempt");
        }
        if tick.schedule.starts_with("spin") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if tick.schedule.starts_with("fail") {
            return Err("tickprobe was told to fail".into());
        }
        Ok(())
    }
}
