//! The reconcile driver: observe → decide → apply → status, plus the controller's wiring.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use clothjob_api::{ClothJob, ReuseDecision, ReuseStatus, contract};
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::config::OperatorConfig;
use crate::decide::{Decision, Settings, decide, invalid_spec, operator_fields};
use crate::error::Error;
use crate::job::{build_job, job_name};
use crate::metrics::Metrics;
use crate::observe::{Caches, observe};
use crate::own_writes::OwnWrites;
use crate::queue::{self, Admission};

/// Shared state of the reconciler. Nothing here has to survive a restart: what matters is in
/// each ClothJob's status; the caches refill from the apiserver and the back-off counters
/// start again.
pub struct Context {
    /// Client of the operator's identity.
    pub client: Client,
    /// Settings.
    pub config: OperatorConfig,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Watch caches per controller scope (a namespace, or `*` for all).
    caches: RwLock<HashMap<String, Caches>>,
    /// Consecutive failed reconciles per ClothJob (for the exponential back-off).
    failures: Mutex<HashMap<String, u32>>,
    /// What this process did that its ClothJob cache may not show yet (admissions and
    /// finishes), so concurrent reconciles count slots right; dropped as the cache catches up.
    /// Lost on a restart, when the caches are listed afresh.
    overlay: Mutex<Overlay>,
    /// Per controller scope, the sender that makes the controller reconcile a ClothJob (wakes
    /// queued ClothJobs when a slot frees up).
    wake: Mutex<HashMap<String, mpsc::UnboundedSender<ClothJob>>>,
    /// Per (namespace, reuseKey), the ClothJob this process last let run the pipeline, so
    /// identical jobs reconciled before that decision reaches the cache wait for it. Lost on
    /// a restart: the decisions themselves are in each ClothJob's `status.reuse`.
    claims: Mutex<HashMap<(String, String), String>>,
    /// The operator's last status write per ClothJob, for reconciles that run before the
    /// cache shows it (see [`OwnWrites::view`]). Lost on a restart: at most one redundant
    /// write each.
    written: OwnWrites,
}

/// Claims kept before finished or vanished claimants are dropped.
const CLAIMS_PRUNE_AT: usize = 1024;

