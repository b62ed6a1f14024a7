//! Builtin expansion: the trimmed garment and catalog canvases (garment centred
//! on a target aspect ratio with margins, clean background, soft contact shadow),
//! or, without a cut-out, the photo extended by an edge-aware fill.

use fast_image_resize as fr;
use image::{RgbImage, RgbaImage};

use crate::encode::resize;
use crate::error::PipelineError;
use crate::imgops::box_mean;
use crate::options::ExpansionOptions;

/// What expansion made.
#[derive(Debug, Clone)]
pub struct Expanded {
    /// The cut-out trimmed to the garment's alpha box (full resolution);
    /// `None` without a cut-out or when the cut-out is empty.
    pub garment: Option<RgbaImage>,
    /// One canvas per aspect ratio, with its output role.
    pub canvases: Vec<(String, RgbImage)>,
}

/// Something that makes a catalog picture with a generative model (Gemini).
/// The pipeline asks it once per aspect ratio and fits what comes back to the
/// exact ratio and size.
pub trait Expander: Send + Sync {
    /// The backend's name for reports (`gemini`).
    fn name(&self) -> &str;

    /// A catalog picture of the garment at aspect ratio `aspect` (width,
    /// height). `image` is the photo; `cutout` the garment on transparency
    /// when background removal ran; `max_side` the largest useful side.
    fn canvas(
        &self,
        image: &RgbImage,
        cutout: Option<&RgbaImage>,
        aspect: (u32, u32),
        options: &ExpansionOptions,
        max_side: u32,
    ) -> Result<RgbImage, PipelineError>;
}

/// Alpha at or below this is treated as empty when trimming.
const TRIM_ALPHA: u8 = 8;
/// Darkening of the background under the garment at the shadow's core.
const SHADOW_OPACITY: f32 = 0.28;

