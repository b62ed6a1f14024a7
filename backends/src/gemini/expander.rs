//! [`GeminiExpander`] as the pipeline's [`Expander`]: the cut-out, framed and
//! composited on the canvas colour (the photo when there is no cut-out), goes
//! to Gemini once per aspect ratio; a [`GeminiError`] becomes the
//! [`PipelineError`] that tells whether a retry can help.

use std::time::Instant;

use clothjob_pipeline::{Expander, ExpansionOptions, PipelineError, StageName};
use image::{Rgb, RgbImage, Rgba, RgbaImage};

use super::{BACKEND_NAME, ExpandRequest, GeminiError, GeminiExpander};

/// Alpha at or below this is empty when framing the garment.
const EMPTY_ALPHA: u8 = 8;
/// Room left around the garment's box, as a fraction of its longer side.
const FRAME_PAD: f64 = 0.04;
/// The smallest cap on the longest side sent: the model sees detail at about
/// this size even when the outputs are small.
const MIN_SENT_SIDE: u32 = 1024;

impl Expander for GeminiExpander {
    fn name(&self) -> &str {
        BACKEND_NAME
    }

    /// Sends the cut-out framed on `options.background` (or the photo), at
    /// most `max(max_side, 1024)` px long; every canvas of the stage shares
    /// [`super::GeminiConfig::total_timeout`], counted from the first one.
    fn canvas(
        &self,
        image: &RgbImage,
        cutout: Option<&RgbaImage>,
        aspect: (u32, u32),
        options: &ExpansionOptions,
        max_side: u32,
    ) -> Result<RgbImage, PipelineError> {
        let stage_start = *self.stage_start.get_or_init(Instant::now);
        let framed = cutout.and_then(|c| on_background(c, options.background));
        let cut_out = framed.is_some();
        let input = framed.unwrap_or_else(|| opaque(image));
        let request = ExpandRequest {
            aspect,
            background: options.background,
            cut_out,
            prompt_extra: None,
            max_input_side: Some(max_side.max(MIN_SENT_SIDE)),
            deadline: Some(stage_start + self.config.total_timeout),
        };
        let made = self.expand_request(&input, &request)?;
        Ok(flatten(&made.image, options.background))
    }
}

impl From<GeminiError> for PipelineError {
    /// Retryable errors (busy, down, slow past the retries) become
    /// [`PipelineError::BackendFailed`] with `retryable` (category `Backend`:
    /// the job is retried); a refused input (a safety block, a reply without
    /// an image, another rejected request) `BackendFailed` without it
    /// (`BadInput`); settings at fault (a rejected key, an unknown model, a
    /// wrong endpoint) [`PipelineError::InvalidOptions`]; an image that cannot
    /// be prepared `Internal`.
    fn from(e: GeminiError) -> Self {
        if matches!(e, GeminiError::Image(_)) {
            PipelineError::Internal(format!("expansion backend {BACKEND_NAME}: {e}"))
        } else if e.is_settings_fault() {
            PipelineError::InvalidOptions(format!("expansion backend {BACKEND_NAME}: {e}"))
        } else {
            PipelineError::BackendFailed {
                stage: StageName::Expansion,
                backend: BACKEND_NAME.to_owned(),
                retryable: e.is_retryable(),
                reason: e.to_string(),
            }
        }
    }
}

/// The garment's box (alpha above [`EMPTY_ALPHA`], padded by [`FRAME_PAD`])
/// composited on `background`, opaque; `None` when nothing is opaque enough.
fn on_background(cutout: &RgbaImage, background: [u8; 3]) -> Option<RgbaImage> {
    let (w, h) = cutout.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in cutout.enumerate_pixels() {
        if p.0[3] > EMPTY_ALPHA {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 || y0 > y1 {
        return None;
    }
    let pad = (f64::from((x1 - x0 + 1).max(y1 - y0 + 1)) * FRAME_PAD).round() as u32;
    let (x0, y0) = (x0.saturating_sub(pad), y0.saturating_sub(pad));
    let (x1, y1) = ((x1 + pad).min(w - 1), (y1 + pad).min(h - 1));
    let framed = RgbaImage::from_fn(x1 - x0 + 1, y1 - y0 + 1, |x, y| {
        let [r, g, b, a] = cutout.get_pixel(x0 + x, y0 + y).0;
        let Rgb([r, g, b]) = over(Rgb([r, g, b]), a, background);
        Rgba([r, g, b, 255])
    });
    Some(framed)
}

/// `image` with full alpha.
fn opaque(image: &RgbImage) -> RgbaImage {
    RgbaImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b] = image.get_pixel(x, y).0;
        Rgba([r, g, b, 255])
    })
}

