//! `cargo xtask demo [--keep] [--debug]`: the whole system on a real one-node cluster on this
//! machine (the testenv [`Cluster`]: control plane, kube-scheduler, kube-proxy, a kubelet with
//! containerd and runc, in private namespaces), with the shipped images and the Helm chart:
//!
//! 1. the binaries (Kubernetes, helm, s3s-fs) and the operator and runner images are built or
//!    found, one line per step with the elapsed time and a heartbeat while a step runs;
//! 2. the cluster starts, the images are imported into its containerd, `helm install` puts the
//!    operator in the cluster as the chart's Deployment;
//! 3. an S3 server on the host (data in `target/demo/s3`) is exposed to the pods, the sample
//!    photo goes into a ConfigMap, `examples/clothjob.yaml` (output rewritten to S3) is applied
//!    with kubectl, and a progress bar runs until the job finishes; then the stage timings and
//!    the outputs, on disk under `target/demo/s3/<bucket>/...`.
//!
//! With `--keep` the cluster stays up (in the foreground) until Ctrl-C, and the demo prints how
//! to reach it from another shell. `--debug` builds the images from the dev profile.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use clothjob_api::{ClothJob, conditions};
use clothjob_testenv::cluster::NODE_IP;
use clothjob_testenv::{Cluster, S3Server, bins};
use kube::Api;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use xtask::images::{self, ImageOptions};

/// The Helm release and the operator's namespace, as in the chart's docs.
const RELEASE: &str = "clothjob";
const SYSTEM_NS: &str = "clothjob-system";
/// The namespace of the sample ClothJob.
const NS: &str = "demo";
/// Where the outputs go: `s3://<BUCKET>/<PREFIX>/<namespace>/<name>/<uid>/`.
const BUCKET: &str = "closet";
const PREFIX: &str = "catalog";
const S3_SECRET: &str = "s3-creds";
/// The S3 server's port as the pods see it, at the node's address.
const S3_PORT: u16 = 9000;
/// How often a long step says it is still running.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How long the sample job may take (the example's activeDeadlineSeconds).
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

const USAGE: &str = "usage: cargo xtask demo [--keep] [--debug]
  --keep   leave the cluster running after the job, until Ctrl-C, and print how to reach it
  --debug  build the images from the dev profile (faster to build; release is what users get)";

