//! End-to-end on a real node: the shipped images (`cargo xtask images`) run in containerd on a
//! real kubelet, and the operator is installed with the Helm chart by real helm, running as the
//! chart's Deployment (in-cluster config, the chart's service account and RBAC).
//!
//! One cluster serves every test of this binary (a custom harness, so the cluster is torn down,
//! cgroups included, when the tests end, whatever their outcome). Tests that change the release
//! (`helm upgrade`, `helm uninstall`) run last.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use clothjob_api::{ClothJob, conditions, contract};
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::wait_condition;
use clothjob_testenv::cluster::NODE_IP;
use clothjob_testenv::cluster::forward::Forward;
use clothjob_testenv::{Cluster, S3Server, bins, run_checked, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use libtest_mimic::{Arguments, Failed, Trial};
use sha2::{Digest, Sha256};

const RELEASE: &str = "clothjob";
const SYSTEM_NS: &str = "clothjob-system";
const S3_PORT: u16 = 9000;
const BUCKET: &str = "closet";
/// A runner image the chart allows but no node has.
const ABSENT_IMAGE: &str = "ghcr.io/closetconnect/clothjob-runner:absent";

/// The shared cluster with the chart installed, and an S3 server its pods reach.
struct Env {
    cluster: Cluster,
    s3: S3Server,
    _s3_forward: Forward,
    _s3_dir: tempfile::TempDir,
    helm: PathBuf,
}

type Shared = Result<Arc<Env>, String>;
static ENV: OnceLock<Mutex<Option<Shared>>> = OnceLock::new();

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The environment, set up by the first test that needs it.
fn env() -> Result<Arc<Env>> {
    let cell = ENV.get_or_init(|| Mutex::new(None));
    let mut slot = cell
        .lock()
        .map_err(|_| anyhow::anyhow!("environment lock poisoned"))?;
    if slot.is_none() {
        let made = runtime()
            .and_then(|rt| rt.block_on(setup()))
            .map(Arc::new)
            .map_err(|e| format!("{e:#}"));
        *slot = Some(made);
    }
    match slot.as_ref() {
        Some(Ok(env)) => Ok(env.clone()),
        Some(Err(e)) => bail!("setting up the real-node cluster failed: {e}"),
        None => bail!("no environment"),
    }
}

fn chart() -> PathBuf {
    bins::workspace_root().join("charts/clothjob-operator")
}

async fn setup() -> Result<Env> {
    let cluster = Cluster::start().await?;
    // The harness's build (the xtask binary run without cargo's per-package variables).
    let images = tokio::task::spawn_blocking(clothjob_e2e::harness::build_images).await??;
    for image in &images {
        cluster.import_image(image)?;
    }
    let helm_bin = tokio::task::spawn_blocking(bins::ensure_helm).await??;
    run_checked(
        "helm install",
        cluster
            .helm(&helm_bin)?
            .args(["install", RELEASE])
            .arg(chart())
            .args([
                "--namespace",
                SYSTEM_NS,
                "--create-namespace",
                // The test servers are on the node network (and loopback), which runners may
                // reach only when allowed; the absent image is allowed so that the kubelet,
                // not the operator's policy, is what stops it.
                "--set",
                "allowedNetworks={127.0.0.0/8,198.18.0.0/15}",
                "--set",
                &format!("allowedRunnerImages={{{ABSENT_IMAGE}}}"),
                "--wait",
                "--timeout",
                "180s",
            ]),
    )
    .with_context(|| cluster.diagnostics())?;
    let s3_dir = tempfile::tempdir()?;
    let s3 = S3Server::start(s3_dir.path().join("data")).await?;
    s3.create_bucket(BUCKET)?;
    let host_port: u16 = s3
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("s3 endpoint port")?;
    let forward = cluster.expose("s3", S3_PORT, host_port)?;
    Ok(Env {
        cluster,
        s3,
        _s3_forward: forward,
        _s3_dir: s3_dir,
        helm: helm_bin,
    })
}

/// A test namespace with the S3 credentials Secret `s3-creds` and the photo ConfigMap `photo`.
async fn namespace(env: &Env, prefix: &str, photo: &[u8]) -> Result<String> {
    let cp = env.cluster.control_plane()?;
    let ns = cp.create_namespace(prefix).await?;
    let docs = serde_json::json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "s3-creds", "namespace": ns},
             "stringData": {
                "AWS_ACCESS_KEY_ID": env.s3.access_key(),
                "AWS_SECRET_ACCESS_KEY": env.s3.secret_key(),
                "AWS_REGION": env.s3.region(),
                "AWS_ENDPOINT": format!("http://{NODE_IP}:{S3_PORT}"),
                "AWS_ALLOW_HTTP": "true"}},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "photo", "namespace": ns},
             "binaryData": {"photo.jpg": BASE64_STANDARD.encode(photo)}},
        ]
    });
    cp.apply_yaml(&serde_json::to_string(&docs)?).await?;
    Ok(ns)
}

