//! Shared environment (a real one-node cluster with the CRDs, the chart's RBAC and the runner
//! image, an S3 server its pods reach, the project's binaries) and the per-test [`Case`].

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clothjob_api::{ClothJob, conditions, contract};
use clothjob_testenv::cluster::NODE_IP;
use clothjob_testenv::cluster::forward::Forward;
use clothjob_testenv::{Cluster, ControlPlane, S3Server, bins, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::{OnceCell, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::operator::OperatorProcess;

/// Namespace of the operator's service account (as a Helm release would have it).
pub const SYSTEM_NAMESPACE: &str = "clothjob-system";
/// Port of the S3 server on the node's address, as the runner pods reach it.
pub const S3_PORT: u16 = 9000;
/// Name of the Secret holding the S3 credentials in every test namespace.
pub const S3_SECRET: &str = "s3-creds";

/// Built binaries of the project.
pub struct Binaries {
    /// clothjob-operator.
    pub operator: PathBuf,
    /// clothjob-runner.
    pub runner: PathBuf,
}

/// What every test of a binary shares: the cluster and what was installed in it.
pub struct Env {
    /// The real one-node cluster (never dropped: the test process's exit tears it down).
    pub cluster: Cluster,
    /// An S3-compatible server on the host, reached by pods at `http://<NODE_IP>:9000`.
    pub s3: S3Server,
    /// The project's binaries (the operator runs as a local process).
    pub bins: Binaries,
    _s3_forward: Forward,
    _s3_dir: tempfile::TempDir,
}

static ENV: OnceCell<Env> = OnceCell::const_new();
/// Next port on the node's address for [`expose`] (S3 has [`S3_PORT`]).
static NEXT_PORT: AtomicU16 = AtomicU16::new(20000);
/// Cases share the cluster; one that disrupts it (an apiserver restart) holds it alone.
static CLUSTER_USE: std::sync::LazyLock<std::sync::Arc<RwLock<()>>> =
    std::sync::LazyLock::new(std::sync::Arc::default);

/// How a [`Case`] holds the shared cluster while it lives.
#[derive(Debug)]
pub enum ClusterUse {
    /// Beside other cases.
    Shared(OwnedRwLockReadGuard<()>),
    /// Alone: no other case of this test binary runs meanwhile.
    Exclusive(OwnedRwLockWriteGuard<()>),
}

fn target_dir() -> Result<PathBuf> {
    // target/<profile>/deps/<test binary> or target/<profile>/<binary> → target/<profile>
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("locating the target directory")?;
    Ok(if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    }
    .to_path_buf())
}

/// The cargo target directory of the workspace (`CARGO_TARGET_DIR` or `<workspace>/target`).
fn cargo_target_dir() -> PathBuf {
    let root = bins::workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"))
}

/// `cargo` without the per-package variables cargo gives the test process (see
/// [`bins::cargo_command`]).
pub fn cargo_command() -> Command {
    bins::cargo_command()
}

fn run_quiet(what: &str, cmd: &mut Command) -> Result<()> {
    clothjob_testenv::run_checked(what, cmd).map(drop)
}

/// Builds the operator and runner binaries of the test's profile (a no-op when up to date).
fn build_binaries() -> Result<Binaries> {
    let dir = target_dir()?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = cargo_command();
    cmd.args([
        "build",
        "--bins",
        "-p",
        "clothjob-operator",
        "-p",
        "clothjob-runner",
    ]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the operator and runner failed");
    }
    Ok(Binaries {
        operator: dir.join("clothjob-operator"),
        runner: dir.join("clothjob-runner"),
    })
}

/// `cargo xtask images --debug` (what `cargo run -p xtask -- images --debug` does, without
/// handing cargo's per-package variables on): the shipped images as OCI archives, from the dev
/// binaries it builds. Returns the operator's and the runner's archive, in that order.
pub fn build_images() -> Result<[PathBuf; 2]> {
    run_quiet(
        "cargo build -p xtask",
        cargo_command().args(["build", "--quiet", "-p", "xtask"]),
    )?;
    let xtask = cargo_target_dir().join("debug/xtask");
    let mut cmd = Command::new(&xtask);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(bins::is_per_package_variable) {
            cmd.env_remove(key);
        }
    }
    run_quiet(
        "cargo xtask images --debug",
        cmd.current_dir(bins::workspace_root())
            .args(["images", "--debug"]),
    )?;
    let dir = cargo_target_dir().join("images");
    Ok([
        dir.join("clothjob-operator.tar"),
        dir.join("clothjob-runner.tar"),
    ])
}

