//! Writes the runner's status fields to the ClothJob with server-side apply, coalescing
//! changes to at most one write per interval (the reuse key the operator decides on goes out at
//! once). Writes carrying a stage boundary, and the final state, are retried with exponential back-off ([`Backoff`]) through an apiserver outage;
//! other progress writes are best effort.
//!
//! A write never lands in a re-created ClothJob of the same name: the status subresource
//! ignores `metadata.uid` in an apply body (it is sent anyway), so every write is
//! preconditioned on a `resourceVersion` of the object whose uid was checked to be this
//! runner's (the one the last write returned, else a fresh read). If anything changed the
//! object since, the apiserver answers 409 and the uid is checked again.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clothjob_api::{ClothJob, ClothJobStatus, contract};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::progress::{RunState, Update};

/// How long one request to the apiserver may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// When to write: pure policy over time. A run starts as if it had just written (its first
/// state waits too), so a run shorter than the interval makes one write, its final state.
#[derive(Clone, Debug)]
pub struct WritePolicy {
    interval: Duration,
    last: Instant,
}

impl WritePolicy {
    /// At most one write per `interval`, counted from `start`, except urgent ones.
    pub fn new(interval: Duration, start: Instant) -> Self {
        Self {
            interval,
            last: start,
        }
    }

    /// When `update`, arriving at `now`, goes out unless a later one replaces it (the state is
    /// cumulative: the later one holds all of it). An urgent update goes out at once; a
    /// boundary waits [`BOUNDARY_FOLD`] for the next stage's start; nothing goes out sooner
    /// than `interval` after the last write. `held` is when the update it replaces was due: the
    /// replacement is never later.
    pub fn due(&self, now: Instant, update: &Update, held: Option<Instant>) -> Instant {
        let due = if update.urgent {
            now
        } else if update.boundary {
            (now + BOUNDARY_FOLD).max(self.last + self.interval)
        } else {
            now.max(self.last + self.interval)
        };
        held.map_or(due, |h| h.min(due))
    }

    /// Records a write at `now`.
    pub fn wrote(&mut self, now: Instant) {
        self.last = now;
    }
}

/// Exponential back-off between tries of one call: `first`, doubling, at most `max`, until
/// `budget` has passed since the first try. Deterministic (no jitter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How long after the first try no new try starts.
    pub budget: Duration,
}

impl Backoff {
    /// Reading the ClothJob and the writes that must land (stage boundaries, the final state):
    /// 200 ms doubling to 10 s, for 2 minutes: rides out an apiserver restart.
    pub const MUST_LAND: Backoff = Backoff {
        first: Duration::from_millis(200),
        max: Duration::from_secs(10),
        budget: Duration::from_secs(120),
    };
    /// The last word of an interrupted runner: it has a few seconds before SIGKILL.
    pub const INTERRUPTED: Backoff = Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(1),
        budget: Duration::from_secs(4),
    };

    /// The wait before retry number `retry` (0 = the first retry) when `elapsed` has passed
    /// since the first try, or `None` once the budget is spent. A wait never reaches past the
    /// budget: the last try starts when it ends.
    pub fn delay(&self, retry: u32, elapsed: Duration) -> Option<Duration> {
        let left = self.budget.checked_sub(elapsed).filter(|d| !d.is_zero())?;
        let doubled = 1u32
            .checked_shl(retry)
            .and_then(|factor| self.first.checked_mul(factor))
            .unwrap_or(self.max);
        Some(doubled.min(self.max).min(left))
    }
}

/// A call to the apiserver that failed for good, named after what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    /// The ClothJob is gone (404), or was deleted and re-created under the same name (the uid
    /// precondition failed): this runner must not touch it.
    #[error("{0}")]
    Gone(String),
    /// The apiserver refused the request itself (a 4xx other than the above): retrying the
    /// same request cannot help.
    #[error("{what}: rejected: {source}")]
    Rejected {
        /// What was being done.
        what: String,
        /// The apiserver's answer.
        #[source]
        source: CallError,
    },
    /// The apiserver did not answer usefully for the whole back-off budget.
    #[error("{what}: no success in {attempts} attempt(s) over {secs} s; last error: {last}")]
    Unavailable {
        /// What was being done.
        what: String,
        /// Tries made.
        attempts: u32,
        /// Seconds from the first try to giving up.
        secs: u64,
        /// The last failure.
        last: String,
    },
}

