//! `clothjob-runner run`: the runner inside a Job's pod. Learns its ClothJob from the
//! environment, runs the plan, writes progress to the status and exits with a code the
//! Job's podFailurePolicy understands: 0 only once the final status (with the outputs) is
//! written; [`contract::EXIT_BAD_INPUT`] / [`contract::EXIT_INVALID_SPEC`] fail the Job at
//! once; [`contract::EXIT_TRANSIENT`] is retried. SIGTERM and SIGINT stop the run at once
//! (the pipeline's worker thread is not waited for): a best-effort `Interrupted` failure is
//! written within a few seconds and the runner exits with the transient code.
//!
//! Every attempt that gets as far as reading its ClothJob leaves `status.json` in the job's
//! output directory (see [`crate::result`]), succeeded or failed, interrupted included.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use clothjob_api::{ClothJob, ReusePolicy, contract};
use clothjob_pipeline::Limits;
use kube::Client;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc::unbounded_channel;
use tokio::task::JoinHandle;

use crate::error::RunError;
use crate::execute::{Plan, execute};
use crate::options::{
    gemini, gemini_api_key_from_env, onnx_models, pipeline_options, remote_remover,
};
use crate::result::{JobRecord, WRITE_TIMEOUT, redact_source};
use crate::reuse::{ReuseGate, settings_of};
use crate::source::SourceLocation;
use crate::store::{ObjectStoreOpts, output_dir};
use crate::writer::{ApiCallError, Backoff, Latest, StatusTarget, write_updates};

/// Env var naming the file of a Secret or ConfigMap source (set by the operator).
pub const ENV_SOURCE_FILE: &str = "CLOTHJOB_SOURCE_FILE";

/// How long an interrupted runner spends on its last status write (and `status.json`).
const INTERRUPTED_WRITE: Duration = Duration::from_secs(5);
/// At most one status write per this interval, stage boundaries included (the reuse key and
/// the final state go out at once): a run shorter than it makes one or two writes.
const WRITE_INTERVAL: Duration = Duration::from_secs(1);

fn env(name: &str) -> Result<String, RunError> {
    std::env::var(name)
        .map_err(|_| RunError::Config(format!("environment variable {name} is not set")))
}

/// Where the spec's source is, as this pod sees it.
pub fn source_location(cj: &ClothJob) -> Result<SourceLocation, RunError> {
    let s = &cj.spec.source;
    if let Some(url) = &s.url {
        return Ok(SourceLocation::Url(url.clone()));
    }
    if let Some(uri) = &s.uri {
        return Ok(SourceLocation::Uri(uri.clone()));
    }
    if s.secret_ref.is_some() || s.config_map_ref.is_some() {
        return Ok(SourceLocation::File(env(ENV_SOURCE_FILE)?.into()));
    }
    Err(RunError::Config("spec.source names no source".into()))
}

/// SIGTERM and SIGINT, listened to from the start (before any work).
struct Shutdown {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl Shutdown {
    fn install() -> Self {
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, signal = name, "cannot listen for the signal");
                None
            }
        };
        Self {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The name of the first signal received.
    async fn recv(&mut self) -> &'static str {
        async fn one(s: &mut Option<Signal>) -> Option<()> {
            match s {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            Some(()) = one(&mut self.term) => "SIGTERM",
            Some(()) = one(&mut self.int) => "SIGINT",
            else => std::future::pending().await,
        }
    }
}

/// The ClothJob this pod works for, and what a run leaves behind for an interruption.
struct Session {
    target: StatusTarget,
    namespace: String,
    latest: Latest,
    writer: Option<JoinHandle<Result<usize, ApiCallError>>>,
    /// Where this attempt's `status.json` goes, once the ClothJob was read.
    record: Option<JobRecord>,
}

impl Session {
    async fn from_env() -> Result<Self, RunError> {
        let namespace = env(contract::ENV_NAMESPACE)?;
        let name = env(contract::ENV_NAME)?;
        let uid = env(contract::ENV_UID)?;
        let client = Client::try_default().await?;
        Ok(Self {
            target: StatusTarget::new(kube::Api::namespaced(client, &namespace), name, uid),
            namespace,
            latest: Latest::default(),
            writer: None,
            record: None,
        })
    }

    /// Stops the status writer (an interrupted run's writer must not write after the last
    /// word).
    async fn stop_writer(&mut self) {
        if let Some(w) = self.writer.take()
            && !w.is_finished()
        {
            w.abort();
            let _ = w.await;
        }
    }
}

