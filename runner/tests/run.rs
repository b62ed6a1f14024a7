//! `clothjob-runner run` (the built binary, as in a pod) against a real kube-apiserver + etcd
//! (`clothjob_testenv::ControlPlane`), with the photo (and a remote background remover)
//! served on loopback by servers the tests hold back until they choose:
//!
//! - an apiserver restart mid-run: the runner retries its writes and still succeeds, with its
//!   outputs under `<uri>/<namespace>/<name>/<uid>/` and listed in the status;
//! - an apiserver that stays away: the outputs cannot be listed, so the runner exits 75 (the
//!   Job retries) instead of 0;
//! - SIGTERM while the pipeline's worker thread is blocked: exit 75 within seconds, and the
//!   status says `Interrupted`;
//! - a spec the runner cannot use (no Gemini key): exit 43, `InvalidSpec` in the status;
//! - a write with another uid (a re-created ClothJob of the same name) is refused and writes
//!   nothing; the runner of a replaced ClothJob fails at once;
//! - the first write of an attempt removes what the previous attempt left (outputs,
//!   runnerFailure), and leaves the operator's fields alone;
//! - `status.json`, the attempt's record: written to a real S3-compatible store (`s3s-fs`)
//!   after the outputs on success, beside the outputs on a bad image, an unusable spec and
//!   SIGTERM; one that cannot be written is reported (`runnerFailure` ResultNotRecorded, a
//!   warning) while the job still succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../backends/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clothjob_api::{
    ClothJob, ClothJobStatus, OutputStatus, RegionStatus, RunnerFailure, StageState, contract,
};
use clothjob_runner::progress::RunState;
use clothjob_runner::result::{self, ClothJobResult, Outcome};
use clothjob_runner::writer::{ApiCallError, Backoff, StatusTarget};
use clothjob_testenv::{ControlPlane, S3Server, bins::workspace_root, wait_for};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{MockServer, Reply};

/// Holds requests until [`Gate::open`]; counts the requests that arrived.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<(usize, bool)>, Condvar)>);

impl Gate {
    /// Called by a server thread: records the arrival and blocks until the gate opens (or a
    /// few minutes pass).
    fn pass(&self) {
        let (lock, cv) = &*self.0;
        let mut g = lock.lock().unwrap();
        g.0 += 1;
        cv.notify_all();
        let _ = cv
            .wait_timeout_while(g, Duration::from_secs(300), |g| !g.1)
            .unwrap();
    }

    fn open(&self) {
        let (lock, cv) = &*self.0;
        lock.lock().unwrap().1 = true;
        cv.notify_all();
    }

    fn arrived(&self) -> usize {
        self.0.0.lock().unwrap().0
    }
}

/// The T-shirt photo as PNG bytes.
fn photo_bytes(dir: &Path) -> Vec<u8> {
    let (path, _) = common::write_photo(dir);
    std::fs::read(path).unwrap()
}

/// Serves the photo at `/tshirt.png`; with a gate, each request waits for it.
fn photo_server(dir: &Path, gate: Option<Gate>) -> MockServer {
    let png = photo_bytes(dir);
    MockServer::start(move |_, _| {
        if let Some(g) = &gate {
            g.pass();
        }
        Reply::new(200, "image/png", png.clone())
    })
}

/// One test's namespace, ClothJob and runner.
struct Case {
    ns: String,
    name: String,
    uid: String,
    spec: Value,
    dir: tempfile::TempDir,
}