/// What a failed call means for the next try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The object is gone or was replaced: stop.
    Gone,
    /// The request is wrong: stop.
    Rejected,
    /// The apiserver is unavailable, overloaded or not ready yet: try again.
    Retry,
}

/// The verdict on an apiserver answer with HTTP `code` and `message`. 401 and 403 are
/// retried: after an apiserver restart, or right after the runner's Role was created, the
/// authorizer may not know the runner yet.
pub fn verdict(code: u16, message: &str) -> Verdict {
    match code {
        404 | 410 => Verdict::Gone,
        409 if message.contains("Precondition failed: UID") => Verdict::Gone,
        401 | 403 | 408 | 409 | 429 => Verdict::Retry,
        500..=599 => Verdict::Retry,
        _ => Verdict::Rejected,
    }
}

/// One failed try of a call to the apiserver.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The ClothJob of that name has another uid than this runner's.
    #[error("Precondition failed: UID in precondition: {ours}, UID in object meta: {theirs}")]
    Replaced {
        /// This runner's uid.
        ours: String,
        /// The uid of the object there now.
        theirs: String,
    },
    /// The client or the apiserver failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

impl CallError {
    fn verdict(&self) -> Verdict {
        match self {
            CallError::Replaced { .. } => Verdict::Gone,
            CallError::Kube(kube::Error::Api(s)) => verdict(s.code, &s.message),
            // Connection refused or reset, TLS, time-outs, a body cut short: the apiserver
            // is not (yet) there.
            CallError::Kube(_) => Verdict::Retry,
        }
    }
}

/// Runs `call` until it succeeds, retrying what [`verdict`] calls retryable with `backoff`;
/// each try is limited to [`REQUEST_TIMEOUT`]. `what` names the call in logs and errors;
/// `gone` describes the ClothJob when the answer says it is gone or replaced.
pub async fn with_backoff<T, F, Fut>(
    what: &str,
    gone: &str,
    backoff: Backoff,
    mut call: F,
) -> Result<T, ApiCallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let started = tokio::time::Instant::now();
    let mut retry = 0u32;
    loop {
        let last = match tokio::time::timeout(REQUEST_TIMEOUT, call()).await {
            Ok(Ok(v)) => {
                if retry > 0 {
                    tracing::info!(what, tries = retry + 1, "apiserver call succeeded");
                }
                return Ok(v);
            }
            Ok(Err(e)) => match e.verdict() {
                Verdict::Gone => {
                    tracing::error!(what, error = %e, "the ClothJob is gone or was replaced");
                    return Err(ApiCallError::Gone(format!("{gone}: {e}")));
                }
                Verdict::Rejected => {
                    return Err(ApiCallError::Rejected {
                        what: what.to_string(),
                        source: e,
                    });
                }
                Verdict::Retry => e.to_string(),
            },
            Err(_) => format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
        };
        let Some(delay) = backoff.delay(retry, started.elapsed()) else {
            return Err(ApiCallError::Unavailable {
                what: what.to_string(),
                attempts: retry + 1,
                secs: started.elapsed().as_secs(),
                last,
            });
        };
        tracing::warn!(
            what,
            error = %last,
            retry_in_ms = delay.as_millis() as u64,
            "apiserver call failed; retrying"
        );
        tokio::time::sleep(delay).await;
        retry += 1;
    }
}

/// The ClothJob whose status this runner writes: namespace, name and uid, and the
/// `resourceVersion` of the object last seen with that uid (shared by clones).
#[derive(Clone)]
pub struct StatusTarget {
    api: Api<ClothJob>,
    name: String,
    uid: String,
    checked: Arc<Mutex<Option<String>>>,
}

/// How many times one write re-reads the object after a 409 (another writer came first)
/// before that counts as a failed try.
const CONFLICT_TRIES: usize = 4;

impl StatusTarget {
    /// The ClothJob `name` with `uid` in `api`'s namespace.
    pub fn new(api: Api<ClothJob>, name: impl Into<String>, uid: impl Into<String>) -> Self {
        Self {
            api,
            name: name.into(),
            uid: uid.into(),
            checked: Arc::default(),
        }
    }

