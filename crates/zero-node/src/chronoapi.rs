//! The schedule endpoints of the management API (`zero schedules list|run`), and the check a
//! deploy that declares schedules passes:
//!
//! | method and path | command | arguments |
//! | --- | --- | --- |
//! | `GET /v1/tenants/{t}/schedules` | `/chrono/list` | `tenant` |
//! | `POST /v1/tenants/{t}/apps/{a}/schedules/{s}/run` | `/chrono/run` | `tenant`, `app`, `schedule` |
//!
//! A deploy (`/app/deploy`) whose `args.schedules` declares schedules (each in the command-line
//! form `name=EXPRESSION[;tz=ZONE][;catch_up=last][;retries=N]`) also needs `/chrono/schedule`
//! in the deployer's chain, asked for each schedule with the deploy's arguments plus `name`
//! and `schedule` (the expression): an owner forbids every-second schedules with a policy such
//! as `[["like", ".schedule", "0 *"]]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use serde_json::json;
use zero_auth::{Command, Ipld, ScopedChain};
use zerochrono::ScheduleDecl;

use crate::api::{Api, Resp, arg_str, json_response};
use crate::apps::{Refusal, schedule_refusal};
use crate::ucan::{Endpoint, Ucan};

/// `GET /v1/tenants/{tenant}/schedules`.
pub(crate) struct ScheduleList;
impl Endpoint for ScheduleList {
    const COMMAND: &'static str = "/chrono/list";
    const URL_ARGS: &'static [&'static str] = &["tenant"];
}

/// `POST /v1/tenants/{tenant}/apps/{app}/schedules/{schedule}/run`.
pub(crate) struct ScheduleRun;
impl Endpoint for ScheduleRun {
    const COMMAND: &'static str = "/chrono/run";
    const URL_ARGS: &'static [&'static str] = &["tenant", "app", "schedule"];
}

/// The schedules a deploy declares (`args.schedules`, a list of strings in the command-line
/// form), each allowed by `chain` with `/chrono/schedule` on its `name` and `schedule`.
pub(crate) fn declared(
    args: &BTreeMap<String, Ipld>,
    chain: &ScopedChain,
) -> Result<Vec<ScheduleDecl>, Refusal> {
    let bad = || {
        Refusal::new(
            400,
            "InvalidArgs",
            "args.schedules must be a list of strings such as \"tick=*/5 * * * * *\"",
        )
    };
    let items = match args.get("schedules") {
        None => return Ok(vec![]),
        Some(Ipld::List(items)) => items,
        Some(_) => return Err(bad()),
    };
    let command = Command::parse(zerochrono::SCHEDULE_COMMAND)
        .map_err(|e| Refusal::new(500, "Internal", e.to_string()))?;
    items
        .iter()
        .map(|item| {
            let Ipld::String(text) = item else {
                return Err(bad());
            };
            let decl = ScheduleDecl::parse_arg(text).map_err(schedule_refusal)?;
            chain
                .allows(
                    &command,
                    &[
                        ("name", decl.name.as_str()),
                        ("schedule", decl.schedule.as_str()),
                    ],
                )
                .map_err(|e| {
                    Refusal::new(
                        403,
                        e.name(),
                        format!(
                            "declaring schedule `{}` (`{}`) needs `{}` in the deployer's chain, \
                             allowed for this schedule: {e}; ask the owner for a delegation of \
                             `{}` (its policy on `.schedule` decides which schedules)",
                            decl.name,
                            decl.schedule,
                            zerochrono::SCHEDULE_COMMAND,
                            zerochrono::SCHEDULE_COMMAND
                        ),
                    )
                })?;
            Ok(decl)
        })
        .collect()
}

/// `GET /v1/tenants/{tenant}/schedules`: every schedule of the tenant's apps, with when it is
/// next due, when it last ran, whether it is running and how many ticks were skipped.
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    ucan: Ucan<ScheduleList>,
) -> Result<Resp, Refusal> {
    let tenant = arg_str(&ucan.inv.args, "tenant")?;
    api.require_tenant(tenant)?;
    let schedules = api.apps.chrono().list(tenant, None);
    Ok(json_response(
        200,
        json!({"tenant": tenant, "schedules": schedules}),
    ))
}

/// `POST /v1/tenants/{tenant}/apps/{app}/schedules/{schedule}/run`: runs the schedule now and
/// answers when the run ended, with its run id and outcome (a failed run is `200` with
/// `ok: false` and its fault: the call itself succeeded).
pub(crate) async fn run(
    State(api): State<Arc<Api>>,
    ucan: Ucan<ScheduleRun>,
) -> Result<Resp, Refusal> {
    let args = &ucan.inv.args;
    let (tenant, app, schedule) = (
        arg_str(args, "tenant")?,
        arg_str(args, "app")?,
        arg_str(args, "schedule")?,
    );
    api.require_tenant(tenant)?;
    let report = api
        .apps
        .chrono()
        .run_now(tenant, app, schedule)
        .await
        .map_err(schedule_refusal)?;
    tracing::info!(tenant, app, schedule, run_id = %report.run_id, ok = report.result.is_ok(), "schedule run on request");
    Ok(json_response(
        200,
        json!({
            "tenant": tenant,
            "app": app,
            "schedule": schedule,
            "run_id": report.run_id.to_string(),
            "ok": report.result.is_ok(),
            "fault": report.fault,
            "message": report.result.err(),
        }),
    ))
}
