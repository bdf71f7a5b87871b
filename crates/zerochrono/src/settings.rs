//! `[chrono]` in `zerocore.toml`: the bounds of schedules, with their defaults in one place
//! ([`ChronoSettings::default`]).

use std::time::Duration;

use serde::Deserialize;
use zero_provider::settings::millis;

/// The schedules' settings, deserialized straight from the `[chrono]` section of
/// `zerocore.toml`. Every field has a default; unknown fields are refused. Durations are whole
/// milliseconds (keys ending in `_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChronoSettings {
    /// Most schedules all the apps of one tenant may declare together. Default 32.
    pub max_schedules_per_tenant: usize,
    /// Most runs (ticks, retries and `zero schedules run`) one tenant's schedules may start in
    /// any minute; ticks beyond it are skipped and logged. Default 120.
    pub max_runs_per_minute_per_tenant: usize,
    /// Most retries a schedule may ask for. Default 5.
    pub max_retries: u32,
    /// Delay before the first retry of a failed run; each further retry waits twice as long
    /// (`retry_backoff_ms`). Default 1000.
    #[serde(rename = "retry_backoff_ms", deserialize_with = "millis")]
    pub retry_backoff: Duration,
    /// Longest delay between two attempts (`max_retry_backoff_ms`). Default 60000.
    #[serde(rename = "max_retry_backoff_ms", deserialize_with = "millis")]
    pub max_retry_backoff: Duration,
}

impl Default for ChronoSettings {
    fn default() -> Self {
        ChronoSettings {
            max_schedules_per_tenant: 32,
            max_runs_per_minute_per_tenant: 120,
            max_retries: 5,
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(60),
        }
    }
}

impl ChronoSettings {
    /// Checks that the settings make sense together; the error names the `[chrono]` key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_runs_per_minute_per_tenant == 0 {
            return Err(
                "[chrono] max_runs_per_minute_per_tenant must be greater than 0 (set \
                 max_schedules_per_tenant = 0 to allow no schedules)"
                    .into(),
            );
        }
        if self.retry_backoff.is_zero() || self.max_retry_backoff < self.retry_backoff {
            return Err(
                "[chrono] retry_backoff_ms must be greater than 0 and at most max_retry_backoff_ms"
                    .into(),
            );
        }
        Ok(())
    }

    /// The delay before attempt `attempt + 1` after attempt `attempt` failed.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.retry_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_retry_backoff)
            .min(self.max_retry_backoff)
    }
}