/// `image` flattened on `background` (generated pictures are normally opaque).
fn flatten(image: &RgbaImage, background: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b, a] = image.get_pixel(x, y).0;
        over(Rgb([r, g, b]), a, background)
    })
}

/// `color` with alpha `a` over `background`.
fn over(color: Rgb<u8>, a: u8, background: [u8; 3]) -> Rgb<u8> {
    let a = u32::from(a);
    Rgb(std::array::from_fn(|c| {
        ((u32::from(color.0[c]) * a + u32::from(background[c]) * (255 - a) + 127) / 255) as u8
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_cutout_is_framed_and_put_on_the_background() {
        // 200x100, garment 40x20 at (50, 30), half-transparent edge column.
        let cutout = RgbaImage::from_fn(200, 100, |x, y| match (x, y) {
            (50..=89, 30..=49) if x == 50 => Rgba([0, 0, 0, 128]),
            (50..=89, 30..=49) => Rgba([10, 20, 30, 255]),
            _ => Rgba([200, 0, 0, 0]),
        });
        let framed = on_background(&cutout, [250, 240, 230]).unwrap();
        // Pad = 4 % of 40 = 2 px on each side.
        assert_eq!(framed.dimensions(), (44, 24));
        assert_eq!(framed.get_pixel(0, 0).0, [250, 240, 230, 255]);
        assert_eq!(framed.get_pixel(10, 10).0, [10, 20, 30, 255]);
        assert_eq!(framed.get_pixel(2, 10).0, [125, 120, 115, 255]);
        assert!(on_background(&RgbaImage::new(10, 10), [0, 0, 0]).is_none());
        // A garment touching the border is not padded past it.
        let full = RgbaImage::from_pixel(30, 20, Rgba([1, 2, 3, 255]));
        assert_eq!(
            on_background(&full, [0, 0, 0]).unwrap().dimensions(),
            (30, 20)
        );
    }

    #[test]
    fn flattening_keeps_opaque_pixels_and_blends_the_rest() {
        let img = RgbaImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgba([9, 8, 7, 255])
            } else {
                Rgba([0, 0, 0, 0])
            }
        });
        let flat = flatten(&img, [100, 110, 120]);
        assert_eq!(flat.get_pixel(0, 0).0, [9, 8, 7]);
        assert_eq!(flat.get_pixel(1, 0).0, [100, 110, 120]);
        assert_eq!(opaque(&RgbImage::new(3, 2)).get_pixel(2, 1).0[3], 255);
    }

    fn http(status: u16, reason: Option<&str>) -> GeminiError {
        GeminiError::Http {
            status,
            status_name: None,
            message: "m".to_owned(),
            reason: reason.map(str::to_owned),
            retry_after: None,
        }
    }

    #[test]
    fn errors_map_by_whether_a_retry_can_help() {
        let blocked = PipelineError::from(GeminiError::Blocked {
            reason: "IMAGE_SAFETY".to_owned(),
            message: None,
        });
        assert!(blocked.is_bad_input());
        assert_eq!(blocked.category(), "BadInput");
        assert!(blocked.to_string().contains("IMAGE_SAFETY"), "{blocked}");
        assert!(
            matches!(&blocked, PipelineError::BackendFailed { backend, retryable: false, .. } if backend == "gemini")
        );

        let exhausted = PipelineError::from(GeminiError::RetriesExhausted {
            attempts: 3,
            elapsed: Duration::from_secs(2),
            last: Box::new(http(503, None)),
        });
        assert!(!exhausted.is_bad_input());
        assert_eq!(exhausted.category(), "Backend");
        let timeout = PipelineError::from(GeminiError::Timeout(Duration::from_secs(1)));
        assert_eq!(timeout.category(), "Backend");

        for settings in [
            http(401, None),
            http(403, None),
            http(404, None),
            http(400, Some("API_KEY_INVALID")),
            GeminiError::MalformedResponse("x".to_owned()),
            GeminiError::InvalidConfig("x".to_owned()),
        ] {
            let p = PipelineError::from(settings);
            assert!(p.is_bad_input(), "{p}");
            assert_eq!(p.category(), "InvalidOptions", "{p}");
        }
        let rejected = PipelineError::from(http(400, None));
        assert!(rejected.is_bad_input());
        assert_eq!(rejected.category(), "BadInput");
        let image = PipelineError::from(GeminiError::Image("x".to_owned()));
        assert_eq!(image.category(), "Internal");
    }
}
