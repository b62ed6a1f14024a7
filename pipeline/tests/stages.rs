//! The whole builtin pipeline: outputs per role, formats, sizes, aspect
//! ratios, segmentation regions, expansion canvases, EXIF, disabled stages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use clothjob_pipeline::{
    BackgroundRemovalBackend, BackgroundRemovalOptions, ExpansionOptions, Limits, NoProgress,
    Options, PipelineError, ProgressSink, SegmentationOptions, StageName, run,
};
use common::synth::{self, Backdrop, Fabric, Scene, Shape};
use image::{DynamicImage, GrayImage, RgbImage};

fn jpeg(img: &RgbImage, app1: Option<Vec<u8>>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 92);
    if let Some(seg) = app1 {
        enc.add_app_segment(1, seg).unwrap();
    }
    enc.encode(
        img.as_raw(),
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    bytes
}

fn striped_shirt(w: u32, h: u32) -> Scene {
    Scene {
        fabric: Fabric::Stripes {
            base: [40.0, 70.0, 150.0],
            stripe: [150.0, 175.0, 215.0],
            period: 70.0,
        },
        backdrop: Backdrop::Gradient {
            top: [238.0, 238.0, 240.0],
            bottom: [216.0, 216.0, 219.0],
        },
        ..Scene::new("striped", w, h)
    }
}

#[derive(Default)]
struct Events(Vec<String>);

impl ProgressSink for Events {
    fn stage_started(&mut self, stage: StageName, backend: &str) {
        self.0.push(format!("start {stage} {backend}"));
    }
    fn stage_progress(&mut self, _stage: StageName, fraction: f64) {
        assert!((0.0..=1.0).contains(&fraction));
    }
    fn stage_finished(&mut self, stage: StageName, _backend: &str, _d: Duration) {
        self.0.push(format!("finish {stage}"));
    }
    fn stage_skipped(&mut self, stage: StageName) {
        self.0.push(format!("skip {stage}"));
    }
}

fn decode_out(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory(bytes).unwrap()
}