/// ClothJobs whose change the ClothJob cache may not show yet, by `namespace/name`.
#[derive(Default)]
struct Overlay {
    /// Admitted (their Job is being or was just created).
    started: HashSet<String>,
    /// Just finished (their terminal status was just written).
    finished: HashSet<String>,
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
            caches: RwLock::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            overlay: Mutex::new(Overlay::default()),
            wake: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
            written: OwnWrites::default(),
        }
    }

    /// `cj` with the operator's own last write while the cache lags behind it
    /// ([`OwnWrites::view`]), counted in `clothjob_reconcile_cache_behind_total`.
    fn own_view(&self, cj: Arc<ClothJob>) -> Arc<ClothJob> {
        let (cj, behind) = self.written.view(cj);
        if behind {
            self.metrics.cache_behind.inc();
        }
        cj
    }

    fn settings(&self) -> Settings {
        Settings {
            pending_timeout: Duration::from_secs(self.config.pending_timeout_seconds),
            default_ttl: self.config.default_ttl(),
        }
    }

    /// Every ClothJob of every scope's cache with its queue entry, the overlay applied (and
    /// pruned of what the cache now shows).
    fn entries(&self, overlay: &mut Overlay) -> Vec<(Arc<ClothJob>, queue::Entry)> {
        let Ok(map) = self.caches.read() else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for caches in map.values() {
            for cj in caches.clothjobs.state() {
                let k = key(&cj);
                let has_job = job_name(&cj).is_ok_and(|n| {
                    caches
                        .jobs
                        .get(&ObjectRef::new(&n).within(&cj.namespace().unwrap_or_default()))
                        .is_some()
                });
                let Some(mut e) = queue::entry(&cj, has_job || overlay.started.contains(&k)) else {
                    continue;
                };
                if cj.status.as_ref().is_some_and(|s| s.job_uid.is_some()) || e.finished {
                    overlay.started.remove(&k);
                }
                if queue::is_finished(&cj) {
                    overlay.finished.remove(&k);
                }
                e.finished |= overlay.finished.contains(&k);
                seen.insert(k);
                out.push((cj, e));
            }
        }
        overlay.started.retain(|k| seen.contains(k));
        overlay.finished.retain(|k| seen.contains(k));
        out
    }

    /// Admission of a ClothJob that has no Job yet; a `Start` is recorded in the overlay at
    /// once, so a concurrent reconcile of another ClothJob counts this one's slot.
    fn admit(&self, cj: &ClothJob) -> Admission {
        let limits = self.config.limits();
        if limits == queue::Limits::default() || queue::kueue_queue(cj).is_some() {
            return Admission::Start;
        }
        let Ok(mut overlay) = self.overlay.lock() else {
            return Admission::Start;
        };
        let mut entries: Vec<queue::Entry> = self
            .entries(&mut overlay)
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let (ns, name) = (cj.namespace().unwrap_or_default(), cj.name_any());
        if !entries.iter().any(|e| e.namespace == ns && e.name == name) {
            entries.extend(queue::entry(cj, false));
        }
        let admission = queue::admit(&ns, &name, &entries, limits);
        if admission == Admission::Start {
            overlay.started.insert(key(cj));
        }
        admission
    }

    /// Forgets an admission whose Job was not created (the next reconcile asks again).
    fn unadmit(&self, cj: &ClothJob) {
        if let Ok(mut overlay) = self.overlay.lock() {
            overlay.started.remove(&key(cj));
        }
    }

    /// A slot may be free (`finished` just finished, or a ClothJob was deleted): reconcile the
    /// queued ClothJobs that may take one now.
    fn wake_queue(&self, finished: Option<&ClothJob>) {
        let limits = self.config.limits();
        if limits == queue::Limits::default() {
            return;
        }
        let Ok(mut overlay) = self.overlay.lock() else {
            return;
        };
        if let Some(cj) = finished {
            overlay.finished.insert(key(cj));
        }
        let all = self.entries(&mut overlay);
        drop(overlay);
        let entries: Vec<queue::Entry> = all.iter().map(|(_, e)| e.clone()).collect();
        let starts = queue::startable(&entries, limits);
        let Ok(wake) = self.wake.lock() else {
            return;
        };
        for i in starts {
            let Some((next, _)) = all.get(i) else {
                continue;
            };
            let ns = next.namespace().unwrap_or_default();
            if let Some(tx) = wake.get(&ns).or_else(|| wake.get("*")) {
                tracing::debug!(namespace = %ns, clothjob = %next.name_any(), "waking a queued ClothJob");
                let _ = tx.unbounded_send((**next).clone());
            }
        }
    }

    /// `finished` is finished in the cache: the ClothJobs of its namespace waiting for an identical job
    /// (`status.reuse` decision `Wait` on its key) decide again now, not at their next
    /// `WAIT_RECHECK`.
    fn wake_waiters(&self, finished: &ClothJob, caches: &Caches) {
        let ns = finished.namespace().unwrap_or_default();
        let Ok(wake) = self.wake.lock() else {
            return;
        };
        let Some(tx) = wake.get(&ns).or_else(|| wake.get("*")) else {
            return;
        };
        let all = caches.clothjobs.state();
        for cj in crate::reuse::waiters(finished, all.iter().map(|c| &**c)) {
            tracing::debug!(namespace = %ns, clothjob = %cj.name_any(), "waking a duplicate's waiter");
            let _ = tx.unbounded_send(cj.clone());
        }
    }

    /// The reuse decision for a ClothJob whose runner reported a `reuseKey` (see
    /// [`crate::reuse`]), from the ClothJob cache and this process' claims; a decision to run
    /// makes it the key's claimant.
    fn reuse(&self, cj: &ClothJob, caches: &Caches) -> Option<ReuseStatus> {
        if self.config.reuse_window_seconds == 0 {
            return None;
        }
        let key = crate::reuse::reuse_key(cj)?.to_string();
        let ns = cj.namespace().unwrap_or_default();
        let all = caches.clothjobs.state();
        let mut claims = self.claims.lock().ok()?;
        let slot = (ns, key);
        let d = crate::reuse::decide_reuse(
            cj,
            all.iter().map(|c| c.as_ref()),
            claims.get(&slot).map(String::as_str),
            Duration::from_secs(self.config.reuse_window_seconds),
            Timestamp::now(),
        )?;
        if d.decision == ReuseDecision::Run {
            claims.insert(slot, cj.name_any());
        }
        if claims.len() > CLAIMS_PRUNE_AT {
            let alive: HashSet<(String, String)> = all
                .iter()
                .filter(|c| !queue::is_finished(c))
                .map(|c| (c.namespace().unwrap_or_default(), c.name_any()))
                .collect();
            claims.retain(|(ns, _), name| alive.contains(&(ns.clone(), name.clone())));
        }
        Some(d)
    }

    /// The caches of the scope that holds `namespace`.
    fn caches_for(&self, namespace: &str) -> Result<Caches, Error> {
        let map = self
            .caches
            .read()
            .map_err(|_| Error::MissingMetadata("watch cache"))?;
        map.get(namespace)
            .or_else(|| map.get("*"))
            .cloned()
            .ok_or(Error::MissingMetadata("watch cache"))
    }
}

