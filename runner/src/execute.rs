//! One run of the pipeline, shared by the pod (`run`) and the standalone `process` command:
//! fetch the source, run the stages, store the outputs, reporting every change.

use std::time::{Duration, Instant};

use clothjob_api::progress::Stage;
use clothjob_api::{OutputStatus, RegionStatus};
use clothjob_backends::{GeminiConfig, GeminiExpander, RemoteRemover};
use clothjob_onnx::{ModelFamily, OnnxSegmenter, U2NetRemover};
use clothjob_pipeline::{
    Backends, BackgroundRemovalBackend, Limits, Options, PipelineError, Region, RunOutput,
    SegmentationBackend, StageName,
};
use futures::future::try_join_all;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::RunError;
use crate::options::{OnnxModelRef, OnnxModels, RemoteRemoverSettings};
use crate::progress::{ChannelSink, RunState, Update};
use crate::result::{JobRecord, WRITE_TIMEOUT};
use crate::reuse::{ReuseGate, Verdict, copy_outputs, reuse_key};
use crate::source::{SourceLocation, fetch};
use crate::store::{ObjectStoreOpts, put};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The source photo.
    pub source: SourceLocation,
    /// Stage options.
    pub options: Options,
    /// Input limits.
    pub limits: Limits,
    /// Directory URI the outputs are written into (`file:///...`, `s3://...`).
    pub output_dir: String,
    /// Time-out of an http(s) download.
    pub fetch_timeout: Duration,
    /// The remote background remover, when the spec asks for one.
    pub remote_remover: Option<RemoteRemoverSettings>,
    /// The Gemini client settings, when expansion runs on Gemini (`Debug` hides the key).
    pub gemini: Option<GeminiConfig>,
    /// The ONNX models of the stages that run on `onnx`.
    pub onnx: OnnxModels,
    /// The ClothJob whose attempt is recorded in `status.json` in `output_dir`; `None` for
    /// a local `process` run (it writes `report.json` instead).
    pub record: Option<JobRecord>,
    /// Taking part in duplicate reuse (a pod whose ClothJob does not say `reuse: Never`);
    /// `None` for a local `process` run.
    pub reuse: Option<ReuseGate>,
}

/// The local model files of a run, once fetched and checked.
#[derive(Clone, Debug, Default)]
struct LocalModels {
    background_removal: Option<(std::path::PathBuf, ModelFamily)>,
    segmentation: Option<(std::path::PathBuf, ModelFamily)>,
}

/// Makes every ONNX model of the plan a checked local file (an https model is fetched once
/// into the model cache) and points the options at those files.
async fn resolve_models(
    models: &OnnxModels,
    options: &mut Options,
) -> Result<LocalModels, PipelineError> {
    async fn one(
        m: &OnnxModelRef,
        stage: StageName,
    ) -> Result<(std::path::PathBuf, ModelFamily), PipelineError> {
        let client = crate::options::model_download_client(&m.uri).await?;
        let cache = clothjob_onnx::default_cache_dir();
        let path = clothjob_onnx::resolve_model(&client, &m.uri, m.sha256.as_deref(), &cache)
            .await
            .map_err(|e| e.into_pipeline(stage))?;
        Ok((path, m.family))
    }
    let mut local = LocalModels::default();
    if let Some(m) = &models.background_removal {
        let (path, family) = one(m, StageName::BackgroundRemoval).await?;
        if let Some(o) = options.background_removal.as_mut() {
            // `auto` keeps choosing at run time; the model is its fallback.
            o.backend = match o.backend {
                BackgroundRemovalBackend::Auto { .. } => BackgroundRemovalBackend::Auto {
                    model_path: Some(path.clone()),
                },
                _ => BackgroundRemovalBackend::Onnx {
                    model_path: path.clone(),
                },
            };
        }
        local.background_removal = Some((path, family));
    }
    if let Some(m) = &models.segmentation {
        let (path, family) = one(m, StageName::Segmentation).await?;
        if let Some(o) = options.segmentation.as_mut() {
            o.backend = SegmentationBackend::Onnx {
                model_path: path.clone(),
            };
        }
        local.segmentation = Some((path, family));
    }
    Ok(local)
}

/// The result of a successful run.
#[derive(Debug)]
pub struct Finished {
    /// The final state (progress 100).
    pub state: RunState,
    /// What the pipeline returned (outputs with their bytes, stage reports).
    pub output: RunOutput,
    /// Seconds spent storing.
    pub storing: Duration,
}