/// The output role of an aspect ratio: `catalog` for 3:4, `square` for 1:1,
/// `expanded_WxH` (reduced) otherwise.
pub fn role_for(aspect: (u32, u32)) -> String {
    let g = gcd(aspect.0, aspect.1).max(1);
    match (aspect.0 / g, aspect.1 / g) {
        (3, 4) => "catalog".to_owned(),
        (1, 1) => "square".to_owned(),
        (a, b) => format!("expanded_{a}x{b}"),
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Makes the garment and the canvases. Canvases are rendered with their long
/// side at most `render_max_side` (the encoder's max side: rendering larger
/// would only be downscaled again).
pub fn expand(
    image: &RgbImage,
    cutout: Option<&RgbaImage>,
    options: &ExpansionOptions,
    render_max_side: u32,
    generator: Option<&dyn Expander>,
    progress: &mut dyn FnMut(f64),
) -> Result<Expanded, PipelineError> {
    if options.aspect_ratios.iter().any(|&(a, b)| a == 0 || b == 0) {
        return Err(PipelineError::InvalidOptions(
            "expansion.aspectRatios must not contain 0".to_owned(),
        ));
    }
    if !(0.0..0.45).contains(&options.margin) {
        return Err(PipelineError::InvalidOptions(format!(
            "expansion.margin must be in 0..0.45, not {}",
            options.margin
        )));
    }
    let mut ratios: Vec<(u32, u32)> = Vec::new();
    for &(a, b) in &options.aspect_ratios {
        let g = gcd(a, b);
        if a / g > 64 || b / g > 64 || a > b.saturating_mul(8) || b > a.saturating_mul(8) {
            return Err(PipelineError::InvalidOptions(format!(
                "expansion aspect ratio {a}:{b} is not supported (terms up to 64 once \
                 reduced, between 1:8 and 8:1)"
            )));
        }
        if !ratios.contains(&(a / g, b / g)) {
            ratios.push((a / g, b / g));
        }
    }
    let max_side = render_max_side.max(16);
    let garment = cutout.and_then(trim);
    progress(0.2);
    let mut canvases = Vec::with_capacity(ratios.len());
    for (i, &ratio) in ratios.iter().enumerate() {
        let canvas = match (generator, &garment) {
            (Some(gen_), _) => {
                let made = gen_.canvas(image, cutout, ratio, options, max_side)?;
                fit_canvas(&made, ratio, max_side)
            }
            (None, Some(g)) => catalog_canvas(g, ratio, options, max_side),
            (None, None) => extended_photo(image, ratio, max_side),
        }
        .map_err(|detail| PipelineError::Internal(format!("expansion: {detail}")))?;
        canvases.push((role_for(ratio), canvas));
        progress(0.2 + 0.8 * (i + 1) as f64 / ratios.len() as f64);
    }
    Ok(Expanded { garment, canvases })
}

/// A generated picture centre-cropped to the exact `ratio` and reduced to at
/// most `max_side` (Lanczos3); never enlarged.
fn fit_canvas(made: &RgbImage, ratio: (u32, u32), max_side: u32) -> Result<RgbImage, String> {
    let (w, h) = made.dimensions();
    if w == 0 || h == 0 {
        return Err("the generated picture is empty".to_owned());
    }
    let k = (w / ratio.0).min(h / ratio.1).max(1);
    let (cw, ch) = ((ratio.0 * k).min(w), (ratio.1 * k).min(h));
    let cropped = image::imageops::crop_imm(made, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    let ku = (max_side / ratio.0.max(ratio.1)).max(1).min(k);
    let (tw, th) = (ratio.0 * ku, ratio.1 * ku);
    if (tw, th) == (cw, ch) {
        return Ok(cropped);
    }
    let data = crate::encode::resize_rgb(cropped.as_raw(), cw, ch, tw, th)?;
    RgbImage::from_raw(tw, th, data).ok_or_else(|| "resized canvas size".to_owned())
}

/// The cut-out cropped to its alpha box; `None` when nothing is opaque enough.
fn trim(cutout: &RgbaImage) -> Option<RgbaImage> {
    let (w, h) = cutout.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0u32, 0u32);
    for (y, row) in cutout.as_raw().chunks_exact(w as usize * 4).enumerate() {
        let mut first = None;
        let mut last = 0;
        for (x, px) in row.chunks_exact(4).enumerate() {
            if px[3] > TRIM_ALPHA {
                first.get_or_insert(x);
                last = x;
            }
        }
        if let Some(f) = first {
            x0 = x0.min(f as u32);
            x1 = x1.max(last as u32);
            y0 = y0.min(y as u32);
            y1 = y1.max(y as u32);
        }
    }
    if x0 > x1 || y0 > y1 || y1 >= h {
        return None;
    }
    Some(image::imageops::crop_imm(cutout, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image())
}

/// Canvas units: the canvas is (a·k) x (b·k) pixels for an integer k, so its
/// aspect ratio is exact.
fn units(natural: f64, ratio: (u32, u32), max_side: u32) -> u32 {
    let cap = (max_side / ratio.0.max(ratio.1)).max(1);
    (natural.ceil() as u32).clamp(1, cap)
}

fn catalog_canvas(
    garment: &RgbaImage,
    ratio: (u32, u32),
    options: &ExpansionOptions,
    max_side: u32,
) -> Result<RgbImage, String> {
    let (gw, gh) = (f64::from(garment.width()), f64::from(garment.height()));
    let (a, b) = (f64::from(ratio.0), f64::from(ratio.1));
    let m = f64::from(options.margin) * a.min(b);
    let natural = (gw / (a - 2.0 * m)).max(gh / (b - 2.0 * m));
    let k = units(natural, ratio, max_side);
    let (cw, ch) = (ratio.0 * k, ratio.1 * k);
    let t = f64::from(k) / natural;
    let tw = ((gw * t).round() as u32).clamp(1, cw);
    let th = ((gh * t).round() as u32).clamp(1, ch);
    let scaled = resize(
        garment.as_raw(),
        garment.width(),
        garment.height(),
        tw,
        th,
        fr::PixelType::U8x4,
        fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3),
    )?;
    let (cw_us, ch_us) = (cw as usize, ch as usize);
    let ox = (cw - tw) as usize / 2;
    let oy = (ch - th) as usize / 2;

    // Garment alpha on the canvas, for the shadow.
    let mut shadow = vec![0.0f32; cw_us * ch_us];
    if options.shadow {
        let dy = ((f64::from(th) * 0.012).round() as usize).max(1);
        for y in 0..th as usize {
            let cy = oy + y + dy;
            if cy >= ch_us {
                break;
            }
            for x in 0..tw as usize {
                shadow[cy * cw_us + ox + x] =
                    f32::from(scaled[(y * tw as usize + x) * 4 + 3]) / 255.0;
            }
        }
        let r = ((f64::from(th) * 0.015).round() as usize).max(2);
        shadow = box_mean(&shadow, cw_us, ch_us, r);
        shadow = box_mean(&shadow, cw_us, ch_us, r);
    }
    let bg = options.background.map(f32::from);
    let mut out = vec![0u8; cw_us * ch_us * 3];
    for y in 0..ch_us {
        for x in 0..cw_us {
            let i = y * cw_us + x;
            let dark = 1.0 - SHADOW_OPACITY * shadow[i];
            let mut px = [bg[0] * dark, bg[1] * dark, bg[2] * dark];
            if (ox..ox + tw as usize).contains(&x) && (oy..oy + th as usize).contains(&y) {
                let g = ((y - oy) * tw as usize + (x - ox)) * 4;
                let al = f32::from(scaled[g + 3]) / 255.0;
                for c in 0..3 {
                    px[c] = f32::from(scaled[g + c]) * al + px[c] * (1.0 - al);
                }
            }
            for c in 0..3 {
                out[i * 3 + c] = (px[c] + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(cw, ch, out).ok_or_else(|| "canvas size".to_owned())
}

/// The whole photo on a canvas of the ratio; the added area repeats the
/// photo's blurred border (edge-aware fill), so no hard seam or flat band.
fn extended_photo(image: &RgbImage, ratio: (u32, u32), max_side: u32) -> Result<RgbImage, String> {
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let natural = (w / f64::from(ratio.0)).max(h / f64::from(ratio.1));
    let k = units(natural, ratio, max_side);
    let (cw, ch) = (ratio.0 * k, ratio.1 * k);
    let t = f64::from(k) / natural;
    let pw = ((w * t).round() as u32).clamp(1, cw);
    let ph = ((h * t).round() as u32).clamp(1, ch);
    let photo = resize(
        image.as_raw(),
        image.width(),
        image.height(),
        pw,
        ph,
        fr::PixelType::U8x3,
        fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3),
    )?;
    let (pw_us, ph_us) = (pw as usize, ph as usize);
    let r = ((pw.max(ph) as f64 * 0.03).round() as usize).max(2);
    let blurred: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            let plane: Vec<f32> = photo
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| f32::from(v))
                .collect();
            let once = box_mean(&plane, pw_us, ph_us, r);
            box_mean(&once, pw_us, ph_us, r)
        })
        .collect();
    let (cw_us, ch_us) = (cw as usize, ch as usize);
    let ox = (cw_us - pw_us) / 2;
    let oy = (ch_us - ph_us) / 2;
    let mut out = vec![0u8; cw_us * ch_us * 3];
    for y in 0..ch_us {
        for x in 0..cw_us {
            let inside = (ox..ox + pw_us).contains(&x) && (oy..oy + ph_us).contains(&y);
            let o = (y * cw_us + x) * 3;
            if inside {
                let p = ((y - oy) * pw_us + (x - ox)) * 3;
                out[o..o + 3].copy_from_slice(&photo[p..p + 3]);
            } else {
                let px = x.clamp(ox, ox + pw_us - 1) - ox;
                let py = y.clamp(oy, oy + ph_us - 1) - oy;
                let p = py * pw_us + px;
                for c in 0..3 {
                    out[o + c] = (blurred[c][p] + 0.5).clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    RgbImage::from_raw(cw, ch, out).ok_or_else(|| "canvas size".to_owned())
}
