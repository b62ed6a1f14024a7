//! `run`: the stages in order, with progress reporting and stage reports.

use std::borrow::Cow;
use std::time::Instant;

use image::{DynamicImage, GenericImageView, GrayImage, RgbImage, RgbaImage};

use crate::decode::decode;
use crate::encode::{OutputImage, OutputKind, Pixels, encode_all};
use crate::error::PipelineError;
use crate::expand::{Expanded, Expander, expand};
use crate::limits::Limits;
use crate::matte::{
    AUTO_MIN_CONFIDENCE, BackgroundRemover, BuiltinRemover, compose_cutout, remover_for,
};
use crate::options::{
    BackgroundRemovalBackend, BackgroundRemovalOptions, ExpansionBackend, ExpansionOptions,
    Options, SegmentationBackend, SegmentationOptions,
};
use crate::output::{AutoChoice, RunOutput};
use crate::progress::{ProgressSink, StageName, StageReport};
use crate::segment::{Segmentation, Segmenter, from_class_map, segment};

/// Runs the pipeline on one encoded input image.
///
/// Decoding errors are returned as they are (not wrapped in a stage); a
/// failing stage returns [`PipelineError::Stage`]. Every stage is reported to
/// `sink` as started … finished, or as skipped.
pub fn run(
    input: &[u8],
    options: &Options,
    limits: &Limits,
    sink: &mut dyn ProgressSink,
) -> Result<RunOutput, PipelineError> {
    run_with(input, options, limits, sink, &Backends::default())
}

/// Implementations the caller supplies for backends this crate does not
/// have (an ONNX session, a client of a remote service). A supplied
/// implementation is used whenever the stage's configured backend is not
/// `Builtin`; its `name()` should match the configured backend.
#[derive(Default, Clone, Copy)]
pub struct Backends<'a> {
    /// Used for `BackgroundRemovalBackend::Onnx` and `::Remote`, and as the
    /// fallback of `::Auto` (an ONNX remover, `name()` `onnx`).
    pub background_remover: Option<&'a dyn BackgroundRemover>,
    /// Used for `SegmentationBackend::Onnx` and `::Remote`.
    pub segmenter: Option<&'a dyn Segmenter>,
    /// Used for `ExpansionBackend::Gemini`.
    pub expander: Option<&'a dyn Expander>,
}

/// [`run`] with caller-supplied backends.
pub fn run_with(
    input: &[u8],
    options: &Options,
    limits: &Limits,
    sink: &mut dyn ProgressSink,
    backends: &Backends<'_>,
) -> Result<RunOutput, PipelineError> {
    let image = decode(input, limits)?;
    // Free the full-size decode before the stages when it is larger than
    // the working size.
    match shrink_for_work(&image)? {
        Some(small) => {
            let full = image.dimensions();
            drop(image);
            let mut out = run_stages(&small, options, sink, backends)?;
            rescale_regions(&mut out, small.dimensions(), full);
            Ok(out)
        }
        None => run_stages(&image, options, sink, backends),
    }
}

/// Maps region boxes and pixel counts from the working image back to the
/// decoded input's pixels.
fn rescale_regions(out: &mut RunOutput, work: (u32, u32), full: (u32, u32)) {
    let sx = f64::from(full.0) / f64::from(work.0.max(1));
    let sy = f64::from(full.1) / f64::from(work.1.max(1));
    for r in &mut out.regions {
        let b = r.bbox;
        let x0 = (f64::from(b.x) * sx).floor() as u32;
        let y0 = (f64::from(b.y) * sy).floor() as u32;
        let x1 = ((f64::from(b.x + b.width) * sx).ceil() as u32).min(full.0);
        let y1 = ((f64::from(b.y + b.height) * sy).ceil() as u32).min(full.1);
        r.bbox = crate::output::BoundingBox {
            x: x0,
            y: y0,
            width: x1.saturating_sub(x0),
            height: y1.saturating_sub(y0),
        };
        r.pixels = (r.pixels as f64 * sx * sy).round() as u64;
    }
}