/// The key of a ClothJob in the back-off table.
fn key(cj: &ClothJob) -> String {
    format!("{}/{}", cj.namespace().unwrap_or_default(), cj.name_any())
}

/// The trace id of a ClothJob's runner (see [`crate::job::traceparent`]), for the logs.
fn trace_id(cj: &ClothJob) -> String {
    let tp = crate::job::traceparent(cj, &cj.uid().unwrap_or_default());
    tp.get(3..35).unwrap_or_default().to_string()
}

/// Reconciles one ClothJob.
#[tracing::instrument(name = "reconcile", skip_all, fields(
    namespace = %cj.namespace().unwrap_or_default(),
    clothjob = %cj.name_any(),
    uid = %cj.uid().unwrap_or_default(),
    attempt = cj.status.as_ref().and_then(|s| s.attempts).unwrap_or(0),
    trace_id = %trace_id(&cj),
))]
pub async fn reconcile(cj: Arc<ClothJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    // With OTLP export on, this reconcile's span joins the ClothJob's trace (as its runner's).
    clothjob_telemetry::set_parent(
        &tracing::Span::current(),
        &crate::job::traceparent(&cj, &cj.uid().unwrap_or_default()),
    );
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    let ns = cj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let caches = ctx.caches_for(&ns)?;
    if !caches.is_synced() {
        // Until the Job, pod and Event caches have their first list, decide nothing.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let cj = ctx.own_view(cj);
    let mut observed = observe(&ctx.client, &caches, &cj).await?;
    let waits_for_a_slot = observed.job.is_none()
        && cj.status.as_ref().is_none_or(|s| s.job_uid.is_none())
        && !queue::is_finished(&cj)
        && !cj.spec.cancel
        && cj.metadata.deletion_timestamp.is_none();
    if waits_for_a_slot {
        observed.admission = ctx.admit(&cj);
    }
    if observed.job.is_some() {
        observed.reuse = ctx.reuse(&cj, &caches);
    }
    let name = job_name(&cj)?;
    let mut decision = decide(&cj, &observed, &ctx.settings(), &name, Timestamp::now());
    if decision
        .finished
        .as_ref()
        .is_some_and(|f| f.1 == "OutputsMissing")
    {
        // The ClothJob cache may lag (a watch recovering from an apiserver outage): confirm
        // with a live read before failing a job whose runner exited successfully.
        let api: Api<ClothJob> = Api::namespaced(ctx.client.clone(), &ns);
        let fresh = api
            .get(&cj.name_any())
            .await
            .map_err(|source| Error::Observe {
                what: "ClothJob",
                source,
            })?;
        decision = decide(&fresh, &observed, &ctx.settings(), &name, Timestamp::now());
    }
    let created = create(&cj, &decision, &ctx).await;
    if waits_for_a_slot && !matches!(created, Ok(Some(_))) {
        ctx.unadmit(&cj);
    }
    match created {
        Ok(Some(uid)) => {
            let mut status = decision
                .status
                .take()
                .unwrap_or_else(|| operator_fields(&cj.status.clone().unwrap_or_default()));
            status.job_uid = Some(uid);
            decision.status = Some(status);
        }
        Ok(None) => {}
        Err(e) => match e.permanent_reason() {
            Some(detail) => {
                tracing::warn!(namespace = %ns, name = %cj.name_any(), error = %e, "invalid spec");
                decision = invalid_spec(&cj, &name, &detail, &ctx.settings(), Timestamp::now());
            }
            None => return Err(e),
        },
    }
    write_status(&cj, &decision, &ctx).await?;
    if decision.finished.is_some() {
        // A slot is free: the queued ClothJobs that fit start now, not at their next recheck.
        ctx.wake_queue(Some(&cj));
    }
    if queue::is_finished(&cj) {
        // Seen finished in the cache (the waiters' reconciles read the same cache): a job
        // waiting for this one's outputs decides again now.
        ctx.wake_waiters(&cj, &caches);
    }
    cleanup(&cj, &decision, &name, &ctx).await?;
    publish(&cj, &decision, &ctx).await;
    // After the status write: each observation comes from a transition just written.
    ctx.metrics.record(&cj, &decision);
    ctx.metrics.reconciles.with_label_values(&["ok"]).inc();
    if let Ok(mut f) = ctx.failures.lock() {
        f.remove(&key(&cj));
    }
    let finished = decision.finished.is_some() || queue::is_finished(&cj);
    Ok(match (decision.requeue_after, finished) {
        // Finished: nothing changes by itself but the TTL; otherwise wait for a change.
        (Some(after), true) => Action::requeue(after),
        (None, true) => Action::await_change(),
        (Some(after), false) => {
            Action::requeue(after.min(Duration::from_secs(ctx.config.resync_seconds)))
        }
        (None, false) => Action::requeue(Duration::from_secs(ctx.config.resync_seconds)),
    })
}

/// Creates the runner Job (and the runner's access) when decided; returns the Job's uid.
async fn create(cj: &ClothJob, d: &Decision, ctx: &Context) -> Result<Option<String>, Error> {
    if !d.create_job || d.delete {
        return Ok(None);
    }
    let ns = cj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    // The operator's policy first (InvalidSpec creates nothing), then the per-job identity.
    crate::job::check_runner_policy(cj, &ctx.config)?;
    crate::access::ensure_runner_access(&ctx.client, cj).await?;
    let mut job = build_job(cj, &ctx.config)?;
    if let Some(q) = queue::kueue_queue(cj) {
        // Kueue admits it: created suspended with the queue label; never touched again.
        queue::hand_to_kueue(&mut job, &q);
    }
    let name = job.metadata.name.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let created = match jobs.create(&PostParams::default(), &job).await {
        Ok(j) => {
            tracing::info!(namespace = %ns, job = %name, "created Job");
            j
        }
        // Already there (a cache behind a create, a restart): the same Job, nothing to do.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            jobs.get(&name).await.map_err(|source| Error::Observe {
                what: "Job",
                source,
            })?
        }
        Err(source) => return Err(Error::CreateJob { name, source }),
    };
    Ok(created.metadata.uid)
}

