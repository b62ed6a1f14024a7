//! A fake kubelet: registers a Node, keeps it healthy (Lease + Ready heartbeats), binds
//! unscheduled pods to itself (there is no scheduler) and runs each bound pod's first container
//! as a local process.
//!
//! It runs on its own thread with its own Tokio runtime, so it is independent of the runtimes of
//! individual `#[tokio::test]`s. Dropping the [`FakeNode`] kills its processes and deletes the
//! Node object. See [`pod_runner`] for how a pod becomes a process, and [`volumes`] for how
//! volume mounts are emulated by rewriting paths.
//!
//! Several fake nodes may run against one control plane (e.g. one per test on a shared
//! [`ControlPlane`]); they race to bind unscheduled pods, so give each test's node its own
//! namespace with [`NodeConfig::namespace`]. Pods in other namespaces are ignored.

mod env;
pub mod pod_runner;
mod status;
mod token;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::ControlPlane;
use crate::util::{keep_testenv, remove_or_keep};

const FIELD_MANAGER: &str = "clothjob-fake-kubelet";
static NODE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Configuration of a [`FakeNode`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name; `None` picks `fake-node-<n>`.
    pub name: Option<String>,
    /// Image → local executable. The process run is the executable with arguments
    /// `command[1..]` followed by `args` (`command[0]`, the image's entrypoint, is replaced).
    /// Lookups also try the image without tag/digest and without `docker.io/library/`.
    pub images: HashMap<String, PathBuf>,
    /// Only bind and run pods in these namespaces; `None` = all namespaces.
    pub namespaces: Option<Vec<String>>,
    /// Only bind pods with one of these `schedulerName`s; `None` = any.
    pub scheduler_names: Option<Vec<String>>,
    /// Node capacity (= allocatable), e.g. `cpu`, `memory`, `pods`.
    pub capacity: BTreeMap<String, String>,
    /// Extra node labels.
    pub labels: BTreeMap<String, String>,
    /// Lease renewal / Ready heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Upper bound of the SIGTERM→SIGKILL delay when a pod is deleted.
    pub max_kill_grace: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: None,
            images: HashMap::new(),
            namespaces: None,
            scheduler_names: None,
            capacity: BTreeMap::from([
                ("cpu".to_string(), "16".to_string()),
                ("memory".to_string(), "64Gi".to_string()),
                ("pods".to_string(), "250".to_string()),
                ("ephemeral-storage".to_string(), "100Gi".to_string()),
            ]),
            labels: BTreeMap::new(),
            heartbeat_interval: Duration::from_secs(10),
            max_kill_grace: Duration::from_secs(5),
        }
    }
}

impl NodeConfig {
    /// Default configuration (all namespaces, no images mapped).
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `image` to a local executable.
    pub fn image(mut self, image: impl Into<String>, executable: impl Into<PathBuf>) -> Self {
        self.images.insert(image.into(), executable.into());
        self
    }

    /// Restricts the node to a namespace (may be called several times).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespaces.get_or_insert_with(Vec::new).push(ns.into());
        self
    }

    /// Sets the node name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a node label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub(crate) fn manages_namespace(&self, ns: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == ns))
    }

    pub(crate) fn resolve_image(&self, image: &str) -> Option<&PathBuf> {
        let no_digest = image.split('@').next().unwrap_or(image);
        let no_tag = match no_digest.rfind(':') {
            Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
            _ => no_digest,
        };
        let mut candidates = vec![image, no_digest, no_tag];
        for prefix in ["docker.io/library/", "docker.io/", "library/"] {
            for c in [no_digest, no_tag] {
                if let Some(s) = c.strip_prefix(prefix) {
                    candidates.push(s);
                }
            }
        }
        candidates.into_iter().find_map(|c| self.images.get(c))
    }
}

/// Where a pod's process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodPhase {
    Preparing,
    Running { pid: u32 },
    Done,
}

