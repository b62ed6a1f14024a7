//! Test support: ONNX Runtime, the u2netp model and rembg when this machine
//! has them, models written to temporary files, IoU.
//!
//! - ONNX Runtime: `ORT_DYLIB_PATH` (must load when set), else the
//!   `libonnxruntime.so*` of the rembg venv made by
//!   `backends/scripts/setup-rembg.sh` (`~/.cache/clothjob/rembg-venv`);
//!   without either, tests that need it print a SKIPPED banner and pass.
//! - `CLOTHJOB_U2NETP`: the u2netp.onnx model file (u2netp tests skip
//!   when unset); `CLOTHJOB_REMBG`: the `rembg` CLI to compare with.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};

/// Prints a banner saying why a test did not run; with `CI=true` a skipped test fails.
pub fn skipped(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} cannot run and CI=true fails skipped tests: {why}"
    );
    eprintln!(
        "\n==================== SKIPPED: {test} ====================\n{why}\n\
         =========================================================\n"
    );
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The ONNX Runtime library of the rembg venv, if there is one.
fn venv_library() -> Option<PathBuf> {
    let lib = home().join(".cache/clothjob/rembg-venv/lib");
    for python in std::fs::read_dir(lib).ok()?.flatten() {
        let capi = python.path().join("site-packages/onnxruntime/capi");
        for f in std::fs::read_dir(capi).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("libonnxruntime.so.") {
                return Some(f.path());
            }
        }
    }
    None
}

/// Loads ONNX Runtime for the tests; false (after a banner) when this
/// machine has none.
pub fn runtime(test: &str) -> bool {
    let path = match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => match venv_library() {
            Some(p) => p,
            None => {
                skipped(
                    test,
                    "no ONNX Runtime: ORT_DYLIB_PATH is unset and the rembg venv \
                     (backends/scripts/setup-rembg.sh) is missing",
                );
                return false;
            }
        },
    };
    clothjob_onnx::init_runtime(&path).expect("load ONNX Runtime");
    true
}

/// The u2netp model from `CLOTHJOB_U2NETP`, or `None` after a banner.
pub fn u2netp(test: &str) -> Option<PathBuf> {
    match std::env::var_os("CLOTHJOB_U2NETP").filter(|p| !p.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "CLOTHJOB_U2NETP={} is not a file", p.display());
            Some(p)
        }
        None => {
            skipped(
                test,
                "CLOTHJOB_U2NETP is unset (e.g. ~/.cache/clothjob/u2net/u2netp.onnx, \
                 from backends/scripts/setup-rembg.sh)",
            );
            None
        }
    }
}

/// The `rembg` CLI from `CLOTHJOB_REMBG`, or `None` after a banner.
pub fn rembg(test: &str) -> Option<PathBuf> {
    match std::env::var_os("CLOTHJOB_REMBG").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            skipped(test, "CLOTHJOB_REMBG is unset: no comparison with rembg");
            None
        }
    }
}

/// Writes `bytes` as `name` in `dir` and returns the path.
pub fn write_model(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write model");
    path
}

/// Intersection over union of two masks thresholded at 128.
pub fn iou(a: &GrayImage, b: &GrayImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let (mut inter, mut union) = (0u64, 0u64);
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let (x, y) = (*x > 127, *y > 127);
        inter += u64::from(x && y);
        union += u64::from(x || y);
    }
    inter as f64 / union.max(1) as f64
}

/// `img` as PNG bytes, the pipeline's input.
pub fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}