    /// The ClothJob's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ClothJob's uid.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    fn describe(&self) -> String {
        let ns = self.api.namespace().unwrap_or_default();
        format!("{ns}/{} (uid {})", self.name, self.uid)
    }

    fn checked(&self) -> Option<String> {
        self.checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_checked(&self, rv: Option<String>) {
        *self.checked.lock().unwrap_or_else(PoisonError::into_inner) = rv;
    }

    /// The resourceVersion of the object there now, if it has this runner's uid; another
    /// uid is [`CallError::Replaced`].
    async fn check(&self) -> Result<String, CallError> {
        let meta = self.api.get_metadata(&self.name).await?.metadata;
        match meta.uid {
            Some(uid) if uid == self.uid => Ok(meta.resource_version.unwrap_or_default()),
            other => Err(CallError::Replaced {
                ours: self.uid.clone(),
                theirs: other.unwrap_or_default(),
            }),
        }
    }

    /// One server-side apply of `status` (runner fields only) with the runner's field
    /// manager, preconditioned on the resourceVersion of an object with this runner's uid
    /// (re-read and re-checked after a 409).
    pub async fn apply(&self, status: &ClothJobStatus) -> Result<(), CallError> {
        let pp = PatchParams::apply(contract::RUNNER_MANAGER).force();
        let mut tries = 0;
        loop {
            let rv = match self.checked() {
                Some(rv) => rv,
                None => self.check().await?,
            };
            let body = apply_body(&self.name, &self.uid, Some(&rv), status);
            match self
                .api
                .patch_status(&self.name, &pp, &Patch::Apply(&body))
                .await
            {
                Ok(cj) => {
                    self.set_checked(cj.metadata.resource_version);
                    return Ok(());
                }
                Err(e) => {
                    // Whatever happened, check the object again before the next write.
                    self.set_checked(None);
                    tries += 1;
                    let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
                    if !conflict || tries >= CONFLICT_TRIES {
                        return Err(e.into());
                    }
                }
            }
        }
    }

    /// [`apply`](Self::apply), retried with `backoff`.
    pub async fn apply_retrying(
        &self,
        status: &ClothJobStatus,
        backoff: Backoff,
    ) -> Result<(), ApiCallError> {
        let gone = self.describe();
        with_backoff("writing the status", &gone, backoff, || self.apply(status)).await
    }

    /// Reads the ClothJob, retried with `backoff`; a missing ClothJob or one with another uid
    /// is [`ApiCallError::Gone`].
    pub async fn read(&self, backoff: Backoff) -> Result<ClothJob, ApiCallError> {
        let gone = self.describe();
        let cj = with_backoff("reading the ClothJob", &gone, backoff, || async {
            Ok(self.api.get_opt(&self.name).await?)
        })
        .await?
        .ok_or_else(|| ApiCallError::Gone(format!("{gone} no longer exists")))?;
        match cj.metadata.uid.as_deref() {
            Some(uid) if uid == self.uid => {
                self.set_checked(cj.metadata.resource_version.clone());
                Ok(cj)
            }
            other => Err(ApiCallError::Gone(format!(
                "{gone} was replaced by a new object (uid {})",
                other.unwrap_or("none")
            ))),
        }
    }
}

/// The server-side-apply body of a status write: the runner's fields, `metadata.uid`, and
/// `metadata.resourceVersion` when given (the apiserver then applies the body only to that
/// version of the object, else answers 409 Conflict).
pub fn apply_body(
    name: &str,
    uid: &str,
    resource_version: Option<&str>,
    status: &ClothJobStatus,
) -> serde_json::Value {
    let mut metadata = serde_json::json!({ "name": name, "uid": uid });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = rv.into();
    }
    serde_json::json!({
        "apiVersion": ClothJob::api_version(&()),
        "kind": ClothJob::kind(&()),
        "metadata": metadata,
        "status": status,
    })
}

/// The last state the writer was given (written or not), for a last word on interruption.
#[derive(Clone, Debug, Default)]
pub struct Latest(Arc<Mutex<Option<RunState>>>);

