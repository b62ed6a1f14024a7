//! End-to-end tests of the `kubectl-clothjob` plugin on the real node: the built binary run as
//! a user would, against the test cluster's apiserver with the admin kubeconfig. `submit
//! --watch` runs under tmux (the test reads the screen while the job runs) and piped to a file
//! (plain lines, no escape codes); list, report, get-outputs, the photo Secret's clean-up with
//! its ClothJob; a cancel mid-run, logs and a retry; exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clothjob_api::{ClothJob, conditions};
use clothjob_e2e::harness::S3_SECRET;
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::source_server::SourceServer;
use clothjob_e2e::{Case, wait_condition};
use clothjob_testenv::{bins, wait_for};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

const MINUTE: Duration = Duration::from_secs(60);
const ROLES: [&str; 7] = [
    "original", "cutout", "mask", "segments", "garment", "catalog", "square",
];
const STAGES: [&str; 5] = [
    "backgroundRemoval",
    "segmentation",
    "expansion",
    "encoding",
    "storing",
];

static CLI: OnceCell<PathBuf> = OnceCell::const_new();

/// Builds the plugin (a no-op when up to date) without cargo's per-package variables, which
/// would make build scripts rerun.
async fn cli_binary() -> Result<&'static PathBuf> {
    CLI.get_or_try_init(|| async {
        tokio::task::spawn_blocking(|| -> Result<PathBuf> {
            let root = bins::workspace_root();
            let mut cmd = clothjob_e2e::harness::cargo_command();
            let status = cmd
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "clothjob-cli",
                    "--bin",
                    "kubectl-clothjob",
                ])
                .status()
                .context("running cargo build -p clothjob-cli")?;
            if !status.success() {
                bail!("cargo build -p clothjob-cli failed");
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(|d| root.join(d))
                .unwrap_or_else(|| root.join("target"));
            Ok(target.join("debug/kubectl-clothjob"))
        })
        .await?
    })
    .await
}

/// The plugin as a command with the admin kubeconfig and the case's namespace, without
/// NO_COLOR (tests of plain output get it from a pipe).
fn cli(case: &Case, bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(case.cp.kubeconfig_path())
        .args(["-n", &case.ns])
        .env_remove("NO_COLOR")
        .env_remove("KUBECONFIG");
    cmd
}