/// The demo's options.
#[derive(Debug, Default, Clone, Copy)]
struct Options {
    keep: bool,
    debug: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options::default();
    for a in args {
        match a.as_str() {
            "--keep" => opts.keep = true,
            "--debug" => opts.debug = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("cargo xtask demo: unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(opts)
}

/// Runs the demo: `args` are those after `demo`.
pub fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    if let Err(e) = check_machine() {
        eprintln!("cargo xtask demo cannot run here: {e:#}");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let demo = Demo {
        started: Instant::now(),
        rt,
        interrupted: Arc::new(AtomicBool::new(false)),
        root: crate::root()
            .canonicalize()
            .context("finding the workspace root")?,
    };
    demo.watch_signals()?;
    demo.run(opts)
}

/// Whether the effective user is root (`Uid:` real, effective, ... in `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// What must hold before anything heavy starts: root and the node's Debian packages (the
/// cluster's preflight), and Go when a binary has to be built.
fn check_machine() -> Result<()> {
    if let Err(e) = clothjob_testenv::cluster::preflight() {
        if !is_root() {
            bail!(
                "the one-node cluster needs root (network and mount namespaces, mounts, \
                 cgroups).\nwhat to do: run it as root, e.g. `sudo -E env \"PATH=$PATH\" cargo \
                 xtask demo`"
            );
        }
        bail!("{e:#}\nwhat to do: install them (Debian/Ubuntu) and run `cargo xtask demo` again");
    }
    let missing = missing_binaries()?;
    if !missing.is_empty()
        && !Command::new("go")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        bail!(
            "{} must be built once with Go, and `go` is not on PATH.\nwhat to do: install Go \
             1.26 (https://go.dev/dl/), or set CLOTHJOB_K8S_BIN_DIR to a directory holding the \
             Kubernetes binaries",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Whether `name` is found where the testenv looks: `$CLOTHJOB_K8S_BIN_DIR`, then (for the
/// control plane) `$KUBEBUILDER_ASSETS`, then `dir`.
fn have_binary(name: &str, dir: &Path, envtest: bool) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let vars: &[&str] = if envtest {
        &["CLOTHJOB_K8S_BIN_DIR", "KUBEBUILDER_ASSETS"]
    } else {
        &["CLOTHJOB_K8S_BIN_DIR"]
    };
    vars.iter()
        .filter_map(|v| std::env::var_os(v).filter(|d| !d.is_empty()))
        .map(PathBuf::from)
        .chain([dir.to_path_buf()])
        .any(|d| {
            std::fs::metadata(d.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

const CONTROL_PLANE_BINS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
];
const NODE_BINS: [&str; 3] = ["kubelet", "kube-scheduler", "kube-proxy"];
const HELM_DIR: &str = "helm-v3.22.0";

/// The Go-built binaries that are not there yet.
fn missing_binaries() -> Result<Vec<&'static str>> {
    let k8s = bins::k8s_cache_dir()?;
    let helm = bins::cache_root()?.join("bin").join(HELM_DIR);
    let mut missing: Vec<&str> = CONTROL_PLANE_BINS
        .into_iter()
        .filter(|n| !have_binary(n, &k8s, true))
        .collect();
    missing.extend(
        NODE_BINS
            .into_iter()
            .filter(|n| !have_binary(n, &k8s, false)),
    );
    if !have_binary("helm", &helm, false) {
        missing.push("helm");
    }
    Ok(missing)
}

struct Demo {
    started: Instant,
    rt: Runtime,
    interrupted: Arc<AtomicBool>,
    root: PathBuf,
}

impl Demo {
    /// One line of the demo's log, with the time since the start.
    fn say(&self, msg: impl Display) {
        println!("[{:>6.1}s] {msg}", self.started.elapsed().as_secs_f64());
    }

    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Ctrl-C (or SIGTERM) once: stop at the next step and tear the cluster down; twice: exit.
    fn watch_signals(&self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = self.rt.enter();
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let flag = self.interrupted.clone();
        self.rt.spawn(async move {
            loop {
                let got = tokio::select! {
                    s = int.recv() => s,
                    s = term.recv() => s,
                };
                if got.is_none() {
                    break;
                }
                if flag.swap(true, Ordering::SeqCst) {
                    eprintln!("\ninterrupted again: exiting now");
                    std::process::exit(130);
                }
                eprintln!("\ninterrupted: stopping and tearing the cluster down (Ctrl-C again to exit now)");
            }
        });
        Ok(())
    }

    /// Runs `f` on a thread, printing `what` first, a heartbeat (`still <busy>... N s`) every
    /// 30 s, then `done in N s`.
    fn step<T: Send>(
        &self,
        what: impl Display,
        busy: impl Display,
        f: impl FnOnce() -> Result<T> + Send,
    ) -> Result<T> {
        if self.interrupted() {
            bail!("interrupted");
        }
        self.say(what);
        let t0 = Instant::now();
        let result = std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                let _ = tx.send(f());
            });
            let mut next = HEARTBEAT;
            let mut told = false;
            loop {
                match rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(r) => break r,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.interrupted() && !told {
                            self.say(format!("waiting for the step to stop ({busy})"));
                            told = true;
                        }
                        if t0.elapsed() >= next {
                            self.say(format!("still {busy}... {} s", t0.elapsed().as_secs()));
                            next += HEARTBEAT;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        break Err(anyhow!("the step stopped without a result"));
                    }
                }
            }
        });
        let secs = t0.elapsed().as_secs_f64();
        match result {
            Ok(v) if !self.interrupted() => {
                self.say(format!("done in {secs:.1} s"));
                Ok(v)
            }
            Ok(_) => bail!("interrupted"),
            Err(e) => {
                self.say(format!("failed after {secs:.1} s"));
                Err(e)
            }
        }
    }

    /// A binary the first run builds: one line when `missing` is empty (it is cached), else a
    /// [`step`](Self::step) with a heartbeat naming what is being built.
    fn ensure<T: Send>(
        &self,
        missing: &[&str],
        cached: String,
        build: String,
        f: impl FnOnce() -> Result<T> + Send,
    ) -> Result<T> {
        if missing.is_empty() {
            self.say(cached);
            return f();
        }
        self.step(build, format!("building {}", missing.join(", ")), f)
    }

    /// `path` relative to the workspace, or with `~` for the home directory.
    fn show(&self, path: &Path) -> String {
        if let Ok(rel) = path.strip_prefix(&self.root) {
            return rel.display().to_string();
        }
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from)
            && let Ok(rel) = path.strip_prefix(&home)
        {
            return format!("~/{}", rel.display());
        }
        path.display().to_string()
    }

    fn run(&self, opts: Options) -> Result<()> {
        println!(
            "cargo xtask demo: a one-node Kubernetes cluster on this machine, the operator \
             installed by helm, the sample ClothJob{}",
            if opts.keep {
                "; the cluster stays up until Ctrl-C (--keep)"
            } else {
                ""
            }
        );
        let cache = bins::cache_root()?;
        let k8s_dir = bins::k8s_cache_dir()?;

        // 1. Binaries and images.
        let missing: Vec<&str> = CONTROL_PLANE_BINS
            .into_iter()
            .filter(|n| !have_binary(n, &k8s_dir, true))
            .collect();
        self.ensure(
            &missing,
            format!(
                "the Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager, kubectl): \
                 cached in {}",
                self.show(&k8s_dir)
            ),
            format!(
                "building the Kubernetes binaries ({}) with go build (first run: about 15 min on \
                 2 cores; cached in {})",
                missing.join(", "),
                self.show(&cache)
            ),
            clothjob_testenv::ensure_k8s_binaries,
        )?;
        let missing: Vec<&str> = NODE_BINS
            .into_iter()
            .filter(|n| !have_binary(n, &k8s_dir, false))
            .collect();
        self.ensure(
            &missing,
            format!(
                "the node's binaries (kubelet, kube-scheduler, kube-proxy): cached in {}",
                self.show(&k8s_dir)
            ),
            format!(
                "building the node's binaries ({}) with go build (first run: a few more minutes; \
                 cached in {})",
                missing.join(", "),
                self.show(&cache)
            ),
            clothjob_testenv::ensure_node_binaries,
        )?;
        let helm_dir = cache.join("bin").join(HELM_DIR);
        let missing: Vec<&str> = if have_binary("helm", &helm_dir, false) {
            vec![]
        } else {
            vec!["helm"]
        };
        let helm = self.ensure(
            &missing,
            format!("helm: cached in {}", self.show(&helm_dir)),
            format!(
                "building helm with go build (first run: a few minutes; cached in {})",
                self.show(&cache)
            ),
            clothjob_testenv::ensure_helm,
        )?;
        let s3s_dir = cache.join(format!("s3s-fs-{}", bins::S3S_FS_VERSION));
        let missing: Vec<&str> = if s3s_dir.join("bin/s3s-fs").is_file() {
            vec![]
        } else {
            vec!["s3s-fs"]
        };
        self.ensure(
            &missing,
            format!("s3s-fs (the S3 server): cached in {}", self.show(&s3s_dir)),
            format!(
                "installing s3s-fs {} (the S3 server) with cargo install (first run: a few \
                 minutes; cached in {})",
                bins::S3S_FS_VERSION,
                self.show(&cache)
            ),
            clothjob_testenv::ensure_s3_server,
        )?;

        let image_opts = ImageOptions::from_env(opts.debug)?;
        let built = self.step(
            format!(
                "building the operator and runner images: cargo build{} -p {} -p {}, then OCI \
                 archives in {} (first run: many minutes on 2 cores)",
                if opts.debug { "" } else { " --release" },
                images::OPERATOR,
                images::RUNNER,
                self.show(&image_opts.out_dir)
            ),
            "building the images",
            || images::build_images(&image_opts),
        )?;

        // 2. The cluster, the images in it, the operator by helm.
        let cluster = self.step(
            "starting the one-node cluster: etcd, kube-apiserver, kube-controller-manager, \
             kube-scheduler, kube-proxy, containerd and a kubelet in private network, mount and \
             UTS namespaces",
            "starting the cluster",
            || self.rt.block_on(Cluster::start()),
        )?;
        let cp = cluster.control_plane()?;
        self.step(
            format!(
                "importing {} into the node's containerd",
                built
                    .iter()
                    .map(|i| i.reference.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            "importing the images",
            || {
                for image in &built {
                    cluster
                        .import_image(&image.archive)
                        .with_context(|| format!("importing {}", image.archive.display()))?;
                }
                Ok(())
            },
        )?;
        let chart = self.root.join("charts/clothjob-operator");
        self.step(
            format!(
                "helm install {RELEASE} {} --namespace {SYSTEM_NS} --create-namespace --wait \
                 (the operator runs in the cluster as the chart's Deployment)",
                self.show(&chart)
            ),
            "waiting for the operator to be ready",
            || {
                clothjob_testenv::run_checked(
                    "helm install",
                    cluster
                        .helm(&helm)?
                        .args(["install", RELEASE])
                        .arg(&chart)
                        .args([
                            "--namespace",
                            SYSTEM_NS,
                            "--create-namespace",
                            "--wait",
                            "--timeout",
                            "300s",
                        ]),
                )
                .with_context(|| cluster.diagnostics())
            },
        )?;

        // 3. S3 on the host, the sample's inputs, the ClothJob.
        let work = self.root.join("target/demo");
        let s3_root = work.join("s3");
        match std::fs::remove_dir_all(&s3_root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", s3_root.display())),
        }
        let (s3, s3_forward) = self.step(
            format!(
                "starting the S3 server (s3s-fs) on the host, data in {}, reachable from pods at \
                 {NODE_IP}:{S3_PORT}",
                self.show(&s3_root)
            ),
            "starting s3s-fs",
            || {
                let s3 = self.rt.block_on(S3Server::start(&s3_root))?;
                s3.create_bucket(BUCKET)?;
                let host_port: u16 = s3
                    .endpoint()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .context("the S3 endpoint's port")?;
                let forward = cluster.expose("s3", S3_PORT, host_port)?;
                Ok((s3, forward))
            },
        )?;
        let photo_path = self.root.join("examples/tshirt.jpg");
        let photo = std::fs::read(&photo_path)
            .with_context(|| format!("reading {}", photo_path.display()))?;
        let inputs = json!({
            "apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": S3_SECRET, "namespace": NS},
                 "stringData": {
                    "AWS_ACCESS_KEY_ID": s3.access_key(),
                    "AWS_SECRET_ACCESS_KEY": s3.secret_key(),
                    "AWS_REGION": s3.region(),
                    "AWS_ENDPOINT": format!("http://{NODE_IP}:{S3_PORT}"),
                    "AWS_ALLOW_HTTP": "true"}},
                {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "tshirt-photo", "namespace": NS},
                 "binaryData": {"tshirt.jpg": BASE64_STANDARD.encode(&photo)}},
            ]
        });
        self.step(
            format!(
                "creating namespace {NS}, the {S3_SECRET} Secret (the S3 credentials) and the \
                 tshirt-photo ConfigMap (examples/tshirt.jpg)"
            ),
            "creating them",
            || {
                self.rt.block_on(async {
                    cp.apply_yaml(&format!(
                        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"
                    ))
                    .await?;
                    cp.apply_yaml(&serde_json::to_string(&inputs)?).await
                })
            },
        )?;

