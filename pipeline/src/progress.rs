//! Stage names, the `ProgressSink` the caller implements, and stage reports.

use std::fmt;
use std::time::Duration;

/// The stages of the pipeline, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageName {
    /// Alpha mask and cut-out (progress span 0-30 %).
    BackgroundRemoval,
    /// Label map, regions, colours (30-45 %).
    Segmentation,
    /// Catalog images (45-95 %).
    Expansion,
    /// Encoded outputs (95-98 %).
    Encoding,
}

impl StageName {
    /// All stages in order.
    pub const ALL: [StageName; 4] = [
        StageName::BackgroundRemoval,
        StageName::Segmentation,
        StageName::Expansion,
        StageName::Encoding,
    ];

    /// The contract name (`backgroundRemoval`, `segmentation`, `expansion`, `encoding`).
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::BackgroundRemoval => "backgroundRemoval",
            StageName::Segmentation => "segmentation",
            StageName::Expansion => "expansion",
            StageName::Encoding => "encoding",
        }
    }

    /// The stage's weighted progress span in percent, `(start, end)`;
    /// storing (98-100 %) is the caller's.
    pub fn progress_span(self) -> (f64, f64) {
        match self {
            StageName::BackgroundRemoval => (0.0, 30.0),
            StageName::Segmentation => (30.0, 45.0),
            StageName::Expansion => (45.0, 95.0),
            StageName::Encoding => (95.0, 98.0),
        }
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives the progress of a run. Every stage gets exactly one of
/// `stage_started` … `stage_finished`, or `stage_skipped` (disabled, or nothing
/// to do); a stage that did not run is never reported as finished. When a stage
/// fails, `stage_started` is not followed by `stage_finished` and `run` returns
/// the error.
pub trait ProgressSink {
    /// The stage starts, with the named backend (`builtin`, …).
    fn stage_started(&mut self, stage: StageName, backend: &str);
    /// Fraction of the stage done, in `0.0..=1.0`, non-decreasing.
    fn stage_progress(&mut self, stage: StageName, fraction: f64);
    /// The stage finished successfully after `duration`.
    fn stage_finished(&mut self, stage: StageName, backend: &str, duration: Duration);
    /// The stage did not run.
    fn stage_skipped(&mut self, stage: StageName);
    /// Which backend made the stage's result and why, for a stage that
    /// chooses at run time (background removal on `auto`): called once,
    /// after `stage_started` and before `stage_finished` (whose backend is the
    /// same). `backend` is `builtin` or `onnx`; `detail` reads like
    /// `confidence 0.41 < 0.60 (38% of the garment within 29 of the backdrop
    /// colour): onnx`. Ignored unless implemented.
    fn stage_detail(&mut self, _stage: StageName, _backend: &str, _detail: &str) {}
}

/// A [`ProgressSink`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn stage_started(&mut self, _stage: StageName, _backend: &str) {}
    fn stage_progress(&mut self, _stage: StageName, _fraction: f64) {}
    fn stage_finished(&mut self, _stage: StageName, _backend: &str, _duration: Duration) {}
    fn stage_skipped(&mut self, _stage: StageName) {}
}

/// What one stage that ran did: its name, backend and wall time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    /// The stage.
    pub name: StageName,
    /// The backend that ran it (`builtin`, …): for background removal on
    /// `auto`, the one whose mask was used (`builtin` or `onnx`).
    pub backend: String,
    /// Wall time of the stage.
    pub duration: Duration,
    /// Why the stage ran on `backend`, when it chose at run time (see
    /// [`ProgressSink::stage_detail`]); `None` otherwise.
    pub detail: Option<String>,
}
