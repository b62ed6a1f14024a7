//! A real one-node cluster: the control plane of [`ControlPlane`] plus a real kube-scheduler,
//! kube-proxy (nftables) and kubelet (cgroup v1, cgroupfs driver) with containerd and runc,
//! running the images it is given, all inside private network + mount + UTS namespaces.
//!
//! - Addresses: the node is [`NODE_IP`] (198.18.0.0/15, the benchmarking block), Services are in
//!   198.18.128.0/24, pods in 198.18.1.0/24; the namespace has no default route, so nothing
//!   leaves it. The test process reaches the apiserver through a loopback forward
//!   ([`ControlPlane::server_url`]); pods reach servers the test runs on the host through
//!   [`Cluster::expose`].
//! - Every process of the cluster (containerd's shims and the containers included) lives in the
//!   cgroup root `/clothjob-<pid>-<n>`, which is also the kubelet's `cgroupRoot`: teardown kills
//!   everything in it and removes it, and a later cluster removes those of dead test processes.
//! - Needs root and Debian's `containerd`, `runc`, `containernetworking-plugins`, `socat`,
//!   `nftables`, `umoci` and `gcc` ([`preflight`] says which are missing, in one line).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use clothjob_testenv::Cluster;
//! let cluster = Cluster::start().await?;
//! cluster.import_image(std::path::Path::new("target/images/clothjob-runner.tar"))?;
//! let cp = cluster.control_plane()?;
//! let ns = cp.create_namespace("demo").await?;
//! # let _ = ns; Ok(()) }
//! ```

pub(crate) mod cgroups;
pub mod forward;
mod netns;
mod node;
mod runtime;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

use crate::bins::{NodeBins, cache_root, ensure_node_binaries};
use crate::control_plane::{ControlPlane, Placement, SERVICE_CIDR};
use crate::launcher::Launcher;
use crate::util::{
    keep_testenv, make_temp_dir, persist_temp_dir, remove_or_keep, tail_file, wait_for,
};
use forward::Forward;

/// The node's address inside the cluster's network namespace.
pub const NODE_IP: &str = "198.18.0.2";
/// The node's name.
pub const NODE_NAME: &str = "clothjob-node";
/// `PATH` of the cluster's processes (the runtime's helpers live in the sbin directories).
pub(crate) const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static CLUSTER_COUNTER: AtomicU64 = AtomicU64::new(0);

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running one-node cluster; everything is killed and removed on drop.
pub struct Cluster {
    dir: PathBuf,
    cgroup: cgroups::CgroupRoot,
    netns: Option<netns::Netns>,
    cp: Option<ControlPlane>,
    launcher: Launcher,
    runtime: runtime::RuntimeDirs,
    procs: Mutex<Vec<Proc>>,
}

