//! Benchmark of the pipeline against the anchors' fixture (see shared/bench).
//!
//! usage: cargo bench -p clothjob-pipeline --bench pipeline -- FIXTURE_DIR [ROUNDS]
//!
//! Prints machine-readable lines (seconds are the best of ROUNDS, default 3):
//!   ours encode SECONDS BYTES             seven stage_*.png, raw bytes (decoding not timed)
//!   ours encode_cpu CPU_SECONDS BYTES     the same, CPU seconds (user+sys) per round, all threads
//!   ours encode_base64 SECONDS BYTES      the same, bytes as base64 (what encode_anchor.py counts)
//!   ours bgremove SECONDS IOU             builtin alpha of photo.jpg vs photo.mask.png
//!   ours cutout SECONDS IOU               alpha plus the decontaminated RGBA cut-out
//!   ours pipeline SECONDS PEAK_RSS_MIB    whole builtin pipeline from photo.jpg bytes
//!   ours pipeline_4000 SECONDS PEAK_RSS_MIB  the same on a 4000x4000 JPEG (own process)
//!   ours synth_NAME SECONDS IOU           builtin alpha on each synthetic test photo
//!
//! env: OURS selects what runs (default "encode bgremove cutout pipeline
//! pipeline_4000 synth"); DUMP_DIR writes the outputs and alphas there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark binary

#[path = "../tests/common/synth.rs"]
mod synth;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clothjob_pipeline::encode::{OutputImage, OutputKind, Pixels, encode_all, encode_dynamic};
use clothjob_pipeline::matte::{BackgroundRemover, BuiltinRemover, compose_cutout};
use clothjob_pipeline::{EncodingOptions, Limits, NoProgress, Options, decode, run};
use image::GrayImage;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    if args.first().map(String::as_str) == Some("--child-pipeline") {
        child_pipeline(Path::new(&args[1]), &args[2]);
        return;
    }
    let dir = PathBuf::from(args.first().map_or_else(
        || {
            let home = std::env::var("HOME").unwrap_or_default();
            format!("{home}/.cache/clothjob-anchors/fixture-2000")
        },
        Clone::clone,
    ));
    if !dir.join("photo.jpg").is_file() {
        eprintln!(
            "no fixture in {}: run `bash shared/bench/anchors.sh` first (it writes \
             ~/.cache/clothjob-anchors/fixture-2000), or pass the fixture directory",
            dir.display()
        );
        std::process::exit(2);
    }
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    let only: Vec<String> = std::env::var("OURS")
        .unwrap_or_else(|_| "encode bgremove cutout pipeline pipeline_4000 synth".to_owned())
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let want = |s: &str| only.iter().any(|o| o == s);

    if want("synth") {
        bench_synth();
    }
    if want("encode") {
        bench_encode(&dir, rounds);
    }
    if want("bgremove") || want("cutout") {
        bench_bgremove(&dir, rounds, want("cutout"));
    }
    if want("pipeline") {
        spawn_child(&dir.join("photo.jpg"), "pipeline", rounds);
    }
    if want("pipeline_4000") {
        let big = make_4000(&dir);
        spawn_child(&big, "pipeline_4000", rounds);
        let _ = std::fs::remove_file(&big);
    }
}

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

fn bench_encode(dir: &Path, rounds: usize) {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("stage_") && n.ends_with(".png")
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths.len(),
        7,
        "expected seven stage_*.png in {}",
        dir.display()
    );
    let images: Vec<(String, image::DynamicImage)> = paths
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, image::open(p).unwrap())
        })
        .collect();
    let options = EncodingOptions::default();
    let cpu0 = cpu_seconds();
    // The pipeline's own entry point: all seven outputs in one `encode_all`.
    let items: Vec<OutputImage<'_>> = images
        .iter()
        .map(|(stem, img)| OutputImage {
            role: stem,
            pixels: match img {
                image::DynamicImage::ImageRgb8(i) => Pixels::Rgb(i),
                image::DynamicImage::ImageRgba8(i) => Pixels::Rgba(i),
                image::DynamicImage::ImageLuma8(i) => Pixels::Gray(i),
                other => panic!("{stem}: unexpected colour type {:?}", other.color()),
            },
            kind: if stem == "stage_mask" {
                OutputKind::Mask
            } else {
                OutputKind::Picture
            },
        })
        .collect();
    let (secs, outputs) = best_of(rounds, || encode_all(&items, &options).unwrap());
    if std::env::var_os("ENCODE_DETAIL").is_some() {
        for (stem, img) in &images {
            let kind = if stem == "stage_mask" {
                OutputKind::Mask
            } else {
                OutputKind::Picture
            };
            let (t, _) = best_of(15, || encode_dynamic(stem, img, kind, &options).unwrap());
            eprintln!("  {stem}: {:.1} ms single-threaded", t * 1e3);
        }
    }
    let bytes: usize = outputs.iter().map(|o| o.bytes.len()).sum();
    let b64: usize = outputs.iter().map(|o| o.bytes.len().div_ceil(3) * 4).sum();
    for o in &outputs {
        eprintln!(
            "  {} {} {}x{} {} bytes",
            o.role,
            o.media_type,
            o.width,
            o.height,
            o.bytes.len()
        );
    }
    let cpu = (cpu_seconds() - cpu0) / rounds.max(1) as f64;
    println!("ours encode {secs:.4} {bytes}");
    println!("ours encode_cpu {cpu:.4} {bytes}");
    println!("ours encode_base64 {secs:.4} {b64}");
}