/// Longest side the stages work at. Outputs are at most the encoder's max
/// side (1024 by default), so larger photos (48 Mpx phone shots) are first
/// reduced with Lanczos3; this bounds memory and time.
pub const WORK_MAX_SIDE: u32 = 4096;

/// The image reduced to [`WORK_MAX_SIDE`] (8-bit), or `None` when it fits.
fn shrink_for_work(image: &DynamicImage) -> Result<Option<DynamicImage>, PipelineError> {
    let (w, h) = (image.width(), image.height());
    if w.max(h) <= WORK_MAX_SIDE {
        return Ok(None);
    }
    let (tw, th) = crate::encode::target_size(w, h, WORK_MAX_SIDE);
    let err = |e: String| PipelineError::Internal(format!("reducing the input: {e}"));
    let small = if image.color().has_alpha() {
        let rgba = image.to_rgba8();
        let data = crate::encode::resize_rgba_full(rgba.as_raw(), w, h, tw, th).map_err(err)?;
        RgbaImage::from_raw(tw, th, data).map(DynamicImage::ImageRgba8)
    } else {
        let rgb = working_rgb(image);
        let data = crate::encode::resize_rgb(rgb.as_raw(), w, h, tw, th).map_err(err)?;
        RgbImage::from_raw(tw, th, data).map(DynamicImage::ImageRgb8)
    };
    small
        .map(Some)
        .ok_or_else(|| PipelineError::Internal("reduced input size".to_owned()))
}

/// Runs the stages on an already decoded image (see [`run`]).
pub fn run_decoded(
    image: &DynamicImage,
    options: &Options,
    sink: &mut dyn ProgressSink,
) -> Result<RunOutput, PipelineError> {
    run_decoded_with(image, options, sink, &Backends::default())
}

/// [`run_decoded`] with caller-supplied backends.
pub fn run_decoded_with(
    image: &DynamicImage,
    options: &Options,
    sink: &mut dyn ProgressSink,
    backends: &Backends<'_>,
) -> Result<RunOutput, PipelineError> {
    if let Some(small) = shrink_for_work(image)? {
        let mut out = run_stages(&small, options, sink, backends)?;
        rescale_regions(&mut out, small.dimensions(), image.dimensions());
        return Ok(out);
    }
    run_stages(image, options, sink, backends)
}