/// Runs the job and returns the process exit code. Every log line of the run is in the span
/// `job` with the ClothJob's `namespace`, name (`clothjob`: a span's own `name` is taken) and
/// `uid`, the `attempt` (as the operator last recorded it when the runner read its ClothJob)
/// and the `trace_id` of the `TRACEPARENT` the operator passes.
pub async fn run_in_pod() -> i32 {
    use tracing::Instrument as _;
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let traceparent = var(ENV_TRACEPARENT);
    let span = tracing::info_span!(
        "job",
        namespace = %var(contract::ENV_NAMESPACE),
        clothjob = %var(contract::ENV_NAME),
        uid = %var(contract::ENV_UID),
        attempt = tracing::field::Empty,
        trace_id = %trace_id(&traceparent),
    );
    // With OTLP export on, the job's spans join the operator's trace.
    clothjob_telemetry::set_parent(&span, &traceparent);
    run_job().instrument(span).await
}

pub use clothjob_api::contract::ENV_TRACEPARENT;

/// The trace id of a W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`), or empty.
pub fn trace_id(traceparent: &str) -> &str {
    match traceparent.split('-').collect::<Vec<_>>().as_slice() {
        [_, id, _, _] if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => id,
        _ => "",
    }
}

async fn run_job() -> i32 {
    let mut shutdown = Shutdown::install();
    let mut session = match Session::from_env().await {
        Ok(s) => s,
        Err(e) => return finish(&e),
    };
    let outcome = tokio::select! {
        r = run(&mut session) => r,
        sig = shutdown.recv() => Err(RunError::Interrupted(sig)),
    };
    session.stop_writer().await;
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            if matches!(e, RunError::Interrupted(_)) {
                record_failure(&session, &e).await;
            }
            finish(&e)
        }
    }
}

/// Logs `e`, writes the termination message and returns the exit code.
fn finish(e: &RunError) -> i32 {
    tracing::error!(error = %e, category = e.category(), "run failed");
    write_termination_message(&e.termination_message());
    e.exit_code()
}

/// The last word of a run that stopped outside the pipeline (interrupted, or a spec the
/// runner cannot use): the latest state, failed with `e`, written best effort within
/// [`INTERRUPTED_WRITE`] to the status and (once the ClothJob was read) to `status.json`.
async fn record_failure(session: &Session, e: &RunError) {
    let mut state = session.latest.get().unwrap_or_default();
    state.failed(e.runner_failure());
    let status = state.to_status();
    let write = session.target.apply_retrying(&status, Backoff::INTERRUPTED);
    // Both at once, not `status.json` first as at the end of a run: an interrupted pod has a
    // few seconds before SIGKILL, and either write may be the one that gets through.
    let record = async {
        if let Some(r) = &session.record {
            let _ = r
                .write_or_warn(&state, &ObjectStoreOpts::from_env(), INTERRUPTED_WRITE)
                .await;
        }
    };
    match tokio::time::timeout(INTERRUPTED_WRITE, futures::future::join(write, record)).await {
        Ok((Ok(()), ())) => {
            tracing::info!(reason = e.category(), "recorded the failure in the status")
        }
        Ok((Err(err), ())) => tracing::warn!(error = %err, "could not record the failure"),
        Err(_) => tracing::warn!("could not record the failure in time"),
    }
}

/// `status.json` of an attempt that ends because a status write failed for good (the
/// apiserver away for the whole back-off, or the ClothJob gone or replaced): the latest state,
/// failed with `e`, best effort. The status itself is not written: that is what failed.
async fn record_only(session: &Session, e: &RunError) {
    if let Some(r) = &session.record {
        let mut state = session.latest.get().unwrap_or_default();
        state.failed(e.runner_failure());
        let _ = r
            .write_or_warn(&state, &ObjectStoreOpts::from_env(), WRITE_TIMEOUT)
            .await;
    }
}

/// Where and for whom this attempt's `status.json` is written.
fn job_record(cj: &ClothJob, namespace: &str, name: &str, uid: &str, attempt: i32) -> JobRecord {
    JobRecord {
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
        generation: cj.metadata.generation,
        attempt,
        source: redact_source(&cj.spec.source),
        output_dir: output_dir(&cj.spec.output.uri, namespace, name, uid),
    }
}

/// The plan of `cj`, for this pod.
fn plan(
    cj: &ClothJob,
    target: &StatusTarget,
    namespace: &str,
    name: &str,
    uid: &str,
    attempt: i32,
) -> Result<Plan, RunError> {
    Ok(Plan {
        source: source_location(cj)?,
        options: pipeline_options(&cj.spec.pipeline, &cj.spec.output)?,
        limits: Limits::default(),
        output_dir: output_dir(&cj.spec.output.uri, namespace, name, uid),
        fetch_timeout: Duration::from_secs(120),
        remote_remover: remote_remover(&cj.spec.pipeline),
        gemini: gemini(&cj.spec.pipeline, gemini_api_key_from_env())?,
        onnx: onnx_models(&cj.spec.pipeline)?,
        record: Some(job_record(cj, namespace, name, uid, attempt)),
        // Only when the operator decides reuse for this job (it says so in the pod's env).
        reuse: (cj.spec.reuse != ReusePolicy::Never
            && std::env::var(contract::ENV_REUSE).is_ok_and(|v| v == "true"))
        .then(|| ReuseGate {
            target: target.clone(),
            settings: settings_of(cj),
        }),
    })
}