/// After the status is written: deletes a Job whose ClothJob failed before its pod could
/// start, and a finished ClothJob whose TTL has passed.
async fn cleanup(cj: &ClothJob, d: &Decision, job: &str, ctx: &Context) -> Result<(), Error> {
    let ns = cj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    if d.delete_job && !d.delete {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        match jobs.delete(job, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(namespace = %ns, %job, "deleted the Job of a failed ClothJob"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::DeleteJob {
                    name: job.to_string(),
                    source,
                });
            }
        }
    }
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
        Ok(_) => {
            ctx.written.remember(cj, status);
            let old = operator_fields(&cj.status.clone().unwrap_or_default());
            ctx.metrics
                .status_writes
                .with_label_values(&[
                    crate::decide::write_change(&old, status),
                    status.phase.map_or("none", |p| p.as_str()),
                ])
                .inc();
            Ok(())
        }
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
            action: e.action.clone().unwrap_or_else(|| "Reconcile".into()),
            secondary: None,
        };
        match ctx.recorder.publish(&event, &reference).await {
            Ok(()) => ctx
                .metrics
                .events
                .with_label_values(&[crate::metrics::event_label(&e.reason)])
                .inc(),
            Err(err) => tracing::warn!(error = %err, reason = %e.reason, "publishing event"),
        }
    }
}

