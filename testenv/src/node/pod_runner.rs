//! Running a pod's first container as a local process, and its life cycle.
//!
//! - The executable is the one mapped to the container image ([`super::NodeConfig::images`]);
//!   arguments are `command[1..]` followed by `args` (after `$(VAR)` expansion and mount-path
//!   rewriting). A pod whose image is not mapped stays Pending as on a kubelet that cannot find
//!   the image: waiting with `ErrImageNeverPull` under `imagePullPolicy: Never`, else alternating
//!   `ErrImagePull` and `ImagePullBackOff` (retried with a growing back-off), with Events.
//! - A pod whose Secret, ConfigMap or key is missing stays Pending, retried until it appears:
//!   `CreateContainerConfigError` naming it for `env`/`envFrom`, `ContainerCreating` with a
//!   `FailedMount` Event for a volume (the kubelet's reasons and wording).
//! - Environment: only `PATH`, `HOME`, `RUST_LOG`, `RUST_BACKTRACE`, `LLVM_PROFILE_FILE` of the
//!   test process, `HOSTNAME`, the container's resolved env, `KUBECONFIG` (a kubeconfig holding a
//!   token bound to the pod, unless `automountServiceAccountToken: false`). The container's
//!   `terminationMessagePath` (default `/dev/termination-log`) is a file in the pod directory:
//!   arguments and env values naming it are rewritten to that file like any mount path.
//! - stdout and stderr go to `<pod dir>/container.log` (see [`super::FakeNode::logs`]).
//! - Status: Running on start; Succeeded/Failed with the exit code (`128 + signal` when killed)
//!   on exit (`restartPolicy: Never`, or `OnFailure` with exit 0). With `OnFailure`/`Always` the
//!   process is restarted after a short back-off (1 s doubling up to 10 s; `restartCount`,
//!   `lastState` are reported). A pod is picked up at most once per node and never runs again
//!   once Succeeded/Failed.
//! - Deletion: SIGTERM to the process group, SIGKILL after `min(grace, max_kill_grace)`, final
//!   status, then delete with grace period 0 (finalizers of others are left to them).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use nix::sys::signal::Signal;

use super::env::{self, Lookup};
use super::volumes::{MountError, Mounts, VolumeContext, materialize};
use super::{NodeCtx, NodeState, PodPhase, create_binding, delete_now, status, token};
use crate::proc;

const MAX_MESSAGE: usize = 4096;
/// Retry interval of a pod whose Secrets/ConfigMaps are missing (doubling up to the maximum).
const CONFIG_RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(5));
/// Back-off between attempts to "pull" an image the node does not have (doubling).
const PULL_BACKOFF: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(30));
/// How long `ErrImagePull` shows before `ImagePullBackOff`.
const PULL_ERROR_SHOWN: Duration = Duration::from_secs(1);

