//! Client calls of the schedule endpoints (`zero schedules list|run`): UCAN invocations of
//! `/chrono/list` (`{tenant}`) and `/chrono/run` (`{tenant, app, schedule}`).

use std::collections::BTreeMap;

use zero_auth::Ipld;

use crate::Client;

impl Client {
    /// The schedules of `tenant`'s apps (`/chrono/list`).
    pub fn list_schedules(&mut self, tenant: &str) -> anyhow::Result<serde_json::Value> {
        let args = BTreeMap::from([("tenant".to_string(), Ipld::String(tenant.into()))]);
        self.send(
            "GET",
            &format!("/v1/tenants/{tenant}/schedules"),
            "/chrono/list",
            args,
            None,
        )
    }

    /// Runs `tenant`'s app `app`'s schedule `schedule` now (`/chrono/run`) and returns when the
    /// run ended, with its run id and outcome.
    pub fn run_schedule(
        &mut self,
        tenant: &str,
        app: &str,
        schedule: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let args = BTreeMap::from([
            ("tenant".to_string(), Ipld::String(tenant.into())),
            ("app".to_string(), Ipld::String(app.into())),
            ("schedule".to_string(), Ipld::String(schedule.into())),
        ]);
        self.send(
            "POST",
            &format!("/v1/tenants/{tenant}/apps/{app}/schedules/{schedule}/run"),
            "/chrono/run",
            args,
            None,
        )
    }
}
