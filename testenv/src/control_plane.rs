//! A real `etcd` + `kube-apiserver` + `kube-controller-manager` with RBAC on: on loopback
//! ([`ControlPlane::start`]), or inside a real cluster's namespaces ([`crate::Cluster`]), where
//! the test process reaches the apiserver through a loopback forward.
//!
//! Everything lives in a temporary directory (certs, etcd data, one `<component>.log` per
//! component), removed on drop unless `CLOTHJOB_KEEP_TESTENV=1`. Nothing runtime-bound is kept
//! in a [`ControlPlane`]: every `client*` call builds a fresh [`kube::Client`] on the caller's
//! Tokio runtime, so one control plane can be shared by `#[tokio::test]`s ([`ControlPlane::shared`]).
//!
//! Fault tests can restart kube-apiserver with etcd kept ([`ControlPlane::restart_apiserver`],
//! or [`ControlPlane::stop_apiserver`] and [`ControlPlane::start_apiserver`] to act while it is
//! down).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize as _;
use tokio::io::AsyncWriteExt;

use crate::bins::{K8sBins, ensure_k8s_binaries};
use crate::cluster::forward::Forward;
use crate::kubeconfig::{Credentials, client_from_json, kubeconfig_json};
use crate::launcher::Launcher;
use crate::util::{
    free_port, keep_testenv, make_temp_dir, persist_temp_dir, remove_or_keep, tail_file, wait_for,
};
use crate::{certs, proc};

/// Issuer (and default audience) of service-account tokens.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const FIELD_MANAGER: &str = "clothjob-testenv";
/// Service range of every control plane (the benchmarking block: neither private nor public).
pub(crate) const SERVICE_CIDR: &str = "198.18.128.0/24";
/// The `kubernetes` Service's ClusterIP (first address of [`SERVICE_CIDR`]).
pub(crate) const KUBERNETES_SERVICE_IP: [u8; 4] = [198, 18, 128, 1];

/// Where a control plane runs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Placement {
    /// How its processes start.
    pub launcher: Launcher,
    /// The node (name, address) of a real cluster: the apiserver advertises that address,
    /// authorizes with Node,RBAC and gets kubelet certificates in its PKI.
    pub node: Option<(String, std::net::IpAddr)>,
}

struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running control plane; stopped (SIGTERM, then SIGKILL) and cleaned up on drop.
pub struct ControlPlane {
    dir: PathBuf,
    bins: K8sBins,
    server_url: String,
    ca_pem: String,
    admin_kubeconfig: serde_json::Value,
    kubeconfig_path: PathBuf,
    internal_url: String,
    internal_kubeconfig_path: PathBuf,
    placement: Placement,
    forwards: Vec<Forward>,
    components: Mutex<Vec<Component>>,
    /// The apiserver's port and arguments, to start it again ([`ControlPlane::start_apiserver`]).
    apiserver: (u16, Vec<String>),
}

static SHARED: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
static NS_COUNTER: AtomicU64 = AtomicU64::new(0);

