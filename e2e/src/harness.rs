//! Shared environment (control plane, CRDs, RBAC, binaries) and the per-test [`Case`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clothjob_api::{ClothJob, conditions, contract};
use clothjob_testenv::{ControlPlane, FakeNode, NodeConfig, bins, wait_for};
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;

use crate::operator::OperatorProcess;

/// Namespace of the operator's service account (as a Helm release would have it).
pub const SYSTEM_NAMESPACE: &str = "clothjob-system";

/// Built binaries of the project.
pub struct Binaries {
    /// clothjob-operator.
    pub operator: PathBuf,
    /// clothjob-runner.
    pub runner: PathBuf,
}

static SETUP: OnceCell<Binaries> = OnceCell::const_new();

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

/// Builds the operator and runner binaries (a no-op when up to date).
fn build_binaries() -> Result<Binaries> {
    let dir = target_dir()?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(bins::workspace_root()).args([
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

/// Installs the CRDs and the chart's RBAC into `cp` and builds the project's binaries.
pub async fn setup(cp: &ControlPlane) -> Result<Binaries> {
    let root = bins::workspace_root();
    cp.install_crds(root.join("crds")).await?;
    let helm = bins::ensure_helm()?;
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
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ns =
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {SYSTEM_NAMESPACE}}}\n---\n");
    cp.apply_yaml(&format!("{ns}{}", String::from_utf8_lossy(&out.stdout)))
        .await?;
    tokio::task::spawn_blocking(build_binaries).await?
}

/// The shared control plane, set up once per test binary.
pub async fn shared() -> Result<(&'static ControlPlane, &'static Binaries)> {
    let cp = ControlPlane::shared().await?;
    let b = SETUP.get_or_try_init(|| setup(cp)).await?;
    Ok((cp, b))
}

/// One test: its namespace, fake node, operator and clients.
pub struct Case {
    /// The control plane.
    pub cp: &'static ControlPlane,
    /// The test's namespace.
    pub ns: String,
    /// The node running this namespace's pods.
    pub node: FakeNode,
    /// The operator watching this namespace.
    pub operator: OperatorProcess,
    /// Admin client.
    pub client: kube::Client,
    /// Scratch directory (outputs of file:// tests).
    pub dir: tempfile::TempDir,
}

impl Case {
    /// A namespace with its own node and operator.
    pub async fn new(prefix: &str) -> Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (cp, b) = shared().await?;
        let ns = cp.create_namespace(prefix).await?;
        let node = FakeNode::start(
            cp,
            NodeConfig::new()
                .namespace(&ns)
                .image(contract::DEFAULT_RUNNER_IMAGE, &b.runner),
        )
        .await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = cp
            .write_kubeconfig_for_service_account(SYSTEM_NAMESPACE, "clothjob-operator")
            .await?;
        let operator = OperatorProcess::start(
            &b.operator,
            &kubeconfig,
            &ns,
            &dir.path().join("operator.log"),
        )
        .await?;
        Ok(Self {
            cp,
            client: cp.client().await?,
            ns,
            node,
            operator,
            dir,
        })
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

    /// A file:// output prefix inside the scratch directory.
    pub fn output_uri(&self) -> String {
        format!("file://{}/out", self.dir.path().display())
    }

    /// Everything useful to read when a test fails.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- operator log ---\n{}\n--- node dir {} ---",
            self.operator.logs(),
            self.node.dir().display()
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
