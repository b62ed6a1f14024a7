//! The real `GeminiExpander` as the pipeline's expander (`run_with`) against a
//! fake Gemini on loopback: the catalog and square outputs are the fake's
//! pictures, fitted to the exact ratio; what was sent follows the contract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Cursor;
use std::time::{Duration, Instant};

use clothjob_backends::{GeminiConfig, GeminiExpander};
use clothjob_pipeline::{
    Backends, BackgroundRemovalOptions, ExpansionBackend, ExpansionOptions, Limits, NoProgress,
    Options, PipelineError, RunOutput, StageName, run_with,
};
use image::{GenericImageView, ImageFormat};
use support::gemini::{Behaviour, FakeGemini, generated_size, image_reply, ratio_colour};
use support::{MockServer, tshirt_photo};

const KEY: &str = "pipeline-test-key";
const BACKGROUND: [u8; 3] = [240, 240, 236];

fn photo_png() -> Vec<u8> {
    let (photo, _) = tshirt_photo(600, 800);
    let mut out = Vec::new();
    photo
        .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

fn expander(endpoint: String, total: Duration) -> GeminiExpander {
    let mut c = GeminiConfig::new(KEY, "gemini-2.5-flash-image");
    c.endpoint = endpoint;
    c.network = clothjob_backends::NetworkPolicy::parse("127.0.0.0/8").unwrap();
    c.total_timeout = total;
    c.initial_backoff = Duration::from_millis(20);
    c.extra_prompt = Some("Keep the collar open.".to_owned());
    GeminiExpander::new(c).unwrap()
}

fn options(remove_background: bool) -> Options {
    Options {
        background_removal: remove_background.then(BackgroundRemovalOptions::default),
        expansion: Some(ExpansionOptions {
            backend: ExpansionBackend::Gemini,
            background: BACKGROUND,
            ..ExpansionOptions::default()
        }),
        ..Options::default()
    }
}

fn run(g: &GeminiExpander, options: &Options) -> Result<RunOutput, PipelineError> {
    let backends = Backends {
        expander: Some(g),
        ..Backends::default()
    };
    run_with(
        &photo_png(),
        options,
        &Limits::default(),
        &mut NoProgress,
        &backends,
    )
}

/// The largest distance of any channel of any pixel from `colour`.
fn max_deviation(img: &image::DynamicImage, colour: [u8; 3]) -> u8 {
    img.to_rgb8()
        .pixels()
        .flat_map(|p| (0..3).map(move |c| p.0[c].abs_diff(colour[c])))
        .max()
        .unwrap()
}

#[test]
fn catalog_and_square_come_from_gemini_at_the_exact_ratios() {
    let fake = FakeGemini::start(Behaviour::Image);
    let g = expander(fake.endpoint(), Duration::from_secs(60));
    let out = run(&g, &options(true)).unwrap();

    let expansion = out
        .stages
        .iter()
        .find(|s| s.name == StageName::Expansion)
        .unwrap();
    assert_eq!(expansion.backend, "gemini");

    // 864x1184 is cropped to 864x1152 (3:4) and reduced to the 1024 max side.
    for (role, ratio, size) in [
        ("catalog", "3:4", (768, 1024)),
        ("square", "1:1", (1024, 1024)),
    ] {
        let o = out.outputs.iter().find(|o| o.role == role).unwrap();
        assert_eq!((o.width, o.height), size, "{role}");
        let img = image::load_from_memory(&o.bytes).unwrap();
        assert_eq!(img.dimensions(), size, "{role}");
        let dev = max_deviation(&img, ratio_colour(ratio));
        assert!(dev <= 6, "{role}: a pixel is {dev} off the fake's colour");
    }

    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    let ratios: Vec<&str> = calls.iter().map(|c| c.aspect_ratio.as_str()).collect();
    assert_eq!(ratios, ["3:4", "1:1"]);
    for c in &calls {
        assert_eq!(
            c.path,
            "/v1beta/models/gemini-2.5-flash-image:generateContent"
        );
        assert_eq!(c.api_key.as_deref(), Some(KEY));
        assert!(c.response_modalities.iter().any(|m| m == "IMAGE"));
        assert_eq!(c.mime_type, "image/png");
        assert!(c.body_bytes < 20_000_000, "{} bytes", c.body_bytes);
        assert!(c.prompt.contains(&c.aspect_ratio), "{}", c.prompt);
        assert!(c.prompt.contains("#F0F0EC"), "{}", c.prompt);
        assert!(c.prompt.contains("already been cut out"), "{}", c.prompt);
        assert!(c.prompt.ends_with("Keep the collar open."), "{}", c.prompt);
        // The garment framed on the background colour: about the shirt's box
        // (432x608 of the 600x800 photo), corners exactly the colour.
        let sent = c.image.to_rgb8();
        let (w, h) = sent.dimensions();
        assert!(
            (400..=520).contains(&w) && (560..=720).contains(&h),
            "{w}x{h}"
        );
        for (x, y) in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)] {
            assert_eq!(sent.get_pixel(x, y).0, BACKGROUND, "corner {x},{y}");
        }
        let centre = sent.get_pixel(w / 2, h / 2).0;
        assert!(
            centre[2] < 110 && centre[0] < 60,
            "centre {centre:?} is not the navy shirt"
        );
    }
}

#[test]
fn without_a_cutout_the_photo_is_sent() {
    let fake = FakeGemini::start(Behaviour::Image);
    let g = expander(fake.endpoint(), Duration::from_secs(60));
    let out = run(&g, &options(false)).unwrap();
    assert!(out.outputs.iter().any(|o| o.role == "catalog"));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c.image.dimensions(), (600, 800));
        assert!(c.prompt.contains("photo as taken"), "{}", c.prompt);
    }
}

#[test]
fn a_safety_block_fails_the_stage_with_its_reason_and_no_retry() {
    let fake = FakeGemini::start(Behaviour::Blocked("IMAGE_SAFETY"));
    let g = expander(fake.endpoint(), Duration::from_secs(60));
    let e = run(&g, &options(true)).unwrap_err();
    assert!(
        matches!(&e, PipelineError::Stage { stage: StageName::Expansion, source }
            if matches!(&**source, PipelineError::BackendFailed { retryable: false, backend, .. } if backend == "gemini")),
        "{e:?}"
    );
    assert!(e.is_bad_input());
    assert_eq!(e.category(), "BadInput");
    assert!(e.to_string().contains("IMAGE_SAFETY"), "{e}");
    assert_eq!(fake.calls().len(), 1, "a blocked reply was retried");
}

#[test]
fn the_time_cap_is_shared_by_all_canvases_of_the_stage() {
    // Each reply takes 2 s: one canvas fits a 3.5 s cap (with 1.5 s to spare for encoding
    // and decoding on a busy machine), two never do.
    let server = MockServer::start(|_, _| {
        let (w, h) = generated_size("1:1");
        image_reply(ratio_colour("1:1"), w, h).delayed(Duration::from_millis(2000))
    });
    let g = expander(server.url(), Duration::from_millis(3500));
    let started = Instant::now();
    let e = run(&g, &options(true)).unwrap_err();
    let took = started.elapsed();
    assert!(!e.is_bad_input(), "{e}");
    assert_eq!(e.category(), "Backend");
    assert!(e.to_string().contains("did not reply"), "{e}");
    assert!(took < Duration::from_millis(5500), "{took:?}");
    assert_eq!(server.count(), 2);
}
