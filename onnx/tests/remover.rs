//! `U2NetRemover`: a tiny built model (colour decides the alpha), the real
//! u2netp on a synthetic garment photo with a known mask (vs the truth and
//! vs rembg itself), the pipeline end to end, and the shape errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "../../pipeline/tests/common/synth.rs"]
mod synth;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use clothjob_onnx::runtime::Model;
use clothjob_onnx::testmodel::{self, ModelBuilder, fixed};
use clothjob_onnx::{ModelFamily, OnnxError, U2NetRemover};
use clothjob_pipeline::{
    Backends, BackgroundRemovalBackend, BackgroundRemovalOptions, BackgroundRemover,
    EncodingOptions, Limits, NoProgress, Options, PipelineError, RunOutput, StageName, run_with,
};
use image::{GrayImage, Luma, Rgb, RgbImage};

/// A blue disc of radius `r` on white, and its mask.
fn disc(w: u32, h: u32, r: f32) -> (RgbImage, GrayImage) {
    let inside = |x: u32, y: u32| {
        let (dx, dy) = (
            x as f32 + 0.5 - w as f32 / 2.0,
            y as f32 + 0.5 - h as f32 / 2.0,
        );
        dx * dx + dy * dy < r * r
    };
    let photo = RgbImage::from_fn(w, h, |x, y| {
        if inside(x, y) {
            Rgb([30, 60, 200])
        } else {
            Rgb([245, 245, 245])
        }
    });
    let mask = GrayImage::from_fn(w, h, |x, y| Luma([if inside(x, y) { 255 } else { 0 }]));
    (photo, mask)
}

/// A 1x3x64x64 -> 1x1x64x64 model whose output grows with blue minus red.
fn blueness_model() -> Vec<u8> {
    testmodel::pixel_classifier(Some((64, 64)), &[[-1.0, 0.0, 1.0]], &[0.0])
}

#[test]
fn a_built_model_gives_the_alpha_of_its_colour_rule() {
    if !support::runtime("a_built_model_gives_the_alpha_of_its_colour_rule") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = support::write_model(dir.path(), "blue.onnx", &blueness_model());
    let remover = U2NetRemover::load(&model, ModelFamily::U2Net).unwrap();
    assert_eq!(remover.input_size(), (64, 64));
    let (photo, truth) = disc(500, 400, 120.0);
    let mut seen = Vec::new();
    let alpha = remover.alpha(&photo, &mut |f| seen.push(f)).unwrap();
    assert_eq!(alpha.dimensions(), (500, 400));
    assert_eq!(seen.first().copied(), Some(0.0));
    assert_eq!(seen.last().copied(), Some(1.0));
    // Min-max normalised: the extremes (Lanczos ringing at the edge of the
    // disc) are 0 and 255; the disc and the background sit near them.
    assert_eq!(alpha.iter().copied().max(), Some(255));
    assert_eq!(alpha.iter().copied().min(), Some(0));
    assert!(
        alpha.get_pixel(250, 200)[0] > 220,
        "{:?}",
        alpha.get_pixel(250, 200)
    );
    assert!(alpha.get_pixel(5, 5)[0] < 30, "{:?}", alpha.get_pixel(5, 5));
    let iou = support::iou(&alpha, &truth);
    eprintln!("disc IoU {iou:.4}");
    assert!(iou > 0.97, "IoU {iou}");
}

#[test]
fn sessions_are_loaded_once_per_file() {
    if !support::runtime("sessions_are_loaded_once_per_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = support::write_model(dir.path(), "shared.onnx", &blueness_model());
    let a = Model::load(&model).unwrap();
    let b = Model::load(&dir.path().join(".").join("shared.onnx")).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "one session per canonical path");
    let other = support::write_model(dir.path(), "other.onnx", &blueness_model());
    assert!(!Arc::ptr_eq(&a, &Model::load(&other).unwrap()));
}

#[test]
fn remover_models_must_be_1x3xhxw_to_1x1xhxw() {
    if !support::runtime("remover_models_must_be_1x3xhxw_to_1x1xhxw") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let four = testmodel::pixel_classifier(Some((32, 32)), &[[0.0; 3]; 4], &[0.0; 4]);
    let path = support::write_model(dir.path(), "four.onnx", &four);
    let e = U2NetRemover::load(&path, ModelFamily::U2Net).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "the ONNX model {} does not fit: its output 0 should be float 1x1xHxW, it is float 1x4x32x32",
            path.display()
        )
    );
    let rank3 = ModelBuilder::new()
        .input("x", fixed(&[3, 32, 32]))
        .output("y", fixed(&[3, 32, 32]))
        .node("Identity", &["x"], &["y"], vec![])
        .to_bytes();
    let path = support::write_model(dir.path(), "rank3.onnx", &rank3);
    let e = U2NetRemover::load(&path, ModelFamily::U2Net).unwrap_err();
    assert!(matches!(e, OnnxError::ModelShape { .. }), "{e}");
    assert!(
        e.to_string()
            .ends_with("its input 0 should be float 1x3xHxW, it is float 3x32x32"),
        "{e}"
    );
    let pe = e.into_pipeline(StageName::BackgroundRemoval);
    assert!(
        matches!(pe, PipelineError::InvalidOptions(_)) && pe.is_bad_input(),
        "{pe}"
    );
}