/// Binds an unscheduled pod to this node (retrying transient errors).
pub(crate) async fn bind(ctx: Arc<NodeCtx>, pod: Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    for attempt in 0..5u32 {
        match create_binding(&ctx, &pod).await {
            Ok(()) => return,
            // Already bound (possibly by another node), or gone.
            Err(e) if is_api_code(&e, &[404, 409]) => return,
            Err(e) => {
                tracing::debug!(
                    "binding pod {:?} (attempt {attempt}): {e:#}",
                    pod.metadata.name
                );
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
    ctx.state().binding.remove(&uid);
}

fn is_api_code(err: &anyhow::Error, codes: &[u16]) -> bool {
    err.downcast_ref::<kube::Error>()
        .is_some_and(|e| matches!(e, kube::Error::Api(s) if codes.contains(&s.code)))
}

/// Everything needed to spawn the process.
struct Prepared {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    workdir: std::path::PathBuf,
    termination_file: std::path::PathBuf,
}

async fn prepare(
    ctx: &NodeCtx,
    pod: &Pod,
    container: &Container,
    pod_dir: &Path,
) -> Result<Prepared> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut lookup = Lookup::new(ctx.client.clone(), &ns);
    let vctx = VolumeContext {
        client: &ctx.client,
        node_name: &ctx.name,
        issuer: &ctx.issuer,
        ca_pem: &ctx.ca_pem,
    };
    let mut mounts: Mounts = materialize(&vctx, &mut lookup, pod, container, pod_dir).await?;
    let termination_file = pod_dir.join("termination-log");
    std::fs::write(&termination_file, b"")?;
    let tm_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".to_string());
    mounts.add(&tm_path, termination_file.clone());

    let resolved = env::resolve(&mut lookup, pod, container, &ctx.name).await?;
    let vars: std::collections::HashMap<String, String> = resolved.iter().cloned().collect();

    let mut env_out = env::host_env();
    env_out.push((
        "HOSTNAME".into(),
        pod.metadata.name.clone().unwrap_or_default(),
    ));
    for (k, v) in resolved {
        env_out.retain(|(ek, _)| *ek != k);
        env_out.push((k, mounts.rewrite(&v)));
    }
    let automount = pod
        .spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        .unwrap_or(true);
    if automount {
        let token = token::pod_token(&ctx.client, pod, None, None, &ctx.issuer).await?;
        let kubeconfig = token::write_credentials(
            &pod_dir.join("serviceaccount"),
            &ctx.server_url,
            &ctx.ca_pem,
            &ns,
            &token,
        )?;
        env_out.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    }

    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let argv: Vec<String> = command
        .iter()
        .skip(1)
        .chain(args.iter())
        .map(|a| mounts.rewrite(&env::expand(a, &vars)))
        .collect();
    let workdir = container
        .working_dir
        .as_deref()
        .map(|w| std::path::PathBuf::from(mounts.rewrite(w)))
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| pod_dir.to_path_buf());
    Ok(Prepared {
        argv,
        env: env_out,
        workdir,
        termination_file,
    })
}

/// Runs a pod bound to this node, from preparation to final status.
pub(crate) async fn run(ctx: Arc<NodeCtx>, pod: Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Err(e) = run_inner(&ctx, &pod).await {
        tracing::warn!("node {}: pod {ns}/{name} failed to run: {e:#}", ctx.name);
        let container = pod.spec.as_ref().and_then(|s| s.containers.first());
        let cname = container.map(|c| c.name.clone()).unwrap_or_default();
        let image = container.and_then(|c| c.image.clone()).unwrap_or_default();
        let msg = format!("{e:#}");
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let body = status::failed_to_start(&cname, &image, &uid, "RunContainerError", &msg);
        let _ = status::patch(&api, &name, &body).await;
        status::event(&ctx.client, &pod, &ctx.name, "Warning", "Failed", &msg).await;
    }
    let deleting = {
        let mut st = ctx.state();
        match st.pods.get_mut(&uid) {
            Some(slot) => {
                slot.phase = PodPhase::Done;
                let d = slot.deleting && !slot.delete_sent;
                if d {
                    slot.delete_sent = true;
                }
                d
            }
            None => false,
        }
    };
    if deleting {
        delete_now(&ctx.client, &ns, &name).await;
    }
}

async fn run_inner(ctx: &NodeCtx, pod: &Pod) -> Result<()> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .context("pod has no containers")?;
    let image = container.image.clone().unwrap_or_default();
    let pod_dir = ctx.root.join("pods").join(format!("{ns}_{name}_{uid}"));
    std::fs::create_dir_all(&pod_dir).with_context(|| format!("creating {}", pod_dir.display()))?;

    let accepted_at = status::now();
    let Some(exe) = ctx.cfg.resolve_image(&image).cloned() else {
        return image_unavailable(ctx, pod, container, &api, &accepted_at).await;
    };

    // Referenced Secrets/ConfigMaps may be created after the pod: the pod waits (Pending) and is
    // retried until they exist or it is deleted, as on a kubelet.
    let mut reported: Option<String> = None;
    let mut retry = CONFIG_RETRY.0;
    let prepared = loop {
        match prepare(ctx, pod, container, &pod_dir).await {
            Ok(p) => break p,
            Err(e) => {
                let (reason, message, event_reason, event) = match e.downcast_ref::<MountError>() {
                    Some(m) => ("ContainerCreating", None, "FailedMount", m.to_string()),
                    None => {
                        let m = format!("{e:#}");
                        let event = format!("Error: {m}");
                        ("CreateContainerConfigError", Some(m), "Failed", event)
                    }
                };
                if reported.as_deref() != Some(event.as_str()) {
                    tracing::debug!("pod {ns}/{name}: cannot start yet: {event}");
                    status::event(&ctx.client, pod, &ctx.name, "Warning", event_reason, &event)
                        .await;
                    let body = status::waiting(
                        &container.name,
                        &image,
                        reason,
                        message.as_deref(),
                        &accepted_at,
                    );
                    status::patch(&api, &name, &body).await?;
                    reported = Some(event);
                }
                if sleep_unless_deleted(ctx, &uid, retry).await {
                    return Ok(());
                }
                retry = (retry * 2).min(CONFIG_RETRY.1);
            }
        }
    };

    let log_path = pod_dir.join("container.log");
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".to_string());
    let mut restarts: i32 = 0;
    let mut last_state: Option<serde_json::Value> = None;
    loop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_err = log.try_clone()?;
        std::fs::write(&prepared.termination_file, b"")?;
        let mut cmd = proc::command(&exe);
        cmd.args(&prepared.argv)
            .env_clear()
            .envs(prepared.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&prepared.workdir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);

        // Spawn and publish the pid under the lock, unless deletion was requested meanwhile.
        let mut child = {
            let mut st = ctx.state();
            let Some(slot) = st.pods.get_mut(&uid) else {
                return Ok(());
            };
            slot.log = Some(log_path.clone());
            if slot.deleting {
                return Ok(());
            }
            let child = proc::spawn(cmd).with_context(|| format!("starting {}", exe.display()))?;
            slot.phase = PodPhase::Running { pid: child.id() };
            st.processes_started += 1;
            child
        };
        let started_at = status::now();
        let pid = child.id();
        tracing::info!("node {}: started pod {ns}/{name} as pid {pid}", ctx.name);
        let body = status::running(
            &container.name,
            &image,
            &uid,
            &started_at,
            restarts,
            last_state.as_ref(),
        );
        status::patch(&api, &name, &body).await?;

        let exit = tokio::task::spawn_blocking(move || child.wait())
            .await
            .context("waiting for pod process")?
            .context("waiting for pod process")?;
        let finished_at = status::now();
        let exit_code = exit
            .code()
            .or_else(|| exit.signal().map(|s| 128 + s))
            .unwrap_or(1);
        {
            let mut st = ctx.state();
            if let Some(slot) = st.pods.get_mut(&uid) {
                slot.phase = PodPhase::Preparing;
            }
        }
        // Kill leftovers of the process group (e.g. background children of a shell).
        if let Ok(raw) = i32::try_from(pid) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), Signal::SIGKILL);
        }
        let message =
            termination_message(container, &prepared.termination_file, &log_path, exit_code);
        tracing::info!("node {}: pod {ns}/{name} exited with {exit_code}", ctx.name);
        let exit = status::Exit {
            exit_code,
            message: &message,
            started_at: &started_at,
            finished_at: &finished_at,
        };
        let restart = !deletion_requested(ctx, &uid)
            && (restart_policy == "Always" || (restart_policy == "OnFailure" && exit_code != 0));
        if !restart {
            let body = status::terminated(
                &container.name,
                &image,
                &uid,
                &exit,
                restarts,
                last_state.as_ref(),
            );
            return status::patch(&api, &name, &body).await;
        }
        // Restart with a short exponential back-off (1 s, 2 s, 4 s, ... capped at 10 s).
        restarts += 1;
        let term = status::terminated_state(&uid, &exit);
        let body = status::restarting(&container.name, &image, &uid, restarts, &term);
        status::patch(&api, &name, &body).await?;
        last_state = Some(term);
        let backoff = Duration::from_secs(1u64 << (restarts - 1).clamp(0, 3) as u32)
            .min(Duration::from_secs(10));
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if deletion_requested(ctx, &uid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn deletion_requested(ctx: &NodeCtx, uid: &str) -> bool {
    ctx.state().pods.get(uid).is_some_and(|s| s.deleting)
}

/// Sleeps for `d` or until the pod's deletion is requested; returns whether it was.
async fn sleep_unless_deleted(ctx: &NodeCtx, uid: &str, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if deletion_requested(ctx, uid) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

/// The container's pull policy, defaulted as the apiserver does when unset: `Always` for an
/// image tagged `latest` or untagged, else `IfNotPresent`.
fn pull_policy(container: &Container, image: &str) -> String {
    if let Some(p) = container
        .image_pull_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        return p.to_string();
    }
    if image.contains('@') {
        return "IfNotPresent".into();
    }
    let tag = image
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'));
    match tag {
        None | Some("latest") => "Always".into(),
        Some(_) => "IfNotPresent".into(),
    }
}

/// A pod whose image this node has no executable for: as a kubelet that does not have the image
/// and cannot pull it, the pod stays Pending (until deleted) with the kubelet's reasons.
async fn image_unavailable(
    ctx: &NodeCtx,
    pod: &Pod,
    container: &Container,
    api: &Api<Pod>,
    accepted_at: &str,
) -> Result<()> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let image = container.image.clone().unwrap_or_default();
    let waiting = |reason: &str, message: &str| {
        status::waiting(&container.name, &image, reason, Some(message), accepted_at)
    };
    if pull_policy(container, &image) == "Never" {
        let msg = format!("Container image {image:?} is not present with pull policy of Never");
        status::event(
            &ctx.client,
            pod,
            &ctx.name,
            "Warning",
            "ErrImageNeverPull",
            &msg,
        )
        .await;
        return status::patch(api, &name, &waiting("ErrImageNeverPull", &msg)).await;
    }
    let pull_error = format!(
        "failed to pull and unpack image {image:?}: not found (the fake node maps no executable \
         to this image)"
    );
    let back_off = format!("Back-off pulling image {image:?}");
    let mut delay = PULL_BACKOFF.0;
    let mut first = true;
    loop {
        if first {
            let msg = format!("Failed to pull image {image:?}: {pull_error}");
            status::event(&ctx.client, pod, &ctx.name, "Warning", "Failed", &msg).await;
        }
        status::patch(api, &name, &waiting("ErrImagePull", &pull_error)).await?;
        if sleep_unless_deleted(ctx, &uid, PULL_ERROR_SHOWN).await {
            return Ok(());
        }
        if first {
            status::event(&ctx.client, pod, &ctx.name, "Normal", "BackOff", &back_off).await;
            first = false;
        }
        status::patch(api, &name, &waiting("ImagePullBackOff", &back_off)).await?;
        if sleep_unless_deleted(ctx, &uid, delay).await {
            return Ok(());
        }
        delay = (delay * 2).min(PULL_BACKOFF.1);
    }
}

