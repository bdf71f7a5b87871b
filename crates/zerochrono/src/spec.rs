//! Schedules as declared (`name=*/5 * * * * *;tz=Europe/Paris;catch_up=last;retries=2` on the
//! command line, a table in `zerocore.toml`) and as parsed: when they fire.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Whether ticks missed while the node was down run when it comes back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Missed ticks are not replayed (the default).
    #[default]
    None,
    /// The latest missed tick runs once, when the schedule is installed again.
    Last,
}

/// A schedule as declared: what a deploy names, the app's record keeps and `zerocore.toml`
/// writes (`{ name = "report", schedule = "0 0 6 * * *", time_zone = "Europe/Paris",
/// catch_up = "last", retries = 2 }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDecl {
    /// The schedule's name within its app (`[a-z0-9_-]`, 1 to 63 characters).
    pub name: String,
    /// A cron expression with seconds (`sec min hour day-of-month month day-of-week [year]`),
    /// or `every <n><unit>` (units `ms`, `s`, `m`, `h`; e.g. `every 30s`).
    pub schedule: String,
    /// The IANA time zone the cron expression is read in (`Europe/Paris`); UTC when unset.
    /// Intervals do not depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Whether the latest tick missed while the node was down runs at start.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// How many times a run that traps or times out is tried again (default 0).
    #[serde(default)]
    pub retries: u32,
}

impl ScheduleDecl {
    /// Parses the command-line form `name=EXPRESSION[;tz=ZONE][;catch_up=last|none][;retries=N]`,
    /// e.g. `tick=*/5 * * * * *` or `report=0 0 6 * * *;tz=Europe/Paris;retries=2`.
    pub fn parse_arg(arg: &str) -> Result<ScheduleDecl, Error> {
        let bad = |why: String| {
            Error::Invalid(format!(
                "`{arg}` is not a schedule ({why}): write `name=EXPRESSION` with optional `;tz=ZONE`, \
             `;catch_up=last` and `;retries=N`, e.g. `tick=*/5 * * * * *` or `sync=every 30s;retries=2`"
            ))
        };
        let (name, rest) = arg
            .split_once('=')
            .ok_or_else(|| bad("no `=` after the name".into()))?;
        let mut parts = rest.split(';');
        let schedule = parts.next().unwrap_or_default().trim().to_string();
        let mut decl = ScheduleDecl {
            name: name.trim().to_string(),
            schedule,
            time_zone: None,
            catch_up: CatchUp::None,
            retries: 0,
        };
        for option in parts {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| bad(format!("option `{option}` has no `=`")))?;
            let value = value.trim();
            match key.trim() {
                "tz" | "time_zone" => decl.time_zone = Some(value.to_string()),
                "catch_up" => {
                    decl.catch_up = match value {
                        "last" => CatchUp::Last,
                        "none" => CatchUp::None,
                        other => {
                            return Err(bad(format!(
                                "catch_up is `last` or `none`, not `{other}`"
                            )));
                        }
                    }
                }
                "retries" => {
                    decl.retries = value
                        .parse()
                        .map_err(|_| bad(format!("retries is a whole number, not `{value}`")))?
                }
                other => {
                    return Err(bad(format!(
                        "unknown option `{other}` (use tz, catch_up or retries)"
                    )));
                }
            }
        }
        Ok(decl)
    }

    /// The command-line form of the declaration (what [`ScheduleDecl::parse_arg`] reads).
    pub fn to_arg(&self) -> String {
        let mut s = format!("{}={}", self.name, self.schedule);
        if let Some(tz) = &self.time_zone {
            s.push_str(&format!(";tz={tz}"));
        }
        if self.catch_up == CatchUp::Last {
            s.push_str(";catch_up=last");
        }
        if self.retries > 0 {
            s.push_str(&format!(";retries={}", self.retries));
        }
        s
    }
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum When {
    /// A cron expression with seconds, read in the schedule's time zone.
    Cron(Box<cron::Schedule>),
    /// Every so long, aligned on the Unix epoch (so the ticks do not depend on when the node
    /// started).
    Every(Duration),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The declaration it was parsed from.
    pub decl: ScheduleDecl,
    /// When it fires.
    pub when: When,
    /// The time zone of a cron expression.
    pub tz: Tz,
}