impl Latest {
    /// Records `state`.
    pub fn set(&self, state: &RunState) {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *guard = Some(state.clone());
    }

    /// The last state recorded, if any.
    pub fn get(&self) -> Option<RunState> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How long a stage boundary is held for what follows it at once (the end of one stage and the
/// start of the next, a backend's detail), which then goes out in the same write.
pub const BOUNDARY_FOLD: Duration = Duration::from_millis(20);

/// The two kinds of status write the loop makes; [`StatusTarget`] is the real one.
pub trait StatusSink {
    /// A write that must land: retried with [`Backoff::MUST_LAND`].
    fn must_land(
        &self,
        status: &ClothJobStatus,
    ) -> impl Future<Output = Result<(), ApiCallError>> + Send;
    /// One best-effort try.
    fn try_once(
        &self,
        status: &ClothJobStatus,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// The ClothJob, for messages.
    fn describe(&self) -> String;
}

impl StatusSink for StatusTarget {
    async fn must_land(&self, status: &ClothJobStatus) -> Result<(), ApiCallError> {
        self.apply_retrying(status, Backoff::MUST_LAND).await
    }
    async fn try_once(&self, status: &ClothJobStatus) -> Result<(), CallError> {
        self.apply(status).await
    }
    fn describe(&self) -> String {
        StatusTarget::describe(self)
    }
}

/// An update waiting to be written.
struct Held {
    state: RunState,
    /// Whether it carries a boundary (it must land then).
    must: bool,
    /// When it goes out unless replaced.
    due: Instant,
}

/// Writes updates until the channel closes, at most one per `interval` ([`WritePolicy`]): each
/// write carries the newest state, so the progress values of stages shorter than the interval
/// are never shown on their own (their timings are in every later write). Writes carrying a
/// boundary, and the final state, are retried with [`Backoff::MUST_LAND`]; if one of them
/// cannot be written, or the ClothJob is gone, the writer stops with that error (the run must
/// not end as if its status were recorded). Other writes are best effort. Returns the number of
/// writes.
pub async fn write_updates(
    target: impl StatusSink,
    mut rx: UnboundedReceiver<Update>,
    interval: Duration,
    latest: Latest,
) -> Result<usize, ApiCallError> {
    let mut policy = WritePolicy::new(interval, Instant::now());
    let mut held: Option<Held> = None;
    // The newest state whose best-effort write failed (a later write supersedes it).
    let mut unwritten: Option<RunState> = None;
    let mut writes = 0;
    loop {
        let next = match &held {
            Some(h) if h.due <= Instant::now() => None,
            Some(h) => {
                tokio::select! {
                    u = rx.recv() => Some(u),
                    _ = tokio::time::sleep_until(h.due) => None,
                }
            }
            None => Some(rx.recv().await),
        };
        let out = match next {
            // The held update is due.
            None => held.take(),
            Some(Some(u)) => {
                latest.set(&u.state);
                let due = policy.due(Instant::now(), &u, held.as_ref().map(|h| h.due));
                let must = u.boundary || held.as_ref().is_some_and(|h| h.must);
                held = Some(Held {
                    state: u.state,
                    must,
                    due,
                });
                continue;
            }
            // Channel closed: the last state must be written, then stop.
            Some(None) => {
                let last = held.take().map(|h| h.state).or(unwritten.take());
                if let Some(state) = last {
                    target.must_land(&state.to_status()).await?;
                    writes += 1;
                }
                return Ok(writes);
            }
        };
        let Some(h) = out else { continue };
        let status = h.state.to_status();
        if h.must {
            target.must_land(&status).await?;
            unwritten = None;
            writes += 1;
        } else {
            match tokio::time::timeout(REQUEST_TIMEOUT, target.try_once(&status)).await {
                Ok(Ok(())) => {
                    unwritten = None;
                    writes += 1;
                }
                Ok(Err(e)) if e.verdict() == Verdict::Gone => {
                    return Err(ApiCallError::Gone(format!("{}: {e}", target.describe())));
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "writing progress (best effort)");
                    unwritten = Some(h.state);
                }
                Err(_) => {
                    tracing::warn!("writing progress (best effort): no answer");
                    unwritten = Some(h.state);
                }
            }
        }
        policy.wrote(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(boundary: bool, urgent: bool) -> Update {
        Update {
            state: RunState::new(),
            boundary,
            urgent,
        }
    }

    #[test]
    fn only_urgent_updates_go_out_sooner_than_the_interval_after_the_last_write() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut p = WritePolicy::new(ms(1000), t0);
        // The first state waits too: a run shorter than the interval writes once, at its end.
        assert_eq!(p.due(t0, &update(false, false), None), t0 + ms(1000));
        assert_eq!(p.due(t0, &update(true, false), None), t0 + ms(1000));
        assert_eq!(p.due(t0 + ms(5), &update(true, true), None), t0 + ms(5));
        p.wrote(t0 + ms(5));
        // Long after the last write: a change at once, a boundary after the fold.
        let later = t0 + ms(3000);
        assert_eq!(p.due(later, &update(false, false), None), later);
        assert_eq!(
            p.due(later, &update(true, false), None),
            later + BOUNDARY_FOLD
        );
        // What replaces a held update is never due later than it.
        assert_eq!(
            p.due(
                later + ms(15),
                &update(true, false),
                Some(later + BOUNDARY_FOLD)
            ),
            later + BOUNDARY_FOLD
        );
    }

    #[test]
    fn a_thousand_updates_in_one_second_make_at_most_two_writes() {
        let t0 = Instant::now();
        let mut p = WritePolicy::new(Duration::from_millis(500), t0);
        let (mut writes, mut held) = (0, None);
        for i in 0..1000 {
            let now = t0 + Duration::from_millis(i);
            if held.is_some_and(|h| h <= now) {
                p.wrote(now);
                writes += 1;
                held = None;
            }
            held = Some(p.due(now, &update(i % 7 == 0, false), held));
        }
        assert_eq!(writes, 1, "{writes} writes");
        assert!(held.is_some(), "the last state is still to be written");
    }

    /// A sink that records what was written: (progress, stage, must land).
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(i32, String, bool)>>>);

    impl Recorder {
        fn push(&self, s: &ClothJobStatus, must: bool) {
            self.0.lock().unwrap().push((
                s.progress.unwrap_or(-1),
                s.stage.clone().unwrap_or_default(),
                must,
            ));
        }
        fn writes(&self) -> Vec<(i32, String, bool)> {
            self.0.lock().unwrap().clone()
        }
    }

    impl StatusSink for Recorder {
        async fn must_land(&self, status: &ClothJobStatus) -> Result<(), ApiCallError> {
            self.push(status, true);
            Ok(())
        }
        async fn try_once(&self, status: &ClothJobStatus) -> Result<(), CallError> {
            self.push(status, false);
            Ok(())
        }
        fn describe(&self) -> String {
            "ns/a".into()
        }
    }

    use crate::progress::ChannelSink;
    use clothjob_pipeline::{ProgressSink, StageName};

    const STAGES: [StageName; 4] = [
        StageName::BackgroundRemoval,
        StageName::Segmentation,
        StageName::Expansion,
        StageName::Encoding,
    ];

    /// A writer at a 500 ms interval recording into a [`Recorder`], fed by a fresh sink.
    fn spawn_writer() -> (
        ChannelSink,
        Recorder,
        tokio::task::JoinHandle<Result<usize, ApiCallError>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let rec = Recorder::default();
        let writer = tokio::spawn(write_updates(
            rec.clone(),
            rx,
            Duration::from_millis(500),
            Latest::default(),
        ));
        (ChannelSink::new(RunState::new(), tx), rec, writer)
    }

    /// A whole run as the runner reports it, with `gap` inside each stage and `fractions`
    /// progress reports spread over it.
    async fn a_run(gap: Duration, fractions: u32) -> (Vec<(i32, String, bool)>, usize) {
        let (mut sink, rec, writer) = spawn_writer();
        sink.send(true);
        sink.change_now(|s| s.reuse_key = Some("k".into()));
        for st in STAGES {
            sink.stage_started(st, "builtin");
            for i in 1..=fractions {
                tokio::time::sleep(gap / (fractions + 1)).await;
                sink.stage_progress(st, f64::from(i) / f64::from(fractions + 1));
            }
            tokio::time::sleep(gap / (fractions + 1)).await;
            sink.stage_finished(st, "builtin", gap);
        }
        sink.change(true, |s| s.started(Stage::Storing, "objectStore"));
        sink.change(true, |s| {
            s.finished(Stage::Storing, "objectStore", Duration::from_millis(3))
        });
        sink.change(true, RunState::done);
        drop(sink);
        let n = writer.await.unwrap().unwrap();
        (rec.writes(), n)
    }

    use clothjob_api::progress::Stage;

    fn progresses(w: &[(i32, String, bool)]) -> Vec<i32> {
        w.iter().map(|(p, _, _)| *p).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_run_writes_its_reuse_key_and_its_final_state_only() {
        let (w, n) = a_run(Duration::ZERO, 0).await;
        // Was 13 writes (every start and end on its own), then 6 (one per progress value).
        assert_eq!(progresses(&w), [0, 100], "{w:?}");
        assert_eq!(n, w.len());
        assert!(w.iter().all(|(_, _, must)| *must), "{w:?}");
        assert_eq!(w.last().unwrap().1, "done");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_run_shows_each_stage_running_and_every_boundary() {
        let (w, _) = a_run(Duration::from_secs(2), 0).await;
        // The reuse key at once, then each stage of 2 s (storing took 3 ms: folded into done).
        assert_eq!(progresses(&w), [0, 0, 30, 45, 95, 100], "{w:?}");
        // Each stage is seen running: the stage end and the next start went out together.
        let stages: Vec<&str> = w.iter().map(|(_, s, _)| s.as_str()).collect();
        assert_eq!(
            stages,
            [
                "fetching",
                "backgroundRemoval",
                "segmentation",
                "expansion",
                "encoding",
                "done"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn progress_within_a_stage_is_written_at_most_every_interval() {
        let (w, _) = a_run(Duration::from_secs(3), 300).await;
        let p = progresses(&w);
        assert!(p.windows(2).all(|x| x[0] <= x[1]), "{p:?}");
        assert_eq!(p.last(), Some(&100), "{p:?}");
        // Each 3 s stage is seen running (the boundaries themselves may be passed over).
        for stage in ["backgroundRemoval", "segmentation", "expansion", "encoding"] {
            assert!(
                w.iter().any(|(_, s, _)| s == stage),
                "{stage} missing: {w:?}"
            );
        }
        // 12 s of run at one write per 500 ms at most, plus the reuse key and the final state.
        assert!(w.len() <= 24 + 2, "{} writes: {p:?}", w.len());
        assert!(w.iter().filter(|(_, _, must)| !must).count() >= 10, "{w:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_of_boundaries_is_written_once_per_interval() {
        let (mut sink, rec, writer) = spawn_writer();
        let t0 = Instant::now();
        let mut first_seen = None;
        for i in 0..100 {
            // A detail every 10 ms, all at progress 0.
            sink.change(true, |s| {
                s.detail(Stage::BackgroundRemoval, "builtin", &format!("try {i}"))
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
            if first_seen.is_none() && !rec.writes().is_empty() {
                first_seen = Some(t0.elapsed());
            }
        }
        drop(sink);
        writer.await.unwrap().unwrap();
        let first = first_seen.expect("nothing written in 1 s");
        assert!(first <= Duration::from_millis(510), "{first:?}");
        // 1 s at one write per 500 ms, and the final state.
        assert!(rec.writes().len() <= 3, "{:?}", rec.writes());
        assert!(rec.writes().iter().all(|(_, _, must)| *must));
    }

    fn waits(b: Backoff) -> Vec<Duration> {
        let mut elapsed = Duration::ZERO;
        let mut out = Vec::new();
        while let Some(d) = b.delay(out.len() as u32, elapsed) {
            out.push(d);
            elapsed += d;
            assert!(out.len() < 1000, "never ends");
        }
        out
    }

    #[test]
    fn the_must_land_backoff_doubles_from_200_ms_to_10_s_within_two_minutes() {
        let w = waits(Backoff::MUST_LAND);
        let ms: Vec<u128> = w.iter().take(8).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert!(w.iter().all(|d| *d <= Duration::from_secs(10)));
        let total: Duration = w.iter().sum();
        assert_eq!(
            total,
            Duration::from_secs(120),
            "the last wait is cut to the budget"
        );
        // 6 doubling waits (12.6 s), then 10 s waits; the last one cut short.
        assert_eq!(w.len(), 6 + 11);
        assert_eq!(w.last(), Some(&Duration::from_millis(7400)));
    }

    #[test]
    fn no_wait_once_the_budget_is_spent_and_huge_retry_numbers_are_capped() {
        let b = Backoff::MUST_LAND;
        assert_eq!(b.delay(0, Duration::from_secs(120)), None);
        assert_eq!(b.delay(0, Duration::from_secs(500)), None);
        assert_eq!(
            b.delay(0, Duration::from_millis(119_950)),
            Some(Duration::from_millis(50))
        );
        assert_eq!(b.delay(40, Duration::ZERO), Some(Duration::from_secs(10)));
        assert_eq!(
            b.delay(u32::MAX, Duration::ZERO),
            Some(Duration::from_secs(10))
        );
        let total: Duration = waits(Backoff::INTERRUPTED).iter().sum();
        assert_eq!(total, Duration::from_secs(4));
    }

    #[test]
    fn gone_replaced_rejected_and_retryable_answers() {
        assert_eq!(verdict(404, "clothjobs \"a\" not found"), Verdict::Gone);
        assert_eq!(
            verdict(
                409,
                "Operation cannot be fulfilled on clothjobs.closetconnect.io \"a\": \
                 Precondition failed: UID in precondition: 1, UID in object meta: 2"
            ),
            Verdict::Gone
        );
        assert_eq!(verdict(409, "the object has been modified"), Verdict::Retry);
        for code in [401, 403, 408, 429, 500, 502, 503, 504] {
            assert_eq!(verdict(code, ""), Verdict::Retry, "{code}");
        }
        for code in [400, 415, 422] {
            assert_eq!(verdict(code, ""), Verdict::Rejected, "{code}");
        }
    }

    #[test]
    fn the_apply_body_carries_the_uid_and_the_checked_resource_version() {
        let status = ClothJobStatus {
            progress: Some(30),
            ..Default::default()
        };
        let body = apply_body("tshirt", "1234-abcd", Some("42"), &status);
        assert_eq!(body["metadata"]["name"], "tshirt");
        assert_eq!(body["metadata"]["uid"], "1234-abcd");
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        let body = apply_body("tshirt", "1234-abcd", None, &status);
        assert!(body["metadata"].get("resourceVersion").is_none(), "{body}");
        assert_eq!(body["kind"], "ClothJob");
        assert_eq!(body["status"]["progress"], 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_retried_until_it_succeeds_and_gives_up_after_the_budget() {
        let tries = std::sync::atomic::AtomicU32::new(0);
        let unavailable = || CallError::Kube(kube::Error::Service("connection refused".into()));
        let r = with_backoff("test", "ns/a", Backoff::MUST_LAND, || {
            let n = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { if n < 3 { Err(unavailable()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.ok(), Some(3));

        let started = tokio::time::Instant::now();
        let r: Result<(), _> = with_backoff("test", "ns/a", Backoff::MUST_LAND, || async {
            Err(unavailable())
        })
        .await;
        assert!(
            matches!(&r, Err(ApiCallError::Unavailable { attempts: 18, .. })),
            "{r:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(120));

        let r: Result<(), _> = with_backoff("test", "ns/a", Backoff::MUST_LAND, || async {
            Err(CallError::Kube(kube::Error::Api(Box::new(
                kube::core::Status {
                    code: 404,
                    message: "not found".into(),
                    ..Default::default()
                },
            ))))
        })
        .await;
        assert!(
            matches!(&r, Err(ApiCallError::Gone(m)) if m.contains("ns/a")),
            "{r:?}"
        );

        let r: Result<(), _> = with_backoff("test", "ns/a", Backoff::MUST_LAND, || async {
            Err(CallError::Replaced {
                ours: "1".into(),
                theirs: "2".into(),
            })
        })
        .await;
        assert!(
            matches!(&r, Err(ApiCallError::Gone(m)) if m.contains("Precondition failed: UID")),
            "{r:?}"
        );
    }
}
