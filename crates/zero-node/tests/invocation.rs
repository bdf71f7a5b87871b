//! The provider plug and the core's invocation, without an HTTP listener: a provider's per-app
//! phase runs once per deployment and its per-instance phase once per store, its host calls
//! reach its own state, and the core runs an app's entry (instantiation, the call, the CPU and
//! wall-clock limits, fault classification) for any event provider.
//!
//! Needs the guest components (`bash scripts/build-guests.sh`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use zero_provider::{AppContext, HasView, Invocation, ResourceProvider};
use zerocore::{AppSettings, CoreConfig, Fault, Limits, Runtime};

/// A provider that counts its phases and links nothing.
#[derive(Default)]
struct Phases {
    prepared: AtomicUsize,
    instances: AtomicUsize,
}

/// Per-deployment state: which preparation this was.
struct PhasesApp(usize);

impl ResourceProvider for Phases {
    type App = PhasesApp;
    type Instance = usize;

    fn name(&self) -> &'static str {
        "phases"
    }

    fn interfaces(&self) -> Vec<String> {
        Vec::new()
    }

    fn add_to_linker<T: HasView<Self>>(
        _linker: &mut wasmtime::component::Linker<T>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    fn prepare(&self, app: &AppContext<'_>) -> anyhow::Result<PhasesApp> {
        if app.name == "refused" {
            anyhow::bail!("this provider refuses apps named `refused`");
        }
        Ok(PhasesApp(self.prepared.fetch_add(1, Ordering::SeqCst)))
    }

    fn instance(&self, app: &Arc<PhasesApp>, _inv: &Invocation) -> anyhow::Result<usize> {
        self.instances.fetch_add(1, Ordering::SeqCst);
        Ok(app.0)
    }
}

zerocore::providers! {
    /// wasi:http for the guests' responses, and the phase counter.
    struct TestProviders, data TestData, apps TestApps {
        http: zeroproxy::HttpResources,
        phases: Phases,
    }
}

fn guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../guest/target/wasm32-wasip2/release")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests first: bash scripts/build-guests.sh",
            path.display()
        )
    })
}

fn runtime(dir: &tempfile::TempDir, limits: Limits) -> Arc<Runtime<TestProviders>> {
    let config = CoreConfig {
        artifact_dir: dir.path().join("aot"),
        artifact_key: dir.path().join("artifact.key"),
        limits,
        pooling: false,
        ..CoreConfig::default()
    };
    let providers = TestProviders {
        http: zeroproxy::HttpResources::default(),
        phases: Phases::default(),
    };
    Arc::new(Runtime::new(&config, providers).unwrap())
}

/// Runs one HTTP request through the core; the response body, or the fault.
async fn request(app: &zerocore::App, id: &str) -> Result<(u16, Bytes), Fault> {
    let req = http::Request::builder()
        .uri("http://test.local/")
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let run = app.http(id.into(), req, tx).unwrap();
    let run = tokio::spawn(run);
    match rx.await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            run.await.unwrap()?;
            Ok((status, body))
        }
        Ok(Err(code)) => panic!("the guest answered an error code: {code:?}"),
        Err(_) => Err(run.await.unwrap().unwrap_err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_app_phase_runs_once_per_deployment_and_the_instance_phase_per_store() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&dir, Limits::default());
    let loaded = rt.load(&guest("hello.wasm"), "t/hello").unwrap();
    let app = rt.app("t", "hello", AppSettings::default(), Ok(loaded.clone()));
    assert_eq!(app.failure(), None);
    assert!(app.http_entry().is_ok());
    assert_eq!(rt.providers().phases.prepared.load(Ordering::SeqCst), 1);
    for i in 0..3 {
        let (status, body) = request(&app, &format!("r{i}")).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"Hello, World!\n"[..]));
    }
    let p = &rt.providers().phases;
    assert_eq!(
        p.prepared.load(Ordering::SeqCst),
        1,
        "prepared once per deployment"
    );
    assert_eq!(
        p.instances.load(Ordering::SeqCst),
        3,
        "one instance per store"
    );

    // A second deployment of the same code is prepared again; a provider's refusal fails the
    // app with the provider's reason, and the core refuses to run it.
    let again = rt.app("t", "hello2", AppSettings::default(), Ok(loaded.clone()));
    assert!(again.failure().is_none());
    assert_eq!(p.prepared.load(Ordering::SeqCst), 2);
    let refused = rt.app("t", "refused", AppSettings::default(), Ok(loaded));
    let reason = refused.failure().unwrap();
    assert!(
        reason.contains("phases") && reason.contains("refuses apps named `refused`"),
        "{reason}"
    );
    let req = http::Request::new(Empty::<Bytes>::new().map_err(|n| match n {}).boxed_unsync());
    let (tx, _rx) = tokio::sync::oneshot::channel();
    assert!(matches!(
        refused.http("r".into(), req, tx),
        Err(zerocore::Unavailable::Failed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_stops_and_classifies_a_runaway_guest_for_any_event_provider() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        cpu_time: Duration::from_millis(100),
        wall_time: Duration::from_secs(20),
        ..Limits::default()
    };
    let rt = runtime(&dir, limits);
    let spin = rt.load(&guest("spin.wasm"), "t/spin").unwrap();
    let app = rt.app("t", "spin", AppSettings::default(), Ok(spin));
    let fault = request(&app, "spin").await.unwrap_err();
    assert_eq!(fault, Fault::CpuLimit { limit_ms: 100 });

    // The wall-clock limit is the core's too.
    let limits = Limits {
        cpu_time: Duration::from_secs(60),
        wall_time: Duration::from_millis(300),
        ..Limits::default()
    };
    let rt = runtime(&dir, limits);
    let sleepy = rt.load(&guest("sleepy.wasm"), "t/sleepy").unwrap();
    let app = rt.app("t", "sleepy", AppSettings::default(), Ok(sleepy));
    let fault = request(&app, "sleepy").await.unwrap_err();
    assert_eq!(fault, Fault::WallTimeout { limit_ms: 300 });
}
