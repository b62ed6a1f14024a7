//! Progress of one run: the runner-owned status fields (weighted progress, stage, per-stage
//! timings, outputs) as a pure state machine, and the sink that feeds it from the pipeline.

use std::time::Duration;

use clothjob_api::progress::{Stage, progress_after, progress_within};
use clothjob_api::{
    ClothJobStatus, OutputStatus, RegionStatus, RunnerFailure, StageState, StageStatus,
};
use clothjob_pipeline::{ProgressSink, StageName};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc::UnboundedSender;

/// The runner's view of its progress.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState {
    /// Weighted progress, never decreasing.
    pub progress: u8,
    /// Current stage name (or `fetching`, `done`, `failed`).
    pub stage: String,
    /// Every stage, in order.
    pub stages: Vec<StageStatus>,
    /// Outputs written.
    pub outputs: Vec<OutputStatus>,
    /// Regions found by segmentation.
    pub regions: Vec<RegionStatus>,
    /// The failure, once failed.
    pub failure: Option<RunnerFailure>,
    /// When the attempt started (`startedAt` of `status.json`).
    pub started_at: Time,
    /// sha256 of the source bytes, hex, once read.
    pub source_sha256: Option<String>,
    /// Size of the source bytes, once read.
    pub source_bytes: Option<u64>,
    /// Why the attempt's `status.json` could not be written, on a run that otherwise
    /// succeeded: reported as `status.runnerFailure` with reason
    /// [`crate::result::NOT_RECORDED`] (the run still succeeds).
    pub not_recorded: Option<String>,
    /// The reuse key of the run (see [`crate::reuse`]), once the source is read, when the
    /// run takes part in reuse.
    pub reuse_key: Option<String>,
    /// The identical ClothJob whose outputs were copied instead of running the pipeline.
    pub reused_from: Option<String>,
}

impl Default for RunState {
    fn default() -> Self {
        Self::new()
    }
}