/// Per-pod bookkeeping; a pod UID present here is never started again.
#[derive(Debug)]
pub(crate) struct PodSlot {
    pub ns: String,
    pub name: String,
    pub phase: PodPhase,
    pub deleting: bool,
    pub delete_sent: bool,
    pub log: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub(crate) struct NodeState {
    pub pods: HashMap<String, PodSlot>,
    pub binding: HashSet<String>,
    pub processes_started: u64,
}

pub(crate) struct NodeCtx {
    pub client: kube::Client,
    pub cfg: NodeConfig,
    pub name: String,
    pub root: PathBuf,
    pub server_url: String,
    pub ca_pem: String,
    pub issuer: String,
    pub state: Arc<Mutex<NodeState>>,
    /// When the node registered (lastTransitionTime of its conditions).
    pub registered_at: String,
}

impl NodeCtx {
    pub(crate) fn state(&self) -> MutexGuard<'_, NodeState> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<NodeState>) -> MutexGuard<'_, NodeState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fake kubelet (see the module docs). Stops on drop.
pub struct FakeNode {
    name: String,
    root: PathBuf,
    state: Arc<Mutex<NodeState>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct StartArgs {
    kubeconfig: serde_json::Value,
    cfg: NodeConfig,
    name: String,
    root: PathBuf,
    server_url: String,
    ca_pem: String,
    issuer: String,
    state: Arc<Mutex<NodeState>>,
}

impl FakeNode {
    /// Registers the node and starts watching pods; returns once the node is Ready.
    pub async fn start(cp: &ControlPlane, cfg: NodeConfig) -> Result<FakeNode> {
        let n = NODE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = cfg.name.clone().unwrap_or_else(|| format!("fake-node-{n}"));
        let root = cp.dir().join("nodes").join(format!("{name}-{n}"));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        if keep_testenv() {
            eprintln!("clothjob-testenv: node {name} directory {}", root.display());
        }
        let state = Arc::new(Mutex::new(NodeState::default()));
        let args = StartArgs {
            kubeconfig: cp.admin_kubeconfig_json().clone(),
            cfg,
            name: name.clone(),
            root: root.clone(),
            server_url: cp.server_url().to_string(),
            ca_pem: cp.ca_pem().to_string(),
            issuer: cp.service_account_issuer().to_string(),
            state: state.clone(),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("clothjob-{name}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("clothjob-fake-node")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!(e).context("building node runtime")));
                        return;
                    }
                };
                rt.block_on(node_main(args, ready_tx, shutdown_rx));
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .context("spawning node thread")?;
        let node = FakeNode {
            name,
            root,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        };
        ready_rx
            .await
            .context("node thread died during startup")??;
        Ok(node)
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory holding the per-pod dirs of this node.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Number of pod processes currently running.
    pub fn process_count(&self) -> usize {
        lock(&self.state)
            .pods
            .values()
            .filter(|p| matches!(p.phase, PodPhase::Running { .. }))
            .count()
    }

    /// Process id of the running process of pod `ns/pod`, if any.
    pub fn pid(&self, ns: &str, pod: &str) -> Option<u32> {
        lock(&self.state).pods.values().find_map(|p| match p.phase {
            PodPhase::Running { pid } if p.ns == ns && p.name == pod => Some(pid),
            _ => None,
        })
    }

    /// Number of pod processes started since the node started.
    pub fn processes_started(&self) -> u64 {
        lock(&self.state).processes_started
    }

    /// Path of the captured stdout+stderr of pod `ns/pod` (latest pod of that name).
    pub fn log_path(&self, ns: &str, pod: &str) -> Option<PathBuf> {
        lock(&self.state)
            .pods
            .values()
            .filter(|p| p.ns == ns && p.name == pod)
            .find_map(|p| p.log.clone())
    }

    /// Captured stdout+stderr of pod `ns/pod` so far (empty if it never ran here).
    pub fn logs(&self, ns: &str, pod: &str) -> String {
        self.log_path(ns, pod)
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Processes are gone by now; belt and braces for any left over.
        pod_runner::kill_all(&self.state);
        remove_or_keep(&self.root, "fake node");
    }
}

async fn node_main(
    args: StartArgs,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let client = match crate::kubeconfig::client_from_json(&args.kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let ctx = Arc::new(NodeCtx {
        client,
        cfg: args.cfg,
        name: args.name,
        root: args.root,
        server_url: args.server_url,
        ca_pem: args.ca_pem,
        issuer: args.issuer,
        state: args.state,
        registered_at: crate::node::status::now(),
    });
    if let Err(e) = register(&ctx).await {
        let _ = ready.send(Err(e.context(format!("registering node {}", ctx.name))));
        return;
    }
    let _ = ready.send(Ok(()));

    let heartbeat = tokio::spawn(heartbeat_loop(ctx.clone()));
    tokio::select! {
        () = watch_pods(ctx.clone()) => {}
        _ = shutdown => {}
    }
    heartbeat.abort();
    pod_runner::kill_all(&ctx.state);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        nodes.delete(&ctx.name, &DeleteParams::default()),
    )
    .await;
}

fn node_status(ctx: &NodeCtx) -> serde_json::Value {
    let ts = crate::node::status::now();
    let since = &ctx.registered_at;
    let cond = |type_: &str, status: &str, reason: &str| {
        json!({ "type": type_, "status": status, "reason": reason, "message": reason,
                "lastHeartbeatTime": ts, "lastTransitionTime": since })
    };
    json!({ "status": {
        "capacity": ctx.cfg.capacity,
        "allocatable": ctx.cfg.capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            cond("Ready", "True", "KubeletReady"),
        ],
        "addresses": [
            { "type": "InternalIP", "address": "127.0.0.1" },
            { "type": "Hostname", "address": ctx.name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
        "nodeInfo": {
            "machineID": "clothjob-fake", "systemUUID": "clothjob-fake", "bootID": "clothjob-fake",
            "kernelVersion": "", "osImage": "clothjob-testenv fake kubelet",
            "containerRuntimeVersion": "clothjob-fake://0.1", "kubeletVersion": crate::bins::K8S_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
    }})
}

async fn register(ctx: &NodeCtx) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), ctx.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("clothjob.dev/fake-node".to_string(), "true".to_string()),
    ]);
    labels.extend(ctx.cfg.labels.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": ctx.name, "labels": labels },
    });
    let created = nodes
        .patch(
            &ctx.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&node),
        )
        .await
        .context("creating Node")?;
    nodes
        .patch_status(
            &ctx.name,
            &PatchParams::default(),
            &Patch::Merge(&node_status(ctx)),
        )
        .await
        .context("setting Node status")?;
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": ctx.name, "namespace": "kube-node-lease",
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Node", "name": ctx.name,
                "uid": created.metadata.uid }] },
        "spec": { "holderIdentity": ctx.name, "leaseDurationSeconds": 40,
            "renewTime": crate::node::status::now_micro() },
    });
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    leases
        .patch(
            &ctx.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
        .context("creating node Lease")?;
    Ok(())
}