#[test]
fn full_builtin_run_makes_every_output() {
    let scene = striped_shirt(1200, 1600);
    let (photo, truth) = synth::render(&scene);
    let mut events = Events::default();
    let out = run(
        &jpeg(&photo, None),
        &Options::default(),
        &Limits::default(),
        &mut events,
    )
    .unwrap();
    assert_eq!(
        events.0,
        [
            "start backgroundRemoval builtin",
            "finish backgroundRemoval",
            "start segmentation builtin",
            "finish segmentation",
            "start expansion builtin",
            "finish expansion",
            "start encoding builtin",
            "finish encoding",
        ]
    );
    assert_eq!(out.stages.len(), 4);
    let roles: Vec<(&str, &str)> = out
        .outputs
        .iter()
        .map(|o| (o.file_name.as_str(), o.media_type))
        .collect();
    assert_eq!(
        roles,
        [
            ("original.jpg", "image/jpeg"),
            ("cutout.png", "image/png"),
            ("mask.png", "image/png"),
            ("segments.png", "image/png"),
            ("garment.png", "image/png"),
            ("catalog.jpg", "image/jpeg"),
            ("square.jpg", "image/jpeg"),
        ]
    );
    let by_role = |r: &str| out.outputs.iter().find(|o| o.role == r).unwrap();

    // Sizes: max side 1024, aspect ratios kept or exact.
    let original = by_role("original");
    assert_eq!((original.width, original.height), (768, 1024));
    let catalog = by_role("catalog");
    assert_eq!(catalog.width * 4, catalog.height * 3, "catalog is 3:4");
    assert_eq!(catalog.height, 1024);
    let square = by_role("square");
    assert_eq!((square.width, square.height), (1024, 1024));
    for o in &out.outputs {
        let img = decode_out(&o.bytes);
        assert_eq!(
            (img.width(), img.height()),
            (o.width, o.height),
            "{}",
            o.role
        );
        assert!(o.width.max(o.height) <= 1024);
    }

    // The mask at 1024 px still matches the truth.
    let mask = decode_out(&by_role("mask").bytes);
    assert_eq!(mask.color(), image::ColorType::L8);
    let truth_small = DynamicImage::ImageLuma8(truth)
        .resize_exact(
            mask.width(),
            mask.height(),
            image::imageops::FilterType::Triangle,
        )
        .to_luma8();
    let iou = synth::iou(&mask.to_luma8(), &truth_small);
    assert!(iou > 0.97, "mask IoU {iou}");

    // Segments: lossless labels 0..=n, n regions, blue and light stripes.
    // An indexed PNG: viewers show the palette's colours, the indices are the labels.
    let seg_bytes = &by_role("segments").bytes;
    let shown = decode_out(seg_bytes).to_rgb8();
    let seg = clothjob_pipeline::encode::decode_labels(seg_bytes).unwrap();
    for (s, l) in shown.pixels().zip(seg.pixels()) {
        assert_eq!(s.0, clothjob_pipeline::encode::label_color(l[0]));
    }
    let mut seen = [0u64; 256];
    for p in seg.pixels() {
        seen[usize::from(p[0])] += 1;
    }
    let labels: Vec<usize> = (0..256).filter(|&l| seen[l] > 0).collect();
    assert_eq!(out.regions.len(), 2, "{:?}", out.regions);
    let legend = clothjob_pipeline::label_legend(&out.regions);
    let values: Vec<u8> = legend.iter().map(|l| l.value).collect();
    assert_eq!(values, [0, 1, 2]);
    assert_eq!(legend[0].name, "background");
    assert_eq!(legend[0].color, "#000000");
    assert!(
        legend[1].color != legend[2].color && legend[1].name != legend[2].name,
        "{legend:?}"
    );
    assert_eq!(labels, [0, 1, 2]);
    let total: f32 = out.regions.iter().map(|r| r.area_fraction).sum();
    assert!((total - 1.0).abs() < 1e-3);
    let main = &out.regions[0];
    let stripes = &out.regions[1];
    assert!(
        main.area_fraction > 0.6 && main.area_fraction < 0.8,
        "{main:?}"
    );
    assert!(main.colors[0].name.contains("blue"), "{main:?}");
    assert!(stripes.colors[0].name.contains("blue"), "{stripes:?}");
    assert_eq!(main.colors[0].hex.len(), 7);
    // Both regions span the garment's box (about 0.64 x 0.68 of the frame).
    assert!(
        main.bbox.width > 700 && main.bbox.width < 800,
        "{:?}",
        main.bbox
    );
    assert!(
        main.bbox.height > 1000 && main.bbox.height < 1130,
        "{:?}",
        main.bbox
    );

    // Catalog: white corners, garment in the middle, a shadow under it.
    let cat = decode_out(&catalog.bytes).to_rgb8();
    let corner = cat.get_pixel(5, 5).0;
    assert!(corner.iter().all(|&c| c >= 250), "corner {corner:?}");
    let centre = cat.get_pixel(cat.width() / 2, cat.height() / 2).0;
    assert!(
        i32::from(centre[2]) > i32::from(centre[0]) + 40,
        "centre should be blue: {centre:?}"
    );
    // Scan down the middle column from the garment's bottom edge.
    let x = cat.width() / 2;
    let bottom = (0..cat.height())
        .rev()
        .find(|&y| {
            let p = cat.get_pixel(x, y).0;
            i32::from(p[2]) > i32::from(p[0]) + 40
        })
        .unwrap();
    let below = cat.get_pixel(x, bottom + 8).0;
    assert!(
        below[0] < 245 && below[0] > 150,
        "soft shadow under garment: {below:?}"
    );
    // Margins: the garment does not touch the canvas edge.
    assert!(bottom + 40 < cat.height());
    let garment = by_role("garment");
    let g = decode_out(&garment.bytes);
    assert!(g.color().has_alpha());
    assert!(
        (f64::from(g.width()) / f64::from(g.height()) - 0.64 * 1200.0 / (0.68 * 1600.0)).abs()
            < 0.05
    );
}

