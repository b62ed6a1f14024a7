//! `OnnxSegmenter` with models built by `clothjob_onnx::testmodel`: a 1x1
//! `Conv` that gives each pixel the class of the nearest prototype colour,
//! on photos of known colour regions; the pipeline's regions from it; and
//! the errors for files that are not a fitting model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use clothjob_onnx::testmodel::{self, Dim, ModelBuilder, fixed};
use clothjob_onnx::{ModelFamily, OnnxError, OnnxSegmenter};
use clothjob_pipeline::{
    Backends, Limits, NoProgress, Options, PipelineError, SegmentationBackend, SegmentationOptions,
    run_with,
};
use image::{Rgb, RgbImage};

/// Class colours: background, upper, lower, full.
const COLOURS: [[u8; 3]; 4] = [[240, 240, 240], [230, 40, 40], [40, 40, 230], [40, 200, 40]];

/// A rectangle `(x0, y0, x1, y1)` (exclusive ends) and its class.
type Area = ((u32, u32, u32, u32), u8);

/// Upper body, trousers below it, a dress beside them, on the background.
const AREAS: [Area; 3] = [
    ((40, 30, 170, 120), 1),
    ((60, 120, 150, 220), 2),
    ((210, 50, 290, 200), 3),
];

fn class_at(areas: &[Area], x: u32, y: u32) -> u8 {
    areas
        .iter()
        .find(|((x0, y0, x1, y1), _)| (*x0..*x1).contains(&x) && (*y0..*y1).contains(&y))
        .map_or(0, |(_, c)| *c)
}

fn photo(w: u32, h: u32, areas: &[Area]) -> RgbImage {
    RgbImage::from_fn(
        w,
        h,
        |x, y| Rgb(COLOURS[usize::from(class_at(areas, x, y))]),
    )
}

/// The classifier for [`COLOURS`] in the model's input space (ClothSeg
/// normalisation; the photo's largest value is 240).
fn classifier(size: Option<(u32, u32)>) -> Vec<u8> {
    let (mean, std) = ModelFamily::ClothSeg.normalisation();
    let prototypes: Vec<[f32; 3]> = COLOURS
        .iter()
        .map(|c| std::array::from_fn(|i| (f32::from(c[i]) / 240.0 - mean[i]) / std[i]))
        .collect();
    let (weights, bias) = testmodel::nearest_prototype(&prototypes);
    testmodel::pixel_classifier(size, &weights, &bias)
}

/// Distance (Chebyshev) from `(x, y)` to the nearest pixel of another class.
fn border_distance(areas: &[Area], x: u32, y: u32, reach: u32) -> u32 {
    let c = class_at(areas, x, y);
    for d in 1..=reach {
        for (dx, dy) in [(d, 0), (0, d), (d, d)] {
            for (sx, sy) in [(1i64, 1i64), (-1, 1), (1, -1), (-1, -1)] {
                let nx = i64::from(x) + sx * i64::from(dx);
                let ny = i64::from(y) + sy * i64::from(dy);
                if nx >= 0 && ny >= 0 && class_at(areas, nx as u32, ny as u32) != c {
                    return d - 1;
                }
            }
        }
    }
    reach
}

