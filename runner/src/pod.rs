//! `clothjob-runner run`: the runner inside a Job's pod. Learns its ClothJob from the
//! environment, runs the plan, writes progress to the status and exits with a code the
//! Job's podFailurePolicy understands: 0 only once the final status (with the outputs) is
//! written; [`contract::EXIT_BAD_INPUT`] / [`contract::EXIT_INVALID_SPEC`] fail the Job at
//! once; [`contract::EXIT_TRANSIENT`] is retried. SIGTERM and SIGINT stop the run at once
//! (the pipeline's worker thread is not waited for): a best-effort `Interrupted` failure is
//! written within a few seconds and the runner exits with the transient code.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use clothjob_api::{ClothJob, RunnerFailure, contract};
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
use crate::source::SourceLocation;
use crate::store::output_dir;
use crate::writer::{ApiCallError, Backoff, Latest, StatusTarget, write_updates};

/// Env var naming the file of a Secret or ConfigMap source (set by the operator).
pub const ENV_SOURCE_FILE: &str = "CLOTHJOB_SOURCE_FILE";

/// How long an interrupted runner spends on its last status write.
const INTERRUPTED_WRITE: Duration = Duration::from_secs(5);
/// At most one progress write per this interval within a stage.
const WRITE_INTERVAL: Duration = Duration::from_millis(500);

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
/// [`INTERRUPTED_WRITE`].
async fn record_failure(session: &Session, e: &RunError) {
    let mut state = session.latest.get().unwrap_or_default();
    state.failed(RunnerFailure {
        reason: e.category().to_string(),
        message: e.to_string(),
        retryable: e.is_retryable(),
    });
    let status = state.to_status();
    let write = session.target.apply_retrying(&status, Backoff::INTERRUPTED);
    match tokio::time::timeout(INTERRUPTED_WRITE, write).await {
        Ok(Ok(())) => tracing::info!(reason = e.category(), "recorded the failure in the status"),
        Ok(Err(err)) => tracing::warn!(error = %err, "could not record the failure"),
        Err(_) => tracing::warn!("could not record the failure in time"),
    }
}

/// The plan of `cj`, for this pod.
fn plan(cj: &ClothJob, namespace: &str, name: &str, uid: &str) -> Result<Plan, RunError> {
    Ok(Plan {
        source: source_location(cj)?,
        options: pipeline_options(&cj.spec.pipeline, &cj.spec.output)?,
        limits: Limits::default(),
        output_dir: output_dir(&cj.spec.output.uri, namespace, name, uid),
        fetch_timeout: Duration::from_secs(120),
        remote_remover: remote_remover(&cj.spec.pipeline),
        gemini: gemini(&cj.spec.pipeline, gemini_api_key_from_env())?,
        onnx: onnx_models(&cj.spec.pipeline)?,
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
    let plan = match plan(&cj, &namespace, &name, &uid) {
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
    let result = tokio::select! {
        r = execute(&plan, tx) => r,
        // The writer only stops early when a status write failed for good.
        w = &mut *writer => return Err(writer_failure(w)),
    };
    // The channel is closed once `execute` returns; the writer writes the final state.
    let written = writer.await;
    session.writer = None;
    let finished = match (result, written) {
        (Ok(f), Ok(Ok(writes))) => {
            tracing::info!(writes, "status writes");
            f
        }
        // The outputs are stored but not listed in the status: not done.
        (Ok(_), w) => return Err(writer_failure(w)),
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
