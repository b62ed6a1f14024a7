//! `run`: stage reporting, the `original` output and the encoding decisions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::io::Cursor;
use std::time::Duration;

use clothjob_pipeline::encode::{OutputImage, OutputKind, Pixels, encode_all};
use clothjob_pipeline::{
    EncodingOptions, Limits, Options, PipelineError, ProgressSink, StageName, run,
};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    last_fraction: Vec<(StageName, f64)>,
}

impl ProgressSink for Recorder {
    fn stage_started(&mut self, stage: StageName, backend: &str) {
        self.events.push(format!("start {stage} {backend}"));
    }
    fn stage_progress(&mut self, stage: StageName, fraction: f64) {
        assert!((0.0..=1.0).contains(&fraction));
        if let Some((s, f)) = self.last_fraction.last()
            && *s == stage
        {
            assert!(fraction >= *f, "progress went back");
        }
        self.last_fraction.push((stage, fraction));
    }
    fn stage_finished(&mut self, stage: StageName, backend: &str, _duration: Duration) {
        self.events.push(format!("finish {stage} {backend}"));
    }
    fn stage_skipped(&mut self, stage: StageName) {
        self.events.push(format!("skip {stage}"));
    }
}

fn jpeg_of(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

#[test]
fn encode_only_makes_the_original_and_skips_the_rest() {
    let mut sink = Recorder::default();
    let out = run(
        &jpeg_of(2000, 1500),
        &Options::encode_only(),
        &Limits::default(),
        &mut sink,
    )
    .unwrap();
    assert_eq!(
        sink.events,
        [
            "skip backgroundRemoval",
            "skip segmentation",
            "skip expansion",
            "start encoding builtin",
            "finish encoding builtin",
        ]
    );
    assert_eq!(out.outputs.len(), 1);
    let o = &out.outputs[0];
    assert_eq!(o.role, "original");
    assert_eq!(o.file_name, "original.jpg");
    assert_eq!(o.media_type, "image/jpeg");
    assert_eq!((o.width, o.height), (1024, 768));
    assert_eq!(&o.bytes[..2], &[0xff, 0xd8]);
    assert_eq!(o.sha256.len(), 64);
    let back = image::load_from_memory(&o.bytes).unwrap();
    assert_eq!((back.width(), back.height()), (1024, 768));
    assert_eq!(out.stages.len(), 1);
    assert_eq!(out.stages[0].name, StageName::Encoding);
}

#[test]
fn encoding_disabled_means_no_outputs() {
    let mut sink = Recorder::default();
    let options = Options {
        encoding: None,
        ..Options::encode_only()
    };
    let out = run(&jpeg_of(64, 48), &options, &Limits::default(), &mut sink).unwrap();
    assert!(out.outputs.is_empty());
    assert!(sink.events.iter().all(|e| e.starts_with("skip")));
    assert_eq!(sink.events.len(), 4);
}

#[test]
fn bad_input_fails_before_any_stage() {
    let mut sink = Recorder::default();
    let err = run(
        b"GIF89a-broken",
        &Options::default(),
        &Limits::default(),
        &mut sink,
    )
    .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(sink.events.is_empty());
}

#[test]
fn invalid_encoding_options_are_reported() {
    let mut sink = Recorder::default();
    let options = Options {
        encoding: Some(EncodingOptions {
            max_side: 0,
            jpeg_quality: 85,
        }),
        ..Options::encode_only()
    };
    let err = run(&jpeg_of(64, 48), &options, &Limits::default(), &mut sink).unwrap_err();
    assert!(
        matches!(&err, PipelineError::Stage { stage: StageName::Encoding, source } if matches!(**source, PipelineError::InvalidOptions(_))),
        "{err}"
    );
    assert_eq!(err.category(), "InvalidOptions");
}

#[test]
fn encoding_picks_png_for_transparency_and_lossless_maps() {
    let opaque = RgbaImage::from_pixel(3000, 1000, Rgba([10, 20, 30, 255]));
    let mut holey = opaque.clone();
    holey.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
    // Labels 0..=3 in vertical bands; nearest-neighbour keeps exactly these.
    let labels = image::GrayImage::from_fn(2048, 2048, |x, _| image::Luma([(x / 512) as u8]));
    let small = RgbImage::from_pixel(300, 200, Rgb([200, 100, 50]));
    let items = [
        OutputImage {
            role: "a",
            pixels: Pixels::Rgba(&opaque),
            kind: OutputKind::Picture,
        },
        OutputImage {
            role: "b",
            pixels: Pixels::Rgba(&holey),
            kind: OutputKind::Picture,
        },
        OutputImage {
            role: "segments",
            pixels: Pixels::Gray(&labels),
            kind: OutputKind::Labels,
        },
        OutputImage {
            role: "mask",
            pixels: Pixels::Gray(&labels),
            kind: OutputKind::Mask,
        },
        OutputImage {
            role: "small",
            pixels: Pixels::Rgb(&small),
            kind: OutputKind::Picture,
        },
    ];
    let out = encode_all(&items, &EncodingOptions::default()).unwrap();
    let types: Vec<_> = out
        .iter()
        .map(|o| (o.file_name.as_str(), o.media_type))
        .collect();
    assert_eq!(
        types,
        [
            ("a.jpg", "image/jpeg"),
            ("b.png", "image/png"),
            ("segments.png", "image/png"),
            ("mask.png", "image/png"),
            ("small.jpg", "image/jpeg"),
        ]
    );
    assert_eq!((out[0].width, out[0].height), (1024, 341));
    assert_eq!((out[2].width, out[2].height), (1024, 1024));
    assert_eq!((out[4].width, out[4].height), (300, 200), "never upscaled");
    // An indexed PNG whose palette shows the labels in distinct colours.
    let shown = image::load_from_memory(&out[2].bytes).unwrap();
    assert_eq!(shown.color(), image::ColorType::Rgb8);
    let seg = clothjob_pipeline::encode::decode_labels(&out[2].bytes).unwrap();
    let mut seen = [false; 256];
    for p in seg.pixels() {
        seen[p[0] as usize] = true;
    }
    let distinct: Vec<usize> = (0..256).filter(|&v| seen[v]).collect();
    assert_eq!(
        distinct,
        [0, 1, 2, 3],
        "labels must survive the resize exactly"
    );
    let mask = image::load_from_memory(&out[3].bytes).unwrap();
    assert_eq!(mask.color(), image::ColorType::L8);
}