        let (manifest, name) = self.manifest(&work)?;
        self.say(format!(
            "$ kubectl apply -n {NS} -f {}   (examples/clothjob.yaml, output to s3://{BUCKET}/{PREFIX})",
            self.show(&manifest)
        ));
        let out = cp
            .kubectl()
            .args(["apply", "-n", NS, "-f"])
            .arg(&manifest)
            .output()
            .context("running kubectl apply")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
        }
        let outcome = self.follow(&cluster, &s3, &name);

        if opts.keep && !self.interrupted() {
            self.keep(&cluster, &helm, &name)?;
        }
        drop(s3_forward);
        drop(s3);
        if opts.keep || self.interrupted() {
            println!("tearing the cluster down...");
        }
        drop(cluster);
        outcome
    }

    /// Writes `target/demo/clothjob.yaml`: `examples/clothjob.yaml` with its output going to
    /// the demo's S3 bucket. Returns the file and the ClothJob's name.
    fn manifest(&self, work: &Path) -> Result<(PathBuf, String)> {
        let example = self.root.join("examples/clothjob.yaml");
        let text = std::fs::read_to_string(&example)
            .with_context(|| format!("reading {}", example.display()))?;
        let mut doc: Value = serde_yaml::from_str(&text)
            .with_context(|| format!("parsing {}", example.display()))?;
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .context("examples/clothjob.yaml has no metadata.name")?
            .to_string();
        let output = doc
            .pointer_mut("/spec/output")
            .and_then(Value::as_object_mut)
            .context("examples/clothjob.yaml has no spec.output")?;
        output.insert("uri".into(), json!(format!("s3://{BUCKET}/{PREFIX}")));
        output.insert("credentialsSecretName".into(), json!(S3_SECRET));
        std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
        let path = work.join("clothjob.yaml");
        let yaml = format!(
            "# examples/clothjob.yaml with spec.output going to the demo's S3 server\n{}",
            serde_yaml::to_string(&doc)?
        );
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        Ok((path, name))
    }

    /// The progress bar until the job finishes, then the stage timings and the outputs.
    fn follow(&self, cluster: &Cluster, s3: &S3Server, name: &str) -> Result<()> {
        let cp = cluster.control_plane()?;
        let t0 = Instant::now();
        let cj = self.rt.block_on(async {
            let api: Api<ClothJob> = Api::namespaced(cp.client().await?, NS);
            let mut last = String::new();
            loop {
                let cj = api.get(name).await?;
                let s = cj.status.clone().unwrap_or_default();
                let p = s.progress.unwrap_or(0).clamp(0, 100) as usize;
                let line = format!(
                    "\r[{}{}] {:>3}% {:<18} attempt {}  {:>4} s",
                    "#".repeat(p * 40 / 100),
                    " ".repeat(40 - p * 40 / 100),
                    p,
                    s.stage.as_deref().unwrap_or("pending"),
                    s.attempts.unwrap_or(0),
                    t0.elapsed().as_secs()
                );
                if line != last {
                    print!("{line}");
                    std::io::stdout().flush()?;
                    last = line;
                }
                let conds = s.conditions.unwrap_or_default();
                if conditions::is_true(&conds, conditions::COMPLETE)
                    || conditions::is_true(&conds, conditions::FAILED)
                {
                    println!();
                    return Ok(cj);
                }
                if self.interrupted() {
                    println!();
                    bail!("interrupted");
                }
                if t0.elapsed() > JOB_TIMEOUT {
                    println!();
                    bail!("the demo job did not finish in {} s", JOB_TIMEOUT.as_secs());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let cj = match cj {
            Ok(cj) => cj,
            Err(e) => {
                if !self.interrupted() {
                    self.explain(cluster, name);
                }
                return Err(e);
            }
        };
        self.say(format!(
            "the ClothJob finished in {:.1} s",
            t0.elapsed().as_secs_f64()
        ));
        let out = cp
            .kubectl()
            .args(["get", "clothjobs", "-n", NS, "-o", "wide"])
            .output()?;
        println!(
            "$ kubectl get clothjobs -n {NS} -o wide\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let s = cj.status.context("the ClothJob has no status")?;
        if s.phase.map(|p| p.as_str()) != Some("Succeeded") {
            self.explain(cluster, name);
            bail!(
                "the job failed: {} {}",
                s.reason.unwrap_or_default(),
                s.message.unwrap_or_default()
            );
        }
        println!(
            "{:<20} {:<12} {:<9} {:>9}",
            "stage", "backend", "state", "seconds"
        );
        for st in s.stages.unwrap_or_default() {
            println!(
                "{:<20} {:<12} {:<9} {:>9.3}",
                st.name,
                st.backend.as_deref().unwrap_or("-"),
                format!("{:?}", st.state),
                st.duration_ms.unwrap_or(0) as f64 / 1000.0
            );
        }
        println!("\noutputs:");
        let mut dir = None;
        let mut absent = Vec::new();
        for o in s.outputs.unwrap_or_default() {
            println!(
                "  {:<9} {:>5}x{:<5} {:>8} B  {}",
                o.name, o.width, o.height, o.bytes, o.uri
            );
            let Some(key) = o.uri.strip_prefix("s3://") else {
                continue;
            };
            let file = s3.root().join(key);
            if !file.is_file() {
                absent.push(file.display().to_string());
            }
            dir = file.parent().map(Path::to_path_buf);
        }
        if !absent.is_empty() {
            bail!("outputs missing from the S3 root: {}", absent.join(", "));
        }
        let dir = dir.context("the job listed no S3 outputs")?;
        println!(
            "\ndone in {:.1} s; the outputs are on disk in {}",
            self.started.elapsed().as_secs_f64(),
            dir.display()
        );
        Ok(())
    }

    /// What went wrong with the job: its description, the pods, the last lines of the operator's
    /// and the runner's logs.
    fn explain(&self, cluster: &Cluster, name: &str) {
        let Ok(cp) = cluster.control_plane() else {
            return;
        };
        let runs: [(&str, Vec<&str>); 2] = [
            (
                "describe clothjob",
                vec!["describe", "clothjob", name, "-n", NS],
            ),
            ("get pods -A", vec!["get", "pods", "-A", "-o", "wide"]),
        ];
        for (what, args) in runs {
            if let Ok(out) = cp
                .kubectl()
                .arg("--request-timeout=10s")
                .args(&args)
                .output()
            {
                println!(
                    "--- kubectl {what} ---\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        for prefix in [format!("{SYSTEM_NS}_"), format!("{NS}_")] {
            for log in pod_logs(cluster, &prefix) {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                println!(
                    "--- last lines of {} ---\n{}",
                    log.display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
        }
        println!("{}", cluster.diagnostics());
    }

    /// How to read the operator's log: `kubectl logs` where the API server reaches the
    /// kubelet, else the log file the kubelet writes.
    fn operator_logs(&self, cluster: &Cluster) -> String {
        let args = ["logs", "-n", SYSTEM_NS, "deploy/clothjob-operator"];
        let works = cluster.control_plane().is_ok_and(|cp| {
            cp.kubectl()
                .arg("--request-timeout=10s")
                .args(args)
                .arg("--tail=1")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if works {
            return format!("kubectl {}", args.join(" "));
        }
        format!(
            "tail -f {}/kubelet/pod-logs/{SYSTEM_NS}_clothjob-operator-*/operator/*.log   # the \
             operator's log (kubectl logs cannot reach this kubelet)",
            cluster.dir().display()
        )
    }

    /// `--keep`: how to reach the cluster, then wait for Ctrl-C.
    fn keep(&self, cluster: &Cluster, helm: &Path, name: &str) -> Result<()> {
        let cp = cluster.control_plane()?;
        let kubectl_dir = cp
            .bins()
            .kubectl
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        println!(
            "\nthe cluster keeps running until Ctrl-C (it lives as long as this process). From \
             another shell:\n\
             \n  export KUBECONFIG={kubeconfig}\
             \n  export PATH=\"{kubectl_dir}:$PATH\"   # kubectl {version}\
             \n  kubectl get cloth -n {NS} -w\
             \n  kubectl describe clothjob {name} -n {NS}\
             \n  {operator_logs}\
             \n  kubectl get pods -A\
             \n  {helm} status {RELEASE} -n {SYSTEM_NS}\
             {nsenter}\
             \n\nthe cluster's files and logs: {dir} (pod logs under kubelet/pod-logs)",
            kubeconfig = cp.kubeconfig_path().display(),
            operator_logs = self.operator_logs(cluster),
            version = bins::K8S_VERSION,
            helm = helm.display(),
            dir = cluster.dir().display(),
            nsenter = cluster
                .netns_holder_pid()
                .map(|pid| {
                    format!(
                        "\n\na shell inside the cluster's network, mount and UTS namespaces (the \
                         node is {NODE_IP}):\n  nsenter --target {pid} --net --mount --uts"
                    )
                })
                .unwrap_or_default(),
        );
        while !self.interrupted() {
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

/// The container logs (`<pod dir>/<container>/<restart>.log`) the kubelet wrote for the pods
/// whose directory under `kubelet/pod-logs` starts with `prefix` (`<namespace>_`).
fn pod_logs(cluster: &Cluster, prefix: &str) -> Vec<PathBuf> {
    let mut logs = Vec::new();
    let pods = std::fs::read_dir(cluster.dir().join("kubelet/pod-logs"));
    for pod in pods.into_iter().flatten().flatten() {
        if !pod.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        for container in std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for log in std::fs::read_dir(container.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if log.path().extension().is_some_and(|e| e == "log") {
                    logs.push(log.path());
                }
            }
        }
    }
    logs.sort();
    logs
}
