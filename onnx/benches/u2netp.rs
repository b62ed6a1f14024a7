//! Benchmark of ONNX background removal with u2netp on the anchors' fixture
//! (see ../shared/bench), to compare with the rembg anchor line.
//!
//! usage: cargo bench -p clothjob-onnx --bench u2netp -- [FIXTURE_DIR] [ROUNDS]
//!
//! Prints machine-readable lines (seconds are the best of ROUNDS, default 3,
//! after one warm-up run; the session is loaded before timing, as the rembg
//! anchor does):
//!   ours onnx_u2netp SECONDS IOU        U2NetRemover::alpha of photo.jpg (resize,
//!                                       normalise, run, min-max, resize back) vs photo.mask.png
//!   ours onnx_u2netp_run SECONDS 0      the model run alone (320x320 input)
//!   ours onnx_u2netp_load SECONDS 0     loading the session (once per process)
//!
//! env: CLOTHJOB_U2NETP (default $ANCHOR_HOME/u2net/u2netp.onnx, ANCHOR_HOME
//! defaulting to ~/.cache/clothjob-anchors); ORT_DYLIB_PATH (default: the
//! onnxruntime of the anchors' venv, the library rembg uses there). Without a
//! model or a runtime it prints why on stderr and no lines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark binary

use std::path::{Path, PathBuf};
use std::time::Instant;

use clothjob_onnx::runtime::Model;
use clothjob_onnx::{ModelFamily, U2NetRemover, init_runtime};
use clothjob_pipeline::{BackgroundRemover, Limits, decode};
use image::GrayImage;

fn anchor_home() -> PathBuf {
    std::env::var_os("ANCHOR_HOME").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/clothjob-anchors")
        },
        PathBuf::from,
    )
}

/// `ORT_DYLIB_PATH`, else libonnxruntime.so* of the anchors' venv.
fn runtime_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let lib = anchor_home().join("venv/lib");
    std::fs::read_dir(lib).ok()?.flatten().find_map(|python| {
        let capi = python.path().join("site-packages/onnxruntime/capi");
        std::fs::read_dir(capi).ok()?.flatten().find_map(|f| {
            let name = f.file_name().to_string_lossy().into_owned();
            name.starts_with("libonnxruntime.so.").then(|| f.path())
        })
    })
}

fn best_of<T>(rounds: usize, mut f: impl FnMut() -> T) -> (f64, Vec<f64>, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let out = f();
        times.push(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    (best, times, last.unwrap())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn iou(alpha: &GrayImage, truth: &GrayImage) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    for (a, t) in alpha.as_raw().iter().zip(truth.as_raw()) {
        let (a, t) = (*a > 127, *t > 127);
        inter += u64::from(a && t);
        union += u64::from(a || t);
    }
    inter as f64 / union.max(1) as f64
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    let dir = args
        .first()
        .map_or_else(|| anchor_home().join("fixture-2000"), PathBuf::from);
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    let model = std::env::var_os("CLOTHJOB_U2NETP")
        .filter(|p| !p.is_empty())
        .map_or_else(|| anchor_home().join("u2net/u2netp.onnx"), PathBuf::from);
    if !dir.join("photo.jpg").is_file() || !model.is_file() {
        eprintln!(
            "onnx u2netp bench skipped: need {} and {} (run `bash ../shared/bench/anchors.sh`)",
            dir.join("photo.jpg").display(),
            model.display()
        );
        return;
    }
    let Some(library) = runtime_library() else {
        eprintln!(
            "onnx u2netp bench skipped: no ORT_DYLIB_PATH and no onnxruntime in the anchors' venv"
        );
        return;
    };
    if let Err(e) = init_runtime(&library) {
        eprintln!("onnx u2netp bench skipped: {e}");
        return;
    }
    eprintln!("  runtime {}", library.display());

    let photo = decode(
        &std::fs::read(dir.join("photo.jpg")).unwrap(),
        &Limits::default(),
    )
    .unwrap()
    .to_rgb8();
    let truth = image::open(dir.join("photo.mask.png")).unwrap().to_luma8();

    let t = Instant::now();
    let remover = U2NetRemover::load(&model, ModelFamily::U2Net).unwrap();
    let load = t.elapsed().as_secs_f64();

    remover.alpha(&photo, &mut |_| {}).unwrap();
    let (secs, times, alpha) = best_of(rounds, || remover.alpha(&photo, &mut |_| {}).unwrap());

    let session = Model::load(&model).unwrap();
    let (w, h) = remover.input_size();
    let input = vec![0.5f32; 3 * (w * h) as usize];
    let run_once = || {
        session
            .run([1, 3, h as usize, w as usize], &input, |_, v| Ok(v.len()))
            .unwrap()
    };
    let (run, run_times, _) = best_of(rounds, run_once);
    eprintln!(
        "  whole alpha: best {secs:.4}s, median {:.4}s; model run: best {run:.4}s, median {:.4}s; \
         resize/normalise/min-max/resize back: {:.4}s",
        median(times),
        median(run_times),
        secs - run
    );
    println!("ours onnx_u2netp {secs:.4} {:.4}", iou(&alpha, &truth));
    println!("ours onnx_u2netp_run {run:.4} 0");
    println!("ours onnx_u2netp_load {load:.4} 0");
}