/// The back-off after `n` consecutive failed reconciles: 1 s doubling to at most 5 minutes.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

/// Transient errors back off exponentially per ClothJob; the first failure and every tenth
/// after it are also told to the user as a Warning Event (never silence).
fn error_policy(cj: Arc<ClothJob>, error: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key(&cj)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = backoff(n);
    tracing::warn!(%error, category = error.category(), failures = n, retry_in_s = delay.as_secs(), "reconcile failed");
    ctx.metrics.reconciles.with_label_values(&["error"]).inc();
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.category()])
        .inc();
    if n == 1 || n.is_multiple_of(10) {
        let event = Event {
            type_: EventType::Warning,
            reason: "ReconcileFailed".into(),
            note: Some(
                format!(
                    "{}: {error} (attempt {n}; retrying in {} s)",
                    error.category(),
                    delay.as_secs()
                )
                .chars()
                .take(1000)
                .collect(),
            ),
            action: "Reconcile".into(),
            secondary: None,
        };
        let reference = cj.object_ref(&());
        let recorder = ctx.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "publishing the error event");
            }
        });
    }
    Action::requeue(delay)
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

/// The ClothJob a Job belongs to (its controller owner reference).
fn owner_of(job: &Job) -> Option<ObjectRef<ClothJob>> {
    let owner = job
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "ClothJob")?;
    Some(ObjectRef::new(&owner.name).within(job.metadata.namespace.as_deref()?))
}

/// The ClothJob of a Job named in the same namespace, through the Job cache.
fn owner_via(
    jobs: &Store<Job>,
    namespace: Option<&str>,
    job: Option<&str>,
) -> Option<ObjectRef<ClothJob>> {
    let job = jobs.get(&ObjectRef::new(job?).within(namespace?))?;
    owner_of(&job)
}

/// Polls a store until its first list is in (the readiness signal wakes only its most recent
/// waiter, so wait in short rounds).
async fn synced<K: Resource + Clone + 'static>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
            Ok(Ok(())) => return true,
            Ok(Err(_)) => return false,
            Err(_) => {}
        }
    }
}

