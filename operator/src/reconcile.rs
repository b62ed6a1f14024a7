//! The reconcile driver: observe → decide → apply → status, plus the controller's wiring.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clothjob_api::{ClothJob, Phase, contract};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::config::OperatorConfig;
use crate::decide::{Decision, decide};
use crate::error::Error;
use crate::job::{build_job, job_name};
use crate::metrics::Metrics;
use crate::observe::observe;

/// Shared state of the reconciler.
pub struct Context {
    /// Client of the operator's identity.
    pub client: Client,
    /// Settings.
    pub config: OperatorConfig,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Stage completions already announced as Events (uid/attempt/stage).
    announced: Mutex<BTreeSet<String>>,
    /// Namespaces whose runner service account and RoleBinding are in place.
    runner_access: Mutex<HashSet<String>>,
}

impl Context {
    /// A context for the given client and settings.
    pub fn new(client: Client, config: OperatorConfig, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: contract::MANAGED_BY.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            announced: Mutex::new(BTreeSet::new()),
            runner_access: Mutex::new(HashSet::new()),
        }
    }
}

/// Reconciles one ClothJob.
pub async fn reconcile(cj: Arc<ClothJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let observed = observe(&ctx.client, &cj).await?;
    let name = job_name(&cj)?;
    let announced = ctx.announced.lock().map(|a| a.clone()).unwrap_or_default();
    let decision = decide(&cj, &observed, &announced, &name, Timestamp::now());
    apply(&cj, &decision, &ctx).await?;
    write_status(&cj, &decision, &ctx).await?;
    publish(&cj, &decision, &ctx).await;
    record(&decision, &ctx);
    ctx.metrics.reconciles.with_label_values(&["ok"]).inc();
    Ok(match decision.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::requeue(Duration::from_secs(ctx.config.resync_seconds)),
    })
}

/// Apply: create the Job (and the runner's access) or delete an expired ClothJob.
async fn apply(cj: &ClothJob, d: &Decision, ctx: &Context) -> Result<(), Error> {
    let ns = cj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    if d.delete {
        let api: Api<ClothJob> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .delete(&cj.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::DeleteExpired(e)),
        }
        return Ok(());
    }
    if d.create_job {
        if cj.spec.runner.service_account_name.is_none() {
            ensure_runner_access(&ns, ctx).await?;
        }
        let job = build_job(cj, &ctx.config)?;
        let name = job.metadata.name.clone().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => tracing::info!(namespace = %ns, job = %name, "created Job"),
            // Already there (a duplicate event, a restart): the same Job, nothing to do.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => return Err(Error::CreateJob { name, source }),
        }
    }
    Ok(())
}

/// Keeps the default runner service account and its RoleBinding in a namespace.
async fn ensure_runner_access(ns: &str, ctx: &Context) -> Result<(), Error> {
    if ctx
        .runner_access
        .lock()
        .map(|s| s.contains(ns))
        .unwrap_or(false)
    {
        return Ok(());
    }
    let sa_name = &ctx.config.runner_service_account;
    let labels = serde_json::json!({
        "app.kubernetes.io/name": contract::APP_NAME,
        "app.kubernetes.io/managed-by": contract::MANAGED_BY,
    });
    let sa = serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": sa_name, "namespace": ns, "labels": labels },
    });
    let rb = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": sa_name, "namespace": ns, "labels": labels },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ctx.config.runner_cluster_role },
        "subjects": [{ "kind": "ServiceAccount", "name": sa_name, "namespace": ns }],
    });
    let pp = PatchParams::apply(contract::OPERATOR_MANAGER).force();
    let err = |source| Error::EnsureRunnerAccess {
        namespace: ns.to_string(),
        source,
    };
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(ctx.client.clone(), ns);
    sas.patch(sa_name, &pp, &Patch::Apply(&sa))
        .await
        .map_err(err)?;
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(ctx.client.clone(), ns);
    rbs.patch(sa_name, &pp, &Patch::Apply(&rb))
        .await
        .map_err(err)?;
    if let Ok(mut s) = ctx.runner_access.lock() {
        s.insert(ns.to_string());
    }
    Ok(())
}

