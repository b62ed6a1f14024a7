//! Builtin background removal on a varied synthetic test set with known masks:
//! IoU per case, and the cut-out's edge colours.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use clothjob_pipeline::matte::{BackgroundRemover, BuiltinRemover, compose_cutout};
use common::synth::{self, Scene};

/// The quality goal of the builtin remover on studio photos.
const MIN_IOU: f64 = 0.97;

fn check(scene: &Scene) -> f64 {
    let (photo, truth) = synth::render(scene);
    let mut last = 0.0;
    let alpha = BuiltinRemover::default()
        .alpha(&photo, &mut |f| {
            assert!(f >= last && f <= 1.0);
            last = f;
        })
        .unwrap();
    assert_eq!(alpha.dimensions(), photo.dimensions());
    let iou = synth::iou(&alpha, &truth);
    println!(
        "{} {}x{} IoU {iou:.4}",
        scene.name, scene.width, scene.height
    );
    iou
}

fn scene(name: &str) -> Scene {
    synth::test_set()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

macro_rules! iou_case {
    ($test:ident, $name:literal) => {
        #[test]
        fn $test() {
            let iou = check(&scene($name));
            assert!(iou >= MIN_IOU, "{}: IoU {iou:.4} < {MIN_IOU}", $name);
        }
    };
}

iou_case!(blue_stripes_on_gradient, "blue_stripes_gradient");
iou_case!(white_on_light_grey, "white_on_light_grey");
iou_case!(beige_dress_on_beige, "beige_dress_on_beige");
iou_case!(black_trousers_on_dark_grey, "black_trousers_on_dark_grey");
iou_case!(red_check_hoodie_on_paper, "red_check_hoodie_on_paper");
iou_case!(green_dress_with_vignette, "green_dress_vignette");
iou_case!(
    grey_on_white_with_strong_shadow,
    "grey_on_white_strong_shadow"
);
iou_case!(garment_touching_the_border, "denim_touching_bottom_border");
iou_case!(cream_hoodie_on_white_paper, "cream_hoodie_on_white_paper");
iou_case!(light_blue_on_light_grey, "light_blue_on_light_grey");
iou_case!(
    small_garment_in_a_landscape_photo,
    "small_pink_dress_landscape"
);
iou_case!(phone_resolution_3024x4032, "navy_hoodie_phone_3024x4032");

#[test]
fn the_test_set_covers_the_hard_cases() {
    let names: Vec<&str> = synth::test_set().iter().map(|s| s.name).collect();
    assert_eq!(names.len(), 12);
    // A mask that ignores the garment or takes the whole frame must fail.
    let s = scene("grey_on_white_strong_shadow");
    let (_, truth) = synth::render(&s);
    let all = image::GrayImage::from_pixel(s.width, s.height, image::Luma([255]));
    assert!(synth::iou(&all, &truth) < 0.5);
}

#[test]
fn cutout_edges_lose_the_background_colour() {
    // Navy on light grey: a naive cut-out has light-grey fringes at the edge;
    // decontaminated edge pixels must stay close to the garment colour.
    let s = scene("navy_hoodie_phone_3024x4032");
    let s = Scene {
        width: 900,
        height: 1200,
        ..s
    };
    let (photo, _) = synth::render(&s);
    let alpha = BuiltinRemover::default()
        .alpha(&photo, &mut |_| {})
        .unwrap();
    let fringe = |decontaminate: bool| {
        let cut = compose_cutout(&photo, &alpha, decontaminate).unwrap();
        let (mut sum, mut n) = (0.0f64, 0.0f64);
        for p in cut.pixels() {
            if (40..=215).contains(&p[3]) {
                // Luma of the edge colour; the navy garment is about 37.
                sum += 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
                n += 1.0;
            }
        }
        assert!(n > 500.0, "too few edge pixels: {n}");
        sum / n
    };
    let raw = fringe(false);
    let clean = fringe(true);
    println!("edge luma: raw {raw:.1}, decontaminated {clean:.1}");
    assert!(
        raw > 90.0,
        "the raw edge should show the background: {raw:.1}"
    );
    // Issue 11's edge (soft within a work cell of the flood-decided edge,
    // projected on the garment colour next to it) gives more partial pixels
    // (raw 134 instead of 182, closer to the garment): 62.8 measured, where
    // the earlier alpha gave 52.
    assert!(clean < 66.0, "decontaminated edge still light: {clean:.1}");
}