/// What the caches drop from every object before storing it: `managedFields` and kubectl's
/// `last-applied-configuration` copy, which nothing here reads and which are most of a small
/// object's size (the operator writes with server-side apply and never diffs them). At 1,000
/// ClothJobs with their Jobs and pods the caches dominate the operator's memory.
fn slim<K: ResourceExt>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// One controller over one namespace (`None`: all namespaces), fed by watch caches of the
/// operator's Jobs, their pods and the Job controller's FailedCreate Events.
async fn run_scope(
    ctx: Arc<Context>,
    scope: Option<String>,
    ready: Arc<AtomicBool>,
    unsynced: Arc<AtomicUsize>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (cjs, jobs, pods, events): (Api<ClothJob>, Api<Job>, Api<Pod>, Api<CoreEvent>) =
        match &scope {
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client),
            ),
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
        };
    let owned = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        contract::MANAGED_BY
    ));
    let failed_create =
        watcher::Config::default().fields("involvedObject.kind=Job,reason=FailedCreate");
    let (job_store, job_writer) = reflector::store::<Job>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (event_store, event_writer) = reflector::store::<CoreEvent>();
    let job_stream = watcher(jobs, owned.clone())
        .default_backoff()
        .modify(slim)
        .reflect(job_writer)
        .touched_objects();
    let pod_stream = watcher(pods, owned)
        .default_backoff()
        .modify(slim)
        .reflect(pod_writer)
        .touched_objects();
    let event_stream = watcher(events, failed_create)
        .default_backoff()
        .modify(slim)
        .reflect(event_writer)
        .touched_objects();
    let label = scope.clone().unwrap_or_else(|| "*".to_string());
    // The ClothJob watch as `Controller::new` makes it, but a deletion also wakes the queue
    // (a deleted ClothJob is never reconciled; its slot would wait for the queue's recheck).
    let (cj_store, cj_writer) = reflector::store::<ClothJob>();
    let on_delete = ctx.clone();
    let cj_stream = watcher(cjs, watcher::Config::default().any_semantic())
        .modify(slim)
        .reflect(cj_writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(_)) = event {
                on_delete.wake_queue(None);
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(cj_stream, cj_store.clone()).with_config(
        ControllerConfig::default()
            .concurrency(ctx.config.reconcile_concurrency)
            .debounce(Duration::from_millis(ctx.config.reconcile_debounce_ms)),
    );
    let (wake_tx, wake_rx) = mpsc::unbounded::<ClothJob>();
    if let Ok(mut wake) = ctx.wake.lock() {
        wake.insert(label.clone(), wake_tx);
    }
    let synced_flag = Arc::new(AtomicBool::new(false));
    if let Ok(mut map) = ctx.caches.write() {
        map.insert(
            label.clone(),
            Caches {
                clothjobs: cj_store.clone(),
                jobs: job_store.clone(),
                pods: pod_store.clone(),
                failed_create: event_store.clone(),
                synced: synced_flag.clone(),
            },
        );
    }
    ctx.metrics.watch(&label, cj_store.clone());
    let (for_pods, for_events) = (job_store.clone(), job_store.clone());
    let controller = controller
        .owns_stream(job_stream)
        .watches_stream(pod_stream, move |pod: Pod| {
            let job = pod
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.iter().find(|o| o.kind == "Job"))
                .map(|o| o.name.clone());
            owner_via(&for_pods, pod.metadata.namespace.as_deref(), job.as_deref())
        })
        .watches_stream(event_stream, move |e: CoreEvent| {
            owner_via(
                &for_events,
                e.involved_object.namespace.as_deref(),
                e.involved_object.name.as_deref(),
            )
        })
        .watches_stream(
            wake_rx.map(Ok::<ClothJob, watcher::Error>),
            |cj: ClothJob| Some(ObjectRef::from_obj(&cj)),
        );
    tokio::spawn(async move {
        let all = synced(&cj_store).await
            && synced(&job_store).await
            && synced(&pod_store).await
            && synced(&event_store).await;
        if all {
            synced_flag.store(true, Ordering::Release);
            tracing::info!(namespace = %label, "caches synced");
            if unsynced.fetch_sub(1, Ordering::AcqRel) == 1 {
                ready.store(true, Ordering::Relaxed);
                tracing::info!("caches synced; ready");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_from_one_second_to_five_minutes() {
        let secs: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(0).as_secs(), 1);
        assert!(backoff(u32::MAX) <= Duration::from_secs(300));
    }

    #[test]
    fn cached_objects_drop_managed_fields_and_the_last_applied_copy_only() {
        let mut cj: ClothJob = serde_yaml::from_str(
            "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata:\n  name: a\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '{\"big\": 1}'\n    keep: 'yes'\n  managedFields:\n  - manager: kubectl\n    operation: Apply\nspec:\n  source: {url: 'https://example.invalid/a.jpg'}\n  output: {uri: 's3://b/out'}\n",
        )
        .unwrap();
        assert_eq!(cj.managed_fields().len(), 1);
        slim(&mut cj);
        assert!(cj.managed_fields().is_empty());
        assert_eq!(
            cj.annotations().keys().collect::<Vec<_>>(),
            ["keep"],
            "only kubectl's copy goes"
        );
        assert_eq!(
            cj.spec.source.url.as_deref(),
            Some("https://example.invalid/a.jpg")
        );
    }
}