impl Case {
    /// Creates ClothJob `name` in a fresh namespace with `spec` (a JSON object); outputs go
    /// to `file://<dir>/out` unless `spec` names an `output`.
    async fn create(cp: &ControlPlane, name: &str, mut spec: Value) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        if spec.get("output").is_none() {
            spec["output"] = json!({ "uri": format!("file://{}/out", dir.path().display()) });
        }
        let ns = cp.create_namespace(&format!("run-{name}")).await?;
        let mut case = Self {
            ns,
            name: name.into(),
            uid: String::new(),
            spec,
            dir,
        };
        case.uid = case.apply(cp).await?;
        Ok(case)
    }

    /// Creates the ClothJob (server-side apply); returns its uid.
    async fn apply(&self, cp: &ControlPlane) -> Result<String> {
        let cj = json!({
            "apiVersion": "closetconnect.io/v1alpha1",
            "kind": "ClothJob",
            "metadata": { "name": self.name },
            "spec": self.spec,
        });
        let cj = self
            .api(cp)
            .await?
            .patch(&self.name, &PatchParams::apply("test"), &Patch::Apply(&cj))
            .await
            .context("creating the ClothJob")?;
        cj.metadata.uid.context("no uid")
    }

    /// Deletes the ClothJob and creates it again under the same name (a new uid).
    async fn recreate(&mut self, cp: &ControlPlane) -> Result<()> {
        let api = self.api(cp).await?;
        api.delete(&self.name, &Default::default()).await?;
        wait_for(
            "the ClothJob deleted",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async { Ok(api.get_opt(&self.name).await?.is_none().then_some(())) },
        )
        .await?;
        let uid = self.apply(cp).await?;
        assert_ne!(uid, self.uid);
        self.uid = uid;
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("runner.log")
    }

    /// The runner's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `clothjob-runner run` for this ClothJob as the admin of `cp`, with the
    /// environment the operator gives a pod (uid, scratch dir, allowed networks).
    fn start_runner(&self, cp: &ControlPlane, uid: &str) -> Result<tokio::process::Child> {
        self.start_runner_with(cp, uid, &[])
    }

    /// [`start_runner`](Self::start_runner) with more environment variables (the keys of an
    /// output credentials Secret).
    fn start_runner_with(
        &self,
        cp: &ControlPlane,
        uid: &str,
        extra: &[(&str, &str)],
    ) -> Result<tokio::process::Child> {
        let scratch = self.dir.path().join("scratch");
        std::fs::create_dir_all(&scratch)?;
        let log = std::fs::File::create(self.log_path())?;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clothjob-runner"))
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env(contract::ENV_NAMESPACE, &self.ns)
            .env(contract::ENV_NAME, &self.name)
            .env(contract::ENV_UID, uid)
            .env(contract::ENV_ALLOWED_NETWORKS, "127.0.0.0/8")
            .env(contract::ENV_SCRATCH_DIR, &scratch)
            .env("HOME", &scratch)
            .env("TMPDIR", &scratch)
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting clothjob-runner run")?;
        Ok(child)
    }

    async fn api(&self, cp: &ControlPlane) -> Result<Api<ClothJob>> {
        Ok(Api::namespaced(cp.client().await?, &self.ns))
    }

    async fn status(&self, cp: &ControlPlane) -> Result<ClothJobStatus> {
        Ok(self
            .api(cp)
            .await?
            .get(&self.name)
            .await?
            .status
            .unwrap_or_default())
    }

    /// Waits until the runner's status says `stage`.
    async fn wait_stage(&self, cp: &ControlPlane, stage: &str) -> Result<ClothJobStatus> {
        let api = self.api(cp).await?;
        wait_for(
            &format!("status.stage {stage}"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async {
                let s = api.get(&self.name).await?.status.unwrap_or_default();
                Ok((s.stage.as_deref() == Some(stage)).then_some(s))
            },
        )
        .await
    }

    /// Waits until the runner's log contains `needle`.
    async fn wait_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("runner log to say {needle:?}"),
            timeout,
            Duration::from_millis(100),
            || async { Ok(self.log().contains(needle).then_some(())) },
        )
        .await
        .with_context(|| format!("runner log:\n{}", self.log()))
    }

    /// Waits for the runner to exit.
    async fn wait_exit(
        &self,
        child: &mut tokio::process::Child,
        timeout: Duration,
    ) -> Result<ExitStatus> {
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => bail!(
                "the runner did not exit within {timeout:?}; log:\n{}",
                self.log()
            ),
        }
    }
}