fn bench_synth() {
    let remover = BuiltinRemover::default();
    for scene in synth::test_set() {
        let (photo, truth) = synth::render(&scene);
        let (secs, alpha) = best_of(1, || remover.alpha(&photo, &mut |_| {}).unwrap());
        println!(
            "ours synth_{} {secs:.4} {:.4}",
            scene.name,
            iou(&alpha, &truth)
        );
        if let Some(dump) = std::env::var_os("DUMP_DIR") {
            std::fs::create_dir_all(&dump).unwrap();
            photo
                .save(Path::new(&dump).join(format!("{}.jpg", scene.name)))
                .unwrap();
            alpha
                .save(Path::new(&dump).join(format!("{}.alpha.png", scene.name)))
                .unwrap();
        }
    }
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

fn bench_bgremove(dir: &Path, rounds: usize, cutout: bool) {
    let photo = decode(
        &std::fs::read(dir.join("photo.jpg")).unwrap(),
        &Limits::default(),
    )
    .unwrap()
    .to_rgb8();
    let truth = image::open(dir.join("photo.mask.png")).unwrap().to_luma8();
    let remover = BuiltinRemover::default();
    let (secs, alpha) = best_of(rounds, || remover.alpha(&photo, &mut |_| {}).unwrap());
    println!("ours bgremove {secs:.4} {:.4}", iou(&alpha, &truth));
    if cutout {
        let (secs, rgba) = best_of(rounds, || {
            let a = remover.alpha(&photo, &mut |_| {}).unwrap();
            compose_cutout(&photo, &a, true).unwrap()
        });
        let a = GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            image::Luma([rgba.get_pixel(x, y)[3]])
        });
        println!("ours cutout {secs:.4} {:.4}", iou(&a, &truth));
        if let Some(dump) = std::env::var_os("DUMP_DIR") {
            std::fs::create_dir_all(&dump).unwrap();
            rgba.save(Path::new(&dump).join("fixture.cutout.png"))
                .unwrap();
        }
    }
}

fn make_4000(dir: &Path) -> PathBuf {
    let photo = image::open(dir.join("photo.jpg")).unwrap();
    let big = photo.resize_exact(4000, 4000, image::imageops::FilterType::Triangle);
    let path = std::env::temp_dir().join(format!("clothjob-bench-4000-{}.jpg", std::process::id()));
    let mut bytes = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut bytes, 92);
    enc.encode(
        big.to_rgb8().as_raw(),
        4000,
        4000,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn spawn_child(input: &Path, name: &str, rounds: usize) {
    let exe = std::env::current_exe().unwrap();
    for _ in 0..rounds.max(1) {
        let out = Command::new(&exe)
            .arg("--child-pipeline")
            .arg(input)
            .arg(name)
            .output()
            .unwrap();
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success(), "child failed");
    }
}

/// One whole-pipeline run in a fresh process so that its peak RSS is its own.
fn child_pipeline(input: &Path, name: &str) {
    let bytes = std::fs::read(input).unwrap();
    let t = Instant::now();
    let out = run(
        &bytes,
        &Options::default(),
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let total: usize = out.outputs.iter().map(|o| o.bytes.len()).sum();
    for s in &out.stages {
        eprintln!(
            "  {} {} {:.4}s",
            s.name,
            s.backend,
            s.duration.as_secs_f64()
        );
    }
    eprintln!("  {} outputs, {total} bytes", out.outputs.len());
    if let Some(dump) = std::env::var_os("DUMP_DIR") {
        std::fs::create_dir_all(&dump).unwrap();
        for o in &out.outputs {
            std::fs::write(Path::new(&dump).join(&o.file_name), &o.bytes).unwrap();
        }
        eprintln!(
            "  colours: {}",
            clothjob_pipeline::segment::describe(&out.regions)
        );
        for r in &out.regions {
            eprintln!(
                "  region {} {:.3} {:?} {:?}",
                r.label, r.area_fraction, r.bbox, r.colors
            );
        }
    }
    println!("ours {name} {secs:.4} {:.1}", peak_rss_mib());
}

/// User plus system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