/// Whether the effective user is root (`/proc/self/status`, `Uid:` real effective ...).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// What the real node needs from the machine; an error names what is missing, in one line.
pub fn preflight() -> Result<()> {
    if !is_root() {
        bail!(
            "the real-node cluster needs root (network and mount namespaces, mounts, cgroups); \
             run the tests as root, as .ci/run does"
        );
    }
    let tools = [
        ("containerd", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("socat", "socat"),
        ("nft", "nftables"),
        ("umoci", "umoci"),
        ("gcc", "build-essential"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
    ];
    let mut missing: Vec<&str> = Vec::new();
    for (tool, package) in tools {
        let found = SYSTEM_PATH
            .split(':')
            .any(|d| Path::new(d).join(tool).is_file());
        if !found && !missing.contains(&package) {
            missing.push(package);
        }
    }
    if !Path::new(runtime::CNI_BIN_DIR).join("ptp").is_file() {
        missing.push("containernetworking-plugins");
    }
    if !missing.is_empty() {
        bail!(
            "the real-node cluster needs Debian packages that are missing: apt-get install {} \
             (.ci/run installs them)",
            missing.join(" ")
        );
    }
    Ok(())
}

impl Cluster {
    /// Starts the cluster: namespaces, control plane, containerd (with the pause image),
    /// kube-scheduler, kube-proxy and the kubelet; returns once the node is Ready and untainted.
    pub async fn start() -> Result<Cluster> {
        preflight()?;
        cgroups::sweep_stale();
        let node_bins = tokio::task::spawn_blocking(ensure_node_binaries)
            .await
            .context("binary lookup task panicked")??;
        let pause =
            tokio::task::spawn_blocking(|| runtime::pause_archive(&cache_root()?.join("images")))
                .await
                .context("pause image task panicked")??;
        let dir = persist_temp_dir(make_temp_dir("cluster")?);
        if keep_testenv() {
            eprintln!("clothjob-testenv: cluster directory {}", dir.display());
        }
        let n = CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed);
        let cgroup =
            cgroups::CgroupRoot::create(&format!("{}{}-{n}", cgroups::PREFIX, std::process::id()))?;
        cgroups::spawn_reaper(&cgroup, &dir)?;
        let mut cluster = Cluster {
            runtime: runtime::RuntimeDirs {
                base: dir.join("containerd"),
            },
            dir,
            cgroup,
            netns: None,
            cp: None,
            launcher: Launcher::Host,
            procs: Mutex::new(Vec::new()),
        };
        let started = Instant::now();
        cluster
            .boot(&node_bins, &pause)
            .await
            .map_err(|e| cluster.with_logs(e))?;
        tracing::info!("cluster ready in {:?}", started.elapsed());
        Ok(cluster)
    }

    async fn boot(&mut self, bins: &NodeBins, pause: &Path) -> Result<()> {
        let ns = netns::Netns::create(&self.dir, &self.cgroup.system(), NODE_IP, SERVICE_CIDR)?;
        self.launcher = Launcher::Netns {
            holder_pid: ns.holder_pid(),
            cgroup: self.cgroup.system(),
        };
        self.netns = Some(ns);
        let node_ip: IpAddr = NODE_IP.parse()?;
        let cp_dir = self.dir.join("control-plane");
        std::fs::create_dir_all(&cp_dir)?;
        let cp = ControlPlane::start_placed(
            cp_dir,
            Placement {
                launcher: self.launcher.clone(),
                node: Some((NODE_NAME.to_string(), node_ip)),
            },
        )
        .await?;
        let pki = cp.pki_dir();
        let internal = cp.internal_url().to_string();
        let internal_kc = cp.internal_kubeconfig_path().to_path_buf();
        self.cp = Some(cp);

        // containerd, then the pause image.
        std::fs::create_dir_all(&self.runtime.base)?;
        self.runtime.write_configs()?;
        let config = self.runtime.config();
        self.spawn(
            "containerd",
            Path::new("/usr/bin/containerd"),
            &["--config".into(), config.display().to_string()],
        )?;
        let socket = self.runtime.socket();
        wait_for(
            "containerd to listen",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                self.check_alive()?;
                Ok(socket.exists().then_some(()))
            },
        )
        .await?;
        self.runtime
            .import(pause, Some("registry.k8s.io/pause"))
            .context("importing the pause image")?;

        // kube-scheduler and kube-proxy with the admin identity, the kubelet as the node.
        let kc = internal_kc.display().to_string();
        self.spawn(
            "kube-scheduler",
            &bins.kube_scheduler,
            &[
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=10259".into(),
                "--leader-elect=false".into(),
                "-v=1".into(),
            ],
        )?;
        let proxy_config =
            node::write_kube_proxy_config(&self.dir, &internal_kc, NODE_NAME, runtime::POD_CIDR)?;
        self.spawn(
            "kube-proxy",
            &bins.kube_proxy,
            &[format!("--config={}", proxy_config.display())],
        )?;
        let kubelet_dir = self.dir.join("kubelet");
        std::fs::create_dir_all(&kubelet_dir)?;
        let kubelet_kc = kubelet_dir.join("kubelet.kubeconfig");
        node::write_cert_kubeconfig(
            &kubelet_kc,
            &internal,
            &pki.join("ca.crt"),
            &pki.join("node.crt"),
            &pki.join("node.key"),
        )?;
        let kubelet_config = node::write_kubelet_config(&node::KubeletSettings {
            dir: &kubelet_dir,
            pki: &pki,
            node_ip: NODE_IP,
            cgroup_root: &self.cgroup.kubelet_root(),
            runtime_socket: &socket,
            max_pods: 110,
        })?;
        self.spawn(
            "kubelet",
            &bins.kubelet,
            &[
                format!("--config={}", kubelet_config.display()),
                format!("--kubeconfig={}", kubelet_kc.display()),
                format!("--root-dir={}", kubelet_dir.join("root").display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                "-v=1".into(),
            ],
        )?;

        let client = self.control_plane()?.client().await?;
        let nodes: Api<Node> = Api::all(client);
        wait_for(
            "the node to be Ready and untainted",
            Duration::from_secs(120),
            Duration::from_millis(250),
            || async {
                self.check_alive()?;
                let Some(node) = nodes.get_opt(NODE_NAME).await? else {
                    return Ok(None);
                };
                let ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let tainted = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| !t.is_empty());
                Ok((ready && !tainted).then_some(()))
            },
        )
        .await?;
        Ok(())
    }

    /// Runs `program` inside the cluster's namespaces and cgroup; its output goes to
    /// `<dir>/<name>.log`; it is killed with the cluster.
    fn spawn(&self, name: &'static str, program: &Path, args: &[String]) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = self.launcher.command(program);
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = crate::proc::spawn(cmd).with_context(|| format!("starting {name}"))?;
        self.procs
            .lock()
            .map_err(|_| anyhow!("cluster lock poisoned"))?
            .push(Proc { name, child, log });
        Ok(())
    }

    fn check_alive(&self) -> Result<()> {
        let mut procs = self
            .procs
            .lock()
            .map_err(|_| anyhow!("cluster lock poisoned"))?;
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!(
                    "{} exited early ({status}): {}",
                    p.name,
                    tail_file(&p.log, 20)
                );
            }
        }
        Ok(())
    }

    fn with_logs(&self, err: anyhow::Error) -> anyhow::Error {
        anyhow!("{err:#}\n{}", self.diagnostics())
    }

    /// The last lines of the node components' logs and where the cluster's files are.
    pub fn diagnostics(&self) -> String {
        let mut msg = format!("cluster dir: {}", self.dir.display());
        if let Ok(procs) = self.procs.lock() {
            for p in procs.iter() {
                msg.push_str(&format!(
                    "\n--- last lines of {} ---\n{}",
                    p.name,
                    tail_file(&p.log, 25)
                ));
            }
        }
        msg
    }

    /// The control plane (admin clients, `kubectl`, namespaces, CRDs).
    pub fn control_plane(&self) -> Result<&ControlPlane> {
        self.cp.as_ref().context("the control plane is not running")
    }

    /// PID of the process holding the cluster's namespaces: a shell enters them with
    /// `nsenter --target <pid> --net --mount --uts`.
    pub fn netns_holder_pid(&self) -> Option<u32> {
        self.netns.as_ref().map(|n| n.holder_pid())
    }

    /// The cluster's directory (logs of every component, pod logs under `kubelet/pod-logs`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `helm` (the binary at `helm`) with the admin kubeconfig and its cache, config and data
    /// homes in the cluster's directory.
    pub fn helm(&self, helm: &Path) -> Result<std::process::Command> {
        let mut cmd = std::process::Command::new(helm);
        cmd.env("KUBECONFIG", self.control_plane()?.kubeconfig_path())
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"));
        Ok(cmd)
    }

    /// Imports an image archive (OCI layout or docker-archive tar) into the node's containerd.
    pub fn import_image(&self, archive: &Path) -> Result<()> {
        self.runtime.import(archive, None).map(|_| ())
    }

    /// Makes a server listening on the host's `127.0.0.1:<host_port>` reachable from pods (and
    /// from the node) at `<NODE_IP>:<port>`; the forward lasts as long as the returned value.
    pub fn expose(&self, name: &str, port: u16, host_port: u16) -> Result<Forward> {
        Forward::out_of_netns(
            &self.launcher,
            &self.dir,
            &format!("expose-{name}"),
            &format!("{NODE_IP}:{port}"),
            host_port,
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Everything inside (control plane, runtime, shims, containers, socat) is in the
        // cgroup: kill it all at once, then reap our own children.
        if let Err(e) = self.cgroup.destroy() {
            eprintln!("clothjob-testenv: cluster teardown: {e:#}");
        }
        if let Ok(mut procs) = self.procs.lock() {
            let mut children: Vec<&mut Child> = procs.iter_mut().map(|p| &mut p.child).collect();
            crate::proc::stop_children(&mut children, Duration::from_millis(100));
        }
        self.cp = None;
        self.netns = None;
        remove_or_keep(&self.dir, "cluster");
    }
}
