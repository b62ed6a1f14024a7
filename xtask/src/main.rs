//! `cargo xtask <task>`: the one entry point for developer tasks.

mod bench;
mod demo;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  gen-crds     write crds/ and the chart's CRD template from the Rust types
  build-k8s    build (or find) etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, helm, s3s-fs
  test [ARGS]  fmt check, clippy -D warnings, helm lint, test set-up, then the tests: without ARGS in lanes (CLOTHJOB_TEST_LANES, 2), with ARGS one cargo test --workspace [ARGS]
  demo [--keep] [--debug]  the sample ClothJob on a real one-node cluster (shipped images, chart by helm) with live progress; --keep: stay up until Ctrl-C
  bench-load [--jobs N] [--duplicates D] [--limit L] [--no-baseline]  the load benchmark on the test cluster (real node): N ClothJobs at once (1000) with the limit (50), D duplicates of one photo (100), the same N without the limit
  bench        the anchors of ../shared/bench and our pipeline in one run, as ratios
  images [--debug]  the operator and runner images as OCI archives in target/images (no daemon)
  dashboard-picture [DATA]  draw docs/dashboard.svg from a real run's Prometheus data (default: target/e2e-dashboard-data.json, written by the observability e2e test)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    match task {
        "gen-crds" => gen_crds(),
        "build-k8s" => build_k8s().map(|_| ()),
        "test" => test(&args[1..]),
        "demo" => demo::run(&args[1..]),
        "bench" => bench::run(),
        "bench-load" => bench_load(&args[1..]),
        "images" => xtask::images::run(&args[1..]),
        "dashboard-picture" => xtask::dashboard::run(&args[1..], &root()),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown task {task}\n\n{USAGE}"),
    }
}