fn read_capped(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(MAX_MESSAGE);
    let tail = if bytes.len() > MAX_MESSAGE {
        &bytes[start..]
    } else {
        &bytes[..]
    };
    String::from_utf8_lossy(tail).into_owned()
}

fn termination_message(container: &Container, file: &Path, log: &Path, exit_code: i32) -> String {
    let mut msg = {
        let bytes = std::fs::read(file).unwrap_or_default();
        String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_MESSAGE)]).into_owned()
    };
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if msg.trim().is_empty() && fallback && exit_code != 0 {
        msg = read_capped(log);
    }
    msg
}

/// Handles a pod with a deletionTimestamp (called with the state locked).
pub(crate) fn on_deletion_requested(ctx: &Arc<NodeCtx>, st: &mut NodeState, pod: &Pod, uid: &str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0)).min(ctx.cfg.max_kill_grace);
    let slot = st
        .pods
        .entry(uid.to_string())
        .or_insert_with(|| super::PodSlot {
            ns: ns.clone(),
            name: name.clone(),
            phase: PodPhase::Done,
            deleting: false,
            delete_sent: false,
            log: None,
        });
    let first = !slot.deleting;
    slot.deleting = true;
    match slot.phase {
        // The runner sees `deleting` before spawning and deletes the pod when it finishes.
        PodPhase::Preparing => {}
        PodPhase::Running { pid } => {
            if first {
                tokio::spawn(terminate(ctx.clone(), uid.to_string(), pid, grace));
            }
        }
        PodPhase::Done => {
            if !slot.delete_sent {
                slot.delete_sent = true;
                let client = ctx.client.clone();
                tokio::spawn(async move { delete_now(&client, &ns, &name).await });
            }
        }
    }
}