/// Installs the CRDs, the chart's RBAC (the operator's ClusterRole and its service account in
/// [`SYSTEM_NAMESPACE`]) and the chart's runner status guard (the ValidatingAdmissionPolicy that
/// keeps runners off the operator's status fields) into `cp`. Runners need nothing installed:
/// the operator gives each ClothJob's runner its own ServiceAccount, Role and RoleBinding.
pub async fn install_crds_and_rbac(cp: &ControlPlane) -> Result<()> {
    let root = bins::workspace_root();
    cp.install_crds(root.join("crds")).await?;
    let helm = tokio::task::spawn_blocking(bins::ensure_helm).await??;
    let out = tokio::process::Command::new(helm)
        .args(["template", "clothjob"])
        .arg(root.join("charts/clothjob-operator"))
        .args([
            "--namespace",
            SYSTEM_NAMESPACE,
            "--show-only",
            "templates/rbac.yaml",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/runner-status-guard.yaml",
            "--show-only",
            "templates/leader-election-rbac.yaml",
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ns =
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {SYSTEM_NAMESPACE}}}\n---\n");
    cp.apply_yaml(&format!("{ns}{}", String::from_utf8_lossy(&out.stdout)))
        .await
}

/// Installs the CRDs and the chart's RBAC into `cp` and builds the project's binaries.
pub async fn setup(cp: &ControlPlane) -> Result<Binaries> {
    install_crds_and_rbac(cp).await?;
    tokio::task::spawn_blocking(build_binaries).await?
}

/// The port of a `http://127.0.0.1:<port>` URL.
pub fn loopback_port(url: &str) -> Result<u16> {
    url.rsplit(':')
        .next()
        .map(|p| p.trim_end_matches('/'))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {url}"))
}

/// Makes a server on the host's `127.0.0.1:<host_port>` reachable from the cluster's pods;
/// returns its in-cluster base URL (`http://198.18.0.2:<port>`) and the forward to keep alive.
pub fn expose(cluster: &Cluster, host_port: u16) -> Result<(String, Forward)> {
    let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    let forward = cluster.expose(&format!("e2e-{port}"), port, host_port)?;
    Ok((format!("http://{NODE_IP}:{port}"), forward))
}

async fn start_env() -> Result<Env> {
    let started = std::time::Instant::now();
    // The images build (mostly cargo: a no-op when up to date) while the cluster boots.
    let images = tokio::task::spawn_blocking(move || {
        let made = build_images();
        (made, started.elapsed())
    });
    let cluster = Cluster::start().await?;
    let booted = started.elapsed();
    let (made, images_took) = images.await.context("images task")?;
    let [_, runner_image] = made?;
    // The operator runs as a local process: only the runner's image is needed on the node.
    cluster
        .import_image(&runner_image)
        .with_context(|| cluster.diagnostics())?;
    install_crds_and_rbac(cluster.control_plane()?).await?;
    // The images build made the dev binaries; another profile builds its own.
    let dev = cargo_target_dir().join("debug");
    let canonical = |p: PathBuf| p.canonicalize().unwrap_or(p);
    let bins = if canonical(target_dir()?) == canonical(dev.clone()) {
        Binaries {
            operator: dev.join("clothjob-operator"),
            runner: dev.join("clothjob-runner"),
        }
    } else {
        tokio::task::spawn_blocking(build_binaries).await??
    };
    let s3_dir = tempfile::tempdir()?;
    let s3 = S3Server::start(s3_dir.path().join("data")).await?;
    let s3_forward = cluster.expose("s3", S3_PORT, loopback_port(s3.endpoint())?)?;
    eprintln!(
        "clothjob-e2e: cluster up in {:.1} s, images built in {:.1} s, ready in {:.1} s",
        booted.as_secs_f64(),
        images_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(Env {
        cluster,
        s3,
        bins,
        _s3_forward: s3_forward,
        _s3_dir: s3_dir,
    })
}

/// The shared environment, set up once per test binary on a dedicated thread with its own
/// runtime (so no test's runtime owns it).
pub async fn shared() -> Result<&'static Env> {
    ENV.get_or_try_init(|| async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("clothjob-e2e-cluster".into())
            .spawn(move || {
                let res = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("building runtime")
                    .and_then(|rt| rt.block_on(start_env()));
                let _ = tx.send(res);
            })
            .context("spawning the cluster thread")?;
        rx.await.context("the cluster thread died")?
    })
    .await
}