fn run_stages(
    image: &DynamicImage,
    options: &Options,
    sink: &mut dyn ProgressSink,
    backends: &Backends<'_>,
) -> Result<RunOutput, PipelineError> {
    let mut stages = Vec::new();
    let working = working_rgb(image);

    // 1. Background removal.
    let mut matte = match &options.background_removal {
        None => {
            sink.stage_skipped(StageName::BackgroundRemoval);
            None
        }
        Some(o) => {
            // `auto` starts on the builtin remover and reports the backend
            // whose mask it used when it finishes.
            let first = match o.backend {
                BackgroundRemovalBackend::Auto { .. } => "builtin",
                ref other => other.name(),
            };
            Some(timed_as(
                sink,
                &mut stages,
                StageName::BackgroundRemoval,
                first,
                |sink| remove_background(image, &working, o, backends, sink),
            )?)
        }
    };
    let auto_removal = matte.as_mut().and_then(|m| m.auto.take());

    // 2. Segmentation.
    let segmentation = match &options.segmentation {
        None => {
            sink.stage_skipped(StageName::Segmentation);
            None
        }
        Some(o) => Some(timed(
            sink,
            &mut stages,
            StageName::Segmentation,
            o.backend.name(),
            |sink| {
                run_segmentation(
                    &working,
                    matte.as_ref().map(|m| &m.alpha),
                    o,
                    backends,
                    sink,
                )
            },
        )?),
    };

    // 3. Expansion.
    let render_max_side = options.encoding.map_or(2048, |e| e.max_side);
    let expanded = match &options.expansion {
        None => {
            sink.stage_skipped(StageName::Expansion);
            None
        }
        Some(o) => Some(timed(
            sink,
            &mut stages,
            StageName::Expansion,
            o.backend.name(),
            |sink| {
                run_expansion(
                    &working,
                    matte.as_ref().map(|m| &m.cutout),
                    o,
                    render_max_side,
                    backends,
                    sink,
                )
            },
        )?),
    };

    // 4. Encoding.
    let outputs = match &options.encoding {
        None => {
            sink.stage_skipped(StageName::Encoding);
            Vec::new()
        }
        Some(enc) => timed(sink, &mut stages, StageName::Encoding, "builtin", |sink| {
            let original = Original::new(image);
            let mut items = vec![OutputImage {
                role: "original",
                pixels: original.pixels(),
                kind: OutputKind::Picture,
            }];
            if let Some(m) = &matte {
                items.push(OutputImage {
                    role: "cutout",
                    pixels: Pixels::Rgba(&m.cutout),
                    kind: OutputKind::Picture,
                });
                items.push(OutputImage {
                    role: "mask",
                    pixels: Pixels::Gray(&m.alpha),
                    kind: OutputKind::Mask,
                });
            }
            if let Some(s) = &segmentation {
                items.push(OutputImage {
                    role: "segments",
                    pixels: Pixels::Gray(&s.labels),
                    kind: OutputKind::Labels,
                });
            }
            if let Some(e) = &expanded {
                if let Some(g) = &e.garment {
                    items.push(OutputImage {
                        role: "garment",
                        pixels: Pixels::Rgba(g),
                        kind: OutputKind::Picture,
                    });
                }
                for (role, canvas) in &e.canvases {
                    items.push(OutputImage {
                        role,
                        pixels: Pixels::Rgb(canvas),
                        kind: OutputKind::Picture,
                    });
                }
            }
            sink.stage_progress(StageName::Encoding, 0.0);
            encode_all(&items, enc)
        })?,
    };

    Ok(RunOutput {
        outputs,
        stages,
        regions: segmentation.map(|s| s.regions).unwrap_or_default(),
        auto_removal,
    })
}

/// Runs `body` as `stage`: started, progress, finished with its duration, or
/// the error wrapped as the stage's failure.
fn timed<T>(
    sink: &mut dyn ProgressSink,
    stages: &mut Vec<StageReport>,
    stage: StageName,
    backend: &str,
    body: impl FnOnce(&mut dyn ProgressSink) -> Result<T, PipelineError>,
) -> Result<T, PipelineError> {
    timed_as(sink, stages, stage, backend, |sink| {
        body(sink).map(|value| Ran {
            value,
            backend: None,
            detail: None,
        })
    })
}

/// A stage's result, and the backend that made it and why when the stage
/// chose at run time.
struct Ran<T> {
    value: T,
    /// `None`: the backend it started with.
    backend: Option<String>,
    detail: Option<String>,
}

/// [`timed`] for a stage that may end on another backend than it started
/// with: `stage_detail` and `stage_finished` get the one `body` says ran.
fn timed_as<T>(
    sink: &mut dyn ProgressSink,
    stages: &mut Vec<StageReport>,
    stage: StageName,
    backend: &str,
    body: impl FnOnce(&mut dyn ProgressSink) -> Result<Ran<T>, PipelineError>,
) -> Result<T, PipelineError> {
    sink.stage_started(stage, backend);
    let start = Instant::now();
    let ran = body(sink).map_err(|e| e.in_stage(stage))?;
    let duration = start.elapsed();
    let backend = ran.backend.as_deref().unwrap_or(backend);
    if let Some(detail) = &ran.detail {
        sink.stage_detail(stage, backend, detail);
    }
    sink.stage_progress(stage, 1.0);
    sink.stage_finished(stage, backend, duration);
    stages.push(StageReport {
        name: stage,
        backend: backend.to_owned(),
        duration,
        detail: ran.detail,
    });
    Ok(ran.value)
}

/// Alpha and cut-out.
struct Matte {
    alpha: GrayImage,
    cutout: RgbaImage,
    /// What `auto` decided.
    auto: Option<AutoChoice>,
}