/// Status: applies the operator's fields with its own field manager.
async fn write_status(cj: &ClothJob, d: &Decision, ctx: &Context) -> Result<(), Error> {
    let (Some(status), false) = (&d.status, d.delete) else {
        return Ok(());
    };
    let ns = cj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<ClothJob> = Api::namespaced(ctx.client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": ClothJob::api_version(&()),
        "kind": ClothJob::kind(&()),
        "status": status,
    });
    let pp = PatchParams::apply(contract::OPERATOR_MANAGER).force();
    match api
        .patch_status(&cj.name_any(), &pp, &Patch::Apply(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::ApplyStatus(e)),
    }
}

/// Publishes the decided Events (best effort: a lost Event never fails a reconcile).
async fn publish(cj: &ClothJob, d: &Decision, ctx: &Context) {
    let reference = cj.object_ref(&());
    for e in &d.events {
        let event = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.clone(),
            note: Some(e.note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %err, reason = %e.reason, "publishing event");
        }
    }
    if let Ok(mut a) = ctx.announced.lock() {
        a.extend(d.announced.iter().cloned());
    }
}

/// Records finished jobs and their stage timings.
fn record(d: &Decision, ctx: &Context) {
    if let Some((phase, reason, secs)) = &d.finished {
        let result = if *phase == Phase::Succeeded {
            "succeeded"
        } else {
            "failed"
        };
        ctx.metrics
            .jobs_finished
            .with_label_values(&[result, reason])
            .inc();
        ctx.metrics
            .job_duration
            .with_label_values(&[result])
            .observe(*secs);
    }
    for t in &d.timings {
        ctx.metrics
            .stage_duration
            .with_label_values(&[&t.stage, &t.backend])
            .observe(t.seconds);
    }
}

fn error_policy(_cj: Arc<ClothJob>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, category = error.category(), "reconcile failed");
    ctx.metrics.reconciles.with_label_values(&["error"]).inc();
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.category()])
        .inc();
    Action::requeue(Duration::from_secs(5))
}

/// Runs the controller until `shutdown` resolves; sets `ready` once caches are synced.
///
/// With no namespaces configured one controller watches the whole cluster; with a list, one
/// controller per namespace watches only that namespace (so namespaced Roles suffice), all
/// sharing the context, and `ready` waits for every one of them.
pub async fn run_controller(
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let namespaces = ctx.config.namespaces();
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    tracing::info!(
        namespaces = ?scopes.iter().flatten().collect::<Vec<_>>(),
        "watching ClothJobs (all namespaces when none are listed)"
    );
    let unsynced = Arc::new(AtomicUsize::new(scopes.len()));
    let shutdown = shutdown.shared();
    futures::future::join_all(scopes.into_iter().map(|scope| {
        run_scope(
            ctx.clone(),
            scope,
            ready.clone(),
            unsynced.clone(),
            shutdown.clone(),
        )
    }))
    .await;
}

/// One controller over one namespace (`None`: all namespaces).
async fn run_scope(
    ctx: Arc<Context>,
    scope: Option<String>,
    ready: Arc<AtomicBool>,
    unsynced: Arc<AtomicUsize>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (cjs, jobs): (Api<ClothJob>, Api<Job>) = match &scope {
        None => (Api::all(client.clone()), Api::all(client)),
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
    };
    let owned = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        contract::MANAGED_BY
    ));
    let controller =
        Controller::new(cjs, watcher::Config::default().any_semantic()).owns(jobs, owned);
    let store = controller.store();
    let label = scope.clone().unwrap_or_else(|| "*".to_string());
    tokio::spawn(async move {
        // The store's readiness signal wakes only its most recent waiter (the controller's
        // own), so poll it again every so often instead of waiting once.
        loop {
            match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    tracing::info!(namespace = %label, "cache synced");
                    if unsynced.fetch_sub(1, Ordering::AcqRel) == 1 {
                        ready.store(true, Ordering::Relaxed);
                        tracing::info!("caches synced; ready");
                    }
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(object = %obj.name, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
}
