//! `auto` against both backends alone on the synthetic sets (the plain
//! `test_set` and the `patterned_set` of pipeline/tests/common/synth.rs):
//! per scene the builtin remover's confidence, which path `auto` takes, IoU
//! and boundary F1 of builtin, onnx (u2netp) and auto against the true mask,
//! and the seconds of each; then per set the fallback rate, min/mean IoU,
//! mean boundary F1 and total seconds.
//!
//! usage: cargo bench -p clothjob-onnx --bench auto -- [ROUNDS] [SUBSTRING]
//!
//! Seconds are the best of ROUNDS (default 1) per remover, at full
//! resolution, the model session loaded before timing. `auto`'s seconds are
//! what it runs: the builtin remover, plus the model where it falls back.
//! env: ORT_DYLIB_PATH (the ONNX Runtime library) and CLOTHJOB_U2NETP (the
//! u2netp.onnx file); without them it prints why on stderr and exits 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark binary

#[path = "../../pipeline/tests/common/synth.rs"]
mod synth;

use std::path::PathBuf;
use std::time::Instant;

use clothjob_onnx::{ModelFamily, U2NetRemover, init_runtime};
use clothjob_pipeline::BackgroundRemover;
use clothjob_pipeline::matte::{AUTO_MIN_CONFIDENCE, BuiltinRemover};
use clothjob_pipeline::quality::{boundary_f1, boundary_tolerance, iou};
use image::GrayImage;

fn best_of<T>(rounds: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let out = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    (best, last.unwrap())
}

#[derive(Default)]
struct Totals {
    n: usize,
    fallbacks: usize,
    iou: [Vec<f64>; 3],
    f1: [Vec<f64>; 3],
    secs: [f64; 3],
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    let rounds: usize = args.first().and_then(|r| r.parse().ok()).unwrap_or(1);
    let only = args.get(1).cloned();
    let env_path = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let (Some(library), Some(model)) = (env_path("ORT_DYLIB_PATH"), env_path("CLOTHJOB_U2NETP"))
    else {
        eprintln!("auto bench: set ORT_DYLIB_PATH and CLOTHJOB_U2NETP");
        std::process::exit(2);
    };
    init_runtime(&library).unwrap();
    let t = Instant::now();
    let onnx = U2NetRemover::load(&model, ModelFamily::U2Net).unwrap();
    println!("u2netp session load {:.3}s", t.elapsed().as_secs_f64());
    let builtin = BuiltinRemover::default();
    println!(
        "threshold {AUTO_MIN_CONFIDENCE}; seconds best of {rounds}; columns: builtin, onnx, auto"
    );
    println!(
        "{:<44} {:>9} {:>5} {:>5} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6}",
        "case",
        "size",
        "conf",
        "path",
        "IoU b",
        "IoU o",
        "IoU a",
        "BF1 b",
        "BF1 o",
        "BF1 a",
        "s b",
        "s o",
        "s a"
    );
    for (title, set) in [
        ("plain", synth::test_set()),
        ("patterned", synth::patterned_set()),
    ] {
        let mut tot = Totals::default();
        for scene in set
            .iter()
            .filter(|s| only.as_deref().is_none_or(|o| s.name.contains(o)))
        {
            let (photo, truth) = synth::render(scene);
            let (w, h) = photo.dimensions();
            let tol = boundary_tolerance(w, h);
            let (tb, (mb, conf)) = best_of(rounds, || {
                builtin.alpha_with_confidence(&photo, &mut |_| {}).unwrap()
            });
            let (to, mo) = best_of(rounds, || onnx.alpha(&photo, &mut |_| {}).unwrap());
            let falls = conf.value < AUTO_MIN_CONFIDENCE;
            let (ta, ma): (f64, &GrayImage) = if falls { (tb + to, &mo) } else { (tb, &mb) };
            let masks = [&mb, &mo, ma];
            let times = [tb, to, ta];
            let ious = masks.map(|m| iou(m, &truth));
            let f1s = masks.map(|m| boundary_f1(m, &truth, tol));
            println!(
                "{:<44} {:>9} {:>5.2} {:>5} | {:>6.4} {:>6.4} {:>6.4} | {:>6.4} {:>6.4} {:>6.4} | {:>6.3} {:>6.3} {:>6.3}",
                scene.name,
                format!("{w}x{h}"),
                conf.value,
                if falls { "onnx" } else { "blt" },
                ious[0],
                ious[1],
                ious[2],
                f1s[0],
                f1s[1],
                f1s[2],
                times[0],
                times[1],
                times[2]
            );
            tot.n += 1;
            tot.fallbacks += usize::from(falls);
            for k in 0..3 {
                tot.iou[k].push(ious[k]);
                tot.f1[k].push(f1s[k]);
                tot.secs[k] += times[k];
            }
        }
        if tot.n == 0 {
            continue;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let min = |v: &[f64]| v.iter().copied().fold(1.0, f64::min);
        println!(
            "{title}: fallback {}/{}; min IoU b/o/a {:.4}/{:.4}/{:.4}; mean IoU {:.4}/{:.4}/{:.4}; \
             mean BF1 {:.4}/{:.4}/{:.4}; seconds {:.2}/{:.2}/{:.2}",
            tot.fallbacks,
            tot.n,
            min(&tot.iou[0]),
            min(&tot.iou[1]),
            min(&tot.iou[2]),
            mean(&tot.iou[0]),
            mean(&tot.iou[1]),
            mean(&tot.iou[2]),
            mean(&tot.f1[0]),
            mean(&tot.f1[1]),
            mean(&tot.f1[2]),
            tot.secs[0],
            tot.secs[1],
            tot.secs[2]
        );
    }
}