async fn install_crds(cp: &ControlPlane) -> Result<()> {
    cp.install_crds(workspace_root().join("crds")).await?;
    Ok(())
}

fn builtin_spec(url: &str) -> Value {
    json!({ "source": { "url": url } })
}

/// The seven outputs are listed under `<uri>/<ns>/<name>/<uid>/`, and exist with the size
/// the status gives.
fn assert_outputs(case: &Case, status: &ClothJobStatus) {
    let outputs = status.outputs.clone().unwrap_or_default();
    assert_eq!(outputs.len(), 7, "{outputs:?}");
    let dir = case
        .dir
        .path()
        .join("out")
        .join(&case.ns)
        .join(&case.name)
        .join(&case.uid);
    let prefix = format!("file://{}/", dir.display());
    for o in &outputs {
        assert!(o.uri.starts_with(&prefix), "{} not under {prefix}", o.uri);
        let file = PathBuf::from(o.uri.strip_prefix("file://").unwrap());
        let len = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .len();
        assert_eq!(len as i64, o.bytes, "{}", o.name);
    }
}

/// A runner on a control plane of its own (the test stops that apiserver), past its first
/// status write and fetching the photo from a server that holds the reply until `gate` opens.
struct HeldAtFetch {
    cp: ControlPlane,
    gate: Gate,
    case: Case,
    runner: tokio::process::Child,
    _server: MockServer,
    _dir: tempfile::TempDir,
}