/// Runs the plugin to its end with piped output.
async fn run(case: &Case, bin: &Path, args: &[&str]) -> Result<Output> {
    let mut cmd = cli(case, bin);
    cmd.args(args);
    Ok(tokio::task::spawn_blocking(move || cmd.output()).await??)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Asserts the exit code, showing the output otherwise.
fn expect_code(o: &Output, code: i32, what: &str) -> (String, String) {
    let (out, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit {:?}\nstdout:\n{out}\nstderr:\n{err}",
        o.status.code()
    );
    (out, err)
}

/// The submit arguments of a job named `name` for `photo`.
fn submit_args(case: &Case, photo: &str, name: &str) -> Vec<String> {
    [
        "submit",
        photo,
        "--name",
        name,
        "--output",
        &case.output_uri(),
        "--credentials-secret",
        S3_SECRET,
        // Both submissions are of one photo: each runs the pipeline, whose stages are shown.
        "--set",
        "reuse=Never",
    ]
    .map(String::from)
    .to_vec()
}

/// A tmux server of its own (its socket named after the namespace), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]).env("TERM", "xterm-256color");
        cmd
    }

    fn start(socket: String, width: u16, height: u16, shell_command: &str) -> Result<Self> {
        let t = Self { socket };
        let out = t
            .command()
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "cli"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(shell_command)
            .output()
            .context("starting tmux (scripts/setup-test-deps.sh installs it)")?;
        if !out.status.success() {
            bail!("tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(t)
    }

    fn screen(&self) -> Result<String> {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "cli"])
            .output()?;
        if !out.status.success() {
            bail!(
                "tmux capture-pane: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .command()
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

/// The percentage on the bar line of job `name` (`<name> ███░░░  45%  expansion  3.1s`).
fn bar_percent(screen: &str, name: &str) -> Option<i32> {
    let line = screen
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")) && l.contains('%'))?;
    line.split_whitespace()
        .find_map(|w| w.strip_suffix('%')?.parse().ok())
}

/// The S3 server's loopback endpoint and credentials, as the plugin reads them.
fn case_s3(case: &Case) -> [(&'static str, String); 5] {
    let s3 = &case.env.s3;
    [
        ("AWS_ACCESS_KEY_ID", s3.access_key().to_string()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_string()),
        ("AWS_REGION", s3.region().to_string()),
        ("AWS_ENDPOINT", s3.endpoint().to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]
}

fn s3_env(mut cmd: Command, vars: &[(&'static str, String)]) -> Command {
    cmd.envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
    cmd
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_on_a_terminal_and_piped_then_list_report_and_get_outputs() -> Result<()> {
    let case = Case::new("cli").await?;
    let bin = cli_binary().await?;
    let photo = case.dir.path().join("tee.jpg");
    std::fs::write(&photo, tshirt_jpeg(900, 1200)?)?;
    let photo_s = photo.display().to_string();

    // Usage errors exit 2, a missing ClothJob 1.
    let o = run(
        &case,
        bin,
        &["submit", "/no/such/photo.jpg", "--output", "s3://b/o"],
    )
    .await?;
    let (_, err) = expect_code(&o, 2, "submit of a missing file");
    assert!(err.contains("/no/such/photo.jpg"), "{err}");
    expect_code(
        &run(&case, bin, &["list", "--bogus"]).await?,
        2,
        "an unknown flag",
    );
    let (_, err) = expect_code(&run(&case, bin, &["watch", "nosuch"]).await?, 1, "watch");
    assert!(err.contains("not found"), "{err}");

    // The same command on a terminal (tmux) and piped to a file, both at once.
    let piped_out = case.dir.path().join("piped.txt");
    let mut piped = cli(&case, bin);
    piped
        .args(submit_args(&case, &photo_s, "piped"))
        .args(["--watch", "--timeout", "4m"])
        .stdout(std::fs::File::create(&piped_out)?)
        .stderr(Stdio::piped());
    let piped = piped.spawn()?;
    let piped = tokio::task::spawn_blocking(move || piped.wait_with_output());

    let mut line = vec![
        "env".to_string(),
        "-u".into(),
        "NO_COLOR".into(),
        bin.display().to_string(),
        "--kubeconfig".into(),
        case.cp.kubeconfig_path().display().to_string(),
        "-n".into(),
        case.ns.clone(),
    ];
    line.extend(submit_args(&case, &photo_s, "tty"));
    line.extend(["--watch".into(), "--timeout".into(), "4m".into()]);
    let shell = format!(
        "{}; echo cli-exit=$?; sleep 3600",
        line.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    );
    let tmux = Tmux::start(format!("clothjob-{}", case.ns), 160, 48, &shell)?;
    let started = Instant::now();
    let mut seen: Vec<i32> = Vec::new();
    let screen = loop {
        let screen = tmux.screen()?;
        if let Some(p) = bar_percent(&screen, "tty")
            && seen.last() != Some(&p)
        {
            seen.push(p);
        }
        if screen.contains("cli-exit=") {
            break screen;
        }
        if started.elapsed() > 4 * MINUTE {
            bail!(
                "submit --watch did not end:\n{screen}\n{}",
                case.diagnostics()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        screen.contains("cli-exit=0"),
        "{screen}\n{}",
        case.diagnostics()
    );
    assert!(
        screen.contains("clothjob.closetconnect.io/tty created"),
        "{screen}"
    );
    // The bar advanced (never back) and ended at 100 %, redrawn in place: one bar line.
    assert!(
        seen.len() >= 2 && seen[0] < 100,
        "percentages seen: {seen:?}\n{screen}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&100), "{seen:?}\n{screen}");
    let bars: Vec<&str> = screen
        .lines()
        .filter(|l| l.starts_with("tty ") && l.contains('%'))
        .collect();
    assert_eq!(bars.len(), 1, "{screen}");
    assert!(
        bars[0].contains("100%") && bars[0].contains("Succeeded"),
        "{screen}"
    );
    assert!(bars[0].contains(&"█".repeat(30)), "{screen}");
    // Each stage's line, in order, above the bar; then the outputs and timing tables.
    let mut at = 0;
    for stage in STAGES {
        let found = screen[at..]
            .find(&format!("✓ {stage}"))
            .with_context(|| format!("no ✓ {stage} line after byte {at}:\n{screen}"))?;
        at += found;
    }
    assert!(
        screen.contains("ROLE") && screen.contains("DIMENSIONS"),
        "{screen}"
    );
    for role in ROLES {
        assert!(
            screen
                .lines()
                .any(|l| l.starts_with(&format!("{role} ")) && l.contains("s3://")),
            "no output row for {role}:\n{screen}"
        );
    }
    assert!(screen.contains("STAGE") && screen.lines().any(|l| l.starts_with("total ")));
    drop(tmux);

    let piped = piped.await??;
    let plain = std::fs::read_to_string(&piped_out)?;
    assert_eq!(
        piped.status.code(),
        Some(0),
        "{plain}\n{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(
        !plain.contains('\x1b') && !plain.contains('\r') && !plain.contains('█'),
        "escape codes or bars in piped output:\n{plain:?}"
    );
    assert!(plain.contains("piped: Succeeded 100%"), "{plain}");
    for stage in STAGES {
        assert!(
            plain.contains(&format!("piped: stage {stage} done")),
            "{plain}"
        );
    }
    for role in ROLES {
        assert!(
            plain.lines().any(|l| l.starts_with(&format!("{role} "))),
            "{plain}"
        );
    }

    // A photo uploaded with --upload-to (credentials from the environment) to the S3 store;
    // `watch -o json` prints the finished object.
    let mut up = cli(&case, bin);
    up.args(submit_args(&case, &photo_s, "uploaded"))
        .args(["--upload-to", &format!("s3://{}/uploads", case.bucket)]);
    let up = s3_env(up, &case_s3(&case));
    let o = tokio::task::spawn_blocking(move || { up }.output()).await??;
    expect_code(&o, 0, "submit --upload-to");
    let uploaded = case.clothjobs().get("uploaded").await?;
    let uri = format!("s3://{}/uploads/{}/uploaded/tee.jpg", case.bucket, case.ns);
    assert_eq!(uploaded.spec.source.uri.as_deref(), Some(uri.as_str()));
    assert_eq!(case.read_output(&uri)?, std::fs::read(&photo)?);
    let o = run(
        &case,
        bin,
        &["watch", "uploaded", "-o", "json", "--timeout", "3m"],
    )
    .await?;
    let (out, _) = expect_code(&o, 0, "watch -o json");
    let done: ClothJob = serde_json::from_str(&out)?;
    assert_eq!(
        done.status.and_then(|s| s.phase).map(|p| p.as_str()),
        Some("Succeeded")
    );

    // list, list -A -o name.
    let (out, _) = expect_code(&run(&case, bin, &["list"]).await?, 0, "list");
    for name in ["tty", "piped"] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .with_context(|| format!("no row for {name}:\n{out}"))?;
        assert!(row.contains("Succeeded") && row.contains("100%"), "{out}");
    }
    let (out, _) = expect_code(
        &run(&case, bin, &["list", "-A", "-o", "name"]).await?,
        0,
        "list -A",
    );
    assert!(
        out.lines().any(|l| l == "clothjob.closetconnect.io/piped"),
        "{out}"
    );

    // report NAME and the namespace's percentiles.
    let (out, _) = expect_code(&run(&case, bin, &["report", "piped"]).await?, 0, "report");
    for stage in STAGES {
        assert!(out.lines().any(|l| l.starts_with(stage)), "{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("total") && l.contains("100.0%")),
        "{out}"
    );
    let (out, _) = expect_code(
        &run(&case, bin, &["report", "-o", "json"]).await?,
        0,
        "report -o json",
    );
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["jobs"], 3, "{out}");
    let total = v["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == "total"))
        .context("total")?;
    assert!(
        total["p50"].as_f64().unwrap() > 0.0
            && total["p95"].as_f64().unwrap() >= total["p50"].as_f64().unwrap(),
        "{out}"
    );

    // get-outputs: every output downloaded from S3 with the sha256 of its status.
    let dir = case.dir.path().join("outputs");
    let mut cmd = cli(&case, bin);
    cmd.args(["get-outputs", "piped"]).arg(&dir);
    let cmd = s3_env(cmd, &case_s3(&case));
    let o = tokio::task::spawn_blocking(move || { cmd }.output()).await??;
    expect_code(&o, 0, "get-outputs");
    let cj = case.clothjobs().get("piped").await?;
    let outputs = cj
        .status
        .clone()
        .and_then(|s| s.outputs)
        .unwrap_or_default();
    assert_eq!(outputs.len(), 7);
    for o in &outputs {
        let file = dir.join(o.uri.rsplit('/').next().unwrap());
        let bytes = std::fs::read(&file).with_context(|| file.display().to_string())?;
        assert_eq!(hex::encode(Sha256::digest(&bytes)), o.sha256);
    }
    let o = run(&case, bin, &["get-outputs", "nosuch", "/tmp/x"]).await?;
    expect_code(&o, 1, "get-outputs of a missing ClothJob");

    // The photo's Secret belongs to its ClothJob and goes with it.
    let secrets: Api<Secret> = Api::namespaced(case.client.clone(), &case.ns);
    let secret = secrets.get("piped-photo").await?;
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(Some(&owners[0].uid), cj.metadata.uid.as_ref());
    assert_eq!(owners[0].kind, "ClothJob");
    case.clothjobs()
        .delete("piped", &DeleteParams::background())
        .await?;
    wait_for(
        "the photo Secret to be deleted with its ClothJob",
        MINUTE,
        Duration::from_millis(200),
        || async {
            Ok(secrets
                .get_opt("piped-photo")
                .await?
                .is_none()
                .then_some(()))
        },
    )
    .await?;
    assert!(secrets.get_opt("tty-photo").await?.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_run_logs_and_retry() -> Result<()> {
    let case = Case::new("cli-cancel").await?;
    let bin = cli_binary().await?;
    // The photo arrives after 15 s: the runner is mid-run (fetching) when cancelled.
    let src = SourceServer::start_in(
        case.cluster(),
        tshirt_jpeg(400, 500)?,
        0,
        Duration::from_secs(15),
    )
    .await?;
    let url = src.url("slow.jpg");
    let started = Instant::now();
    let o = run(
        &case,
        bin,
        &submit_args(&case, &url, "slow")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await?;
    let (out, _) = expect_code(&o, 0, "submit");
    assert!(
        out.contains("clothjob.closetconnect.io/slow created"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "submit took {:?}",
        started.elapsed()
    );
    let cj = case.clothjobs().get("slow").await?;
    assert_eq!(cj.spec.source.url.as_deref(), Some(url.as_str()));

    wait_for(
        "the runner to run",
        2 * MINUTE,
        Duration::from_millis(200),
        || async { Ok((case.running_runners("slow").await? == 1).then_some(())) },
    )
    .await
    .with_context(|| case.diagnostics())?;
    let o = run(&case, bin, &["logs", "slow", "--attempt", "1"]).await?;
    let (out, _) = expect_code(&o, 0, "logs");
    assert!(out.contains("running"), "{out}");
    let o = run(&case, bin, &["logs", "slow", "--attempt", "2"]).await?;
    expect_code(&o, 1, "logs of an attempt that did not happen");

    let o = run(&case, bin, &["cancel", "slow", "--wait", "--timeout", "2m"]).await?;
    let (out, _) = expect_code(&o, 0, "cancel --wait");
    assert!(
        out.contains("clothjob.closetconnect.io/slow cancelled"),
        "{out}"
    );
    let cj = case.clothjobs().get("slow").await?;
    let status = cj.status.clone().context("status")?;
    assert_eq!(status.reason.as_deref(), Some("Cancelled"));
    assert_eq!(status.phase.map(|p| p.as_str()), Some("Failed"));
    let conds = status.conditions.clone().unwrap_or_default();
    assert_eq!(
        conditions::find(&conds, conditions::FAILED).map(|c| c.reason.as_str()),
        Some("Cancelled")
    );
    // The runner was stopped: its Job and pod are gone.
    let jobs: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    wait_for(
        "the Job and runner pod of the cancelled ClothJob to go",
        2 * MINUTE,
        Duration::from_millis(250),
        || async {
            let jobs = jobs.list(&ListParams::default()).await?.items.len();
            let pods = case.runner_pods("slow").await?.len();
            Ok((jobs == 0 && pods == 0).then_some(()))
        },
    )
    .await
    .with_context(|| case.diagnostics())?;
    let events: Api<Event> = Api::namespaced(case.client.clone(), &case.ns);
    let failed_note = wait_for(
        "the Failed Event",
        MINUTE,
        Duration::from_millis(200),
        || async {
            Ok(events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("Failed"))
                .and_then(|e| e.note))
        },
    )
    .await?;
    assert!(failed_note.starts_with("Cancelled: "), "{failed_note}");

    // Watching it now: exit 1 with the reason; cancelling again is fine; no logs left.
    let (_, err) = expect_code(&run(&case, bin, &["watch", "slow"]).await?, 1, "watch");
    assert!(err.contains("Cancelled"), "{err}");
    let (out, _) = expect_code(
        &run(&case, bin, &["cancel", "slow"]).await?,
        0,
        "cancel again",
    );
    assert!(out.contains("already cancelled"), "{out}");
    expect_code(
        &run(&case, bin, &["logs", "slow"]).await?,
        1,
        "logs without pods",
    );
    // spec.cancel cannot be undone.
    let undo = case
        .cp
        .kubectl()
        .args([
            "patch",
            "clothjob",
            "slow",
            "-n",
            &case.ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"cancel":false}}"#,
        ])
        .output()?;
    assert!(!undo.status.success());
    assert!(String::from_utf8_lossy(&undo.stderr).contains("cannot be undone"));

    // retry: a new ClothJob with the same spec, linked to the failed one, and it succeeds.
    let (out, _) = expect_code(&run(&case, bin, &["retry", "slow"]).await?, 0, "retry");
    assert!(
        out.contains("clothjob.closetconnect.io/slow-r1 created (retry of slow)"),
        "{out}"
    );
    let r: ClothJob = case.clothjobs().get("slow-r1").await?;
    assert_eq!(
        r.metadata.labels.as_ref().unwrap()["closetconnect.io/retry-of"],
        "slow"
    );
    assert_eq!(
        r.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("closetconnect.io/retry-of-uid"),
        cj.metadata.uid.as_ref()
    );
    assert!(!r.spec.cancel);
    assert_eq!(r.spec.source, cj.spec.source);
    assert_eq!(r.spec.output, cj.spec.output);
    // logs -f follows the retry's runner until it exits.
    wait_for(
        "the retry's runner to run",
        2 * MINUTE,
        Duration::from_millis(200),
        || async { Ok((case.running_runners("slow-r1").await? == 1).then_some(())) },
    )
    .await
    .with_context(|| case.diagnostics())?;
    let mut follow = cli(&case, bin);
    follow.args(["logs", "slow-r1", "-f"]);
    let follow = tokio::task::spawn_blocking(move || follow.output());
    let o = run(&case, bin, &["watch", "slow-r1", "--timeout", "3m"]).await?;
    let (out, _) = expect_code(&o, 0, "watch of the retry");
    assert!(out.contains("slow-r1: Succeeded 100%"), "{out}");
    let o = tokio::time::timeout(MINUTE, follow).await???;
    let (out, _) = expect_code(&o, 0, "logs -f");
    assert!(
        out.contains("running") && out.contains("stage timing"),
        "{out}"
    );
    wait_condition(&case.clothjobs(), "slow-r1", conditions::COMPLETE, MINUTE).await?;

    // Only a Failed ClothJob is retried; a finished one is not cancelled.
    expect_code(
        &run(&case, bin, &["retry", "slow-r1"]).await?,
        1,
        "retry of a success",
    );
    expect_code(
        &run(&case, bin, &["cancel", "slow-r1"]).await?,
        1,
        "cancel of a success",
    );
    // A --timeout that passes exits 3.
    let o = run(
        &case,
        bin,
        &submit_args(&case, &url, "late")
            .iter()
            .map(String::as_str)
            .chain(["--watch", "--timeout", "2s"])
            .collect::<Vec<_>>(),
    )
    .await?;
    expect_code(&o, 3, "watch past --timeout");
    expect_code(
        &run(&case, bin, &["cancel", "late"]).await?,
        0,
        "cancel late",
    );
    Ok(())
}
