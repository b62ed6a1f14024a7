//! The operator as a local process, authenticated as its own service account (so the chart's
//! RBAC is what it runs with), watching one test namespace. Its runners may reach the test
//! servers: those on loopback and those exposed on the node's network ([`ALLOWED_NETWORKS`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

/// The non-public networks the test suite's runners reach: loopback (servers in the node's
/// namespace) and the node network 198.18.0.0/15 (servers on the host exposed to the pods).
pub const ALLOWED_NETWORKS: &str = "127.0.0.0/8,198.18.0.0/15";

/// A running operator process.
pub struct OperatorProcess {
    child: Option<Child>,
    /// Address of its /healthz, /readyz and /metrics.
    pub http: String,
    binary: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
    log: PathBuf,
    args: Vec<String>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl OperatorProcess {
    /// Starts the operator and waits until /readyz answers 200.
    pub async fn start(
        binary: &Path,
        kubeconfig: &Path,
        namespace: &str,
        log: &Path,
    ) -> Result<Self> {
        Self::start_with_args(binary, kubeconfig, namespace, log, &[]).await
    }

    /// [`start`](Self::start) with extra flags after the usual ones (list flags such as
    /// `--allowed-networks` add to them).
    pub async fn start_with_args(
        binary: &Path,
        kubeconfig: &Path,
        namespace: &str,
        log: &Path,
        args: &[&str],
    ) -> Result<Self> {
        let mut op = Self {
            child: None,
            http: String::new(),
            binary: binary.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            namespace: namespace.to_string(),
            log: log.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        op.spawn().await?;
        Ok(op)
    }

    async fn spawn(&mut self) -> Result<()> {
        self.http = format!("127.0.0.1:{}", free_port()?);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .arg("--namespace")
            .arg(&self.namespace)
            .arg("--http-addr")
            .arg(&self.http)
            .arg("--allowed-networks")
            .arg(ALLOWED_NETWORKS)
            .args(&self.args)
            .env_clear()
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let url = format!("http://{}/readyz", self.http);
        clothjob_testenv::wait_for(
            "operator /readyz",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async {
                Ok(reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            },
        )
        .await
        .with_context(|| format!("operator log:\n{}", self.logs()))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills the process at once (SIGKILL), as a crash or a lost node would.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// Starts it again after [`kill`](Self::kill).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        self.spawn().await
    }

    /// Asks it to stop (SIGTERM) and returns its exit status.
    pub async fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("operator not running")?;
        let pid = c.id().context("no pid")?;
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
        Ok(tokio::time::timeout(Duration::from_secs(20), c.wait()).await??)
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.http))
            .await?
            .text()
            .await?)
    }

    /// The log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