/// Maps the pipeline's stage to the API's.
pub fn api_stage(s: StageName) -> Stage {
    match s {
        StageName::BackgroundRemoval => Stage::BackgroundRemoval,
        StageName::Segmentation => Stage::Segmentation,
        StageName::Expansion => Stage::Expansion,
        StageName::Encoding => Stage::Encoding,
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

impl RunState {
    /// A fresh attempt: progress 0, every stage pending.
    pub fn new() -> Self {
        Self {
            progress: 0,
            stage: "fetching".into(),
            stages: Stage::ALL
                .into_iter()
                .map(|s| StageStatus {
                    name: s.name().into(),
                    ..Default::default()
                })
                .collect(),
            outputs: Vec::new(),
            regions: Vec::new(),
            failure: None,
            started_at: now(),
            source_sha256: None,
            source_bytes: None,
            not_recorded: None,
            reuse_key: None,
            reused_from: None,
        }
    }

    fn entry(&mut self, stage: Stage) -> Option<&mut StageStatus> {
        self.stages.iter_mut().find(|s| s.name == stage.name())
    }

    fn advance(&mut self, to: u8) {
        self.progress = self.progress.max(to);
    }

    /// A stage started.
    pub fn started(&mut self, stage: Stage, backend: &str) {
        self.stage = stage.name().into();
        if let Some(e) = self.entry(stage) {
            e.state = StageState::Running;
            e.backend = Some(backend.into());
            e.started_at = Some(now());
        }
        self.advance(stage.span().0);
    }

    /// A stage is `fraction` done.
    pub fn fraction(&mut self, stage: Stage, fraction: f64) {
        self.advance(progress_within(stage, fraction));
    }

    /// Which backend made a stage's result and why (a stage that chose at run time).
    pub fn detail(&mut self, stage: Stage, backend: &str, detail: &str) {
        if let Some(e) = self.entry(stage) {
            e.backend = Some(backend.into());
            e.detail = Some(detail.chars().take(1024).collect());
        }
    }

    /// A stage finished after `duration` on `backend`.
    pub fn finished(&mut self, stage: Stage, backend: &str, duration: Duration) {
        if let Some(e) = self.entry(stage) {
            e.state = StageState::Succeeded;
            e.backend = Some(backend.into());
            e.finished_at = Some(now());
            e.duration_ms = Some(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX));
        }
        self.advance(progress_after(stage));
    }

    /// A stage is disabled: its span passes at once, and it is never reported as done.
    pub fn skipped(&mut self, stage: Stage) {
        if let Some(e) = self.entry(stage) {
            e.state = StageState::Skipped;
        }
        self.advance(progress_after(stage));
    }

    /// The outputs of the identical ClothJob `from` were copied in `storing`: every pipeline
    /// stage skipped (saying so), storing succeeded.
    pub fn reused(&mut self, from: &str, storing: Duration) {
        let detail = format!("not run: the outputs were copied from the identical ClothJob {from}");
        for stage in Stage::ALL.into_iter().filter(|s| *s != Stage::Storing) {
            self.skipped(stage);
            if let Some(e) = self.entry(stage) {
                e.detail = Some(detail.clone());
            }
        }
        self.started(Stage::Storing, "objectStore");
        self.finished(Stage::Storing, "objectStore", storing);
        self.reused_from = Some(from.to_string());
    }

    /// Everything finished: 100 %.
    pub fn done(&mut self) {
        self.stage = "done".into();
        self.advance(100);
    }

    /// The run failed in whatever stage was running. A failed attempt lists no outputs.
    pub fn failed(&mut self, failure: RunnerFailure) {
        self.outputs.clear();
        for e in self
            .stages
            .iter_mut()
            .filter(|e| e.state == StageState::Running)
        {
            e.state = StageState::Failed;
            e.finished_at = Some(now());
        }
        self.stage = "failed".into();
        self.failure = Some(failure);
    }

    /// The runner-owned fields of the status. Empty lists and a missing failure are left
    /// out, so that a server-side apply with the runner's field manager removes what an
    /// earlier attempt wrote there: the first write of an attempt (a fresh [`RunState`])
    /// resets progress, stages, outputs, regions and the runner failure. A succeeded run whose
    /// `status.json` could not be written reports that as its runner failure
    /// ([`crate::result::NOT_RECORDED`], not retryable), its outputs still listed.
    pub fn to_status(&self) -> ClothJobStatus {
        fn non_empty<T: Clone>(v: &[T]) -> Option<Vec<T>> {
            (!v.is_empty()).then(|| v.to_vec())
        }
        ClothJobStatus {
            progress: Some(i32::from(self.progress)),
            stage: Some(self.stage.clone()),
            stages: Some(self.stages.clone()),
            outputs: non_empty(&self.outputs),
            regions: non_empty(&self.regions),
            source_sha256: self.source_sha256.clone(),
            reuse_key: self.reuse_key.clone(),
            reused_from: self.reused_from.clone(),
            runner_failure: self.failure.clone().or_else(|| {
                self.not_recorded.as_ref().map(|why| RunnerFailure {
                    reason: crate::result::NOT_RECORDED.into(),
                    message: format!(
                        "the outputs are stored and listed, but the record of the attempt is not: {why}"
                    ),
                    retryable: false,
                })
            }),
            ..Default::default()
        }
    }
}

/// One change of the run state. `boundary` marks stage starts and ends: the write carrying
/// one must land (it is retried); `urgent` marks a change someone waits for (the reuse key the
/// operator decides on), written at once. Other changes wait for the write interval.
#[derive(Clone, Debug)]
pub struct Update {
    /// The state after the change.
    pub state: RunState,
    /// Whether this is a stage boundary.
    pub boundary: bool,
    /// Whether it is written at once.
    pub urgent: bool,
}

/// Feeds pipeline callbacks into a [`RunState`] and sends each change on a channel.
pub struct ChannelSink {
    /// The state so far.
    pub state: RunState,
    tx: UnboundedSender<Update>,
    /// The span of the stage running now (closed when it ends).
    stage_span: Option<tracing::Span>,
}

impl ChannelSink {
    /// A sink starting from `state`.
    pub fn new(state: RunState, tx: UnboundedSender<Update>) -> Self {
        Self {
            state,
            tx,
            stage_span: None,
        }
    }

    /// Opens the span of a stage (a child of the current span: the job's) and logs its start.
    pub fn open_stage(&mut self, stage: Stage, backend: &str) {
        let span = tracing::info_span!("stage", stage = stage.name(), backend = %backend);
        span.in_scope(|| tracing::info!("stage started"));
        self.stage_span = Some(span);
    }

    /// Logs the end of the stage in its span and closes it.
    pub fn close_stage(&mut self, duration: Duration) {
        if let Some(span) = self.stage_span.take() {
            let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            span.in_scope(|| tracing::info!(duration_ms = ms, "stage finished"));
        }
    }

    /// Another handle on the channel.
    pub fn sender(&self) -> UnboundedSender<Update> {
        self.tx.clone()
    }

    /// Sends the current state.
    pub fn send(&self, boundary: bool) {
        self.send_as(boundary, false);
    }

    fn send_as(&self, boundary: bool, urgent: bool) {
        // A closed channel means nobody listens any more; the run goes on regardless.
        let _ = self.tx.send(Update {
            state: self.state.clone(),
            boundary,
            urgent,
        });
    }

    /// Applies a change that someone waits for and sends it to be written at once.
    pub fn change_now(&mut self, f: impl FnOnce(&mut RunState)) {
        let before = self.state.clone();
        f(&mut self.state);
        if self.state != before {
            self.send_as(true, true);
        }
    }

    /// Applies a change and sends it.
    pub fn change(&mut self, boundary: bool, f: impl FnOnce(&mut RunState)) {
        let before = self.state.clone();
        f(&mut self.state);
        if self.state != before {
            self.send(boundary);
        }
    }
}

impl ProgressSink for ChannelSink {
    fn stage_started(&mut self, stage: StageName, backend: &str) {
        self.open_stage(api_stage(stage), backend);
        self.change(true, |s| s.started(api_stage(stage), backend));
    }
    fn stage_progress(&mut self, stage: StageName, fraction: f64) {
        self.change(false, |s| s.fraction(api_stage(stage), fraction));
    }
    fn stage_finished(&mut self, stage: StageName, backend: &str, duration: Duration) {
        self.close_stage(duration);
        self.change(true, |s| s.finished(api_stage(stage), backend, duration));
    }
    fn stage_detail(&mut self, stage: StageName, backend: &str, detail: &str) {
        tracing::info!(
            stage = api_stage(stage).name(),
            backend,
            detail,
            "stage backend chosen"
        );
        self.change(true, |s| s.detail(api_stage(stage), backend, detail));
    }
    fn stage_skipped(&mut self, stage: StageName) {
        self.change(true, |s| s.skipped(api_stage(stage)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_run_climbs_through_the_weighted_boundaries() {
        let mut s = RunState::new();
        let mut seen = vec![s.progress];
        for st in [
            Stage::BackgroundRemoval,
            Stage::Segmentation,
            Stage::Expansion,
            Stage::Encoding,
            Stage::Storing,
        ] {
            s.started(st, "builtin");
            s.fraction(st, 0.5);
            s.finished(st, "builtin", Duration::from_millis(12));
            seen.push(s.progress);
        }
        s.done();
        seen.push(s.progress);
        assert_eq!(seen, vec![0, 30, 45, 95, 98, 100, 100]);
        assert!(s.stages.iter().all(|e| e.state == StageState::Succeeded));
        assert_eq!(s.stages[0].duration_ms, Some(12));
    }

    #[test]
    fn skipped_stages_pass_at_once_and_are_never_done() {
        let mut s = RunState::new();
        s.skipped(Stage::BackgroundRemoval);
        assert_eq!(s.progress, 30);
        s.skipped(Stage::Segmentation);
        s.started(Stage::Expansion, "builtin");
        assert_eq!(s.progress, 45);
        let st = s.to_status();
        let stages = st.stages.unwrap();
        assert_eq!(stages[0].state, StageState::Skipped);
        assert_eq!(stages[0].duration_ms, None);
        assert_eq!(stages[2].state, StageState::Running);
    }

    #[test]
    fn progress_never_goes_back() {
        let mut s = RunState::new();
        s.started(Stage::Expansion, "builtin");
        s.fraction(Stage::Expansion, 0.8);
        let high = s.progress;
        s.fraction(Stage::Expansion, 0.1);
        s.started(Stage::BackgroundRemoval, "builtin");
        assert_eq!(s.progress, high);
    }

    #[test]
    fn failure_marks_the_running_stage() {
        let mut s = RunState::new();
        s.started(Stage::BackgroundRemoval, "builtin");
        s.failed(RunnerFailure {
            reason: "BadInput".into(),
            message: "not an image".into(),
            retryable: false,
        });
        assert_eq!(s.stages[0].state, StageState::Failed);
        assert_eq!(s.stage, "failed");
        assert_eq!(s.to_status().runner_failure.unwrap().reason, "BadInput");
    }

    #[test]
    fn a_fresh_attempt_writes_no_outputs_regions_or_failure() {
        let st = RunState::new().to_status();
        assert_eq!(st.progress, Some(0));
        assert_eq!(st.stage.as_deref(), Some("fetching"));
        let stages = st.stages.clone().unwrap();
        assert_eq!(stages.len(), Stage::ALL.len());
        assert!(stages.iter().all(|e| e.state == StageState::Pending));
        assert_eq!(
            (st.outputs, st.regions, st.runner_failure),
            (None, None, None)
        );
        let json = serde_json::to_value(RunState::new().to_status()).unwrap();
        for field in ["outputs", "regions", "runnerFailure"] {
            assert!(json.get(field).is_none(), "{field} in {json}");
        }
    }

    #[test]
    fn a_failed_attempt_lists_no_outputs() {
        let mut s = RunState::new();
        s.outputs.push(OutputStatus {
            name: "cutout".into(),
            ..Default::default()
        });
        s.failed(RunnerFailure {
            reason: "Interrupted".into(),
            message: "interrupted by SIGTERM".into(),
            retryable: true,
        });
        assert!(s.outputs.is_empty());
        assert_eq!(s.to_status().outputs, None);
    }
    #[test]
    fn an_unwritten_record_is_reported_beside_the_outputs_of_a_success() {
        let mut s = RunState::new();
        s.outputs.push(OutputStatus {
            name: "cutout".into(),
            ..Default::default()
        });
        s.done();
        s.not_recorded = Some("writing file:///out/status.json: disk full".into());
        let st = s.to_status();
        let f = st.runner_failure.clone().expect("no runnerFailure");
        assert_eq!(f.reason, crate::result::NOT_RECORDED);
        assert!(!f.retryable);
        assert!(f.message.contains("disk full"), "{f:?}");
        assert_eq!(st.outputs.map(|o| o.len()), Some(1));
        assert_eq!(st.stage.as_deref(), Some("done"));
        // A run's own failure wins.
        s.failed(RunnerFailure {
            reason: "Transient".into(),
            message: "storing output cutout: reset".into(),
            retryable: true,
        });
        assert_eq!(s.to_status().runner_failure.unwrap().reason, "Transient");
    }
}