fn region_status(r: &Region) -> RegionStatus {
    RegionStatus {
        label: i32::from(r.label),
        class: r.class.clone(),
        share: format!("{:.3}", r.area_fraction),
        bbox: [r.bbox.x, r.bbox.y, r.bbox.width, r.bbox.height]
            .iter()
            .map(|v| i32::try_from(*v).unwrap_or(i32::MAX))
            .collect(),
        colors: r
            .colors
            .iter()
            .map(|c| format!("{} {}", c.name, c.hex))
            .collect(),
    }
}

/// Runs the plan, sending each state change on `tx`. On failure the final state (with the
/// failure recorded) has been sent before the error is returned. With a [`Plan::record`],
/// the attempt's `status.json` is written before the final state is sent, failed or not.
pub async fn execute(plan: &Plan, tx: UnboundedSender<Update>) -> Result<Finished, RunError> {
    let mut sink = ChannelSink::new(RunState::new(), tx);
    sink.send(true);
    match steps(plan, &mut sink).await {
        Ok(f) => Ok(f),
        Err(e) => {
            let mut last = sink.state.clone();
            last.failed(e.runner_failure());
            // Best effort (the store may be what failed): a failed write is logged, and the
            // run's own error stays the one reported. Written before the final state is sent,
            // as on success (see `steps`).
            if let Some(record) = &plan.record {
                let _ = record
                    .write_or_warn(&last, &ObjectStoreOpts::from_env(), WRITE_TIMEOUT)
                    .await;
            }
            sink.change(true, |s| *s = last);
            Err(e)
        }
    }
}

/// Runs the pipeline on this (blocking) thread, with the remote remover and the Gemini
/// expander when configured.
fn run_blocking(
    bytes: &[u8],
    options: &Options,
    limits: &Limits,
    remote: Option<&RemoteRemoverSettings>,
    gemini: Option<GeminiConfig>,
    models: &LocalModels,
    sink: &mut ChannelSink,
) -> Result<RunOutput, PipelineError> {
    let remote_remover = match remote {
        Some(r) => Some(RemoteRemover::new(
            &r.url,
            &r.model,
            r.alpha_matting,
            r.timeout,
        )?),
        None => None,
    };
    // Sessions are cached per process by the onnx crate: loading is paid once.
    let onnx_remover = match &models.background_removal {
        Some((path, family)) => Some(
            U2NetRemover::load(path, *family)
                .map_err(|e| e.into_pipeline(StageName::BackgroundRemoval))?,
        ),
        None => None,
    };
    let segmenter = match &models.segmentation {
        Some((path, family)) => Some(
            OnnxSegmenter::load_with(path, *family, None)
                .map_err(|e| e.into_pipeline(StageName::Segmentation))?,
        ),
        None => None,
    };
    let expander = gemini.map(GeminiExpander::new).transpose()?;
    let backends = Backends {
        background_remover: match (&remote_remover, &onnx_remover) {
            (Some(r), _) => Some(r as &dyn clothjob_pipeline::BackgroundRemover),
            (None, Some(o)) => Some(o as &dyn clothjob_pipeline::BackgroundRemover),
            (None, None) => None,
        },
        segmenter: segmenter
            .as_ref()
            .map(|s| s as &dyn clothjob_pipeline::Segmenter),
        expander: expander
            .as_ref()
            .map(|g| g as &dyn clothjob_pipeline::Expander),
    };
    clothjob_pipeline::run_with(bytes, options, limits, sink, &backends)
}

/// Reports the run's reuse key and waits for the operator's decision; with a decision to
/// reuse, copies the identical job's outputs and finishes the run (`Some`). A copy that fails
/// (the outputs deleted, another store's credentials) is logged and the pipeline runs.
async fn try_reuse(
    plan: &Plan,
    gate: &ReuseGate,
    sink: &mut ChannelSink,
) -> Result<Option<Finished>, RunError> {
    let Some(sha) = sink.state.source_sha256.clone() else {
        return Ok(None);
    };
    let key = reuse_key(&sha, &gate.settings);
    // The operator decides on the key, and the runner polls for that decision: not held back.
    sink.change_now(|s| s.reuse_key = Some(key.clone()));
    let decision = match gate.await_verdict(&key).await? {
        Verdict::Run(why) => {
            tracing::info!(why, "running the pipeline");
            return Ok(None);
        }
        Verdict::Reuse(d) => d,
    };
    let from = decision.job.clone().unwrap_or_default();
    let started = Instant::now();
    // Storing is marked started only once the copies are made (`reused`): a copy that fails
    // falls back to the pipeline, whose progress must not start at storing's 98 %.
    sink.open_stage(Stage::Storing, "objectStore");
    let opts = ObjectStoreOpts::from_env();
    let wanted = decision.outputs.clone().unwrap_or_default();
    let outputs = match copy_outputs(&wanted, &plan.output_dir, plan.fetch_timeout, &opts).await {
        Ok(o) if !o.is_empty() => o,
        Ok(_) => {
            tracing::warn!(%from, "the identical job lists no outputs: running the pipeline");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(%from, error = %e, "could not copy the identical job's outputs: running the pipeline");
            return Ok(None);
        }
    };
    let storing = started.elapsed();
    sink.close_stage(storing);
    tracing::info!(%from, outputs = outputs.len(), ms = storing.as_millis() as u64, "copied the outputs of an identical job");
    let mut last = sink.state.clone();
    last.outputs = outputs;
    last.regions = decision.regions.clone().unwrap_or_default();
    last.reused(&from, storing);
    last.done();
    if let Some(record) = &plan.record {
        last.not_recorded = record.write_or_warn(&last, &opts, WRITE_TIMEOUT).await;
    }
    sink.change(true, |s| *s = last);
    Ok(Some(Finished {
        state: sink.state.clone(),
        output: RunOutput {
            outputs: Vec::new(),
            stages: Vec::new(),
            regions: Vec::new(),
            auto_removal: None,
        },
        storing,
    }))
}

