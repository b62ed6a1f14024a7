//! `clothjob-runner run`: the runner inside a Job's pod. Learns its ClothJob from the
//! environment, runs the plan, writes progress to the status and exits with a code the
//! Job's podFailurePolicy understands.

use std::time::Duration;

use clothjob_api::{ClothJob, contract};
use clothjob_pipeline::Limits;
use kube::{Api, Client};
use tokio::sync::mpsc::unbounded_channel;

use crate::error::RunError;
use crate::execute::{Plan, execute};
use crate::options::{
    gemini, gemini_api_key_from_env, onnx_models, pipeline_options, remote_remover,
};
use crate::source::SourceLocation;
use crate::store::output_uri;
use crate::writer::write_updates;

/// Env var naming the file of a Secret or ConfigMap source (set by the operator).
pub const ENV_SOURCE_FILE: &str = "CLOTHJOB_SOURCE_FILE";

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

/// Runs the job and returns the process exit code.
pub async fn run_in_pod() -> i32 {
    match run().await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, category = e.category(), "run failed");
            write_termination_message(&format!("{}: {e}", e.category()));
            e.exit_code()
        }
    }
}

async fn run() -> Result<(), RunError> {
    let namespace = env(contract::ENV_NAMESPACE)?;
    let name = env(contract::ENV_NAME)?;
    let uid = env(contract::ENV_UID)?;
    let client = Client::try_default().await?;
    let api: Api<ClothJob> = Api::namespaced(client, &namespace);
    let cj = api
        .get_opt(&name)
        .await?
        .ok_or_else(|| RunError::Gone(format!("{namespace}/{name} no longer exists")))?;
    if cj.metadata.uid.as_deref() != Some(uid.as_str()) {
        return Err(RunError::Gone(format!(
            "{namespace}/{name} was replaced by a new object"
        )));
    }
    let plan = Plan {
        source: source_location(&cj)?,
        options: pipeline_options(&cj.spec.pipeline, &cj.spec.output)?,
        limits: Limits::default(),
        output_dir: output_uri(&cj.spec.output.uri, &namespace, &name, ""),
        fetch_timeout: Duration::from_secs(120),
        remote_remover: remote_remover(&cj.spec.pipeline),
        gemini: gemini(&cj.spec.pipeline, gemini_api_key_from_env())?,
        onnx: onnx_models(&cj.spec.pipeline)?,
    };
    tracing::info!(%namespace, %name, output = %plan.output_dir, "running");
    let (tx, rx) = unbounded_channel();
    let writer = tokio::spawn(write_updates(api, name, rx, Duration::from_millis(500)));
    let result = execute(&plan, tx).await;
    // The channel is closed once `execute` returns; the writer flushes the final state.
    match writer.await {
        Ok(Ok(writes)) => tracing::info!(writes, "status writes"),
        Ok(Err(e)) if result.is_ok() => return Err(RunError::Kube(e)),
        Ok(Err(e)) => tracing::warn!(error = %e, "final status write failed"),
        Err(e) => tracing::warn!(error = %e, "status writer task"),
    }
    let finished = result?;
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

/// Writes the termination message the kubelet hands to the pod status (capped at 4 KiB).
fn write_termination_message(msg: &str) {
    let path = std::env::var(contract::ENV_TERMINATION_MESSAGE_PATH)
        .unwrap_or_else(|_| contract::TERMINATION_MESSAGE_PATH.to_string());
    let mut end = msg.len().min(4000);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    if let Err(e) = std::fs::write(&path, &msg[..end]) {
        tracing::debug!(error = %e, %path, "no termination message file");
    }
}