fn onnx_removal_options(model: &Path) -> Options {
    Options {
        background_removal: Some(BackgroundRemovalOptions {
            backend: BackgroundRemovalBackend::Onnx {
                model_path: model.to_path_buf(),
            },
            ..BackgroundRemovalOptions::default()
        }),
        segmentation: None,
        expansion: None,
        encoding: Some(EncodingOptions {
            max_side: 2048,
            ..EncodingOptions::default()
        }),
    }
}

/// The `mask` output of a run, decoded.
/// The whole pipeline on `photo` with `remover` as its onnx background remover.
fn run_pipeline(remover: &U2NetRemover, model: &Path, photo: &RgbImage) -> RunOutput {
    let backends = Backends {
        background_remover: Some(remover),
        ..Backends::default()
    };
    run_with(
        &support::png(photo),
        &onnx_removal_options(model),
        &Limits::default(),
        &mut NoProgress,
        &backends,
    )
    .unwrap()
}

fn mask_output(out: &clothjob_pipeline::RunOutput) -> GrayImage {
    let mask = out
        .outputs
        .iter()
        .find(|o| o.role == "mask")
        .expect("a mask output");
    image::load_from_memory(&mask.bytes).unwrap().to_luma8()
}

#[test]
fn the_pipeline_cuts_out_with_a_built_model() {
    if !support::runtime("the_pipeline_cuts_out_with_a_built_model") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = support::write_model(dir.path(), "blue-pipeline.onnx", &blueness_model());
    let remover = U2NetRemover::load(&model, ModelFamily::U2Net).unwrap();
    let (photo, truth) = disc(600, 450, 150.0);
    let out = run_pipeline(&remover, &model, &photo);
    assert_eq!(out.stages[0].name, StageName::BackgroundRemoval);
    assert_eq!(out.stages[0].backend, "onnx");
    let roles: Vec<&str> = out.outputs.iter().map(|o| o.role.as_str()).collect();
    assert!(
        roles.contains(&"cutout") && roles.contains(&"mask"),
        "{roles:?}"
    );
    let iou = support::iou(&mask_output(&out), &truth);
    assert!(iou > 0.97, "IoU {iou}");
}

/// The synthetic garment photo the u2netp tests use, and its true mask.
fn garment_photo() -> (RgbImage, GrayImage) {
    synth::render(&synth::Scene::new("blue_tshirt", 1200, 1200))
}

#[test]
fn u2netp_finds_the_garment_like_rembg() {
    if !support::runtime("u2netp_finds_the_garment_like_rembg") {
        return;
    }
    let Some(model) = support::u2netp("u2netp_finds_the_garment_like_rembg") else {
        return;
    };
    let remover = U2NetRemover::load(&model, ModelFamily::guess_from_path(&model)).unwrap();
    assert_eq!(remover.input_size(), (320, 320));
    let (photo, truth) = garment_photo();
    let alpha = remover.alpha(&photo, &mut |_| {}).unwrap();
    let ours = support::iou(&alpha, &truth);
    eprintln!("u2netp IoU vs truth: ours {ours:.4}");
    assert!(ours >= 0.95, "IoU {ours}");

    let Some(rembg) = support::rembg("u2netp_finds_the_garment_like_rembg (rembg part)") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("photo.png");
    let output = dir.path().join("cutout.png");
    photo.save(&input).unwrap();
    let status = Command::new(&rembg)
        .args(["i", "-m", "u2netp"])
        .arg(&input)
        .arg(&output)
        .env("U2NET_HOME", model.parent().unwrap())
        .status()
        .expect("run rembg");
    assert!(status.success(), "rembg failed");
    let cutout = image::open(&output).unwrap().to_rgba8();
    let theirs_alpha = GrayImage::from_fn(cutout.width(), cutout.height(), |x, y| {
        Luma([cutout.get_pixel(x, y)[3]])
    });
    let theirs = support::iou(&theirs_alpha, &truth);
    eprintln!(
        "u2netp IoU vs truth: rembg {theirs:.4}, difference {:.4}",
        (ours - theirs).abs()
    );
    assert!(
        (ours - theirs).abs() <= 0.005,
        "ours {ours}, rembg {theirs}"
    );
}

#[test]
fn u2netp_in_the_pipeline_end_to_end() {
    if !support::runtime("u2netp_in_the_pipeline_end_to_end") {
        return;
    }
    let Some(model) = support::u2netp("u2netp_in_the_pipeline_end_to_end") else {
        return;
    };
    let remover = U2NetRemover::load(&model, ModelFamily::U2Net).unwrap();
    let (photo, truth) = garment_photo();
    let out = run_pipeline(&remover, &model, &photo);
    assert_eq!(out.stages[0].backend, "onnx");
    let iou = support::iou(&mask_output(&out), &truth);
    eprintln!("u2netp pipeline mask IoU {iou:.4}");
    assert!(iou >= 0.95, "IoU {iou}");
}