async fn steps(plan: &Plan, sink: &mut ChannelSink) -> Result<Finished, RunError> {
    let bytes = fetch(&plan.source, plan.limits.max_bytes, plan.fetch_timeout).await?;
    // Recorded in `status.json` (sent with the next change).
    sink.state.source_sha256 = Some(hex::encode(Sha256::digest(&bytes)));
    sink.state.source_bytes = Some(bytes.len() as u64);
    if let Some(gate) = &plan.reuse
        && let Some(f) = try_reuse(plan, gate, sink).await?
    {
        return Ok(f);
    }

    let mut options = plan.options.clone();
    let models = resolve_models(&plan.onnx, &mut options).await?;

    // The pipeline is CPU-bound and synchronous: run it off the async threads.
    let limits = plan.limits;
    let remote = plan.remote_remover.clone();
    let gemini = plan.gemini.clone();
    let mut worker_sink = ChannelSink::new(sink.state.clone(), sink.sender());
    // The job's span goes with the work (the stage spans are its children).
    let span = tracing::Span::current();
    let (worker_sink, result) = tokio::task::spawn_blocking(move || {
        let _job = span.enter();
        let r = run_blocking(
            &bytes,
            &options,
            &limits,
            remote.as_ref(),
            gemini,
            &models,
            &mut worker_sink,
        );
        (worker_sink, r)
    })
    .await
    .map_err(|e| RunError::Worker(e.to_string()))?;
    sink.state = worker_sink.state;
    let output = result?;

    let started = Instant::now();
    sink.open_stage(Stage::Storing, "objectStore");
    sink.change(true, |s| s.started(Stage::Storing, "objectStore"));
    let opts = ObjectStoreOpts::from_env();
    let dir = plan.output_dir.trim_end_matches('/').to_string();
    let writes = output.outputs.iter().map(|o| {
        let uri = format!("{dir}/{}", o.file_name);
        let opts = opts.clone();
        async move {
            put(&uri, o.bytes.clone(), &opts).await?;
            Ok::<_, RunError>(OutputStatus {
                name: o.role.clone(),
                uri,
                media_type: o.media_type.to_string(),
                width: i32::try_from(o.width).unwrap_or(i32::MAX),
                height: i32::try_from(o.height).unwrap_or(i32::MAX),
                bytes: i64::try_from(o.bytes.len()).unwrap_or(i64::MAX),
                sha256: o.sha256.clone(),
            })
        }
    });
    let outputs = try_join_all(writes).await?;
    let storing = started.elapsed();
    sink.close_stage(storing);
    let mut last = sink.state.clone();
    last.outputs = outputs;
    last.regions = output.regions.iter().map(region_status).collect();
    last.finished(Stage::Storing, "objectStore", storing);
    last.done();
    // `status.json` is the last upload: after the outputs (it lists them, and must never name
    // an output that is not there) and before the final status write (sent below). If the
    // pod dies between the two, the file says Succeeded while the ClothJob does not list the
    // outputs yet; the runner did not exit 0, so the Job retries and the next attempt
    // overwrites the file, and if no attempt is left the file still describes outputs that
    // exist. The other order would lose more: a pod dying after the final status write (the
    // ClothJob Succeeded, soon deleted by its TTL) would leave no record, or an earlier failed
    // attempt's, beside the outputs. Written first, a failure to write it can also be
    // reported in that final status write (`runnerFailure`, reason ResultNotRecorded) instead
    // of failing the succeeded job.
    if let Some(record) = &plan.record {
        last.not_recorded = record.write_or_warn(&last, &opts, WRITE_TIMEOUT).await;
    }
    sink.change(true, |s| *s = last);
    Ok(Finished {
        state: sink.state.clone(),
        output,
        storing,
    })
}