#[test]
fn without_background_removal_the_photo_is_extended() {
    let (photo, _) = synth::render(&striped_shirt(1000, 600));
    let options = Options {
        background_removal: None,
        segmentation: None,
        ..Options::default()
    };
    let mut events = Events::default();
    let out = run(
        &jpeg(&photo, None),
        &options,
        &Limits::default(),
        &mut events,
    )
    .unwrap();
    assert_eq!(events.0[0], "skip backgroundRemoval");
    assert_eq!(events.0[1], "skip segmentation");
    let roles: Vec<&str> = out.outputs.iter().map(|o| o.role.as_str()).collect();
    assert_eq!(roles, ["original", "catalog", "square"]);
    let cat = decode_out(&out.outputs[1].bytes).to_rgb8();
    assert_eq!(cat.width() * 4, cat.height() * 3);
    // The added bands repeat the backdrop, not black or white.
    let top = cat.get_pixel(cat.width() / 2, 3).0;
    let bottom = cat.get_pixel(cat.width() / 2, cat.height() - 3).0;
    for p in [top, bottom] {
        assert!(p[0] > 200 && p[0] < 248, "edge-aware fill: {p:?}");
    }
}

#[test]
fn exif_rotated_photo_gives_upright_outputs() {
    // A portrait garment stored sideways (rotated 90° counter-clockwise) with
    // Orientation 6, as phones write it.
    let (photo, _) = synth::render(&striped_shirt(600, 800));
    let stored = image::imageops::rotate270(&photo);
    assert_eq!(stored.dimensions(), (800, 600));
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0".to_vec();
    exif.extend_from_slice(&[0, 0, 0, 0]);
    let out = run(
        &jpeg(&stored, Some(exif)),
        &Options::default(),
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap();
    let original = &out.outputs[0];
    assert_eq!((original.width, original.height), (600, 800));
    let up = decode_out(&original.bytes).to_rgb8();
    // The T-shirt's neck is at the top: the garment's blue starts higher in
    // the middle column's upper half than in the lower half's end.
    let blue = |x: u32, y: u32| {
        let p = up.get_pixel(x, y).0;
        i32::from(p[2]) > i32::from(p[0]) + 40
    };
    assert!(blue(300, 400), "garment centre");
    assert!(!blue(300, 60), "above the shirt");
    assert!(blue(150, 260), "left sleeve at the top");
    assert!(!blue(150, 650), "no sleeve at the bottom");
    let mask = decode_out(&out.outputs[2].bytes).to_luma8();
    assert_eq!(mask.dimensions(), (600, 800));
    assert!(mask.get_pixel(300, 400)[0] > 200);
}

#[test]
fn a_transparent_png_keeps_its_own_alpha() {
    let mut rgba = image::RgbaImage::from_pixel(200, 300, image::Rgba([0, 0, 0, 0]));
    for y in 50..250 {
        for x in 40..160 {
            rgba.put_pixel(x, y, image::Rgba([200, 30, 40, 255]));
        }
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgba8(rgba)
        .write_to(&mut bytes, image::ImageFormat::Png)
        .unwrap();
    let out = run(
        bytes.get_ref(),
        &Options::default(),
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap();
    let mask = decode_out(&out.outputs[2].bytes).to_luma8();
    let expected = GrayImage::from_fn(200, 300, |x, y| {
        image::Luma([if (40..160).contains(&x) && (50..250).contains(&y) {
            255
        } else {
            0
        }])
    });
    assert_eq!(mask, expected);
    let garment = out.outputs.iter().find(|o| o.role == "garment").unwrap();
    assert_eq!((garment.width, garment.height), (120, 200));
    assert_eq!(out.regions.len(), 1);
    assert_eq!(out.regions[0].colors[0].name, "red");
    assert_eq!(
        out.outputs[0].media_type, "image/png",
        "the original has transparency"
    );
}

#[test]
fn segmentation_counts_colours() {
    let plain = Scene {
        shape: Shape::Dress,
        fabric: Fabric::Plain {
            color: [200.0, 30.0, 35.0],
            texture: 5.0,
        },
        ..Scene::new("red dress", 600, 800)
    };
    let (photo, _) = synth::render(&plain);
    let only_seg = |max_colors: u8| Options {
        segmentation: Some(SegmentationOptions {
            max_colors,
            ..SegmentationOptions::default()
        }),
        expansion: None,
        ..Options::default()
    };
    let out = run(
        &jpeg(&photo, None),
        &only_seg(4),
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(out.regions.len(), 1, "{:?}", out.regions);
    assert_eq!(out.regions[0].colors[0].name, "red");
    assert_eq!(
        (out.regions[0].components, out.regions[0].pattern),
        (1, "solid")
    );
    assert_eq!(out.regions[0].label, 1);

    let (striped, _) = synth::render(&striped_shirt(600, 800));
    let out = run(
        &jpeg(&striped, None),
        &only_seg(1),
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(out.regions.len(), 1);
    let out = run(
        &jpeg(&striped, None),
        &only_seg(4),
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(out.regions.len(), 2);

    let err = run(
        &jpeg(&striped, None),
        &only_seg(0),
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert_eq!(err.category(), "InvalidOptions");
}

#[test]
fn other_aspect_ratios_and_background_colours() {
    let (photo, _) = synth::render(&striped_shirt(800, 800));
    let options = Options {
        expansion: Some(ExpansionOptions {
            aspect_ratios: vec![(16, 9), (6, 8), (3, 4)],
            background: [250, 240, 230],
            shadow: false,
            ..ExpansionOptions::default()
        }),
        ..Options::default()
    };
    let out = run(
        &jpeg(&photo, None),
        &options,
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap();
    let canvases: Vec<(&str, u32, u32)> = out
        .outputs
        .iter()
        .filter(|o| o.role.starts_with("expanded") || o.role == "catalog")
        .map(|o| (o.role.as_str(), o.width, o.height))
        .collect();
    assert_eq!(canvases.len(), 2, "6:8 is the same as 3:4: {canvases:?}");
    assert_eq!(canvases[0].0, "expanded_16x9");
    assert_eq!(canvases[0].1 * 9, canvases[0].2 * 16);
    for bad in [(0, 1), (u32::MAX, 1), (1000, 999), (1, 9)] {
        let options = Options {
            expansion: Some(ExpansionOptions {
                aspect_ratios: vec![bad],
                ..ExpansionOptions::default()
            }),
            ..Options::default()
        };
        let err = run(
            &jpeg(&photo, None),
            &options,
            &Limits::default(),
            &mut NoProgress,
        )
        .unwrap_err();
        assert_eq!(err.category(), "InvalidOptions", "{bad:?}: {err}");
    }
    let wide = decode_out(
        &out.outputs
            .iter()
            .find(|o| o.role == "expanded_16x9")
            .unwrap()
            .bytes,
    )
    .to_rgb8();
    let corner = wide.get_pixel(2, 2).0;
    for (c, e) in corner.iter().zip([250u8, 240, 230]) {
        assert!(c.abs_diff(e) <= 3, "{corner:?}");
    }
}

#[test]
fn unavailable_backends_fail_clearly() {
    let (photo, _) = synth::render(&striped_shirt(200, 200));
    let options = Options {
        background_removal: Some(BackgroundRemovalOptions {
            backend: BackgroundRemovalBackend::Onnx {
                model_path: "/models/u2netp.onnx".into(),
            },
            ..BackgroundRemovalOptions::default()
        }),
        ..Options::default()
    };
    let mut events = Events::default();
    let err = run(
        &jpeg(&photo, None),
        &options,
        &Limits::default(),
        &mut events,
    )
    .unwrap_err();
    assert!(
        matches!(&err, PipelineError::Stage { stage: StageName::BackgroundRemoval, source }
            if matches!(**source, PipelineError::BackendUnavailable { .. })),
        "{err}"
    );
    assert_eq!(err.category(), "Backend");
    assert!(!err.is_bad_input());
    assert_eq!(events.0, ["start backgroundRemoval onnx"], "never finished");
}

#[test]
fn segmentation_gives_one_mask_per_region() {
    use clothjob_pipeline::segment::segment;
    let (photo, truth) = synth::render(&striped_shirt(400, 500));
    let seg = segment(
        &photo,
        Some(&truth),
        &SegmentationOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(seg.regions.len(), 2);
    let mut covered = 0u64;
    for r in &seg.regions {
        let m = seg.mask_of(r.label);
        let n = m.pixels().filter(|p| p[0] == 255).count() as u64;
        assert_eq!(n, r.pixels);
        covered += n;
    }
    let garment = truth.pixels().filter(|p| p[0] > 127).count() as u64;
    assert_eq!(covered, garment, "regions partition the garment");
    assert_eq!(seg.mask_of(0).pixels().filter(|p| p[0] != 0).count(), 0);
    assert_eq!(seg.regions[1].pattern, "stripes", "{:?}", seg.regions[1]);
    assert!(seg.regions[1].components >= 5, "{:?}", seg.regions[1]);
    let text = seg.describe();
    assert!(
        text.starts_with("blue, ") && text.ends_with(" stripes"),
        "{text}"
    );
}

#[test]
fn odd_and_tiny_inputs_never_panic() {
    // Sizes around the internal thresholds, odd aspect ratios, flat images,
    // busy non-studio pictures: every run succeeds with every output.
    let mut cases: Vec<RgbImage> = Vec::new();
    for (w, h) in [
        (1, 1),
        (2, 3),
        (7, 7),
        (8, 8),
        (9, 31),
        (64, 3),
        (3, 64),
        (65, 65),
        (513, 7),
        (1030, 9),
    ] {
        cases.push(RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 37 % 256) as u8,
                (y * 91 % 256) as u8,
                ((x + y) % 256) as u8,
            ])
        }));
    }
    cases.push(RgbImage::from_pixel(300, 200, image::Rgb([230, 230, 230]))); // empty studio
    cases.push(RgbImage::from_fn(300, 300, |x, y| {
        // Busy, non-studio: hashed blocks of random colours.
        let v = (x / 7)
            .wrapping_mul(2_654_435_761)
            .wrapping_add((y / 7).wrapping_mul(40503));
        image::Rgb([(v >> 8) as u8, (v >> 16) as u8, (v >> 24) as u8])
    }));
    for img in &cases {
        let out = run(
            &jpeg(img, None),
            &Options::default(),
            &Limits::default(),
            &mut NoProgress,
        )
        .unwrap_or_else(|e| panic!("{}x{}: {e}", img.width(), img.height()));
        let roles: Vec<&str> = out.outputs.iter().map(|o| o.role.as_str()).collect();
        assert_eq!(
            roles[..3],
            ["original", "cutout", "mask"],
            "{}x{}",
            img.width(),
            img.height()
        );
        assert!(roles.contains(&"catalog") && roles.contains(&"square"));
        for o in &out.outputs {
            let d = decode_out(&o.bytes);
            assert_eq!((d.width(), d.height()), (o.width, o.height));
        }
    }
}

/// A stand-in for a remote service: a fixed rectangle.
struct RectangleService;

impl clothjob_pipeline::matte::BackgroundRemover for RectangleService {
    fn name(&self) -> &str {
        "remote"
    }
    fn alpha(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<GrayImage, PipelineError> {
        progress(1.0);
        let (w, h) = image.dimensions();
        Ok(GrayImage::from_fn(w, h, |x, y| {
            image::Luma([
                if x >= w / 4 && x < w * 3 / 4 && y >= h / 4 && y < h * 3 / 4 {
                    255
                } else {
                    0
                },
            ])
        }))
    }
}

#[test]
fn a_caller_supplied_remover_plugs_in() {
    let (photo, _) = synth::render(&striped_shirt(400, 400));
    let options = Options {
        background_removal: Some(BackgroundRemovalOptions {
            backend: BackgroundRemovalBackend::Remote {
                url: "http://127.0.0.1:1/api/remove".to_owned(),
            },
            ..BackgroundRemovalOptions::default()
        }),
        ..Options::default()
    };
    let service = RectangleService;
    let backends = clothjob_pipeline::Backends {
        background_remover: Some(&service),
        ..Default::default()
    };
    let mut events = Events::default();
    let out = clothjob_pipeline::run_with(
        &jpeg(&photo, None),
        &options,
        &Limits::default(),
        &mut events,
        &backends,
    )
    .unwrap();
    assert_eq!(events.0[0], "start backgroundRemoval remote");
    assert_eq!(out.stages[0].backend, "remote");
    let garment = out.outputs.iter().find(|o| o.role == "garment").unwrap();
    assert_eq!((garment.width, garment.height), (200, 200));
}

/// Classes by halves: the top half of the picture is `upper`, the bottom
/// `lower` (a stand-in for a garment-parsing model's class map).
struct HalvesModel;

impl clothjob_pipeline::Segmenter for HalvesModel {
    fn name(&self) -> &str {
        "onnx"
    }
    fn classes(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<clothjob_pipeline::ClassMap, PipelineError> {
        progress(1.0);
        let (w, h) = image.dimensions();
        Ok(clothjob_pipeline::ClassMap {
            labels: GrayImage::from_fn(w, h, |_, y| image::Luma([if y < h / 2 { 1 } else { 2 }])),
            classes: vec!["background".into(), "upper".into(), "lower".into()],
        })
    }
}

#[test]
fn a_caller_supplied_segmenter_gives_class_regions_inside_the_mask() {
    let (photo, _) = synth::render(&striped_shirt(400, 400));
    let options = Options {
        background_removal: Some(BackgroundRemovalOptions {
            backend: BackgroundRemovalBackend::Remote {
                url: "http://127.0.0.1:1/api/remove".to_owned(),
            },
            ..BackgroundRemovalOptions::default()
        }),
        segmentation: Some(SegmentationOptions {
            backend: clothjob_pipeline::SegmentationBackend::Onnx {
                model_path: "/models/cloth.onnx".into(),
            },
            ..SegmentationOptions::default()
        }),
        ..Options::default()
    };
    let (service, model) = (RectangleService, HalvesModel);
    let backends = clothjob_pipeline::Backends {
        background_remover: Some(&service),
        segmenter: Some(&model),
        ..Default::default()
    };
    let out = clothjob_pipeline::run_with(
        &jpeg(&photo, None),
        &options,
        &Limits::default(),
        &mut NoProgress,
        &backends,
    )
    .unwrap();
    assert_eq!(out.stages[1].backend, "onnx");
    // The mask is the centre 200x200 square; the classes split it in halves.
    let classes: Vec<_> = out.regions.iter().map(|r| r.class.clone()).collect();
    assert_eq!(classes.len(), 2, "{:?}", out.regions);
    for r in &out.regions {
        assert_eq!(r.pixels, 200 * 100, "{r:?}");
        assert!((r.area_fraction - 0.5).abs() < 1e-6);
        let want_y = if r.class.as_deref() == Some("upper") {
            100
        } else {
            200
        };
        assert_eq!(
            (r.bbox.x, r.bbox.y, r.bbox.width, r.bbox.height),
            (100, want_y, 200, 100)
        );
        assert_eq!(usize::from(r.label), if want_y == 100 { 1 } else { 2 });
    }
    // The segments output keeps the model's class indices, background outside the mask.
    let seg = out.outputs.iter().find(|o| o.role == "segments").unwrap();
    let labels = clothjob_pipeline::encode::decode_labels(&seg.bytes).unwrap();
    assert_eq!(labels.get_pixel(10, 10)[0], 0);
    assert_eq!(labels.get_pixel(200, 150)[0], 1);
    assert_eq!(labels.get_pixel(200, 250)[0], 2);
}

#[test]
fn a_segmentation_model_not_supplied_is_a_clear_error() {
    let (photo, _) = synth::render(&striped_shirt(200, 200));
    let options = Options {
        segmentation: Some(SegmentationOptions {
            backend: clothjob_pipeline::SegmentationBackend::Onnx {
                model_path: "/models/cloth.onnx".into(),
            },
            ..SegmentationOptions::default()
        }),
        ..Options::default()
    };
    let err = run(
        &jpeg(&photo, None),
        &options,
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("segmentation") && text.contains("onnx"),
        "{text}"
    );
    assert_eq!(err.category(), "Backend");
}

#[test]
fn photos_over_the_working_size_are_reduced_first() {
    // 5200x3900 (20 Mpx): the stages work at 4096 px; outputs are still right.
    let (photo, truth) = synth::render(&Scene {
        jpeg: None,
        ..striped_shirt(5200, 3900)
    });
    let out = run(
        &jpeg(&photo, None),
        &Options::default(),
        &Limits::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(clothjob_pipeline::pipeline::WORK_MAX_SIDE, 4096);
    let original = &out.outputs[0];
    assert_eq!((original.width, original.height), (1024, 768));
    let mask = decode_out(&out.outputs[2].bytes).to_luma8();
    let truth_small = DynamicImage::ImageLuma8(truth)
        .resize_exact(1024, 768, image::imageops::FilterType::Triangle)
        .to_luma8();
    let iou = synth::iou(&mask, &truth_small);
    assert!(iou > 0.97, "mask IoU {iou}");
    // Region boxes come back in the input's pixels: the shirt spans about
    // 0.64 x 0.68 of the frame (3328 x 2652).
    let b = out.regions[0].bbox;
    assert!(b.width > 3250 && b.width < 3400, "{b:?}");
    assert!(b.height > 2580 && b.height < 2720, "{b:?}");
    assert!(b.x + b.width <= 5200 && b.y + b.height <= 3900);
}