/// One test: its namespace (with a bucket and the `s3-creds` Secret), its operator, clients.
pub struct Case {
    /// The shared environment.
    pub env: &'static Env,
    /// The control plane.
    pub cp: &'static ControlPlane,
    /// The test's namespace.
    pub ns: String,
    /// The test's S3 bucket (named after the namespace).
    pub bucket: String,
    /// The operator watching this namespace.
    pub operator: OperatorProcess,
    /// The kubeconfig of the operator's service account (to start more operator processes).
    pub kubeconfig: PathBuf,
    /// Admin client.
    pub client: kube::Client,
    /// Scratch directory (manifests, the operator's log).
    pub dir: tempfile::TempDir,
    /// The hold on the shared cluster (released when the case is dropped).
    pub cluster_use: ClusterUse,
}

impl Case {
    /// A namespace with its own bucket, credentials Secret and operator.
    pub async fn new(prefix: &str) -> Result<Self> {
        Self::with_operator_args(prefix, &[]).await
    }

    /// [`new`](Self::new), the operator started with these extra flags (for example
    /// `--allowed-runner-service-accounts=models-reader`).
    pub async fn with_operator_args(prefix: &str, operator_args: &[&str]) -> Result<Self> {
        let hold = ClusterUse::Shared(CLUSTER_USE.clone().read_owned().await);
        Self::start(prefix, operator_args, hold).await
    }

    /// [`new`](Self::new), for a test that disrupts the cluster (restarts the apiserver): it
    /// waits for the other cases of this test binary to finish and runs alone.
    pub async fn exclusive(prefix: &str) -> Result<Self> {
        let hold = ClusterUse::Exclusive(CLUSTER_USE.clone().write_owned().await);
        Self::start(prefix, &[], hold).await
    }