#[test]
fn colour_regions_become_the_model_classes() {
    if !support::runtime("colour_regions_become_the_model_classes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = support::write_model(dir.path(), "classes64.onnx", &classifier(Some((64, 64))));
    let seg = OnnxSegmenter::load(&model, None).unwrap();
    assert_eq!(seg.input_size(), (64, 64), "the size the model fixes");

    let (w, h) = (320, 240);
    let areas = AREAS;
    let map = seg.label_map(&photo(w, h, &areas)).unwrap();
    assert_eq!(map.labels.dimensions(), (w, h));
    assert_eq!(map.classes, ["background", "upper", "lower", "full"]);
    assert!(
        map.labels.iter().all(|&l| l < 4),
        "labels outside the classes"
    );

    // One model pixel covers 5x3.75 photo pixels; Lanczos reaches three model
    // pixels. Away from the borders the labels are exact.
    let margin = 5 * 3;
    let (mut wrong, mut wrong_inside) = (0u64, 0u64);
    for y in 0..h {
        for x in 0..w {
            let got = map.labels.get_pixel(x, y)[0];
            if got != class_at(&areas, x, y) {
                wrong += 1;
                if border_distance(&areas, x, y, margin) >= margin {
                    wrong_inside += 1;
                }
            }
        }
    }
    assert_eq!(wrong_inside, 0, "labels wrong away from the borders");
    let accuracy = 1.0 - wrong as f64 / f64::from(w * h);
    eprintln!("label accuracy {accuracy:.4} ({wrong} pixels off, all at borders)");
    assert!(accuracy > 0.98, "accuracy {accuracy}");
}

#[test]
fn labels_are_resized_without_blending() {
    if !support::runtime("labels_are_resized_without_blending") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = support::write_model(dir.path(), "classes16.onnx", &classifier(Some((16, 16))));
    let seg = OnnxSegmenter::load(&model, None).unwrap();
    // Class 1 beside class 3 and nothing else: blending labels would put a
    // 2 on the border.
    let areas: [Area; 2] = [((0, 0, 200, 400), 1), ((200, 0, 400, 400), 3)];
    let map = seg.label_map(&photo(400, 400, &areas)).unwrap();
    let present: std::collections::BTreeSet<u8> = map.labels.iter().copied().collect();
    assert_eq!(present, [1, 3].into());
    // One model pixel is 25 photo pixels: every row changes label once, on a
    // model pixel boundary, at the same column in all rows.
    let mut switch = None;
    for y in 0..400 {
        let row: Vec<u8> = (0..400).map(|x| map.labels.get_pixel(x, y)[0]).collect();
        let changes: Vec<usize> = (1..400).filter(|&x| row[x] != row[x - 1]).collect();
        assert_eq!(changes.len(), 1, "row {y}: {changes:?}");
        assert_eq!(changes[0] % 25, 0, "row {y}: not on a model pixel boundary");
        assert!(switch.is_none_or(|s| s == changes[0]));
        switch = Some(changes[0]);
    }
    let s = switch.unwrap();
    assert!((175..=225).contains(&s), "border at {s}, truth 200");
}

#[test]
fn an_open_input_size_takes_the_family_default() {
    if !support::runtime("an_open_input_size_takes_the_family_default") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = support::write_model(dir.path(), "open.onnx", &classifier(None));
    let seg = OnnxSegmenter::load(&model, None).unwrap();
    assert_eq!(seg.input_size(), ModelFamily::ClothSeg.default_size());
    let seg = OnnxSegmenter::load_with(&model, ModelFamily::U2Net, None).unwrap();
    assert_eq!(seg.input_size(), (320, 320));
    let map = seg.label_map(&photo(320, 240, &AREAS)).unwrap();
    assert_eq!(map.labels.get_pixel(100, 70)[0], 1);
    assert_eq!(map.labels.get_pixel(100, 170)[0], 2);
    assert_eq!(map.labels.get_pixel(250, 120)[0], 3);
    assert_eq!(map.labels.get_pixel(5, 5)[0], 0);
}

#[test]
fn class_names_are_given_or_defaulted() {
    if !support::runtime("class_names_are_given_or_defaulted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = support::write_model(dir.path(), "names.onnx", &classifier(Some((32, 32))));
    let names: Vec<String> = ["bg", "top", "bottom", "dress"].map(String::from).to_vec();
    let seg = OnnxSegmenter::load(&model, Some(names.clone())).unwrap();
    let map = seg.label_map(&photo(320, 240, &AREAS)).unwrap();
    assert_eq!(map.classes, names);

    let e = OnnxSegmenter::load(&model, Some(names[..3].to_vec())).unwrap_err();
    assert!(matches!(e, OnnxError::Settings { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("3 class names given, the model has 4 classes"),
        "{e}"
    );

    // Five classes without names: background, class1, …
    let five =
        testmodel::pixel_classifier(Some((8, 8)), &[[0.0; 3]; 5], &[1.0, 0.0, 0.0, 0.0, 0.0]);
    let model = support::write_model(dir.path(), "five.onnx", &five);
    let seg = OnnxSegmenter::load(&model, None).unwrap();
    let map = seg.label_map(&photo(20, 20, &[])).unwrap();
    assert_eq!(
        map.classes,
        ["background", "class1", "class2", "class3", "class4"]
    );
    assert!(map.labels.iter().all(|&l| l == 0));
}

#[test]
fn the_pipeline_reports_regions_with_class_names_and_boxes() {
    if !support::runtime("the_pipeline_reports_regions_with_class_names_and_boxes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = support::write_model(dir.path(), "pipeline.onnx", &classifier(Some((64, 64))));
    let seg = OnnxSegmenter::load(&model, None).unwrap();
    let options = Options {
        background_removal: None,
        segmentation: Some(SegmentationOptions {
            backend: SegmentationBackend::Onnx {
                model_path: model.clone(),
            },
            ..SegmentationOptions::default()
        }),
        expansion: None,
        encoding: None,
    };
    let backends = Backends {
        segmenter: Some(&seg),
        ..Backends::default()
    };
    let out = run_with(
        &support::png(&photo(320, 240, &AREAS)),
        &options,
        &Limits::default(),
        &mut NoProgress,
        &backends,
    )
    .unwrap();
    assert_eq!(out.stages.len(), 1);
    assert_eq!(out.stages[0].backend, "onnx");
    let classes: Vec<&str> = out
        .regions
        .iter()
        .filter_map(|r| r.class.as_deref())
        .collect();
    // Largest first: full (80x150), upper (130x90), lower (90x100).
    assert_eq!(classes, ["full", "upper", "lower"]);
    for r in &out.regions {
        let ((x0, y0, x1, y1), _) = AREAS
            .iter()
            .find(|(_, c)| usize::from(*c) == usize::from(r.label))
            .unwrap();
        let b = &r.bbox;
        let near = |a: u32, t: u32| a.abs_diff(t) <= 8;
        assert!(
            near(b.x, *x0)
                && near(b.y, *y0)
                && near(b.x + b.width, *x1)
                && near(b.y + b.height, *y1),
            "{:?} box {b:?}, truth {:?}",
            r.class,
            (x0, y0, x1, y1)
        );
        assert_eq!(r.components, 1);
    }
}

#[test]
fn unfitting_models_are_clear_configuration_errors() {
    if !support::runtime("unfitting_models_are_clear_configuration_errors") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // One class only.
    let one = testmodel::pixel_classifier(Some((16, 16)), &[[1.0, 0.0, 0.0]], &[0.0]);
    let path = support::write_model(dir.path(), "one-class.onnx", &one);
    let e = OnnxSegmenter::load(&path, None).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, OnnxError::ModelShape { .. }), "{text}");
    assert!(text.contains("one-class.onnx"), "{text}");
    assert!(text.contains("2 <= N"), "{text}");
    assert!(text.contains("it is float 1x1x16x16"), "{text}");

    // Rank-3 input.
    let rank3 = ModelBuilder::new()
        .input("x", fixed(&[3, 16, 16]))
        .output("y", fixed(&[3, 16, 16]))
        .node("Identity", &["x"], &["y"], vec![])
        .to_bytes();
    let path = support::write_model(dir.path(), "rank3.onnx", &rank3);
    let e = OnnxSegmenter::load(&path, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "the ONNX model {} does not fit: its input 0 should be float 1x3xHxW, it is float 3x16x16",
            path.display()
        )
    );
    let pe = e.into_pipeline(clothjob_pipeline::StageName::Segmentation);
    assert!(matches!(pe, PipelineError::InvalidOptions(_)), "{pe}");
    assert!(pe.is_bad_input(), "a wrong model is not retried");

    // Open dimensions are fine where ONNX Runtime cannot infer them; here it
    // infers one class from the weights.
    let open_classes = ModelBuilder::new()
        .input(
            "x",
            vec![
                Dim::Open("n".into()),
                Dim::Fixed(3),
                Dim::Open("h".into()),
                Dim::Open("w".into()),
            ],
        )
        .output(
            "y",
            vec![
                Dim::Open("n".into()),
                Dim::Open("c".into()),
                Dim::Open("h".into()),
                Dim::Open("w".into()),
            ],
        )
        .initializer("w", &[1, 3, 1, 1], &[1.0, 1.0, 1.0])
        .node("Conv", &["x", "w"], &["y"], vec![])
        .to_bytes();
    let path = support::write_model(dir.path(), "open-classes.onnx", &open_classes);
    let e = OnnxSegmenter::load(&path, None).unwrap_err();
    assert!(e.to_string().ends_with("it is float ?x1x?x?"), "{e}");
}

#[test]
fn missing_files_and_non_models_are_named_in_the_error() {
    if !support::runtime("missing_files_and_non_models_are_named_in_the_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.onnx");
    let e = OnnxSegmenter::load(&missing, None).unwrap_err();
    assert!(matches!(e, OnnxError::ReadModel { .. }), "{e}");
    assert!(e.to_string().contains("nowhere.onnx"), "{e}");
    let pe = e.into_pipeline(clothjob_pipeline::StageName::Segmentation);
    assert!(matches!(pe, PipelineError::InvalidOptions(_)), "{pe}");

    for (name, bytes) in [
        ("text.onnx", b"this is not a model".to_vec()),
        ("png.onnx", support::png(&photo(8, 8, &[]))),
        ("empty.onnx", Vec::new()),
    ] {
        let path = support::write_model(dir.path(), name, &bytes);
        let e = OnnxSegmenter::load(&path, None).unwrap_err();
        assert!(matches!(e, OnnxError::ParseModel { .. }), "{name}: {e}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "could not load {} as an ONNX model: ",
                path.display()
            )),
            "{text}"
        );
        assert!(e.is_configuration());
    }
    assert!(!Path::new(&missing).exists());
}