fn clothjob(name: &str, extra_spec: &str) -> Result<ClothJob> {
    let yaml = format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}}}\nspec:\n  source: {{configMapRef: {{name: photo, key: photo.jpg}}}}\n  output: {{uri: 's3://{BUCKET}/catalog', credentialsSecretName: s3-creds}}\n  retries: 0\n{extra_spec}"
    );
    Ok(serde_yaml::from_str(&yaml)?)
}

/// The runner pods of a ClothJob.
async fn runner_pods(client: &kube::Client, ns: &str, name: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{}={name}", contract::LABEL_CLOTHJOB));
    Ok(pods.list(&lp).await?.items)
}

/// Waits until a runner pod of `name` is waiting with `reason`; returns its message.
async fn wait_waiting_reason(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reasons: &[&str],
) -> Result<String> {
    wait_for(
        &format!("a runner pod of {name} waiting with {reasons:?}"),
        Duration::from_secs(120),
        Duration::from_millis(250),
        || async {
            for pod in runner_pods(client, ns, name).await? {
                let statuses = pod
                    .status
                    .and_then(|s| s.container_statuses)
                    .unwrap_or_default();
                for cs in statuses {
                    if let Some(w) = cs.state.and_then(|s| s.waiting)
                        && w.reason.as_deref().is_some_and(|r| reasons.contains(&r))
                    {
                        return Ok(Some(w.message.unwrap_or_default()));
                    }
                }
            }
            Ok(None)
        },
    )
    .await
}

fn with_env<F, Fut>(f: F) -> Result<(), Failed>
where
    F: FnOnce(Arc<Env>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let env = env().map_err(|e| Failed::from(format!("{e:#}")))?;
    let diag = env.cluster.diagnostics();
    runtime()
        .and_then(|rt| rt.block_on(f(env)))
        .map_err(|e| Failed::from(format!("{e:#}\n{diag}")))
}

/// The chart's operator (in-cluster config, the chart's RBAC) runs a ClothJob in another
/// namespace on the real node, one that enforces the `restricted` Pod Security profile: the
/// runner image's pod, as its per-job service account, reads its projected token, writes
/// progress and outputs, and the outputs land in S3.
async fn chart_operator_completes_a_clothjob_in_another_namespace(env: Arc<Env>) -> Result<()> {
    let photo = tshirt_jpeg(320, 400)?;
    let ns = namespace(&env, "real-success", &photo).await?;
    let client = env.cluster.control_plane()?.client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let restricted = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    namespaces
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&restricted))
        .await?;
    let api: Api<ClothJob> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &clothjob("shirt", "")?)
        .await?;
    let cj = wait_condition(
        &api,
        "shirt",
        conditions::COMPLETE,
        Duration::from_secs(240),
    )
    .await?;
    let status = cj.status.context("status")?;
    assert_eq!(status.progress, Some(100));
    let outputs = status.outputs.unwrap_or_default();
    assert_eq!(outputs.len(), 7, "{outputs:?}");
    for o in &outputs {
        let key = o
            .uri
            .strip_prefix(&format!("s3://{BUCKET}/"))
            .with_context(|| o.uri.clone())?;
        assert!(key.starts_with(&format!("catalog/{ns}/shirt/")), "{key}");
        let bytes = std::fs::read(env.s3.root().join(BUCKET).join(key))
            .with_context(|| format!("reading {} from the S3 root", o.uri))?;
        assert_eq!(hex::encode(Sha256::digest(&bytes)), o.sha256);
    }
    // The pod ran the shipped image on the real node.
    let pods = runner_pods(&client, &ns, "shirt").await?;
    let pod = pods.first().context("no runner pod")?;
    let spec = pod.spec.as_ref().context("pod spec")?;
    assert_eq!(
        spec.node_name.as_deref(),
        Some(clothjob_testenv::cluster::NODE_NAME)
    );
    assert!(
        spec.service_account_name
            .as_deref()
            .is_some_and(|s| s.starts_with(contract::RUNNER_SA_PREFIX)),
        "{:?}",
        spec.service_account_name
    );
    let cs = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .context("container status")?;
    assert_eq!(cs.image, contract::DEFAULT_RUNNER_IMAGE);
    assert!(
        cs.image_id.starts_with("sha256:") || cs.image_id.contains("@sha256:"),
        "{}",
        cs.image_id
    );
    let terminated = cs
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .context("terminated state")?;
    assert_eq!(terminated.exit_code, 0);
    Ok(())
}