    async fn start(prefix: &str, operator_args: &[&str], cluster_use: ClusterUse) -> Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = shared().await?;
        let cp = env.cluster.control_plane()?;
        let ns = cp.create_namespace(prefix).await?;
        env.s3.create_bucket(&ns)?;
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": S3_SECRET, "namespace": ns},
            "stringData": {
                "AWS_ACCESS_KEY_ID": env.s3.access_key(),
                "AWS_SECRET_ACCESS_KEY": env.s3.secret_key(),
                "AWS_REGION": env.s3.region(),
                "AWS_ENDPOINT": format!("http://{NODE_IP}:{S3_PORT}"),
                "AWS_ALLOW_HTTP": "true"},
        });
        cp.apply_yaml(&serde_json::to_string(&secret)?).await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = cp
            .write_kubeconfig_for_service_account(SYSTEM_NAMESPACE, "clothjob-operator")
            .await?;
        let operator = OperatorProcess::start_with_args(
            &env.bins.operator,
            &kubeconfig,
            &ns,
            &dir.path().join("operator.log"),
            operator_args,
        )
        .await?;
        Ok(Self {
            env,
            cp,
            client: cp.client().await?,
            bucket: ns.clone(),
            ns,
            operator,
            kubeconfig,
            dir,
            cluster_use,
        })
    }

    /// The cluster.
    pub fn cluster(&self) -> &'static Cluster {
        &self.env.cluster
    }

    /// ClothJobs of the namespace.
    pub fn clothjobs(&self) -> Api<ClothJob> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a ClothJob from YAML (namespace filled in).
    pub async fn create(&self, yaml: &str) -> Result<ClothJob> {
        let cj: ClothJob = serde_yaml::from_str(yaml)?;
        Ok(self.clothjobs().create(&PostParams::default(), &cj).await?)
    }

    /// The output prefix: `s3://<bucket>/out`.
    pub fn output_uri(&self) -> String {
        format!("s3://{}/out", self.bucket)
    }

    /// `spec.output` as a YAML flow mapping: [`output_uri`](Self::output_uri) with the
    /// `s3-creds` Secret.
    pub fn output(&self) -> String {
        format!(
            "{{uri: '{}', credentialsSecretName: {S3_SECRET}}}",
            self.output_uri()
        )
    }

    /// Where an `s3://bucket/key` object of the S3 server lies on disk.
    pub fn s3_path(&self, uri: &str) -> Result<PathBuf> {
        let rest = uri
            .strip_prefix("s3://")
            .with_context(|| format!("{uri} is not an s3:// URI"))?;
        let (bucket, key) = rest
            .split_once('/')
            .with_context(|| format!("{uri} has no key"))?;
        Ok(self.env.s3.root().join(bucket).join(key))
    }

    /// The bytes of an `s3://` output.
    pub fn read_output(&self, uri: &str) -> Result<Vec<u8>> {
        let path = self.s3_path(uri)?;
        std::fs::read(&path).with_context(|| format!("reading {uri} at {}", path.display()))
    }

    /// The runner pods created for ClothJob `name` (every attempt's, while they exist).
    pub async fn runner_pods(&self, name: &str) -> Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let lp = ListParams::default().labels(&format!("{}={name}", contract::LABEL_CLOTHJOB));
        Ok(pods.list(&lp).await?.items)
    }

    /// How many runner containers of ClothJob `name` are running now.
    pub async fn running_runners(&self, name: &str) -> Result<usize> {
        Ok(self
            .runner_pods(name)
            .await?
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .flat_map(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.clone())
                    .unwrap_or_default()
            })
            .filter(|cs| cs.state.as_ref().is_some_and(|s| s.running.is_some()))
            .count())
    }

    /// How many times runner containers of ClothJob `name` were started: one per pod that
    /// got past waiting, plus their restarts.
    pub async fn runner_starts(&self, name: &str) -> Result<usize> {
        Ok(self
            .runner_pods(name)
            .await?
            .iter()
            .flat_map(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.clone())
                    .unwrap_or_default()
            })
            .map(|cs| {
                let started = cs
                    .state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
                usize::from(started) + usize::try_from(cs.restart_count).unwrap_or(0)
            })
            .sum())
    }

    fn kubectl_text(&self, args: &[&str]) -> String {
        match self.cp.kubectl().args(args).output() {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("kubectl {args:?}: {e}"),
        }
    }

    /// Everything useful to read when a test fails: the operator's log, the namespace's pods,
    /// Jobs and Events, the runner pods' logs and the cluster's components.
    pub fn diagnostics(&self) -> String {
        let ns = self.ns.as_str();
        let selector = contract::LABEL_CLOTHJOB;
        format!(
            "--- operator log ---\n{}\n--- pods and jobs of {ns} ---\n{}\n--- events of {ns} ---\n{}\n--- runner logs ---\n{}\n--- cluster ---\n{}",
            self.operator.logs(),
            self.kubectl_text(&["get", "pods,jobs", "-n", ns, "-o", "wide"]),
            self.kubectl_text(&["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]),
            self.kubectl_text(&[
                "logs",
                "-n",
                ns,
                "-l",
                selector,
                "--all-containers",
                "--prefix",
                "--tail=60",
                "--max-log-requests=10",
            ]),
            self.env.cluster.diagnostics()
        )
    }
}

/// Waits until condition `type_` of the ClothJob is True; fails early if the opposite
/// terminal condition turns True.
pub async fn wait_condition(
    api: &Api<ClothJob>,
    name: &str,
    type_: &str,
    timeout: Duration,
) -> Result<ClothJob> {
    wait_for(
        &format!("ClothJob {name} condition {type_}"),
        timeout,
        Duration::from_millis(200),
        || async {
            let cj = api.get(name).await?;
            let conds = cj
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if conditions::is_true(&conds, type_) {
                return Ok(Some(cj));
            }
            for other in [conditions::COMPLETE, conditions::FAILED] {
                if other != type_ && conditions::is_true(&conds, other) {
                    bail!(
                        "ClothJob {name} became {other} instead: {:?}",
                        cj.status.as_ref().and_then(|s| s.message.clone())
                    );
                }
            }
            Ok(None)
        },
    )
    .await
}