/// `bench-load`: the control-plane binaries, then the benchmark binary of the e2e crate (it
/// starts the same one-node cluster the tests use).
fn bench_load(args: &[String]) -> Result<()> {
    build_k8s()?;
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "clothjob-e2e",
        "--bin",
        "bench-load",
        "--",
    ])
    .args(args);
    for (var, value) in test_env()? {
        if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
            cmd.env(var, value);
        }
    }
    run("bench-load", &mut cmd)
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cargo() -> Command {
    xtask::cargo_command()
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// A step running in the background, its output in a log file (not interleaved with the
/// foreground steps'); killed if dropped before it was waited for (an earlier step failed).
struct Background {
    what: &'static str,
    log: PathBuf,
    child: Option<std::process::Child>,
}

impl Background {
    fn start(what: &'static str, cmd: &mut Command, log: &Path) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening {}", log.display()))?;
        eprintln!("==> {what} (in the background, log: {})", log.display());
        // Its own process group, so that a kill reaches apt-get and pip too.
        let child = std::os::unix::process::CommandExt::process_group(cmd, 0)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self {
            what,
            log: log.to_path_buf(),
            child: Some(child),
        })
    }

    /// Waits for the step; on failure its log is printed and the step named.
    fn wait(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        eprintln!("==> waiting for {}", self.what);
        let status = child
            .wait()
            .with_context(|| format!("waiting for {}", self.what))?;
        if !status.success() {
            eprintln!("{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            bail!(
                "{} failed ({status}); its log is {}",
                self.what,
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes crds/ and the chart's CRD template from the Rust types.
fn gen_crds() -> Result<()> {
    let files = [
        (
            root().join("crds").join(clothjob_api::crd::CRD_FILE),
            clothjob_api::crd::crd_yaml()?,
        ),
        (
            root().join(clothjob_api::crd::CHART_CRD_TEMPLATE),
            clothjob_api::crd::chart_crd_template()?,
        ),
    ];
    for (path, yaml) in files {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Builds or locates every external binary the tests use; returns helm's path.
fn build_k8s() -> Result<PathBuf> {
    eprintln!(
        "==> control-plane binaries (cached under ~/.cache/clothjob; honours CLOTHJOB_K8S_BIN_DIR and KUBEBUILDER_ASSETS)"
    );
    let bins = clothjob_testenv::ensure_k8s_binaries()?;
    eprintln!("    kube-apiserver: {}", bins.kube_apiserver.display());
    let node = clothjob_testenv::ensure_node_binaries()?;
    eprintln!("    kubelet: {}", node.kubelet.display());
    let helm = clothjob_testenv::ensure_helm()?;
    eprintln!("    helm: {}", helm.display());
    let s3 = clothjob_testenv::ensure_s3_server()?;
    eprintln!("    s3s-fs: {}", s3.display());
    Ok(helm)
}

/// The project's checks and tests, as CI runs them.
fn test(extra: &[String]) -> Result<()> {
    // Mostly downloads and installs (apt, pip, the model): in the background while the
    // CPU-bound steps below compile, waited for before the tests that need it.
    let setup = Background::start(
        "test dependencies (scripts/setup-test-deps.sh: the real node's packages, rembg, u2netp, ONNX Runtime, checkov)",
        Command::new("bash").arg(root().join("scripts/setup-test-deps.sh")),
        &root().join("target/setup-test-deps.log"),
    )?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let helm = build_k8s()?;
    run(
        "helm lint",
        Command::new(helm)
            .arg("lint")
            .arg(root().join("charts/clothjob-operator")),
    )?;
    setup.wait()?;
    let mut env = Vec::new();
    for (var, value) in test_env()? {
        if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
            eprintln!("    {var}={}", value.display());
            env.push((var, value));
        }
    }
    let test_cmd = |args: &[String]| {
        let mut cmd = cargo();
        cmd.args(["test", "--workspace"]).args(args);
        cmd.envs(env.iter().map(|(k, v)| (*k, v)));
        cmd
    };
    if !extra.is_empty() {
        // A developer's selection or harness flags: one plain cargo test.
        return run("cargo test", &mut test_cmd(extra));
    }
    // Build everything once (CPU-bound, cargo parallelises it), then run the test binaries
    // in lanes (mostly waiting on clusters).
    run("cargo test --no-run", &mut test_cmd(&["--no-run".into()]))?;
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let units = xtask::lanes::plan(&xtask::lanes::test_targets(&metadata)?)?;
    let lanes = match std::env::var("CLOTHJOB_TEST_LANES") {
        Ok(v) if !v.is_empty() => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("CLOTHJOB_TEST_LANES={v}: not a positive number"))?,
        _ => xtask::lanes::LANES,
    };
    let log_dir = root().join("target/test-logs");
    xtask::lanes::run(units, lanes, &log_dir, &|u| test_cmd(&u.args)).map(drop)
}

/// Where the set-up script put ONNX Runtime, u2netp and rembg, for the tests that use them.
fn test_env() -> Result<Vec<(&'static str, PathBuf)>> {
    let cache = clothjob_testenv::bins::cache_root()?;
    let venv = cache.join("rembg-venv");
    let mut ort = None;
    for python in std::fs::read_dir(venv.join("lib"))?.flatten() {
        let capi = python.path().join("site-packages/onnxruntime/capi");
        for f in std::fs::read_dir(capi).into_iter().flatten().flatten() {
            if f.file_name()
                .to_string_lossy()
                .starts_with("libonnxruntime.so.")
            {
                ort = Some(f.path());
            }
        }
    }
    let ort = ort.with_context(|| {
        format!(
            "no libonnxruntime.so.* in {} after the set-up",
            venv.display()
        )
    })?;
    Ok(vec![
        ("ORT_DYLIB_PATH", ort),
        ("CLOTHJOB_U2NETP", cache.join("u2net/u2netp.onnx")),
        ("CLOTHJOB_REMBG", venv.join("bin/rembg")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xtask-{}-{name}.log", std::process::id()))
    }

    #[test]
    fn a_failed_background_step_fails_with_its_name_and_its_log_kept() {
        let path = log("fail");
        let step = Background::start(
            "failing step",
            Command::new("bash").args(["-c", "echo boom; exit 3"]),
            &path,
        )
        .unwrap();
        let err = step.wait().unwrap_err().to_string();
        assert!(err.contains("failing step failed"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "boom\n");
        let ok = Background::start("fine", Command::new("true").arg("x"), &path).unwrap();
        ok.wait().unwrap();
    }

    #[test]
    fn a_background_step_dropped_unwaited_is_killed_with_its_children() {
        let path = log("kill");
        let pidfile = log("kill-pid");
        let step = Background::start(
            "long step",
            Command::new("bash").args([
                "-c",
                &format!("sleep 600 & echo $! > {}; wait", pidfile.display()),
            ]),
            &path,
        )
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let pid = loop {
            if let Ok(p) = std::fs::read_to_string(&pidfile)
                && !p.trim().is_empty()
            {
                break p.trim().to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no child started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        drop(step);
        // The grandchild (`sleep`) got the group's SIGTERM: it is gone once reaped by init,
        // which may take a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