async fn held_at_fetch(prefix: &str) -> Result<HeldAtFetch> {
    common_tracing();
    let cp = ControlPlane::start().await?;
    install_crds(&cp).await?;
    let gate = Gate::default();
    let dir = tempfile::tempdir()?;
    let server = photo_server(dir.path(), Some(gate.clone()));
    let case = Case::create(
        &cp,
        prefix,
        builtin_spec(&format!("{}/tshirt.png", server.url())),
    )
    .await?;
    let runner = case.start_runner(&cp, &case.uid)?;
    case.wait_stage(&cp, "fetching").await?;
    wait_for(
        "the photo request",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { Ok((gate.arrived() > 0).then_some(())) },
    )
    .await?;
    Ok(HeldAtFetch {
        cp,
        gate,
        case,
        runner,
        _server: server,
        _dir: dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_an_apiserver_restart() -> Result<()> {
    let HeldAtFetch {
        cp,
        gate,
        case,
        mut runner,
        _server,
        _dir,
    } = held_at_fetch("restart").await?;
    cp.stop_apiserver().await?;
    // The photo arrives while the apiserver is away: the next writes fail and are retried.
    gate.open();
    case.wait_log("apiserver call failed; retrying", Duration::from_secs(60))
        .await?;
    cp.start_apiserver().await?;

    let code = case
        .wait_exit(&mut runner, Duration::from_secs(150))
        .await?;
    assert_eq!(code.code(), Some(0), "log:\n{}", case.log());
    let status = case.status(&cp).await?;
    assert_eq!(status.progress, Some(100), "{status:?}");
    assert_eq!(status.stage.as_deref(), Some("done"));
    assert_eq!(status.runner_failure, None);
    assert_outputs(&case, &status);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_cannot_list_its_outputs_exits_transient_not_0() -> Result<()> {
    // The apiserver goes down for longer than the runner waits.
    let HeldAtFetch {
        cp,
        gate,
        case,
        mut runner,
        _server,
        _dir,
    } = held_at_fetch("down").await?;
    cp.stop_apiserver().await?;
    let stopped = Instant::now();
    gate.open();
    // The back-off budget is 2 minutes; then the run gives up as transient.
    let code = case
        .wait_exit(&mut runner, Duration::from_secs(200))
        .await?;
    let waited = stopped.elapsed();
    let log = case.log();
    assert_eq!(code.code(), Some(contract::EXIT_TRANSIENT), "log:\n{log}");
    assert!(log.contains("no success in"), "{log}");
    assert!(
        waited >= Backoff::MUST_LAND.budget,
        "gave up after {waited:?}"
    );

    cp.start_apiserver().await?;
    let status = case.status(&cp).await?;
    assert_eq!(status.outputs, None, "{status:?}");
    assert_eq!(status.stage.as_deref(), Some("fetching"));
    // The record, first written as Succeeded after the outputs, says what the exit code says.
    let record = file_result(&case)?;
    assert_eq!(record.outcome, Outcome::Failed, "{record:?}");
    let failure = record.failure.context("no failure in the record")?;
    assert_eq!(failure.reason, "Transient", "{failure:?}");
    assert!(failure.message.contains("no success in"), "{failure:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_blocked_pipeline_with_exit_75_and_interrupted() -> Result<()> {
    common_tracing();
    let cp = ControlPlane::shared().await?;
    install_crds(cp).await?;
    let dir = tempfile::tempdir()?;
    let photos = photo_server(dir.path(), None);
    // The remote background remover runs on the pipeline's worker thread: hold it there.
    let gate = Gate::default();
    let remover = {
        let gate = gate.clone();
        MockServer::start(move |_, _| {
            gate.pass();
            Reply::new(500, "text/plain", "released")
        })
    };
    let case = Case::create(
        cp,
        "sigterm",
        json!({
            "source": { "url": format!("{}/tshirt.png", photos.url()) },
            "pipeline": { "backgroundRemoval": {
                "backend": "remote",
                "remote": { "url": remover.url(), "timeoutSeconds": 300 },
            } },
        }),
    )
    .await?;
    let mut runner = case.start_runner(cp, &case.uid)?;
    case.wait_stage(cp, "backgroundRemoval").await?;
    wait_for(
        "the remover request",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { Ok((gate.arrived() > 0).then_some(())) },
    )
    .await
    .with_context(|| case.log())?;

    let pid = runner.id().context("runner pid")?;
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let code = case.wait_exit(&mut runner, Duration::from_secs(20)).await?;
    let took = sent.elapsed();
    assert_eq!(
        code.code(),
        Some(contract::EXIT_TRANSIENT),
        "log:\n{}",
        case.log()
    );
    assert!(took < Duration::from_secs(7), "exited after {took:?}");
    gate.open();

    let status = case.status(cp).await?;
    let failure = status.runner_failure.clone().context("no runnerFailure")?;
    assert_eq!(failure.reason, "Interrupted", "{failure:?}");
    assert!(failure.retryable);
    assert!(failure.message.contains("SIGTERM"), "{failure:?}");
    assert_eq!(status.stage.as_deref(), Some("failed"));
    let stages = status.stages.unwrap_or_default();
    assert_eq!(stages[0].name, "backgroundRemoval");
    assert_eq!(stages[0].state, StageState::Failed, "{stages:?}");
    assert_eq!(status.outputs, None);

    // The interrupted attempt's record, written within the same few seconds.
    let record = file_result(&case)?;
    assert_eq!(record.outcome, Outcome::Failed);
    assert_eq!(record.failure.as_ref(), Some(&failure));
    assert_eq!(record.stages[0].state, StageState::Failed);
    assert!(record.source.sha256.is_some(), "{record:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_the_runner_cannot_use_exits_43_with_the_reason_in_the_status() -> Result<()> {
    common_tracing();
    let cp = ControlPlane::shared().await?;
    install_crds(cp).await?;
    // Gemini expansion, but the pod has no GEMINI_API_KEY.
    let case = Case::create(
        cp,
        "nokey",
        json!({
            "source": { "url": "http://127.0.0.1:9/never.png" },
            "pipeline": { "expansion": {
                "backend": "gemini",
                "gemini": {
                    "model": "gemini-2.5-flash-image",
                    "apiKeySecretRef": { "name": "gemini", "key": "api-key" },
                },
            } },
        }),
    )
    .await?;
    let mut runner = case.start_runner(cp, &case.uid)?;
    let code = case.wait_exit(&mut runner, Duration::from_secs(30)).await?;
    assert_eq!(
        code.code(),
        Some(contract::EXIT_INVALID_SPEC),
        "log:\n{}",
        case.log()
    );
    let status = case.status(cp).await?;
    let failure = status.runner_failure.context("no runnerFailure")?;
    assert_eq!(failure.reason, "InvalidSpec", "{failure:?}");
    assert!(!failure.retryable);
    assert!(failure.message.contains("GEMINI_API_KEY"), "{failure:?}");
    assert_eq!(status.stage.as_deref(), Some("failed"));

    // Recorded beside the (absent) outputs too; the source was never read.
    let record = file_result(&case)?;
    assert_eq!(record.outcome, Outcome::Failed);
    assert_eq!(record.failure, Some(failure));
    assert_eq!(
        record.source.spec.url.as_deref(),
        Some("http://127.0.0.1:9/never.png")
    );
    assert_eq!((record.source.sha256, record.outputs.len()), (None, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_another_uid_is_refused_and_writes_nothing() -> Result<()> {
    common_tracing();
    let cp = ControlPlane::shared().await?;
    install_crds(cp).await?;
    let case = Case::create(cp, "uid", builtin_spec("http://127.0.0.1:9/never.png")).await?;
    let api = case.api(cp).await?;

    // The writes of a runner made for an earlier ClothJob of the same name.
    let stale = StatusTarget::new(
        api.clone(),
        &case.name,
        "00000000-0000-0000-0000-000000000000",
    );
    let started = Instant::now();
    let err = stale
        .apply_retrying(&RunState::new().to_status(), Backoff::MUST_LAND)
        .await
        .expect_err("a write with another uid went through");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refused uid was retried"
    );
    match &err {
        ApiCallError::Gone(m) => assert!(m.contains("Precondition failed: UID"), "{m}"),
        other => panic!("not Gone: {other:?}"),
    }
    assert_eq!(case.status(cp).await?, ClothJobStatus::default());

    // The runner itself: it reads the ClothJob, sees another uid and stops at once.
    let mut runner = case.start_runner(cp, "00000000-0000-0000-0000-000000000000")?;
    let code = case.wait_exit(&mut runner, Duration::from_secs(30)).await?;
    assert_eq!(
        code.code(),
        Some(contract::EXIT_BAD_INPUT),
        "log:\n{}",
        case.log()
    );
    assert!(case.log().contains("was replaced"), "{}", case.log());
    assert_eq!(case.status(cp).await?, ClothJobStatus::default());

    // With the right uid the same write lands.
    StatusTarget::new(api, &case.name, &case.uid)
        .apply_retrying(&RunState::new().to_status(), Backoff::MUST_LAND)
        .await?;
    assert_eq!(case.status(cp).await?.progress, Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_of_a_deleted_clothjob_cannot_write_into_its_successor() -> Result<()> {
    common_tracing();
    let cp = ControlPlane::shared().await?;
    install_crds(cp).await?;
    let mut case = Case::create(cp, "again", builtin_spec("http://127.0.0.1:9/never.png")).await?;
    let api = case.api(cp).await?;

    // The old runner has read its ClothJob and written to it.
    let old = StatusTarget::new(api.clone(), &case.name, &case.uid);
    let cj = old.read(Backoff::MUST_LAND).await?;
    let old_rv = cj
        .metadata
        .resource_version
        .clone()
        .context("no resourceVersion")?;
    old.apply_retrying(&RunState::new().to_status(), Backoff::MUST_LAND)
        .await?;
    assert_eq!(case.status(cp).await?.progress, Some(0));

    // Someone deletes the ClothJob and creates one of the same name.
    case.recreate(cp).await?;
    let mut later = RunState::new();
    later.progress = 45;
    later.stage = "expansion".into();
    let started = Instant::now();
    let err = old
        .apply_retrying(&later.to_status(), Backoff::MUST_LAND)
        .await
        .expect_err("the old runner wrote into the new ClothJob");
    assert!(started.elapsed() < Duration::from_secs(10), "retried");
    assert!(
        matches!(&err, ApiCallError::Gone(m) if m.contains("Precondition failed: UID")),
        "{err:?}"
    );
    assert_eq!(case.status(cp).await?, ClothJobStatus::default());
    let runner_err = clothjob_runner::error::RunError::from(err);
    assert_eq!(runner_err.exit_code(), contract::EXIT_BAD_INPUT);

    // The guard is the apiserver's: a body preconditioned on the old object's version is
    // refused (409) whatever uid it names.
    let body = clothjob_runner::writer::apply_body(
        &case.name,
        &case.uid,
        Some(&old_rv),
        &later.to_status(),
    );
    let refused = api
        .patch_status(
            &case.name,
            &PatchParams::apply(contract::RUNNER_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .expect_err("a write preconditioned on a stale version went through");
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 409),
        "{refused:?}"
    );
    assert_eq!(case.status(cp).await?, ClothJobStatus::default());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_write_of_an_attempt_removes_what_the_last_attempt_left() -> Result<()> {
    common_tracing();
    let cp = ControlPlane::shared().await?;
    install_crds(cp).await?;
    let case = Case::create(cp, "reset", builtin_spec("http://127.0.0.1:9/never.png")).await?;
    let api = case.api(cp).await?;
    let target = StatusTarget::new(api.clone(), &case.name, &case.uid);

    // The operator's fields, with its own field manager.
    let operator = json!({
        "apiVersion": "closetconnect.io/v1alpha1",
        "kind": "ClothJob",
        "metadata": { "name": case.name },
        "status": { "phase": "Running", "attempts": 1 },
    });
    api.patch_status(
        &case.name,
        &PatchParams::apply(contract::OPERATOR_MANAGER).force(),
        &Patch::Apply(&operator),
    )
    .await?;

    // An earlier attempt that listed outputs and regions, then failed.
    let mut earlier = RunState::new();
    earlier.progress = 97;
    earlier.stage = "failed".into();
    earlier.outputs = vec![OutputStatus {
        name: "cutout".into(),
        uri: "file:///out/cutout.png".into(),
        media_type: "image/png".into(),
        width: 1,
        height: 1,
        bytes: 1,
        sha256: "00".repeat(32),
    }];
    earlier.regions = vec![RegionStatus {
        label: 1,
        share: "0.500".into(),
        bbox: vec![0, 0, 1, 1],
        ..Default::default()
    }];
    earlier.failure = Some(RunnerFailure {
        reason: "Transient".into(),
        message: "storing output cutout: connection reset".into(),
        retryable: true,
    });
    target
        .apply_retrying(&earlier.to_status(), Backoff::MUST_LAND)
        .await?;
    let before = case.status(cp).await?;
    assert_eq!(before.outputs.as_ref().map(Vec::len), Some(1));
    assert!(before.runner_failure.is_some());

    // The next attempt's first write.
    target
        .apply_retrying(&RunState::new().to_status(), Backoff::MUST_LAND)
        .await?;
    let after = case.status(cp).await?;
    assert_eq!(after.outputs, None, "{after:?}");
    assert_eq!(after.regions, None, "{after:?}");
    assert_eq!(after.runner_failure, None, "{after:?}");
    assert_eq!(after.progress, Some(0));
    assert_eq!(after.stage.as_deref(), Some("fetching"));
    assert!(
        after
            .stages
            .unwrap_or_default()
            .iter()
            .all(|s| s.state == StageState::Pending)
    );
    // The operator's fields are not the runner's to remove.
    assert_eq!(after.attempts, Some(1));
    assert!(after.phase.is_some());
    Ok(())
}

/// The case's output directory under a `file://` output prefix at `<dir>/out`.
fn file_output_dir(case: &Case) -> PathBuf {
    case.dir
        .path()
        .join("out")
        .join(&case.ns)
        .join(&case.name)
        .join(&case.uid)
}

/// The `status.json` the runner left in the case's `file://` output directory.
fn file_result(case: &Case) -> Result<ClothJobResult> {
    let path = file_output_dir(case).join(result::FILE_NAME);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("{}; log:\n{}", path.display(), case.log()))?;
    serde_json::from_slice(&bytes).with_context(|| String::from_utf8_lossy(&bytes).into_owned())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_is_recorded_in_status_json_as_the_last_upload_to_s3() -> Result<()> {
    common_tracing();
    let cp = ControlPlane::shared().await?;
    install_crds(cp).await?;
    let store_root = tempfile::tempdir()?;
    let s3 = S3Server::start(store_root.path()).await?;
    s3.create_bucket("catalog")?;
    let dir = tempfile::tempdir()?;
    let png = photo_bytes(dir.path());
    let photos = {
        let png = png.clone();
        MockServer::start(move |_, _| Reply::new(200, "image/png", png.clone()))
    };
    // A presigned-style URL: its token must not reach the record.
    let url = format!(
        "{}/tshirt.png?X-Amz-Signature=s3cr3t-token&X-Amz-Expires=60",
        photos.url()
    );
    let case = Case::create(
        cp,
        "record-s3",
        json!({
            "source": { "url": url },
            "output": { "uri": "s3://catalog/jobs/", "credentialsSecretName": "s3-creds" },
        }),
    )
    .await?;
    let mut runner = case.start_runner_with(
        cp,
        &case.uid,
        &[
            ("AWS_ENDPOINT", s3.endpoint()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", s3.access_key()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key()),
            ("AWS_REGION", s3.region()),
        ],
    )?;
    let code = case
        .wait_exit(&mut runner, Duration::from_secs(120))
        .await?;
    assert_eq!(code.code(), Some(0), "log:\n{}", case.log());
    let status = case.status(cp).await?;
    assert_eq!(status.runner_failure, None, "{status:?}");
    let outputs = status.outputs.clone().unwrap_or_default();
    assert_eq!(outputs.len(), 7, "{outputs:?}");

    // Read back through the store's own directory: `<root>/<bucket>/<key>`.
    let key_dir = format!("jobs/{}/{}/{}", case.ns, case.name, case.uid);
    let on_disk = |uri: &str| -> PathBuf {
        let key = uri
            .strip_prefix("s3://catalog/")
            .expect("an s3://catalog/ uri");
        s3.root().join("catalog").join(key)
    };
    let record_path = s3.root().join("catalog").join(&key_dir).join("status.json");
    let text = std::fs::read_to_string(&record_path)
        .with_context(|| format!("{}; log:\n{}", record_path.display(), case.log()))?;
    let record: ClothJobResult = serde_json::from_str(&text)?;
    let raw: Value = serde_json::from_str(&text)?;
    assert_eq!(raw["apiVersion"], result::API_VERSION);
    assert_eq!(raw["kind"], result::KIND);
    assert_eq!(record.outcome, Outcome::Succeeded);
    assert_eq!(record.failure, None);
    assert_eq!(
        (
            record.namespace.as_str(),
            record.name.as_str(),
            record.uid.as_str()
        ),
        (case.ns.as_str(), case.name.as_str(), case.uid.as_str())
    );
    assert_eq!((record.generation, record.attempt), (Some(1), 1));
    assert!(record.started_at.0 <= record.finished_at.0, "{record:?}");
    // The same outputs as the status lists, each stored with the sha256 recorded.
    assert_eq!(record.outputs, outputs);
    let record_written = std::fs::metadata(&record_path)?.modified()?;
    for o in &record.outputs {
        assert!(
            o.uri.starts_with(&format!("s3://catalog/{key_dir}/")),
            "{}",
            o.uri
        );
        let path = on_disk(&o.uri);
        let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
        assert_eq!(sha256_hex(&bytes), o.sha256, "{}", o.name);
        assert_eq!(bytes.len() as i64, o.bytes, "{}", o.name);
        // status.json is the last upload.
        assert!(
            std::fs::metadata(&path)?.modified()? <= record_written,
            "{} written after status.json",
            o.name
        );
    }
    assert_eq!(
        record.source.sha256.as_deref(),
        Some(sha256_hex(&png).as_str())
    );
    assert_eq!(record.source.bytes, Some(png.len() as u64));
    assert_eq!(
        record.source.spec.url.as_deref(),
        Some(format!("{}/tshirt.png", photos.url()).as_str())
    );
    assert!(
        !text.contains("s3cr3t") && !text.contains("X-Amz"),
        "{text}"
    );
    let storing = record.stages.last().context("no stages")?;
    assert_eq!(
        (storing.name.as_str(), storing.state),
        ("storing", StageState::Succeeded)
    );
    assert!(
        record
            .stages
            .iter()
            .all(|s| matches!(s.state, StageState::Succeeded | StageState::Skipped)),
        "{:?}",
        record.stages
    );
    assert_eq!(Some(record.stages.clone()), status.stages);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_image_is_recorded_in_status_json_as_failed() -> Result<()> {
    common_tracing();
    let cp = ControlPlane::shared().await?;
    install_crds(cp).await?;
    let body = b"this is not an image".to_vec();
    let server = {
        let body = body.clone();
        MockServer::start(move |_, _| Reply::new(200, "image/png", body.clone()))
    };
    let case = Case::create(
        cp,
        "record-bad",
        builtin_spec(&format!("{}/tshirt.png", server.url())),
    )
    .await?;
    let mut runner = case.start_runner(cp, &case.uid)?;
    let code = case.wait_exit(&mut runner, Duration::from_secs(60)).await?;
    assert_eq!(
        code.code(),
        Some(contract::EXIT_BAD_INPUT),
        "log:\n{}",
        case.log()
    );
    let status = case.status(cp).await?;
    let failure = status.runner_failure.context("no runnerFailure")?;
    assert_eq!(failure.reason, "BadInput", "{failure:?}");

    let record = file_result(&case)?;
    assert_eq!(record.outcome, Outcome::Failed);
    assert_eq!(record.failure, Some(failure));
    assert_eq!(record.outputs, vec![]);
    assert_eq!(
        record.source.sha256.as_deref(),
        Some(sha256_hex(&body).as_str())
    );
    assert_eq!(Some(record.stages.clone()), status.stages);
    assert!(
        record.stages.iter().all(|s| s.state != StageState::Running),
        "{:?}",
        record.stages
    );
    // Nothing else was stored.
    let files: Vec<_> = std::fs::read_dir(file_output_dir(&case))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(files, vec![std::ffi::OsString::from("status.json")]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_written_is_reported_and_the_job_still_succeeds() -> Result<()> {
    common_tracing();
    let cp = ControlPlane::shared().await?;
    install_crds(cp).await?;
    let dir = tempfile::tempdir()?;
    let photos = photo_server(dir.path(), None);
    let case = Case::create(
        cp,
        "record-lost",
        builtin_spec(&format!("{}/tshirt.png", photos.url())),
    )
    .await?;
    // A directory where the file goes: the outputs can be stored, status.json cannot.
    std::fs::create_dir_all(file_output_dir(&case).join(result::FILE_NAME))?;
    let mut runner = case.start_runner(cp, &case.uid)?;
    let code = case
        .wait_exit(&mut runner, Duration::from_secs(120))
        .await?;
    assert_eq!(code.code(), Some(0), "log:\n{}", case.log());
    let status = case.status(cp).await?;
    assert_eq!(status.stage.as_deref(), Some("done"));
    assert_eq!(status.progress, Some(100));
    assert_outputs(&case, &status);
    let failure = status
        .runner_failure
        .context("the lost record is not reported")?;
    assert_eq!(failure.reason, result::NOT_RECORDED, "{failure:?}");
    assert!(!failure.retryable);
    assert!(failure.message.contains("status.json"), "{failure:?}");
    let log = case.log();
    let warned = log
        .lines()
        .find(|l| l.contains("could not write the attempt's record"))
        .with_context(|| format!("no warning; log:\n{log}"))?;
    assert!(
        warned.contains("WARN") && warned.contains("status.json"),
        "{warned}"
    );
    Ok(())
}

/// Routes the test's own `tracing` (testenv) to the test output (RUST_LOG).
fn common_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