/// SIGTERM, then SIGKILL after `grace` if the process is still running.
async fn terminate(ctx: Arc<NodeCtx>, uid: String, pid: u32, grace: Duration) {
    proc::signal(pid, Signal::SIGTERM, true);
    let deadline = Instant::now() + grace;
    loop {
        let running = matches!(ctx.state().pods.get(&uid).map(|s| s.phase), Some(PodPhase::Running { pid: p }) if p == pid);
        if !running {
            return;
        }
        if Instant::now() >= deadline {
            proc::signal(pid, Signal::SIGKILL, true);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pod object is gone (e.g. force-deleted): kill its process at once.
pub(crate) fn on_deleted(ctx: &Arc<NodeCtx>, pod: &Pod) {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return;
    };
    let mut st = ctx.state();
    if let Some(slot) = st.pods.get_mut(uid) {
        slot.deleting = true;
        slot.delete_sent = true;
        if let PodPhase::Running { pid } = slot.phase {
            proc::signal(pid, Signal::SIGKILL, true);
        }
    }
}

/// Kills every running pod process of a node.
pub(crate) fn kill_all(state: &Mutex<NodeState>) {
    let st = state.lock().unwrap_or_else(|p| p.into_inner());
    for slot in st.pods.values() {
        if let PodPhase::Running { pid } = slot.phase {
            proc::signal(pid, Signal::SIGKILL, true);
        }
    }
}
