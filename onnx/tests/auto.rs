//! Background removal on `auto` with the real u2netp model as its fallback:
//! a plain scene stays on builtin, a hard patterned scene (stripes 10 grey
//! levels from the backdrop) falls back to the model, and the stage, the
//! progress sink and the run output say which path ran and why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "../../pipeline/tests/common/synth.rs"]
mod synth;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clothjob_onnx::{ModelFamily, U2NetRemover};
use clothjob_pipeline::matte::{AUTO_MIN_CONFIDENCE, BuiltinRemover};
use clothjob_pipeline::{
    Backends, BackgroundRemovalBackend, BackgroundRemovalOptions, BackgroundRemover,
    EncodingOptions, Limits, Options, ProgressSink, RunOutput, StageName, run_with,
};
use image::{GrayImage, RgbImage};

/// Records the stage calls that say which backend ran.
#[derive(Default)]
struct Calls(Vec<String>);

impl ProgressSink for Calls {
    fn stage_started(&mut self, stage: StageName, backend: &str) {
        self.0.push(format!("start {stage} {backend}"));
    }
    fn stage_progress(&mut self, _stage: StageName, fraction: f64) {
        assert!((0.0..=1.0).contains(&fraction));
    }
    fn stage_finished(&mut self, stage: StageName, backend: &str, _d: Duration) {
        self.0.push(format!("finish {stage} {backend}"));
    }
    fn stage_skipped(&mut self, _stage: StageName) {}
    fn stage_detail(&mut self, stage: StageName, backend: &str, detail: &str) {
        self.0.push(format!("detail {stage} {backend}: {detail}"));
    }
}

fn model(test: &str) -> Option<PathBuf> {
    if !support::runtime(test) {
        return None;
    }
    support::u2netp(test)
}

fn scene(set: &[synth::Scene], name: &str) -> RgbImage {
    synth::render(set.iter().find(|s| s.name == name).unwrap()).0
}

/// The pipeline on `auto` with u2netp supplied, background removal and the
/// lossless outputs (`mask`) only.
fn run_auto(model: &Path, remover: &U2NetRemover, photo: &RgbImage) -> (RunOutput, Vec<String>) {
    let options = Options {
        background_removal: Some(BackgroundRemovalOptions {
            backend: BackgroundRemovalBackend::Auto {
                model_path: Some(model.to_path_buf()),
            },
            ..BackgroundRemovalOptions::default()
        }),
        segmentation: None,
        expansion: None,
        encoding: Some(EncodingOptions {
            max_side: 4096,
            ..EncodingOptions::default()
        }),
    };
    let backends = Backends {
        background_remover: Some(remover),
        ..Backends::default()
    };
    let mut calls = Calls::default();
    let out = run_with(
        &support::png(photo),
        &options,
        &Limits::default(),
        &mut calls,
        &backends,
    )
    .unwrap();
    (out, calls.0)
}

fn mask_output(out: &RunOutput) -> GrayImage {
    let mask = out.outputs.iter().find(|o| o.role == "mask").unwrap();
    image::load_from_memory(&mask.bytes).unwrap().to_luma8()
}

#[test]
fn a_plain_scene_on_auto_stays_builtin_with_the_model_at_hand() {
    let Some(model) = model("a_plain_scene_on_auto_stays_builtin_with_the_model_at_hand") else {
        return;
    };
    let remover = U2NetRemover::load(&model, ModelFamily::U2Net).unwrap();
    let photo = scene(&synth::test_set(), "beige_dress_on_beige");
    let (out, calls) = run_auto(&model, &remover, &photo);
    let choice = out.auto_removal.clone().unwrap();
    assert_eq!(choice.backend, "builtin");
    assert!(
        choice.confidence.value >= AUTO_MIN_CONFIDENCE,
        "{:?}",
        choice.confidence
    );
    assert!(choice.reason.ends_with("): builtin"), "{}", choice.reason);
    assert_eq!(out.stages[0].backend, "builtin");
    assert_eq!(
        out.stages[0].detail.as_deref(),
        Some(choice.reason.as_str())
    );
    assert_eq!(
        calls[..3],
        [
            "start backgroundRemoval builtin".to_owned(),
            format!("detail backgroundRemoval builtin: {}", choice.reason),
            "finish backgroundRemoval builtin".to_owned(),
        ]
    );
    // The mask is the builtin remover's.
    let builtin = BuiltinRemover::default()
        .alpha(&photo, &mut |_| {})
        .unwrap();
    assert!(mask_output(&out) == builtin, "auto kept another mask");
}

#[test]
fn a_hard_patterned_scene_on_auto_falls_back_to_onnx_and_says_why() {
    let Some(model) = model("a_hard_patterned_scene_on_auto_falls_back_to_onnx_and_says_why")
    else {
        return;
    };
    let remover = U2NetRemover::load(&model, ModelFamily::U2Net).unwrap();
    let photo = scene(&synth::patterned_set(), "stripes_10_above_backdrop");
    let (out, calls) = run_auto(&model, &remover, &photo);
    let choice = out.auto_removal.clone().unwrap();
    assert_eq!(choice.backend, "onnx");
    assert!(
        choice.confidence.value < AUTO_MIN_CONFIDENCE,
        "{:?}",
        choice.confidence
    );
    let expected = format!(
        "confidence {:.2} < {AUTO_MIN_CONFIDENCE:.2} ({}): onnx",
        choice.confidence.value,
        choice.confidence.explain()
    );
    assert_eq!(choice.reason, expected);
    assert!(
        choice
            .reason
            .contains("patterned garment or garment near the backdrop colour"),
        "{}",
        choice.reason
    );
    assert_eq!(
        (out.stages[0].name, out.stages[0].backend.as_str()),
        (StageName::BackgroundRemoval, "onnx")
    );
    assert_eq!(out.stages[0].detail.as_deref(), Some(expected.as_str()));
    assert_eq!(
        calls[..3],
        [
            "start backgroundRemoval builtin".to_owned(),
            format!("detail backgroundRemoval onnx: {expected}"),
            "finish backgroundRemoval onnx".to_owned(),
        ]
    );
    // The mask is the model's.
    let theirs = remover.alpha(&photo, &mut |_| {}).unwrap();
    assert!(
        mask_output(&out) == theirs,
        "auto did not use the model's mask"
    );
}
