//! `run`: the stages in order, with progress reporting and stage reports.

use std::time::Instant;

use image::{DynamicImage, RgbImage};

use crate::decode::decode;
use crate::encode::{OutputImage, OutputKind, Pixels, encode_all};
use crate::error::PipelineError;
use crate::limits::Limits;
use crate::options::Options;
use crate::output::RunOutput;
use crate::progress::{ProgressSink, StageName, StageReport};

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
    let image = decode(input, limits)?;
    run_decoded(&image, options, sink)
}

/// Runs the stages on an already decoded image (see [`run`]).
pub fn run_decoded(
    image: &DynamicImage,
    options: &Options,
    sink: &mut dyn ProgressSink,
) -> Result<RunOutput, PipelineError> {
    let mut stages = Vec::new();

    // Background removal, segmentation and expansion: the builtin backends
    // land in the next commits; until then they are reported as skipped.
    for stage in [
        StageName::BackgroundRemoval,
        StageName::Segmentation,
        StageName::Expansion,
    ] {
        sink.stage_skipped(stage);
    }

    let outputs = match &options.encoding {
        None => {
            sink.stage_skipped(StageName::Encoding);
            Vec::new()
        }
        Some(enc) => {
            let stage = StageName::Encoding;
            sink.stage_started(stage, "builtin");
            let start = Instant::now();
            let original = Original::new(image);
            let items = vec![OutputImage {
                role: "original",
                pixels: original.pixels(),
                kind: OutputKind::Picture,
            }];
            sink.stage_progress(stage, 0.0);
            let outputs = encode_all(&items, enc).map_err(|e| e.in_stage(stage))?;
            let duration = start.elapsed();
            sink.stage_progress(stage, 1.0);
            sink.stage_finished(stage, "builtin", duration);
            stages.push(StageReport {
                name: stage,
                backend: "builtin".to_owned(),
                duration,
            });
            outputs
        }
    };

    Ok(RunOutput {
        outputs,
        stages,
        regions: Vec::new(),
    })
}

/// The decoded input as 8-bit pixels for the `original` output, borrowed
/// when it already is 8-bit.
enum Original<'a> {
    Borrowed(Pixels<'a>),
    Rgb(RgbImage),
    Rgba(image::RgbaImage),
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
