//! Schedule declarations as `zero deploy --schedule` takes them (`name=EXPRESSION;tz=…;…`).
//! Parsing arbitrary text never panics; a parsed declaration writes back (`to_arg`) to text
//! that parses to the same declaration; a schedule built from it answers `next_after` with a
//! time strictly after the one asked and `latest_at_or_before` with one at or before it, for
//! any time, including the extremes of the calendar.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use zerochrono::{Schedule, ScheduleDecl};

const EXPRESSIONS: &[&str] = &[
    "*/5 * * * * *",
    "0 0 6 * * *",
    "0 30 2 * * Sun",
    "0 0 0 29 2 * 2100",
    "every 30s",
    "every 1ms",
    "every 0s",
    "every 24h",
    "0 0 1 1 1 * 1970",
    "59 59 23 31 12 *",
];
const ZONES: &[&str] = &[
    "Europe/Paris",
    "America/New_York",
    "UTC",
    "Asia/Kolkata",
    "Nowhere/City",
];

fn text(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 4)? {
        return String::arbitrary(u);
    }
    let mut s = format!("tick={}", u.choose(EXPRESSIONS)?);
    if bool::arbitrary(u)? {
        s.push_str(&format!(";tz={}", u.choose(ZONES)?));
    }
    if bool::arbitrary(u)? {
        s.push_str(";catch_up=last");
    }
    if bool::arbitrary(u)? {
        s.push_str(&format!(";retries={}", u32::arbitrary(u)?));
    }
    Ok(s)
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let arg = text(u)?;
    let Ok(decl) = ScheduleDecl::parse_arg(&arg) else {
        return Ok(());
    };
    let again = ScheduleDecl::parse_arg(&decl.to_arg()).expect("a declaration's text parses");
    assert_eq!(again, decl, "declaration text round trip");
    let Ok(schedule) = Schedule::parse(&decl) else {
        return Ok(());
    };
    for _ in 0..4 {
        let secs = if bool::arbitrary(u)? {
            u.int_in_range(-62_000_000_000i64..=250_000_000_000)?
        } else {
            u.int_in_range(1_700_000_000i64..=1_900_000_000)?
        };
        let Some(t) = DateTime::<Utc>::from_timestamp(secs, u.int_in_range(0..=999_999_999)?)
        else {
            continue;
        };
        if let Some(next) = schedule.next_after(t) {
            assert!(next > t, "{arg}: next_after({t}) gave {next}");
        }
        if let Some(last) = schedule.latest_at_or_before(t) {
            assert!(last <= t, "{arg}: latest_at_or_before({t}) gave {last}");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