/// Whether `name` is a valid schedule name.
fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Parses `every 30s`'s duration.
fn parse_every(text: &str, decl: &ScheduleDecl) -> Result<Duration, Error> {
    let bad = || {
        Error::Invalid(format!(
            "schedule `{}`: `{}` is not an interval: write `every <n><unit>` with a unit of ms, s, m \
             or h, e.g. `every 30s`",
            decl.name, decl.schedule
        ))
    };
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let unit = t[digits..].trim();
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    }
    .ok_or_else(bad)?;
    if ms == 0 {
        return Err(Error::Invalid(format!(
            "schedule `{}`: an interval must be longer than 0",
            decl.name
        )));
    }
    Ok(Duration::from_millis(ms))
}

impl Schedule {
    /// Parses a declaration, saying what is wrong with it and how to fix it.
    pub fn parse(decl: &ScheduleDecl) -> Result<Schedule, Error> {
        if !valid_name(&decl.name) {
            return Err(Error::Invalid(format!(
                "`{}` is not a schedule name: use lowercase letters, digits, `-` and `_` (1 to 63 \
                 characters)",
                decl.name
            )));
        }
        let tz = match &decl.time_zone {
            None => Tz::UTC,
            Some(zone) => Tz::from_str(zone).map_err(|_| {
                Error::Invalid(format!(
                    "schedule `{}`: `{zone}` is not a time zone; use an IANA name such as `UTC`, \
                     `Europe/Paris` or `America/New_York`",
                    decl.name
                ))
            })?,
        };
        let text = decl.schedule.trim();
        let when = if let Some(rest) = text.strip_prefix("every ") {
            When::Every(parse_every(rest, decl)?)
        } else {
            let fields = text.split_whitespace().count();
            if !(6..=7).contains(&fields) {
                return Err(Error::Invalid(format!(
                    "schedule `{}`: `{text}` has {fields} fields; a cron expression here has 6 or 7, \
                     seconds first (`sec min hour day-of-month month day-of-week [year]`, e.g. \
                     `0 */5 * * * *` for every five minutes), or write an interval such as `every 30s`",
                    decl.name
                )));
            }
            let cron = cron::Schedule::from_str(text).map_err(|e| {
                Error::Invalid(format!(
                    "schedule `{}`: `{text}` is not a cron expression ({e}); the fields are `sec min \
                     hour day-of-month month day-of-week [year]`, e.g. `*/5 * * * * *`",
                    decl.name
                ))
            })?;
            When::Cron(Box::new(cron))
        };
        let schedule = Schedule {
            decl: decl.clone(),
            when,
            tz,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(Error::Invalid(format!(
                "schedule `{}`: `{text}` never fires again",
                decl.name
            )));
        }
        Ok(schedule)
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.decl.name
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Cron(cron) => cron
                .after(&t.with_timezone(&self.tz))
                .next()
                .map(|d| d.with_timezone(&Utc)),
            When::Every(every) => {
                let every = i64::try_from(every.as_millis()).ok()?;
                let ms = t.timestamp_millis();
                let next = ms.div_euclid(every).checked_add(1)?.checked_mul(every)?;
                Utc.timestamp_millis_opt(next).single()
            }
        }
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Cron(cron) => {
                // Ticks are whole seconds: the latest strictly before the next second is the
                // latest at or before `t`.
                let whole = t.with_nanosecond(0).unwrap_or(t);
                let bound = (whole + chrono::Duration::seconds(1)).with_timezone(&self.tz);
                let latest = cron.after(&bound).next_back()?.with_timezone(&Utc);
                (latest <= t).then_some(latest)
            }
            When::Every(every) => {
                let every = i64::try_from(every.as_millis()).ok()?;
                let ms = t.timestamp_millis();
                Utc.timestamp_millis_opt(ms.div_euclid(every).checked_mul(every)?)
                    .single()
            }
        }
    }
}
