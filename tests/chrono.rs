//! End-to-end tests of zerochrono on a real node: one component (the `ticker` example) answers
//! both HTTP and schedule ticks; `zero schedules run` runs a tick now and `zero schedules list`
//! shows the schedules; a tick also fires on its own; declaring a schedule needs
//! `/chrono/schedule` in the deployer's chain, with its policy on `.schedule`; a component
//! without the tick handler is refused when schedules are given, naming the missing export;
//! the per-tenant cap on schedules; schedules come back after a restart.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::*;
use zero_auth::Keypair;
use zero_client::Client;

/// The ticker example, signed by acme's owner for its one cache key.
fn ticker(w: &World) -> Vec<u8> {
    signed(
        w,
        "ticker",
        &grant("/cache", r#"[["==", ".key", "ticker:last"]]"#, None),
    )
}

fn page(w: &World) -> Json {
    let r = get(&w.node.url("/ticker"));
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// A yearly schedule: it never fires by itself during a test.
const YEARLY: &str = "beat=0 0 0 1 1 *";

#[test]
fn one_component_serves_http_and_schedule_ticks() {
    let w = world_with("chrono-multi", "[chrono]\nmax_schedules_per_tenant = 2\n");
    let mut acme = w.owner(&w.acme);
    let code = ticker(&w);
    let deployed = acme
        .deploy_with_schedules(
            "acme",
            "ticker",
            &["/ticker".into()],
            &[],
            &[YEARLY.into()],
            &code,
        )
        .unwrap();
    assert_eq!(deployed["schedules"][0], YEARLY, "{deployed}");
    // HTTP reaches it, and it reads its own schedules.
    let before = page(&w);
    assert_eq!(before["last"], Json::Null, "{before}");
    assert_eq!(before["schedules"][0]["name"], "beat", "{before}");
    assert_eq!(before["schedules"][0]["time_zone"], "UTC", "{before}");

    // A tick run on request reaches the same component; the page shows it.
    let run = acme.run_schedule("acme", "ticker", "beat").unwrap();
    assert_eq!(run["ok"], true, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let after = page(&w);
    assert_eq!(after["last"]["schedule"], "beat", "{after}");
    assert_eq!(after["last"]["attempt"], 1, "{after}");
    assert_eq!(after["last"]["run_id"], run_id.as_str(), "{after}");
    // The run's lines are tagged with tenant, app, schedule and run id.
    let line = w.node.wait_log("the run's end", |v| {
        v["message"] == "scheduled run finished" && v["run_id"] == run_id.as_str()
    });
    assert_eq!(
        (&line["tenant"], &line["app"], &line["schedule"]),
        (&"acme".into(), &"ticker".into(), &"beat".into())
    );

    // The list shows it, with its next tick.
    let listed = acme.list_schedules("acme").unwrap();
    let s = &listed["schedules"][0];
    assert_eq!(
        (&s["app"], &s["name"], &s["schedule"]),
        (&"ticker".into(), &"beat".into(), &"0 0 0 1 1 *".into()),
        "{listed}"
    );
    assert!(s["next_ms"].as_i64().unwrap() > 0, "{listed}");
    // Another tenant sees none of it, and cannot run it.
    let mut beta = w.owner(&w.beta);
    assert_eq!(
        beta.list_schedules("beta").unwrap()["schedules"],
        Json::Array(vec![])
    );
    let e = refused(beta.run_schedule("acme", "ticker", "beat"));
    assert_eq!(e.status, 403, "{}", e.message);
    // An unknown schedule is named in the refusal.
    let e = refused(acme.run_schedule("acme", "ticker", "nope"));
    assert_eq!(
        (e.status, e.error.as_str()),
        (404, "UnknownSchedule"),
        "{}",
        e.message
    );

    // A schedule that fires by itself on the node's clock.
    acme.deploy_with_schedules(
        "acme",
        "ticker",
        &["/ticker".into()],
        &[],
        &[YEARLY.into(), "sec=every 1s".into()],
        &code,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = page(&w);
        if p["last"]["schedule"] == "sec" {
            assert!(
                p["last"]["scheduled_ms"]
                    .as_u64()
                    .unwrap()
                    .is_multiple_of(1000),
                "{p}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 1 s schedule never ticked: {p}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The tenant's cap on schedules: a third one is refused, naming the setting.
    let e = refused(acme.deploy_with_schedules(
        "acme",
        "other",
        &[],
        &[],
        &["x=every 1h".into()],
        &code,
    ));
    assert_eq!(
        (e.status, e.error.as_str()),
        (409, "TooManySchedules"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("max_schedules_per_tenant"),
        "{}",
        e.message
    );

    // Schedules come back after a restart.
    let w = w.restart();
    let mut acme = w.owner(&w.acme);
    let listed = acme.list_schedules("acme").unwrap();
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(
        acme.run_schedule("acme", "ticker", "beat").unwrap()["ok"],
        true
    );
}

#[test]
fn schedules_need_the_chrono_export_and_a_valid_declaration() {
    let w = world("chrono-refusals");
    let mut acme = w.owner(&w.acme);
    // hello exports wasi:http only: with a schedule it is refused, naming the missing export.
    let hello = std::fs::read(guest_wasm("hello")).unwrap();
    let e = refused(acme.deploy_with_schedules(
        "acme",
        "hello",
        &["/hello".into()],
        &[],
        &[YEARLY.into()],
        &hello,
    ));
    assert_eq!(
        (e.status, e.error.as_str()),
        (422, "MissingExport"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("zero:chrono/tick-handler"),
        "{}",
        e.message
    );
    // Without schedules it deploys as before.
    acme.deploy("acme", "hello", &["/hello".into()], &[], &hello)
        .unwrap();
    assert_eq!(get(&w.node.url("/hello")).status, 200);
    // A malformed declaration says what is wrong.
    let code = ticker(&w);
    for (bad, says) in [
        ("beat=*/5 * * * *", "seconds first"),
        ("beat=* * * * * *;tz=Mars/Olympus", "not a time zone"),
        ("no-equals", "no `=`"),
    ] {
        let e = refused(acme.deploy_with_schedules(
            "acme",
            "ticker",
            &["/ticker".into()],
            &[],
            &[bad.into()],
            &code,
        ));
        assert_eq!(
            (e.status, e.error.as_str()),
            (400, "InvalidArgs"),
            "{bad}: {}",
            e.message
        );
        assert!(e.message.contains(says), "{bad}: {}", e.message);
    }
    // A component with the export but no routes runs on schedules only.
    acme.deploy_with_schedules("acme", "ticker", &[], &[], &[YEARLY.into()], &code)
        .unwrap();
    assert_eq!(
        acme.run_schedule("acme", "ticker", "beat").unwrap()["ok"],
        true
    );
}

#[test]
fn declaring_a_schedule_needs_chrono_schedule_in_the_chain() {
    let w = world("chrono-capability");
    let code = ticker(&w);
    let deployer = |cmd: &str, policy: &str| {
        let key = Keypair::generate().unwrap();
        let chain = zero_client::extend_chain(
            &w.acme.owner,
            &w.acme.chain,
            key.did(),
            &grant(cmd, policy, Some(3600)),
        )
        .unwrap();
        Client::new(&w.api, key, chain)
    };
    // The owner forbids every-second schedules with a policy on `.schedule`.
    let mut ci = deployer("/", r#"[["!=", ".schedule", "* * * * * *"]]"#);
    let e = refused(ci.deploy_with_schedules(
        "acme",
        "ticker",
        &["/ticker".into()],
        &[],
        &["fast=* * * * * *".into()],
        &code,
    ));
    assert_eq!(
        (e.status, e.error.as_str()),
        (403, "MatchError"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("/chrono/schedule") && e.message.contains("fast"),
        "{}",
        e.message
    );
    assert_eq!(
        get(&w.node.url("/ticker")).status,
        404,
        "a refused deploy serves nothing"
    );
    // The same deployer may declare a schedule the policy allows.
    ci.deploy_with_schedules(
        "acme",
        "ticker",
        &["/ticker".into()],
        &[],
        &[YEARLY.into()],
        &code,
    )
    .unwrap();
    assert_eq!(
        ci.run_schedule("acme", "ticker", "beat").unwrap()["ok"],
        true
    );
    // A chain without `/chrono/schedule` cannot declare any.
    let mut apps_only = deployer("/app", "[]");
    let e = refused(apps_only.deploy_with_schedules(
        "acme",
        "ticker",
        &["/ticker".into()],
        &[],
        &[YEARLY.into()],
        &code,
    ));
    assert_eq!(
        (e.status, e.error.as_str()),
        (403, "InvalidClaim"),
        "{}",
        e.message
    );
    assert!(e.message.contains("/chrono/schedule"), "{}", e.message);
    // Nor run or list schedules: those are `/chrono/run` and `/chrono/list`.
    let e = refused(apps_only.run_schedule("acme", "ticker", "beat"));
    assert_eq!(
        (e.status, e.error.as_str()),
        (403, "InvalidClaim"),
        "{}",
        e.message
    );
    let mut runner = deployer("/chrono/run", "[]");
    assert_eq!(
        runner.run_schedule("acme", "ticker", "beat").unwrap()["ok"],
        true
    );
    let e = refused(runner.list_schedules("acme"));
    assert_eq!(e.status, 403, "{}", e.message);
}

#[test]
fn the_cli_lists_and_runs_schedules() {
    let w = world("chrono-cli");
    let dir = &w.dir;
    let code = ticker(&w);
    let file = dir.join("ticker.zero.wasm");
    std::fs::write(&file, &code).unwrap();
    let key = dir.join("owner.key");
    w.acme.owner.save(&key).unwrap();
    let proof = dir.join("acme.ucan");
    zero_client::write_chain(&proof, &w.acme.chain).unwrap();
    let auth = [
        "--key",
        key.to_str().unwrap(),
        "--proof",
        proof.to_str().unwrap(),
        "--api",
        &w.api,
    ];
    let mut deploy = vec![
        "deploy",
        file.to_str().unwrap(),
        "--tenant",
        "acme",
        "--app",
        "ticker",
        "--route",
        "/ticker",
        "--schedule",
        YEARLY,
    ];
    deploy.extend(auth);
    let (code, out, err) = zero(&deploy);
    assert_eq!(code, 0, "{out}{err}");
    let mut run = vec![
        "schedules",
        "run",
        "beat",
        "--tenant",
        "acme",
        "--app",
        "ticker",
    ];
    run.extend(auth);
    let (code, out, err) = zero(&run);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"ok\": true"), "{out}");
    assert_eq!(page(&w)["last"]["schedule"], "beat");
    let mut list = vec!["schedules", "list", "--tenant", "acme"];
    list.extend(auth);
    let (code, out, err) = zero(&list);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"beat\"") && out.contains("next_ms"), "{out}");
}

#[test]
fn apps_in_the_configuration_file_run_on_their_schedules() {
    let dir = test_dir("chrono-config");
    // An app without routes and without a token: its ticks run (and fail, logged with their
    // fault, since a component without a token gets no cache).
    let app = format!(
        "[[app]]\ntenant = \"t1\"\nname = \"beat\"\ncomponent = {:?}\nschedules = [{{ name = \"sec\", schedule = \"every 1s\" }}]\n",
        guest_wasm("ticker").display().to_string()
    );
    let node = config(&node_data_dir(), TEST_LIMITS, &[])
        .with(&app)
        .start(&dir);
    let failed = node.wait_log("a tick of the configured app", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("scheduled run failed"))
            && v["app"] == "beat"
    });
    assert_eq!(
        (&failed["tenant"], &failed["schedule"], &failed["fault"]),
        (&"t1".into(), &"sec".into(), &"app_error".into()),
        "{failed}"
    );
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("could not record the tick"),
        "{failed}"
    );
    node.stop();
}

#[test]
fn ticks_have_the_limits_of_a_request_and_traps_are_retried() {
    let w = world_with("chrono-limits", "[chrono]\nretry_backoff_ms = 100\n");
    let mut acme = w.owner(&w.acme);
    let probe = std::fs::read(guest_wasm("tickprobe")).unwrap();
    let schedules = [
        "spin=0 0 0 1 1 *".to_string(),
        "fail=0 0 0 1 1 *".to_string(),
        "panic=every 1s;retries=1".to_string(),
    ];
    acme.deploy_with_schedules("acme", "probe", &[], &[], &schedules, &probe)
        .unwrap();
    // A tick that spins is stopped by the CPU limit, as a request would be.
    let spin = acme.run_schedule("acme", "probe", "spin").unwrap();
    assert_eq!(spin["ok"], false, "{spin}");
    assert_eq!(spin["fault"], "cpu_limit", "{spin}");
    // An error the component returns ends the run (it is not a trap: no retry).
    let fail = acme.run_schedule("acme", "probe", "fail").unwrap();
    assert_eq!(fail["fault"], "app_error", "{fail}");
    assert!(
        fail["message"]
            .as_str()
            .unwrap()
            .contains("tickprobe was told to fail"),
        "{fail}"
    );
    // A tick that panics is logged with its fault and tried again after the backoff, for the
    // same tick and run id; the retry succeeds.
    let failed = w.node.wait_log("a panicking tick", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("scheduled run failed"))
            && v["schedule"] == "panic"
    });
    assert_eq!(
        (&failed["fault"], &failed["attempt"]),
        (&"panic".into(), &1.into()),
        "{failed}"
    );
    let run_id = failed["run_id"].as_str().unwrap().to_string();
    let retried = w.node.wait_log("its retry", |v| {
        v["message"] == "scheduled run finished" && v["run_id"] == run_id.as_str()
    });
    assert_eq!(retried["attempt"], 2, "{retried}");
}

#[test]
fn a_tenants_schedules_take_its_request_slots_and_not_the_nodes_others() {
    // acme has one run slot; its tick that spins (until the CPU limit) holds it.
    let w = world_with(
        "chrono-slots",
        "[http]\nmax_concurrent_requests_per_tenant = 1\n[limits]\ncpu_time_ms = 2000\nwall_time_ms = 6000\n",
    );
    let mut acme = w.owner(&w.acme);
    let mut beta = w.owner(&w.beta);
    let probe = std::fs::read(guest_wasm("tickprobe")).unwrap();
    let hello = std::fs::read(guest_wasm("hello")).unwrap();
    acme.deploy_with_schedules(
        "acme",
        "probe",
        &[],
        &[],
        &["spin=0 0 0 1 1 *".into(), "quick=0 0 0 1 1 *".into()],
        &probe,
    )
    .unwrap();
    acme.deploy("acme", "hello", &["/acme".into()], &[], &hello)
        .unwrap();
    beta.deploy("beta", "hello", &["/beta".into()], &[], &hello)
        .unwrap();
    assert_eq!(get(&w.node.url("/acme")).status, 200);

    let spinning = std::thread::spawn(move || acme.run_schedule("acme", "probe", "spin"));
    w.node.wait_log("the spinning run's start", |v| {
        v["message"] == "scheduled run started" && v["schedule"] == "spin"
    });
    // While it runs, acme's requests find its one slot taken; beta's are served.
    let r = get(&w.node.url("/acme"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("this tenant's apps are at their limit"),
        "{}",
        r.body
    );
    let r = get(&w.node.url("/beta"));
    assert_eq!(r.status, 200, "{}", r.body);
    let spin = spinning.join().unwrap().unwrap();
    assert_eq!(spin["fault"], "cpu_limit", "{spin}");
    // The run gave its slot back.
    assert_eq!(get(&w.node.url("/acme")).status, 200);

    // And a tick that finds the tenant's slot taken by a request ends as retryable `busy`,
    // without running: acme's slot is held by a request to a component that sleeps.
    let sleepy = std::fs::read(guest_wasm("sleepy")).unwrap();
    let mut acme = w.owner(&w.acme);
    acme.deploy("acme", "sleepy", &["/sleepy".into()], &[], &sleepy)
        .unwrap();
    let url = w.node.url("/sleepy");
    let sleeping = std::thread::spawn(move || get(&url));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let run = acme.run_schedule("acme", "probe", "quick").unwrap();
        if run["fault"] == "busy" {
            assert!(
                run["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_concurrent_requests_per_tenant (1)"),
                "{run}"
            );
            break;
        }
        // The sleeping request was not admitted yet.
        assert_eq!(run["ok"], true, "{run}");
        assert!(Instant::now() < deadline, "never refused: {run}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sleeping.join().unwrap().status, 504);
}