fn remove_background(
    image: &DynamicImage,
    working: &RgbImage,
    options: &BackgroundRemovalOptions,
    backends: &Backends<'_>,
    sink: &mut dyn ProgressSink,
) -> Result<Ran<Matte>, PipelineError> {
    let stage = StageName::BackgroundRemoval;
    // An input that already has transparency is a cut-out: keep its alpha.
    let (alpha, made_by, auto) = match &options.backend {
        BackgroundRemovalBackend::Auto { model_path } => match input_alpha(image) {
            Some(a) => (a, None, None),
            None => {
                let (alpha, by, choice) = auto_alpha(
                    working,
                    model_path.as_deref(),
                    backends.background_remover,
                    &mut |f| sink.stage_progress(stage, f),
                )?;
                (alpha, Some(by), Some(choice))
            }
        },
        backend => {
            let own;
            let remover: &dyn BackgroundRemover = match (backend, backends.background_remover) {
                (BackgroundRemovalBackend::Builtin, _) | (_, None) => {
                    own = remover_for(backend)?;
                    own.as_ref()
                }
                (_, Some(supplied)) => supplied,
            };
            let alpha = match input_alpha(image) {
                Some(a) => a,
                None => remover.alpha(working, &mut |f| sink.stage_progress(stage, 0.8 * f))?,
            };
            check_alpha_size(remover.name(), &alpha, working)?;
            (alpha, None, None)
        }
    };
    let cutout = compose_cutout(working, &alpha, options.decontaminate)?;
    Ok(Ran {
        backend: made_by,
        detail: auto.as_ref().map(|c| c.reason.clone()),
        value: Matte {
            alpha,
            cutout,
            auto,
        },
    })
}

fn check_alpha_size(
    remover: &str,
    alpha: &GrayImage,
    working: &RgbImage,
) -> Result<(), PipelineError> {
    if alpha.dimensions() != working.dimensions() {
        return Err(PipelineError::Internal(format!(
            "the {remover} remover returned a {:?} alpha for a {:?} image",
            alpha.dimensions(),
            working.dimensions()
        )));
    }
    Ok(())
}

/// `auto`: the builtin mask, or the fallback's where the builtin remover's
/// confidence is below [`AUTO_MIN_CONFIDENCE`] and a fallback is supplied.
/// Returns the mask, the backend that made it (`builtin`, or the fallback's
/// name: `onnx`) and the decision. Progress: the builtin remover 0..0.4, the fallback 0.4..0.8.
fn auto_alpha(
    working: &RgbImage,
    model_path: Option<&std::path::Path>,
    fallback: Option<&dyn BackgroundRemover>,
    progress: &mut dyn FnMut(f64),
) -> Result<(GrayImage, String, AutoChoice), PipelineError> {
    let (alpha, confidence) =
        BuiltinRemover::default().alpha_with_confidence(working, &mut |f| progress(0.4 * f))?;
    let measured = format!(
        "confidence {:.2} {} {AUTO_MIN_CONFIDENCE:.2} ({})",
        confidence.value,
        if confidence.value < AUTO_MIN_CONFIDENCE {
            "<"
        } else {
            ">="
        },
        confidence.explain()
    );
    let choice = |backend: &str, reason: String| AutoChoice {
        backend: backend.to_owned(),
        confidence,
        threshold: AUTO_MIN_CONFIDENCE,
        reason,
    };
    if confidence.value >= AUTO_MIN_CONFIDENCE {
        let reason = format!("{measured}: builtin");
        return Ok((alpha, "builtin".to_owned(), choice("builtin", reason)));
    }
    let Some(model) = fallback else {
        let why = match model_path {
            None => "no onnx model configured".to_owned(),
            Some(p) => format!(
                "the onnx model {} was not supplied to the pipeline",
                p.display()
            ),
        };
        let reason = format!("{measured}, but {why}: builtin kept");
        return Ok((alpha, "builtin".to_owned(), choice("builtin", reason)));
    };
    let theirs = model.alpha(working, &mut |f| progress(0.4 + 0.4 * f))?;
    check_alpha_size(model.name(), &theirs, working)?;
    let name = model.name().to_owned();
    let reason = format!("{measured}: {name}");
    Ok((theirs, name.clone(), choice(&name, reason)))
}