/// A photo that is not an image: the runner exits 42, the real kubelet hands its
/// `/dev/termination-log` to the pod status, and the ClothJob fails at once with the reason.
async fn bad_input_fails_with_the_termination_message(env: Arc<Env>) -> Result<()> {
    let ns = namespace(&env, "real-bad", b"this is not a photo").await?;
    let client = env.cluster.control_plane()?.client().await?;
    let api: Api<ClothJob> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &clothjob("garbage", "")?)
        .await?;
    let cj = wait_condition(
        &api,
        "garbage",
        conditions::FAILED,
        Duration::from_secs(240),
    )
    .await?;
    let status = cj.status.context("status")?;
    assert_eq!(status.attempts, Some(1), "a bad input is never retried");
    let pods = runner_pods(&client, &ns, "garbage").await?;
    let terminated = pods
        .iter()
        .filter_map(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()
                .cloned()
        })
        .find_map(|cs| cs.state?.terminated)
        .context("no terminated runner container")?;
    assert_eq!(terminated.exit_code, 42);
    let message = terminated.message.unwrap_or_default();
    assert!(
        !message.is_empty(),
        "no termination message from /dev/termination-log"
    );
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("BadInput") || reason.contains("InvalidSpec"),
        "{reason}"
    );
    Ok(())
}

/// An image that is not on the node (pull policy Never) stays Pending with ErrImageNeverPull,
/// as on any real kubelet.
async fn an_absent_image_stays_pending_with_errimageneverpull(env: Arc<Env>) -> Result<()> {
    let ns = namespace(&env, "real-noimage", &tshirt_jpeg(64, 80)?).await?;
    let client = env.cluster.control_plane()?.client().await?;
    let api: Api<ClothJob> = Api::namespaced(client.clone(), &ns);
    let spec = format!("  runner: {{image: '{ABSENT_IMAGE}', imagePullPolicy: Never}}\n");
    api.create(&PostParams::default(), &clothjob("noimage", &spec)?)
        .await?;
    let msg = wait_waiting_reason(&client, &ns, "noimage", &["ErrImageNeverPull"]).await?;
    assert!(msg.contains("absent"), "{msg}");
    let cj = api.get("noimage").await?;
    let conds = cj.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(!conditions::is_true(&conds, conditions::COMPLETE));
    Ok(())
}

/// A Secret the pod needs but that does not exist: CreateContainerConfigError.
async fn a_missing_secret_gives_createcontainerconfigerror(env: Arc<Env>) -> Result<()> {
    let ns = namespace(&env, "real-nosecret", &tshirt_jpeg(64, 80)?).await?;
    let client = env.cluster.control_plane()?.client().await?;
    let api: Api<ClothJob> = Api::namespaced(client.clone(), &ns);
    let mut cj = clothjob("nosecret", "")?;
    cj.spec.output.credentials_secret_name = Some("no-such-secret".into());
    api.create(&PostParams::default(), &cj).await?;
    let msg =
        wait_waiting_reason(&client, &ns, "nosecret", &["CreateContainerConfigError"]).await?;
    assert!(msg.contains("no-such-secret"), "{msg}");
    Ok(())
}