fn start_timeout() -> Duration {
    let secs = std::env::var("CLOTHJOB_TESTENV_START_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

impl ControlPlane {
    /// Starts a fresh control plane on loopback (binaries from [`ensure_k8s_binaries`]).
    pub async fn start() -> Result<Self> {
        let dir = persist_temp_dir(make_temp_dir("cp")?);
        Self::start_placed(dir, Placement::default()).await
    }

    /// Starts a control plane in `dir` placed as `placement` says.
    pub(crate) async fn start_placed(dir: PathBuf, placement: Placement) -> Result<Self> {
        let bins = tokio::task::spawn_blocking(ensure_k8s_binaries)
            .await
            .context("binary lookup task panicked")??;
        if keep_testenv() {
            eprintln!(
                "clothjob-testenv: control plane directory {}",
                dir.display()
            );
        }
        let mut apiserver_ips = vec![std::net::IpAddr::from(KUBERNETES_SERVICE_IP)];
        if let Some((_, ip)) = &placement.node {
            apiserver_ips.push(*ip);
        }
        let pki = certs::generate(&certs::PkiOptions {
            apiserver_ips,
            node: placement.node.clone(),
        })?;
        let mut cp = ControlPlane {
            dir,
            bins,
            server_url: String::new(),
            ca_pem: pki.ca_cert.clone(),
            admin_kubeconfig: serde_json::Value::Null,
            kubeconfig_path: PathBuf::new(),
            internal_url: String::new(),
            internal_kubeconfig_path: PathBuf::new(),
            placement,
            forwards: Vec::new(),
            components: Mutex::new(Vec::new()),
            apiserver: (0, Vec::new()),
        };
        let started = Instant::now();
        cp.boot(&pki).await?;
        tracing::info!(
            "control plane ready at {} in {:?}",
            cp.server_url,
            started.elapsed()
        );
        Ok(cp)
    }

    /// One control plane per test process, started on first use on a dedicated thread.
    ///
    /// It is never dropped: its processes die with the test process (parent-death signal) and
    /// its directory is removed by the next test process that creates a temp dir.
    pub async fn shared() -> Result<&'static ControlPlane> {
        SHARED
            .get_or_try_init(|| async {
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name("clothjob-testenv-shared-cp".into())
                    .spawn(move || {
                        let res = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .context("building runtime")
                            .and_then(|rt| rt.block_on(ControlPlane::start()));
                        let _ = tx.send(res);
                    })
                    .context("spawning control plane thread")?;
                rx.await.context("control plane thread died")?
            })
            .await
    }

    async fn boot(&mut self, pki: &certs::Pki) -> Result<()> {
        let d = self.dir.clone();
        let pki_dir = d.join("pki");
        std::fs::create_dir_all(&pki_dir)?;
        let write = |name: &str, content: &str| -> Result<PathBuf> {
            let p = pki_dir.join(name);
            std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        let ca = write("ca.crt", &pki.ca_cert)?;
        let ca_key = write("ca.key", &pki.ca_key)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert)?;
        let serving_key = write("apiserver.key", &pki.serving_key)?;
        let sa_key = write("sa.key", &pki.sa_key)?;
        let sa_pub = write("sa.pub", &pki.sa_pub)?;
        let admin_crt = write("admin.crt", &pki.admin_cert)?;
        let admin_key = write("admin.key", &pki.admin_key)?;
        if let Some(node) = &pki.node {
            write("node.crt", &node.client_cert)?;
            write("node.key", &node.client_key)?;
            write("kubelet.crt", &node.serving_cert)?;
            write("kubelet.key", &node.serving_key)?;
        }
        let in_netns = self.placement.launcher.in_netns();
        let node_ip = self.placement.node.as_ref().map(|(_, ip)| ip.to_string());

        // Inside the cluster's own network namespace nothing else listens: fixed ports.
        let (etcd_port, peer_port, api_port, kcm_port) = if in_netns {
            (2379, 2380, 6443, 10257)
        } else {
            (free_port()?, free_port()?, free_port()?, free_port()?)
        };
        let admin_creds = Credentials::Cert {
            cert_pem: &pki.admin_cert,
            key_pem: &pki.admin_key,
        };
        match (&node_ip, in_netns) {
            (Some(ip), true) => {
                self.internal_url = format!("https://{ip}:{api_port}");
                let fwd = Forward::into_netns(
                    &self.placement.launcher,
                    &d,
                    "apiserver-forward",
                    &format!("{ip}:{api_port}"),
                )?;
                self.server_url = format!("https://{}", fwd.listen);
                self.forwards.push(fwd);
            }
            _ => {
                self.server_url = format!("https://127.0.0.1:{api_port}");
                self.internal_url = self.server_url.clone();
            }
        }
        self.admin_kubeconfig = kubeconfig_json(&self.server_url, &pki.ca_cert, &admin_creds, None);
        self.kubeconfig_path = d.join("admin.kubeconfig");
        std::fs::write(
            &self.kubeconfig_path,
            serde_json::to_vec_pretty(&self.admin_kubeconfig)?,
        )?;
        self.internal_kubeconfig_path = d.join("admin-internal.kubeconfig");
        std::fs::write(
            &self.internal_kubeconfig_path,
            serde_json::to_vec_pretty(&kubeconfig_json(
                &self.internal_url,
                &pki.ca_cert,
                &admin_creds,
                None,
            ))?,
        )?;

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = vec![
            "--name=testenv".into(),
            format!("--data-dir={}", d.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=testenv={peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        let etcd_bin = self.bins.etcd.clone();
        self.spawn_component("etcd", &etcd_bin, &etcd_args)?;

        let mut apiserver_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", d.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", ca.display()),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "-v=1".into(),
        ];
        match &node_ip {
            Some(ip) => apiserver_args.extend([
                "--bind-address=0.0.0.0".into(),
                format!("--advertise-address={ip}"),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,NodeRestriction"
                    .into(),
                // For `kubectl logs`: the apiserver's client identity at the kubelet.
                format!("--kubelet-client-certificate={}", admin_crt.display()),
                format!("--kubelet-client-key={}", admin_key.display()),
                format!("--kubelet-certificate-authority={}", ca.display()),
                // No cluster DNS: reach kubelets by their address, not their name.
                "--kubelet-preferred-address-types=InternalIP".into(),
            ]),
            None => apiserver_args.extend([
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                "--authorization-mode=RBAC".into(),
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount".into(),
                // No node routes the Service range: no endpoints to reconcile.
                "--endpoint-reconciler-type=none".into(),
            ]),
        }
        let api_bin = self.bins.kube_apiserver.clone();
        self.spawn_component("kube-apiserver", &api_bin, &apiserver_args)?;
        self.apiserver = (api_port, apiserver_args);

        let timeout = start_timeout();
        self.wait_apiserver_ready(timeout).await?;

        let kc = self.internal_kubeconfig_path.display();
        let kcm_args: Vec<String> = vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={kcm_port}"),
            format!("--cert-dir={}", d.join("kcm-certs").display()),
            "--leader-elect=false".into(),
            "--controllers=*".into(),
            "--use-service-account-credentials=true".into(),
            format!("--service-account-private-key-file={}", sa_key.display()),
            format!("--root-ca-file={}", ca.display()),
            format!("--cluster-signing-cert-file={}", ca.display()),
            format!("--cluster-signing-key-file={}", ca_key.display()),
            "--profiling=false".into(),
            "-v=1".into(),
        ];
        let kcm_bin = self.bins.kube_controller_manager.clone();
        self.spawn_component("kube-controller-manager", &kcm_bin, &kcm_args)?;

        wait_for(
            "kube-controller-manager (default/default ServiceAccount)",
            timeout,
            Duration::from_millis(250),
            || async {
                self.check_alive()?;
                let client = self.client().await?;
                let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
                Ok(sas.get_opt("default").await?.map(|_| ()))
            },
        )
        .await
        .map_err(|e| self.with_logs(e))?;
        Ok(())
    }

    /// Waits until kube-apiserver answers `/readyz` with `ok`.
    async fn wait_apiserver_ready(&self, timeout: Duration) -> Result<()> {
        // Wait for the port first: cheaper than TLS handshakes and keeps kube's error logs quiet
        // (behind a forward the port is always open: go straight to /readyz).
        if !self.placement.launcher.in_netns() {
            self.wait_listening(self.apiserver.0, timeout).await?;
        }
        wait_for(
            "kube-apiserver /readyz",
            timeout,
            Duration::from_millis(250),
            || async {
                self.check_alive()?;
                let client = self.client().await?;
                let req = http::Request::get("/readyz").body(Vec::new())?;
                match client.request_text(req).await {
                    Ok(body) if body.trim() == "ok" => Ok(Some(())),
                    Ok(body) => Err(anyhow!("readyz said {body}")),
                    Err(e) => Err(readyz_error(&e.to_string())),
                }
            },
        )
        .await
        .map_err(|e| self.with_logs(e))
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after 10 s) and waits until it has exited;
    /// etcd, kube-controller-manager and everything else keep running. Clients then get
    /// connection errors until [`start_apiserver`](Self::start_apiserver).
    pub async fn stop_apiserver(&self) -> Result<()> {
        let component = {
            let mut comps = self
                .components
                .lock()
                .map_err(|_| anyhow!("control plane lock poisoned"))?;
            let i = comps
                .iter()
                .position(|c| c.name == "kube-apiserver")
                .context("kube-apiserver is not running")?;
            comps.remove(i)
        };
        let mut child = component.child;
        tokio::task::spawn_blocking(move || {
            proc::stop_child(&mut child, Duration::from_secs(10), false)
        })
        .await
        .context("stopping kube-apiserver")?;
        tracing::info!("kube-apiserver stopped");
        Ok(())
    }

    /// Starts kube-apiserver again, on the same port with the same certificates and etcd
    /// (so every object is still there), and waits until `/readyz` is ok. Its log goes on in
    /// the same `kube-apiserver.log`.
    pub async fn start_apiserver(&self) -> Result<()> {
        let running = self
            .components
            .lock()
            .map_err(|_| anyhow!("control plane lock poisoned"))?
            .iter()
            .any(|c| c.name == "kube-apiserver");
        if running {
            bail!("kube-apiserver is already running");
        }
        let bin = self.bins.kube_apiserver.clone();
        self.spawn_component("kube-apiserver", &bin, &self.apiserver.1)?;
        let started = Instant::now();
        self.wait_apiserver_ready(start_timeout()).await?;
        tracing::info!("kube-apiserver ready again in {:?}", started.elapsed());
        Ok(())
    }

    /// [`stop_apiserver`](Self::stop_apiserver), then
    /// [`start_apiserver`](Self::start_apiserver): an apiserver restart with etcd kept.
    pub async fn restart_apiserver(&self) -> Result<()> {
        self.stop_apiserver().await?;
        self.start_apiserver().await
    }

    async fn wait_listening(&self, port: u16, timeout: Duration) -> Result<()> {
        wait_for(
            "kube-apiserver to listen",
            timeout,
            Duration::from_millis(100),
            || async {
                self.check_alive()?;
                Ok(std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(|_| ()))
            },
        )
        .await
        .map_err(|e| self.with_logs(e))
    }

    fn spawn_component(&self, name: &'static str, bin: &Path, args: &[String]) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        // Appended to: a restarted component goes on in the same log.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = self.placement.launcher.command(bin);
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = proc::spawn(cmd).with_context(|| format!("starting {name}"))?;
        self.components
            .lock()
            .map_err(|_| anyhow!("control plane lock poisoned"))?
            .push(Component { name, child, log });
        Ok(())
    }

    fn check_alive(&self) -> Result<()> {
        let mut comps = self
            .components
            .lock()
            .map_err(|_| anyhow!("control plane lock poisoned"))?;
        for c in comps.iter_mut() {
            if let Ok(Some(status)) = c.child.try_wait() {
                bail!("{} exited early ({status})", c.name);
            }
        }
        Ok(())
    }

    fn with_logs(&self, err: anyhow::Error) -> anyhow::Error {
        let mut msg = format!("{err:#}\ncontrol plane dir: {}", self.dir.display());
        if let Ok(comps) = self.components.lock() {
            for c in comps.iter() {
                msg.push_str(&format!(
                    "\n--- last lines of {} ---\n{}",
                    c.name,
                    tail_file(&c.log, 30)
                ));
            }
        }
        anyhow!(msg)
    }

    pub(crate) fn admin_kubeconfig_json(&self) -> &serde_json::Value {
        &self.admin_kubeconfig
    }

    /// Temporary directory of this control plane (certs, component logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Log file of a component: `etcd`, `kube-apiserver` or `kube-controller-manager`.
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    /// The binaries in use.
    pub fn bins(&self) -> &K8sBins {
        &self.bins
    }

    /// Path of the admin kubeconfig (client cert in `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:<port>`: the URL clients in the test process use (on a real
    /// cluster, a loopback forward into the cluster's network namespace).
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The URL components use (inside a real cluster: `https://<node ip>:6443`).
    pub fn internal_url(&self) -> &str {
        &self.internal_url
    }

    /// An admin kubeconfig for components (server = [`internal_url`](Self::internal_url)).
    pub fn internal_kubeconfig_path(&self) -> &Path {
        &self.internal_kubeconfig_path
    }

    /// Directory of the PKI files (`ca.crt`, `admin.crt`, `node.crt`, `kubelet.crt`, keys).
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// PEM of the cluster CA (signs the serving cert and the admin client cert).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issuer (and default audience) of service-account tokens.
    pub fn service_account_issuer(&self) -> &str {
        SERVICE_ACCOUNT_ISSUER
    }

    /// A fresh admin client bound to the calling Tokio runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from_json(&self.admin_kubeconfig).await
    }

    /// `kubectl --kubeconfig <admin kubeconfig>`.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.bins.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig_path);
        cmd
    }

    /// Server-side applies YAML (one or more documents) with `kubectl apply`.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<()> {
        let mut child = tokio::process::Command::new(&self.bins.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                FIELD_MANAGER,
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running kubectl apply")?;
        let mut stdin = child.stdin.take().context("kubectl stdin")?;
        stdin.write_all(yaml.as_bytes()).await?;
        drop(stdin);
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!(
                "kubectl apply failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Applies every `*.yaml`/`*.yml` file in `dir` (CustomResourceDefinitions; there may be
    /// none) and waits until each CRD is Established. Returns the CRD names.
    pub async fn install_crds(&self, dir: impl AsRef<Path>) -> Result<Vec<String>> {
        let dir = dir.as_ref();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let crds: Api<CustomResourceDefinition> = Api::all(self.client().await?);
        let mut names = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_json::Value::deserialize(doc)
                    .with_context(|| format!("parsing {}", file.display()))?;
                if value.is_null() {
                    continue;
                }
                if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
                    bail!(
                        "{} holds a non-CRD document; use apply_yaml for it",
                        file.display()
                    );
                }
                let name = value
                    .pointer("/metadata/name")
                    .and_then(|n| n.as_str())
                    .with_context(|| format!("CRD without name in {}", file.display()))?
                    .to_string();
                crds.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&value),
                )
                .await
                .with_context(|| format!("applying CRD {name} from {}", file.display()))?;
                names.push(name);
            }
        }
        for name in &names {
            wait_for(
                &format!("CRD {name} Established"),
                Duration::from_secs(60),
                Duration::from_millis(100),
                || async {
                    let crd = crds.get(name).await?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                },
            )
            .await?;
        }
        Ok(names)
    }

    /// Creates a namespace named `<prefix>-<unique>` and waits for its `default` ServiceAccount.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        let mut clean: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        clean.truncate(40);
        let clean = clean.trim_matches('-');
        let clean = if clean.is_empty() { "test" } else { clean };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{clean}-{n}-{:05x}", (nanos ^ std::process::id()) & 0xfffff);
        let client = self.client().await?;
        let nss: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))?;
        nss.create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let sas: Api<ServiceAccount> = Api::namespaced(client, &name);
        wait_for(
            &format!("ServiceAccount {name}/default"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async { Ok(sas.get_opt("default").await?.map(|_| ())) },
        )
        .await?;
        Ok(name)
    }

    /// A token for `ns/sa` (TokenRequest API, one hour, audience = issuer).
    pub async fn service_account_token(&self, ns: &str, sa: &str) -> Result<String> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client().await?, ns);
        let tr = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![SERVICE_ACCOUNT_ISSUER.to_string()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tr = sas
            .create_token_request(sa, &PostParams::default(), &tr)
            .await
            .with_context(|| format!("requesting a token for {ns}/{sa}"))?;
        tr.status
            .and_then(|s| s.token)
            .context("TokenRequest without token")
    }

    /// A client authenticated as ServiceAccount `ns/sa` (bearer token from the TokenRequest API).
    pub async fn client_for_service_account(&self, ns: &str, sa: &str) -> Result<kube::Client> {
        let token = self.service_account_token(ns, sa).await?;
        let kc = kubeconfig_json(
            &self.server_url,
            &self.ca_pem,
            &Credentials::Token(&token),
            Some(ns),
        );
        client_from_json(&kc).await
    }

    /// Writes a kubeconfig authenticating as ServiceAccount `ns/sa` (default namespace `ns`), e.g.
    /// to run the operator as a local process with its real RBAC. Returns its path.
    pub async fn write_kubeconfig_for_service_account(
        &self,
        ns: &str,
        sa: &str,
    ) -> Result<PathBuf> {
        let token = self.service_account_token(ns, sa).await?;
        let kc = kubeconfig_json(
            &self.server_url,
            &self.ca_pem,
            &Credentials::Token(&token),
            Some(ns),
        );
        let dir = self.dir.join("kubeconfigs");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{ns}-{sa}.kubeconfig"));
        std::fs::write(&path, serde_json::to_vec_pretty(&kc)?)?;
        Ok(path)
    }
}

/// Condenses a failed `/readyz` answer to its failing checks.
fn readyz_error(body: &str) -> anyhow::Error {
    let mut failed: Vec<&str> = body.lines().filter(|l| l.starts_with("[-]")).collect();
    failed.sort_unstable();
    failed.dedup();
    if failed.is_empty() {
        anyhow!("{}", body.chars().take(300).collect::<String>())
    } else {
        anyhow!("not ready: {}", failed.join("; "))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Ok(mut comps) = self.components.lock() {
            let mut children: Vec<&mut Child> =
                comps.iter_mut().rev().map(|c| &mut c.child).collect();
            proc::stop_children(&mut children, Duration::from_secs(5));
        }
        remove_or_keep(&self.dir, "control plane");
    }
}