async fn heartbeat_loop(ctx: Arc<NodeCtx>) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    loop {
        tokio::time::sleep(ctx.cfg.heartbeat_interval).await;
        let renew = json!({ "spec": { "renewTime": crate::node::status::now_micro() } });
        if let Err(e) = leases
            .patch(&ctx.name, &PatchParams::default(), &Patch::Merge(&renew))
            .await
        {
            tracing::debug!("node {}: lease renewal failed: {e}", ctx.name);
        }
        if let Err(e) = nodes
            .patch_status(
                &ctx.name,
                &PatchParams::default(),
                &Patch::Merge(&node_status(&ctx)),
            )
            .await
        {
            tracing::debug!("node {}: status heartbeat failed: {e}", ctx.name);
        }
    }
}

async fn watch_pods(ctx: Arc<NodeCtx>) {
    let pods: Api<Pod> = match ctx.cfg.namespaces.as_deref() {
        Some([only]) => Api::namespaced(ctx.client.clone(), only),
        _ => Api::all(ctx.client.clone()),
    };
    let mut stream = watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                handle_pod(&ctx, pod)
            }
            Ok(watcher::Event::Delete(pod)) => pod_runner::on_deleted(&ctx, &pod),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => tracing::debug!("node {}: pod watch error (retrying): {e}", ctx.name),
        }
    }
}

/// Decides what to do with a pod seen by the watcher; never blocks, spawns tasks.
fn handle_pod(ctx: &Arc<NodeCtx>, pod: Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if !ctx.cfg.manages_namespace(&ns) {
        return;
    }
    let Some(spec) = pod.spec.as_ref() else {
        return;
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    match spec.node_name.as_deref() {
        None | Some("") => {
            if deleting {
                return;
            }
            let scheduler = spec
                .scheduler_name
                .as_deref()
                .unwrap_or("default-scheduler");
            if let Some(names) = &ctx.cfg.scheduler_names
                && !names.iter().any(|n| n == scheduler)
            {
                return;
            }
            if ctx.state().binding.insert(uid.clone()) {
                tokio::spawn(pod_runner::bind(ctx.clone(), pod));
            }
        }
        Some(node) if node == ctx.name => {
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            let terminal = phase == "Succeeded" || phase == "Failed";
            let mut st = ctx.state();
            let known = st.pods.contains_key(&uid);
            if deleting {
                pod_runner::on_deletion_requested(ctx, &mut st, &pod, &uid);
                return;
            }
            if known {
                return;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = if terminal {
                PodPhase::Done
            } else {
                PodPhase::Preparing
            };
            st.pods.insert(
                uid,
                PodSlot {
                    ns,
                    name,
                    phase,
                    deleting: false,
                    delete_sent: false,
                    log: None,
                },
            );
            drop(st);
            if !terminal {
                tokio::spawn(pod_runner::run(ctx.clone(), pod));
            }
        }
        Some(_) => {}
    }
}

/// Deletes a pod with grace period 0 (ignores NotFound).
pub(crate) async fn delete_now(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    match api
        .delete(
            name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
    {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => tracing::debug!("deleting pod {ns}/{name}: {e}"),
    }
}

/// Creates a binding of the pod to this node.
pub(crate) async fn create_binding(ctx: &NodeCtx, pod: &Pod) -> Result<()> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": { "name": name, "namespace": ns, "uid": pod.metadata.uid },
        "target": { "apiVersion": "v1", "kind": "Node", "name": ctx.name },
    });
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let _: serde_json::Value = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}