async fn run(session: &mut Session) -> Result<(), RunError> {
    let cj = session.target.read(Backoff::MUST_LAND).await?;
    let attempt = cj
        .status
        .as_ref()
        .and_then(|s| s.attempts)
        .unwrap_or(0)
        .max(1);
    tracing::Span::current().record("attempt", attempt);
    let namespace = session.namespace.clone();
    let name = session.target.name().to_string();
    let uid = session.target.uid().to_string();
    session.record = Some(job_record(&cj, &namespace, &name, &uid, attempt));
    let plan = match plan(&cj, &session.target, &namespace, &name, &uid, attempt) {
        Ok(p) => p,
        Err(e) => {
            // Also resets what an earlier attempt left in the status.
            record_failure(session, &e).await;
            return Err(e);
        }
    };
    tracing::info!(%namespace, %name, %uid, output = %plan.output_dir, "running");
    let (tx, rx) = unbounded_channel();
    let writer = session.writer.insert(tokio::spawn(write_updates(
        session.target.clone(),
        rx,
        WRITE_INTERVAL,
        session.latest.clone(),
    )));
    // The first update `execute` sends is a fresh state: it resets what an earlier attempt
    // left in the status (progress, stages, outputs, runnerFailure).
    let ran = tokio::select! {
        r = execute(&plan, tx) => Ok(r),
        // The writer only stops early when a status write failed for good.
        w = &mut *writer => Err(writer_failure(w)),
    };
    let result = match ran {
        Ok(r) => r,
        Err(e) => {
            record_only(session, &e).await;
            return Err(e);
        }
    };
    // The channel is closed once `execute` returns; the writer writes the final state.
    let written = writer.await;
    session.writer = None;
    let finished = match (result, written) {
        (Ok(f), Ok(Ok(writes))) => {
            tracing::info!(writes, "status writes");
            f
        }
        // The outputs are stored but not listed in the status: not done. `status.json`, written
        // as Succeeded before the final status write, now says what the exit code says.
        (Ok(_), w) => {
            let e = writer_failure(w);
            record_only(session, &e).await;
            return Err(e);
        }
        (Err(e), Ok(Ok(_))) => return Err(e),
        (Err(e), w) => {
            tracing::warn!(error = %writer_failure(w), "the final status write failed too");
            return Err(e);
        }
    };
    for (stage, d) in finished
        .output
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.duration))
        .chain([("storing", finished.storing)])
    {
        tracing::info!(stage, ms = d.as_millis() as u64, "stage timing");
    }
    Ok(())
}

/// The error of a writer that stopped (or should have written but did not).
fn writer_failure(w: Result<Result<usize, ApiCallError>, tokio::task::JoinError>) -> RunError {
    match w {
        Ok(Err(e)) => e.into(),
        Ok(Ok(_)) => RunError::Worker("the status writer stopped before the run ended".into()),
        Err(e) => RunError::Worker(format!("status writer: {e}")),
    }
}

/// Writes the termination message the kubelet hands to the pod status (capped at 4 KiB) to
/// [`contract::TERMINATION_MESSAGE_PATH`].
fn write_termination_message(msg: &str) {
    write_termination_message_to(Path::new(contract::TERMINATION_MESSAGE_PATH), msg);
}

/// Writes `msg` (cut to 4000 bytes) into the existing file `path`. The kubelet mounts that
/// file into the container; where there is none (a local run) nothing is created: the
/// runner writes nowhere but its scratch directory and its outputs.
fn write_termination_message_to(path: &Path, msg: &str) {
    let mut end = msg.len().min(4000);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(&msg.as_bytes()[..end]));
    if let Err(e) = written {
        tracing::debug!(error = %e, path = %path.display(), "no termination message written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_termination_message_goes_into_the_existing_file_cut_to_4000_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        std::fs::write(&path, "an older, longer message").unwrap();
        write_termination_message_to(&path, "Transient: x");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "Transient: x");
        let long = format!("BadInput: {}", "é".repeat(3000));
        write_termination_message_to(&path, &long);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() <= 4000 && text.len() >= 3998, "{}", text.len());
        assert!(long.starts_with(&text));
    }

    #[test]
    fn the_model_cache_follows_the_scratch_dir_of_the_contract() {
        assert_eq!(clothjob_onnx::SCRATCH_ENV, contract::ENV_SCRATCH_DIR);
    }

    #[test]
    fn no_termination_message_file_is_created_where_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        write_termination_message_to(&path, "Transient: x");
        assert!(!path.exists());
    }
}
