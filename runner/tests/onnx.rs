//! `clothjob-runner process` with the `onnx` backends (the built binary, as a user runs it):
//! garment segmentation with a model the test writes, background removal with the real
//! u2netp when CI provides it, and the clear failures of a wrong model or digest.
//!
//! ONNX Runtime comes from `ORT_DYLIB_PATH` (`.ci/run` sets it to the onnxruntime wheel's
//! library); without it the tests print SKIPPED and pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../backends/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clothjob_api::contract::EXIT_INVALID_SPEC;
use clothjob_onnx::ModelFamily;
use clothjob_onnx::testmodel::{nearest_prototype, pixel_classifier};
use sha2::{Digest, Sha256};

fn runtime(test: &str) -> Option<String> {
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: ORT_DYLIB_PATH is not set, and CI=true fails skipped tests (cargo xtask test sets it)"
            );
            eprintln!("SKIPPED {test}: ORT_DYLIB_PATH is not set");
            None
        }
    }
}

fn process(dir: &Path, input: &Path, ort: &str, sets: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clothjob-runner"));
    cmd.arg("process")
        .arg(input)
        .arg("--out")
        .arg(dir.join("out"))
        .env("ORT_DYLIB_PATH", ort)
        .env("CLOTHJOB_MODEL_CACHE", dir.join("models"))
        .env("RUST_LOG", "warn");
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.output().unwrap()
}

/// A 4-class garment-parsing model (background, upper, lower, full) whose class is the
/// nearest of four colours: the photo's grey backdrop, its navy shirt, and two colours
/// the photo does not have.
fn cloth_model(dir: &Path) -> PathBuf {
    let (mean, std) = ModelFamily::ClothSeg.normalisation();
    let norm = |rgb: [f32; 3]| -> [f32; 3] {
        std::array::from_fn(|c| (rgb[c] / 255.0 - mean[c]) / std[c])
    };
    let (weights, bias) = nearest_prototype(&[
        norm([205.0, 205.0, 207.0]),
        norm([30.0, 42.0, 78.0]),
        norm([250.0, 20.0, 20.0]),
        norm([20.0, 250.0, 20.0]),
    ]);
    let path = dir.join("cloth_seg.onnx");
    std::fs::write(&path, pixel_classifier(Some((96, 128)), &weights, &bias)).unwrap();
    path
}

#[test]
fn onnx_segmentation_labels_the_shirt_as_upper() {
    let Some(ort) = runtime("onnx_segmentation_labels_the_shirt_as_upper") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (input, truth) = common::write_photo(dir.path());
    let model = cloth_model(dir.path());
    let out = process(
        dir.path(),
        &input,
        &ort,
        &[
            "segmentation.backend=onnx".into(),
            format!("segmentation.onnx.modelUri=file://{}", model.display()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = common::report(dir.path());
    let seg = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "segmentation")
        .unwrap();
    assert_eq!(seg["backend"], "onnx");

    // One region, the shirt, of class `upper`, covering the builtin mask.
    let regions = report["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 1, "{regions:?}");
    assert_eq!(regions[0]["class"], "upper");
    assert_eq!(regions[0]["label"], 1);
    assert_eq!(regions[0]["share"], "1.000");

    // The label map holds class 1 where the shirt is and 0 elsewhere: compare with the truth.
    let labels = clothjob_pipeline::encode::decode_labels(
        &std::fs::read(common::output_file(dir.path(), &report, "segments")).unwrap(),
    )
    .unwrap();
    assert_eq!(labels.dimensions(), truth.dimensions());
    let (mut agree, mut values) = (0usize, std::collections::BTreeSet::new());
    for (l, t) in labels.pixels().zip(truth.pixels()) {
        values.insert(l[0]);
        agree += usize::from((l[0] == 1) == (t[0] == 255));
    }
    assert_eq!(values.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    let share = agree as f64 / (480.0 * 640.0);
    assert!(share > 0.98, "label map agrees with the truth on {share}");
}

#[test]
fn a_wrong_model_or_digest_fails_at_once_with_the_reason() {
    let Some(ort) = runtime("a_wrong_model_or_digest_fails_at_once_with_the_reason") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = common::write_photo(dir.path());

    // A one-class "segmenter": the shape is wrong for segmentation.
    let one = dir.path().join("one.onnx");
    std::fs::write(
        &one,
        pixel_classifier(Some((64, 64)), &[[1.0, 0.0, 0.0]], &[0.0]),
    )
    .unwrap();
    let out = process(
        dir.path(),
        &input,
        &ort,
        &[
            "segmentation.backend=onnx".into(),
            format!("segmentation.onnx.modelUri={}", one.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(EXIT_INVALID_SPEC));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("one.onnx") && err.contains("output"), "{err}");

    // A model whose sha256 is not the one the spec names.
    let model = cloth_model(dir.path());
    let wrong = hex::encode(Sha256::digest(b"another model"));
    let out = process(
        dir.path(),
        &input,
        &ort,
        &[
            "segmentation.backend=onnx".into(),
            format!("segmentation.onnx.modelUri={}", model.display()),
            format!("segmentation.onnx.sha256={wrong}"),
        ],
    );
    assert_eq!(out.status.code(), Some(EXIT_INVALID_SPEC));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sha256") && err.contains(&wrong), "{err}");

    // A model file that is not there.
    let out = process(
        dir.path(),
        &input,
        &ort,
        &[
            "backgroundRemoval.backend=onnx".into(),
            "backgroundRemoval.onnx.modelUri=/nonexistent/u2netp.onnx".into(),
        ],
    );
    assert_eq!(out.status.code(), Some(EXIT_INVALID_SPEC));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/u2netp.onnx"), "{err}");
}

#[test]
fn onnx_background_removal_with_u2netp_matches_the_truth() {
    let Some(ort) = runtime("onnx_background_removal_with_u2netp_matches_the_truth") else {
        return;
    };
    let Some(u2netp) = std::env::var_os("CLOTHJOB_U2NETP") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CLOTHJOB_U2NETP is not set, and CI=true fails skipped tests (cargo xtask test sets it)"
        );
        eprintln!("SKIPPED: CLOTHJOB_U2NETP is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (input, truth) = common::write_photo(dir.path());
    let u2netp = PathBuf::from(u2netp);
    let digest = hex::encode(Sha256::digest(std::fs::read(&u2netp).unwrap()));
    let out = process(
        dir.path(),
        &input,
        &ort,
        &[
            "backgroundRemoval.backend=onnx".into(),
            format!(
                "backgroundRemoval.onnx.modelUri=file://{}",
                u2netp.display()
            ),
            format!("backgroundRemoval.onnx.sha256={digest}"),
            "backgroundRemoval.onnx.model=u2netp".into(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = common::report(dir.path());
    assert_eq!(report["stages"][0]["backend"], "onnx");
    let mask = image::open(common::output_file(dir.path(), &report, "mask"))
        .unwrap()
        .to_luma8();
    assert_eq!(mask.dimensions(), truth.dimensions());
    let (mut inter, mut union) = (0u64, 0u64);
    for (m, t) in mask.pixels().zip(truth.pixels()) {
        let (a, b) = (m[0] >= 128, t[0] == 255);
        inter += u64::from(a && b);
        union += u64::from(a || b);
    }
    let iou = inter as f64 / union as f64;
    assert!(iou > 0.95, "u2netp mask IoU {iou}");
}