/// `helm test` runs the chart's smoke test: a tiny ClothJob in the release namespace, to
/// completion, cleaned up afterwards.
async fn helm_test_runs_a_tiny_clothjob_to_completion(env: Arc<Env>) -> Result<()> {
    let out = run_checked(
        "helm test",
        env.cluster.helm(&env.helm)?.args([
            "test",
            RELEASE,
            "--namespace",
            SYSTEM_NS,
            "--logs",
            "--timeout",
            "300s",
        ]),
    )?;
    assert!(out.contains("Succeeded"), "{out}");
    assert!(out.contains("completed with 7 outputs"), "{out}");
    let client = env.cluster.control_plane()?.client().await?;
    let api: Api<ClothJob> = Api::namespaced(client, SYSTEM_NS);
    let name = format!("{RELEASE}-smoke-test");
    wait_for(
        "the smoke test's ClothJob to be cleaned up",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { Ok(api.get_opt(&name).await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}

/// `helm upgrade` with a changed value (and `replicaCount: 2`) rolls the operator; one replica
/// holds the leader Lease and, when its pod is killed, another takes over in under 15 s;
/// `helm uninstall` removes everything but the CRD.
async fn helm_upgrade_rolls_and_uninstall_keeps_the_crd(env: Arc<Env>) -> Result<()> {
    let cp = env.cluster.control_plane()?;
    let client = cp.client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM_NS);
    let name = format!("{RELEASE}-operator");
    let before = deployments.get(&name).await?;
    let gen_before = before.metadata.generation.unwrap_or_default();
    let helm_bin = env.helm.clone();
    let cluster = &env.cluster;
    run_checked(
        "helm upgrade",
        cluster
            .helm(&helm_bin)?
            .args(["upgrade", RELEASE])
            .arg(chart())
            .args([
                "--namespace",
                SYSTEM_NS,
                "--reuse-values",
                "--set",
                "logLevel=debug",
                "--set",
                "replicaCount=2",
                "--wait",
                "--timeout",
                "180s",
            ]),
    )?;
    let after = deployments.get(&name).await?;
    assert!(after.metadata.generation.unwrap_or_default() > gen_before);
    let pod_spec = after
        .spec
        .template
        .spec
        .as_ref()
        .context("deployment pod spec")?;
    let env_vars = pod_spec
        .containers
        .first()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    assert!(
        env_vars
            .iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug")),
        "{env_vars:?}"
    );
    let ready = after
        .status
        .and_then(|s| s.updated_replicas)
        .unwrap_or_default();
    assert!(ready >= 1);

    // Leader election: one of the two pods holds the Lease; kill it, another takes over.
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM_NS);
    let holder = || async {
        Ok::<_, anyhow::Error>(
            leases
                .get_opt(&name)
                .await?
                .and_then(|l| l.spec?.holder_identity),
        )
    };
    let operator_pods = || async {
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/name=clothjob-operator,app.kubernetes.io/instance={RELEASE}"
        ));
        Ok::<_, anyhow::Error>(
            pods.list(&lp)
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<_>>(),
        )
    };
    let leader = wait_for(
        "a leader pod",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let (Some(h), names) = (holder().await?, operator_pods().await?) else {
                return Ok(None);
            };
            Ok(names.into_iter().find(|n| h.starts_with(&format!("{n}-"))))
        },
    )
    .await?;
    assert!(operator_pods().await?.len() >= 2, "two replicas");
    pods.delete(
        &leader,
        &kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await?;
    let killed = std::time::Instant::now();
    let next = wait_for(
        "another leader",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            Ok(holder()
                .await?
                .filter(|h| !h.starts_with(&format!("{leader}-"))))
        },
    )
    .await?;
    let took = killed.elapsed();
    eprintln!(
        "leader {leader} killed; {next} leads after {:.1} s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(15), "took over after {took:?}");

    run_checked(
        "helm uninstall",
        cluster
            .helm(&helm_bin)?
            .args(["uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait"]),
    )?;
    assert!(deployments.get_opt(&name).await?.is_none());
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    assert!(
        crds.get_opt("clothjobs.closetconnect.io").await?.is_some(),
        "helm uninstall removed the CRD"
    );
    Ok(())
}

macro_rules! trial {
    ($f:ident) => {
        Trial::test(stringify!($f), || with_env($f))
    };
}

fn main() {
    let mut args = Arguments::from_args();
    // One node, and the last test changes the release: run them one after the other.
    args.test_threads = Some(1);
    let trials = vec![
        trial!(chart_operator_completes_a_clothjob_in_another_namespace),
        trial!(bad_input_fails_with_the_termination_message),
        trial!(an_absent_image_stays_pending_with_errimageneverpull),
        trial!(a_missing_secret_gives_createcontainerconfigerror),
        trial!(helm_test_runs_a_tiny_clothjob_to_completion),
        trial!(helm_upgrade_rolls_and_uninstall_keeps_the_crd),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    // Tear the cluster down (cgroups included) before exiting, whatever the outcome.
    if let Some(cell) = ENV.get()
        && let Ok(mut slot) = cell.lock()
    {
        slot.take();
    }
    conclusion.exit();
}
