//! Background removal on `auto` without an ONNX model, and the builtin
//! remover's confidence on the synthetic sets: the plain scenes stay above
//! [`AUTO_MIN_CONFIDENCE`], the patterned scenes with a colour close to the
//! backdrop fall below it. (The fallback to a real ONNX model is tested in
//! `onnx/tests/auto.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use clothjob_pipeline::matte::{AUTO_MIN_CONFIDENCE, BuiltinRemover, Confidence};
use clothjob_pipeline::{
    BackgroundRemovalBackend, BackgroundRemovalOptions, Limits, Options, ProgressSink, RunOutput,
    StageName, run,
};
use common::synth::{self, Scene};
use image::RgbImage;
use rayon::prelude::*;

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

fn png(photo: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    photo
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

fn auto_options(model_path: Option<std::path::PathBuf>) -> Options {
    Options {
        background_removal: Some(BackgroundRemovalOptions {
            backend: BackgroundRemovalBackend::Auto { model_path },
            ..BackgroundRemovalOptions::default()
        }),
        segmentation: None,
        expansion: None,
        encoding: None,
    }
}

fn scene(set: &[Scene], name: &str) -> Scene {
    set.iter().find(|s| s.name == name).unwrap().clone()
}

fn run_auto(photo: &RgbImage, model_path: Option<std::path::PathBuf>) -> (RunOutput, Vec<String>) {
    let mut calls = Calls::default();
    let out = run(
        &png(photo),
        &auto_options(model_path),
        &Limits::default(),
        &mut calls,
    )
    .unwrap();
    (out, calls.0)
}

#[test]
fn a_plain_scene_on_auto_stays_builtin_with_high_confidence() {
    let (photo, _) = synth::render(&scene(&synth::test_set(), "white_on_light_grey"));
    let (out, calls) = run_auto(&photo, None);
    let choice = out.auto_removal.expect("auto records its choice");
    assert_eq!(choice.backend, "builtin");
    assert!(
        choice.confidence.value >= AUTO_MIN_CONFIDENCE,
        "{:?}",
        choice.confidence
    );
    assert_eq!(choice.threshold, AUTO_MIN_CONFIDENCE);
    assert!(
        choice.reason.starts_with(&format!(
            "confidence {:.2} >= {AUTO_MIN_CONFIDENCE:.2} (",
            choice.confidence.value
        )) && choice.reason.ends_with("): builtin"),
        "{}",
        choice.reason
    );
    let stage = &out.stages[0];
    assert_eq!(
        (stage.name, stage.backend.as_str()),
        (StageName::BackgroundRemoval, "builtin")
    );
    assert_eq!(stage.detail.as_deref(), Some(choice.reason.as_str()));
    assert_eq!(
        calls,
        [
            "start backgroundRemoval builtin".to_owned(),
            format!("detail backgroundRemoval builtin: {}", choice.reason),
            "finish backgroundRemoval builtin".to_owned(),
        ]
    );
}

#[test]
fn a_hard_scene_on_auto_without_a_model_keeps_builtin_and_says_so() {
    let (photo, _) = synth::render(&scene(&synth::patterned_set(), "stripes_10_above_backdrop"));
    let (out, calls) = run_auto(&photo, None);
    let choice = out.auto_removal.unwrap();
    assert_eq!(choice.backend, "builtin");
    assert!(choice.confidence.value < AUTO_MIN_CONFIDENCE);
    assert!(
        choice
            .reason
            .contains(&format!("< {AUTO_MIN_CONFIDENCE:.2}"))
            && choice
                .reason
                .contains("patterned garment or garment near the backdrop colour")
            && choice
                .reason
                .ends_with(", but no onnx model configured: builtin kept"),
        "{}",
        choice.reason
    );
    assert_eq!(out.stages[0].backend, "builtin");
    assert_eq!(calls.last().unwrap(), "finish backgroundRemoval builtin");

    // A model path the caller did not load is named.
    let (out, _) = run_auto(&photo, Some("/models/u2netp.onnx".into()));
    let reason = out.auto_removal.unwrap().reason;
    assert!(
        reason.ends_with(
            ", but the onnx model /models/u2netp.onnx was not supplied to the pipeline: builtin kept"
        ),
        "{reason}"
    );
}

#[test]
fn other_backends_record_no_auto_choice() {
    let (photo, _) = synth::render(&Scene::new("blue_tshirt", 600, 600));
    let options = Options {
        encoding: None,
        segmentation: None,
        expansion: None,
        ..Options::default()
    };
    let out = run(
        &png(&photo),
        &options,
        &Limits::default(),
        &mut clothjob_pipeline::NoProgress,
    )
    .unwrap();
    assert_eq!(out.auto_removal, None);
    assert_eq!(out.stages[0].detail, None);
}

#[test]
fn the_confidence_matches_its_documented_formula() {
    let c = Confidence::from_measures(0.1, 30.0, 0.95);
    assert!((c.contrast - 0.6).abs() < 1e-6, "{c:?}");
    assert_eq!(c.border, 1.0);
    assert_eq!(c.value, c.contrast);
    let c = Confidence::from_measures(0.0, 30.0, 0.65);
    assert!((c.border - 0.5).abs() < 1e-6, "{c:?}");
    assert_eq!(c.value, c.border);
    assert!(
        c.explain().contains("65% of the border fits"),
        "{}",
        c.explain()
    );
    assert_eq!(Confidence::from_measures(0.5, 30.0, 0.3).value, 0.0);
    assert_eq!(Confidence::NOTHING_FOUND.value, 0.0);
    assert_eq!(
        Confidence::NOTHING_FOUND.explain(),
        "no garment told apart from the backdrop"
    );
    // A blank photo has no garment to be sure of.
    let blank = RgbImage::from_pixel(300, 300, image::Rgb([230, 230, 230]));
    let (_, c) = BuiltinRemover::default()
        .alpha_with_confidence(&blank, &mut |_| {})
        .unwrap();
    assert!(!c.garment_found && c.value == 0.0, "{c:?}");
}

fn confidences(set: &[Scene]) -> Vec<(&'static str, Confidence)> {
    set.par_iter()
        .map(|scene| {
            let (photo, _) = synth::render(scene);
            let (_, c) = BuiltinRemover::default()
                .alpha_with_confidence(&photo, &mut |_| {})
                .unwrap();
            (scene.name, c)
        })
        .collect()
}

fn print(title: &str, rows: &[(&str, Confidence)]) {
    println!("{title}");
    println!(
        "{:<46} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "case", "conf", "contr", "border", "near", "dist", "fit"
    );
    for (name, c) in rows {
        println!(
            "{:<46} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.1} {:>6.3}",
            name, c.value, c.contrast, c.border, c.near_backdrop, c.near_distance, c.border_fit
        );
    }
}

/// The threshold separates the sets: every plain scene stays on builtin,
/// the patterned scenes with a colour close to the backdrop fall back.
#[test]
fn the_threshold_separates_plain_scenes_from_hard_patterned_ones() {
    let plain = confidences(&synth::test_set());
    let patterned = confidences(&synth::patterned_set());
    print("plain set", &plain);
    print("patterned set", &patterned);
    for (name, c) in &plain {
        assert!(
            c.value >= AUTO_MIN_CONFIDENCE,
            "plain scene {name} would fall back: {c:?}"
        );
    }
    let falls: Vec<&str> = patterned
        .iter()
        .filter(|(_, c)| c.value < AUTO_MIN_CONFIDENCE)
        .map(|(n, _)| *n)
        .collect();
    println!(
        "fallback on {} of {} patterned scenes: {falls:?}",
        falls.len(),
        patterned.len()
    );
    for hard in HARD {
        assert!(falls.contains(hard), "{hard} stays on builtin");
    }
}

/// Patterned scenes that must fall back (a pattern colour within about 10-12
/// grey levels of the backdrop over a large share of the garment).
const HARD: &[&str] = &[
    "stripes_10_above_backdrop",
    "stripes_10_below_backdrop_hoodie",
    "vertical_stripes_12_from_backdrop",
    "white_hoodie_on_white_paper",
];