fn run_segmentation(
    working: &RgbImage,
    alpha: Option<&GrayImage>,
    options: &SegmentationOptions,
    backends: &Backends<'_>,
    sink: &mut dyn ProgressSink,
) -> Result<Segmentation, PipelineError> {
    let mut progress = |f| sink.stage_progress(StageName::Segmentation, f);
    match (&options.backend, backends.segmenter) {
        (SegmentationBackend::Builtin, _) => segment(working, alpha, options, &mut progress),
        (_, Some(model)) => {
            let map = model.classes(working, &mut |f| progress(0.9 * f))?;
            from_class_map(working, alpha, map)
        }
        (other, None) => Err(PipelineError::BackendUnavailable {
            stage: StageName::Segmentation,
            backend: other.name().to_owned(),
            reason: "no segmentation model was supplied to the pipeline".to_owned(),
        }),
    }
}

fn run_expansion(
    working: &RgbImage,
    cutout: Option<&RgbaImage>,
    options: &ExpansionOptions,
    render_max_side: u32,
    backends: &Backends<'_>,
    sink: &mut dyn ProgressSink,
) -> Result<Expanded, PipelineError> {
    let generator = match (&options.backend, backends.expander) {
        (ExpansionBackend::Builtin, _) => None,
        (_, Some(g)) => Some(g),
        (other, None) => {
            return Err(PipelineError::BackendUnavailable {
                stage: StageName::Expansion,
                backend: other.name().to_owned(),
                reason: "no expansion client was supplied to the pipeline".to_owned(),
            });
        }
    };
    expand(
        working,
        cutout,
        options,
        render_max_side,
        generator,
        &mut |f| {
            sink.stage_progress(StageName::Expansion, f);
        },
    )
}

/// The 8-bit RGB picture the stages work on; transparent inputs are
/// flattened on white.
fn working_rgb(image: &DynamicImage) -> Cow<'_, RgbImage> {
    match image {
        DynamicImage::ImageRgb8(i) => Cow::Borrowed(i),
        other if other.color().has_alpha() => {
            let rgba = other.to_rgba8();
            let mut rgb = RgbImage::new(rgba.width(), rgba.height());
            for (o, p) in rgb.pixels_mut().zip(rgba.pixels()) {
                let a = u32::from(p[3]);
                for c in 0..3 {
                    o[c] = ((u32::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
                }
            }
            Cow::Owned(rgb)
        }
        other => Cow::Owned(other.to_rgb8()),
    }
}

/// The input's own alpha when it has any transparent pixel.
fn input_alpha(image: &DynamicImage) -> Option<GrayImage> {
    if !image.color().has_alpha() {
        return None;
    }
    let rgba = image.to_rgba8();
    if rgba.pixels().all(|p| p[3] == 255) {
        return None;
    }
    Some(GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        image::Luma([rgba.get_pixel(x, y)[3]])
    }))
}

/// The decoded input as 8-bit pixels for the `original` output, borrowed
/// when it already is 8-bit.
enum Original<'a> {
    Borrowed(Pixels<'a>),
    Rgb(RgbImage),
    Rgba(RgbaImage),
}

impl<'a> Original<'a> {
    fn new(image: &'a DynamicImage) -> Self {
        match image {
            DynamicImage::ImageRgb8(i) => Original::Borrowed(Pixels::Rgb(i)),
            DynamicImage::ImageRgba8(i) => Original::Borrowed(Pixels::Rgba(i)),
            DynamicImage::ImageLuma8(i) => Original::Borrowed(Pixels::Gray(i)),
            other if other.color().has_alpha() => Original::Rgba(other.to_rgba8()),
            other => Original::Rgb(other.to_rgb8()),
        }
    }

    fn pixels(&self) -> Pixels<'_> {
        match self {
            Original::Borrowed(p) => *p,
            Original::Rgb(i) => Pixels::Rgb(i),
            Original::Rgba(i) => Pixels::Rgba(i),
        }
    }
}
