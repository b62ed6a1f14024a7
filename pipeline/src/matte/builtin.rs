//! The builtin, model-free background remover for garments photographed on a
//! plain or studio background (gradients, paper texture, contact shadows).
//!
//! 1. Work at about 512 px: area-average downsampling (also removes sensor noise).
//! 2. Background model from the border: a quadratic colour surface fitted by
//!    robust least squares to a border strip (handles gradients and vignetting,
//!    ignores a garment touching the border).
//! 3. Colour distance to the model, plain and shadow-aware (a pixel that is the
//!    background colour scaled darker is a shadow, not a garment).
//! 4. Tolerance flood fill from the border: plain background-like pixels are
//!    always crossed; a shadow-like pixel (the background colour darkened) only
//!    where the image has no step (a ramp, not an edge) and on a path that
//!    darkens away from the plain background, so a contact shadow is background
//!    while a garment's stripe of a shadow-like grey is not entered or followed.
//! 5. What the fill did not reach is the garment: largest components, holes
//!    filled, a closing.
//! 6. Full resolution, in a band around the coarse edge: a flood from the
//!    background side through pixels close to the local background colour
//!    decides each pixel, and the pixels along that edge get a soft alpha by
//!    projecting them between the local background and the garment colour found
//!    next to them (so a striped garment's edge is judged by its own stripe).
//!
//! Alongside the mask it measures, from what steps 2-5 computed, how sure it
//! is that the photo is a plain-backdrop case ([`Confidence`]); the pipeline's
//! `auto` backend asks the ONNX model when that is below
//! [`AUTO_MIN_CONFIDENCE`].

use image::{GrayImage, RgbImage};
use rayon::prelude::*;

use super::BackgroundRemover;
use crate::error::PipelineError;
use crate::imgops::{Plane, box_mean, components, dilate, downsample, erode, fill_holes};

/// The builtin remover. `work_side` is the long side of the coarse analysis.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinRemover {
    /// Long side in pixels of the coarse analysis (default 512).
    pub work_side: usize,
}

impl Default for BuiltinRemover {
    fn default() -> Self {
        Self { work_side: 512 }
    }
}

/// A two-pixel difference at most this share of the six-pixel one is part
/// of a ramp (a shadow), not a step (an edge).
const RAMP_SHARE: f32 = 0.5;
/// A shadow pixel is darker than this share of the background model.
const SHADOW_LIGHTEST: f32 = 0.985;
/// Least radius in full-resolution pixels within which an edge pixel looks
/// for the pure garment colour next to it.
const EDGE_REACH: usize = 4;
/// Alpha below this is noise (0), above 1 minus half of it is opaque (1).
const ALPHA_FLOOR: f32 = 0.06;
/// Darkest shadow accepted, as a fraction of the background's brightness.
const SHADOW_DARKEST: f32 = 0.35;
/// Brightest shadow, as a multiple of the model's brightness: a shadow only
/// darkens (a brighter pixel is background only by plain colour distance, so
/// a white garment on a light backdrop is never taken for a shadow).
const BG_BRIGHTEST: f32 = 1.0;

impl BackgroundRemover for BuiltinRemover {
    fn name(&self) -> &str {
        "builtin"
    }

    fn alpha(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<GrayImage, PipelineError> {
        self.alpha_with_confidence(image, progress)
            .map(|(alpha, _)| alpha)
    }
}

impl BuiltinRemover {
    /// The alpha mask of `image` (as [`BackgroundRemover::alpha`]) and how
    /// sure the remover is that the photo is a plain-backdrop case.
    pub fn alpha_with_confidence(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<(GrayImage, Confidence), PipelineError> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let whole = || GrayImage::from_pixel(w as u32, h as u32, image::Luma([255]));
        if w < 8 || h < 8 {
            return Ok((whole(), Confidence::NOTHING_FOUND));
        }
        let f = w.max(h).div_ceil(self.work_side.max(64)).max(1);
        let small = downsample(image.as_raw(), w, h, 3, f);
        progress(0.15);
        let Some(coarse) = coarse_mask(&small) else {
            // No garment could be told from the background: keep the whole photo.
            return Ok((whole(), Confidence::NOTHING_FOUND));
        };
        progress(0.5);
        let alpha = refine(image, f, &coarse);
        progress(1.0);
        let alpha = GrayImage::from_raw(w as u32, h as u32, alpha)
            .ok_or_else(|| PipelineError::Internal("alpha buffer size".to_owned()))?;
        Ok((alpha, coarse.confidence))
    }
}

/// Below this [`Confidence::value`] the `auto` backend asks the ONNX model.
///
/// Chosen from the synthetic sets of `pipeline/tests/common/synth.rs`
/// (`pipeline/tests/auto.rs` prints every scene's value and asserts the
/// split): the twelve plain scenes score 0.99 or more; twelve of the fourteen
/// patterned scenes, those with a pattern colour within about 10-15 grey
/// levels of the backdrop over an eighth or more of the garment, score 0.50
/// or less (0.00 for stripes 10 levels from the backdrop, white on white);
/// the two others (Breton stripes 25-40 levels from the backdrop, and an
/// ombré whose near-backdrop top the flood takes for background) score 0.99
/// and 1.00. 0.6 sits in that gap, nearer the patterned side.
pub const AUTO_MIN_CONFIDENCE: f32 = 0.6;

/// A garment pixel is near the backdrop within the backdrop's own noise
/// threshold plus this RGB distance (about 12 grey levels per channel).
const NEAR_MARGIN: f32 = 20.0;
/// The near-backdrop share of the garment at which [`Confidence::contrast`]
/// reaches 0 (it is 1 at share 0, linear between).
const NEAR_SHARE_ZERO: f32 = 0.25;
/// The border fit at or below which [`Confidence::border`] is 0, and at or
/// above which it is 1 (linear between).
const BORDER_FIT_ZERO: f32 = 0.5;
const BORDER_FIT_ONE: f32 = 0.8;

/// How sure the builtin remover is that a photo is a plain-backdrop case,
/// measured at the coarse analysis's resolution (about 512 px) from what it
/// computed anyway:
///
/// - `border_fit`: the share of the border strip's samples (3 % of the short
///   side wide) that are inliers of the robust backdrop model (within median +
///   5 MAD of its residuals). A garment covering much of the border, or a
///   cluttered backdrop, lowers it.
/// - `near_backdrop`: the share of the garment's interior (the coarse mask
///   eroded by one pixel) whose colour is within `near_distance` of the
///   backdrop model there; `near_distance` is the backdrop's own noise
///   threshold (1.5 × the 99th percentile of the border inliers' distance to
///   the model, clamped to 6..=40) plus 20. A plain garment has almost none;
///   a garment with stripes, checks, dots or panels of a colour close to the
///   backdrop has them as a large share: there the colour distance the remover
///   decides by is thin, and notches, lost stripes or background islands are
///   likely.
///
/// `contrast = 1 − near_backdrop / 0.25` and
/// `border = (border_fit − 0.5) / 0.3`, both clamped to 0..=1; `value` is the
/// smaller of the two. No garment found (or an image under 8 px) is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    /// The confidence, 0..=1: `min(contrast, border)`.
    pub value: f32,
    /// The score from the near-backdrop share, 0..=1.
    pub contrast: f32,
    /// The score from the border fit, 0..=1.
    pub border: f32,
    /// Share of the garment's interior near the backdrop colour, 0..=1.
    pub near_backdrop: f32,
    /// The RGB distance within which a garment pixel counts as near.
    pub near_distance: f32,
    /// Share of the border samples the backdrop model fits, 0..=1.
    pub border_fit: f32,
    /// Whether a garment was told apart from the backdrop at all.
    pub garment_found: bool,
}

impl Confidence {
    /// No garment found: confidence 0.
    pub const NOTHING_FOUND: Confidence = Confidence {
        value: 0.0,
        contrast: 0.0,
        border: 0.0,
        near_backdrop: 0.0,
        near_distance: 0.0,
        border_fit: 0.0,
        garment_found: false,
    };

    /// From the two measured shares (see the type's docs).
    pub fn from_measures(near_backdrop: f32, near_distance: f32, border_fit: f32) -> Self {
        let contrast = (1.0 - near_backdrop / NEAR_SHARE_ZERO).clamp(0.0, 1.0);
        let border =
            ((border_fit - BORDER_FIT_ZERO) / (BORDER_FIT_ONE - BORDER_FIT_ZERO)).clamp(0.0, 1.0);
        Confidence {
            value: contrast.min(border),
            contrast,
            border,
            near_backdrop,
            near_distance,
            border_fit,
            garment_found: true,
        }
    }

    /// What decides the value, for people: the weaker of the two measures.
    pub fn explain(&self) -> String {
        if !self.garment_found {
            return "no garment told apart from the backdrop".to_owned();
        }
        if self.contrast <= self.border {
            format!(
                "{:.0}% of the garment within {:.0} of the backdrop colour{}",
                100.0 * self.near_backdrop,
                self.near_distance,
                if self.value < AUTO_MIN_CONFIDENCE {
                    ": patterned garment or garment near the backdrop colour"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "{:.0}% of the border fits the backdrop model{}",
                100.0 * self.border_fit,
                if self.value < AUTO_MIN_CONFIDENCE {
                    ": garment covering the border or a busy backdrop"
                } else {
                    ""
                }
            )
        }
    }
}

/// The coarse result at work resolution.
pub(crate) struct Coarse {
    pub sw: usize,
    pub sh: usize,
    /// Garment pixels.
    pub fg: Vec<bool>,
    /// Local background colour, per channel.
    pub bg_color: [Plane; 3],
    /// How sure the analysis is that this is a plain-backdrop case.
    pub confidence: Confidence,
}

/// Quadratic colour surface: per channel, c = k · [1, u, v, uv, u², v²].
struct BgModel {
    coef: [[f64; 6]; 3],
}

#[inline]
fn basis(u: f64, v: f64) -> [f64; 6] {
    [1.0, u, v, u * v, u * u, v * v]
}

impl BgModel {
    fn fit(samples: &[(f64, f64, [f32; 3])], use_sample: &[bool]) -> Option<Self> {
        let mut a = [[0.0f64; 6]; 6];
        let mut rhs = [[0.0f64; 6]; 3];
        let mut n = 0usize;
        for ((u, v, p), &ok) in samples.iter().zip(use_sample) {
            if !ok {
                continue;
            }
            n += 1;
            let b = basis(*u, *v);
            for i in 0..6 {
                for j in 0..6 {
                    a[i][j] += b[i] * b[j];
                }
                for c in 0..3 {
                    rhs[c][i] += b[i] * f64::from(p[c]);
                }
            }
        }
        if n < 12 {
            return None;
        }
        // A little ridge keeps the system solvable for thin strips.
        for (i, row) in a.iter_mut().enumerate() {
            row[i] += 1e-6 * n as f64;
        }
        let mut coef = [[0.0; 6]; 3];
        for c in 0..3 {
            coef[c] = solve6(a, rhs[c])?;
        }
        Some(Self { coef })
    }

    #[inline]
    fn predict(&self, u: f64, v: f64) -> [f32; 3] {
        let b = basis(u, v);
        let mut out = [0.0f32; 3];
        for (o, k) in out.iter_mut().zip(&self.coef) {
            *o = k.iter().zip(&b).map(|(k, b)| k * b).sum::<f64>() as f32;
        }
        out
    }
}

/// Gaussian elimination with partial pivoting.
fn solve6(mut a: [[f64; 6]; 6], mut b: [f64; 6]) -> Option<[f64; 6]> {
    for col in 0..6 {
        let pivot = (col..6).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..6 {
            let k = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (dst, src) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *dst -= k * src;
            }
            b[row] -= k * b[col];
        }
    }
    let mut x = [0.0; 6];
    for row in (0..6).rev() {
        let s: f64 = (row + 1..6).map(|j| a[row][j] * x[j]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

#[inline]
fn dist(p: [f32; 3], q: [f32; 3]) -> f32 {
    let d = [p[0] - q[0], p[1] - q[1], p[2] - q[2]];
    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
}

/// Distance from `p` to the background colour `b` scaled by a shadow factor
/// in `SHADOW_DARKEST..=BG_BRIGHTEST`.
#[inline]
fn shadow_dist(p: [f32; 3], b: [f32; 3]) -> f32 {
    let bb = b[0] * b[0] + b[1] * b[1] + b[2] * b[2];
    if bb < 1.0 {
        return dist(p, b);
    }
    let r = ((p[0] * b[0] + p[1] * b[1] + p[2] * b[2]) / bb).clamp(SHADOW_DARKEST, BG_BRIGHTEST);
    dist(p, [b[0] * r, b[1] * r, b[2] * r])
}

fn percentile(mut v: Vec<f32>, q: f32) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let k = ((v.len() - 1) as f32 * q).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *x
}

pub(crate) fn coarse_mask(small: &[Plane]) -> Option<Coarse> {
    let (sw, sh) = (small[0].w, small[0].h);
    let n = sw * sh;
    let px = |i: usize| [small[0].data[i], small[1].data[i], small[2].data[i]];
    let uv = |x: usize, y: usize| ((x as f64 + 0.5) / sw as f64, (y as f64 + 0.5) / sh as f64);

    // Border strip samples.
    let strip = ((sw.min(sh) as f32 * 0.03).round() as usize).clamp(1, sw.min(sh) / 4 + 1);
    let mut samples = Vec::new();
    let mut sample_idx = Vec::new();
    for y in 0..sh {
        for x in 0..sw {
            if x < strip || y < strip || x + strip >= sw || y + strip >= sh {
                let (u, v) = uv(x, y);
                samples.push((u, v, px(y * sw + x)));
                sample_idx.push(y * sw + x);
            }
        }
    }
    // Robust fit. Start from the samples near the border's median colour (a
    // garment touching the border is then ignored), refit on inliers.
    let median = [0, 1, 2].map(|c| percentile(samples.iter().map(|s| s.2[c]).collect(), 0.5));
    let to_median: Vec<f32> = samples.iter().map(|s| dist(s.2, median)).collect();
    let start = (2.5 * percentile(to_median.clone(), 0.5) + 10.0).max(15.0);
    let mut inlier: Vec<bool> = to_median.iter().map(|&d| d < start).collect();
    let mut model = BgModel::fit(&samples, &inlier)?;
    for _ in 0..3 {
        let res: Vec<f32> = samples
            .iter()
            .map(|(u, v, p)| dist(*p, model.predict(*u, *v)))
            .collect();
        let kept: Vec<f32> = res
            .iter()
            .zip(&inlier)
            .filter(|(_, ok)| **ok)
            .map(|(r, _)| *r)
            .collect();
        let med = percentile(kept.clone(), 0.5);
        let mad = percentile(kept.iter().map(|r| (r - med).abs()).collect(), 0.5);
        let thr = (med + 5.0 * 1.4826 * mad).max(6.0);
        inlier = res.iter().map(|&r| r < thr).collect();
        model = BgModel::fit(&samples, &inlier)?;
    }

    // Background prediction, distances and gradient at work resolution.
    let mut bg = [Plane::new(sw, sh), Plane::new(sw, sh), Plane::new(sw, sh)];
    let mut d_plain = vec![0.0f32; n];
    let mut d_shadow = vec![0.0f32; n];
    for y in 0..sh {
        for x in 0..sw {
            let i = y * sw + x;
            let (u, v) = uv(x, y);
            let b = model.predict(u, v);
            for c in 0..3 {
                bg[c].data[i] = b[c];
            }
            let p = px(i);
            d_plain[i] = dist(p, b);
            d_shadow[i] = shadow_dist(p, b);
        }
    }
    // Central differences over two pixels: a garment's edge (even a faint
    // one) is a step that falls within two work pixels, while a contact
    // shadow's darkening is a ramp spread over many. `step` keeps, per
    // axis, the two-pixel difference where it is most of the six-pixel one
    // (a step), and 0 where it is a small part of a longer ramp.
    let mut grad = vec![0.0f32; n];
    let mut step = vec![0.0f32; n];
    for y in 0..sh {
        for x in 0..sw {
            let i = y * sw + x;
            let axis = |a: usize, b: usize, c: usize, d: usize| {
                let g2 = dist(px(a), px(b));
                let g6 = dist(px(c), px(d));
                (g2, if g2 > RAMP_SHARE * g6 { g2 } else { 0.0 })
            };
            let (gx, sx) = axis(
                y * sw + x.saturating_sub(1),
                y * sw + (x + 1).min(sw - 1),
                y * sw + x.saturating_sub(3),
                y * sw + (x + 3).min(sw - 1),
            );
            let (gy, sy) = axis(
                y.saturating_sub(1) * sw + x,
                (y + 1).min(sh - 1) * sw + x,
                y.saturating_sub(3) * sw + x,
                (y + 3).min(sh - 1) * sw + x,
            );
            grad[i] = gx.max(gy);
            step[i] = sx.max(sy);
        }
    }
    // Darker than the background model: only such pixels can be a shadow.
    let darker: Vec<bool> = (0..n)
        .map(|i| {
            let (p, b) = (px(i), [bg[0].data[i], bg[1].data[i], bg[2].data[i]]);
            let bb = b[0] * b[0] + b[1] * b[1] + b[2] * b[2];
            bb >= 1.0 && (p[0] * b[0] + p[1] * b[1] + p[2] * b[2]) < SHADOW_LIGHTEST * bb
        })
        .collect();

    // Thresholds from the statistics of the background's inliers.
    let inl = |v: &[f32]| -> Vec<f32> {
        sample_idx
            .iter()
            .zip(&inlier)
            .filter(|(_, ok)| **ok)
            .map(|(&i, _)| v[i])
            .collect()
    };
    let t_plain = (1.5 * percentile(inl(&d_plain), 0.99)).clamp(6.0, 40.0);
    let t_shadow = (2.0 * percentile(inl(&d_shadow), 0.99)).clamp(12.0, 45.0);
    let t_grad = (2.5 * percentile(inl(&grad), 0.99)).clamp(8.0, 14.0);

    // Tolerance flood fill from the border. Plain background-like pixels are
    // always crossed; a shadow-like pixel only on a path that darkens away
    // from the plain background (a contact shadow deepens towards the
    // garment), so a garment's stripe of a shadow-like grey is not entered
    // from a shadow darker than it, nor followed once the path has seen
    // darker pixels: the path's darkest luma so far plus `eps` bounds it.
    let luma_of =
        |i: usize| 0.299 * small[0].data[i] + 0.587 * small[1].data[i] + 0.114 * small[2].data[i];
    let luma: Vec<f32> = (0..n).map(luma_of).collect();
    // Per pixel: 1 plain background-like, 2 shadow-like, 0 neither.
    let kind: Vec<u8> = (0..n)
        .map(|i| {
            if d_plain[i] < t_plain {
                1
            } else if darker[i] && d_shadow[i] < t_shadow && step[i] < t_grad {
                2
            } else {
                0
            }
        })
        .collect();
    let lum_res: Vec<f32> = sample_idx
        .iter()
        .zip(&inlier)
        .filter(|(_, ok)| **ok)
        .map(|(&i, _)| {
            let b = [bg[0].data[i], bg[1].data[i], bg[2].data[i]];
            (luma[i] - (0.299 * b[0] + 0.587 * b[1] + 0.114 * b[2])).abs()
        })
        .collect();
    let eps = percentile(lum_res, 0.9).clamp(0.75, 3.0);
    // Bucket queue on the path's darkest luma (quarter levels), highest first.
    const LEVELS: usize = 1024;
    let bucket = |v: f32| ((v * 4.0).round().max(0.0) as usize).min(LEVELS - 1);
    let mut key = vec![-1.0f32; n];
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); LEVELS];
    for y in 0..sh {
        for x in 0..sw {
            let i = y * sw + x;
            if (x == 0 || y == 0 || x + 1 == sw || y + 1 == sh) && kind[i] != 0 {
                key[i] = luma[i];
                buckets[bucket(key[i])].push(i as u32);
            }
        }
    }
    let mut level = LEVELS;
    while level > 0 {
        let Some(i) = buckets[level - 1].pop() else {
            level -= 1;
            continue;
        };
        let i = i as usize;
        let ki = key[i];
        // A stale entry: the pixel was raised and queued higher since.
        if bucket(ki) + 1 > level {
            continue;
        }
        let (x, y) = (i % sw, i / sw);
        let mut top = level;
        let mut visit = |j: usize, buckets: &mut Vec<Vec<u32>>| {
            let kj = match kind[j] {
                1 => luma[j].max(ki),
                2 if luma[j] <= ki + eps => luma[j].min(ki),
                _ => return,
            };
            if kj > key[j] + 0.125 {
                key[j] = kj;
                let b = bucket(kj);
                buckets[b].push(j as u32);
                top = top.max(b + 1);
            }
        };
        if x > 0 {
            visit(i - 1, &mut buckets);
        }
        if x + 1 < sw {
            visit(i + 1, &mut buckets);
        }
        if y > 0 {
            visit(i - sw, &mut buckets);
        }
        if y + 1 < sh {
            visit(i + sw, &mut buckets);
        }
        level = top;
    }
    let bgmask: Vec<bool> = key.iter().map(|&k| k >= 0.0).collect();

    // The garment: large components of what the fill did not reach.
    let not_bg: Vec<bool> = bgmask.iter().map(|&b| !b).collect();
    let (labels, sizes) = components(&not_bg, sw, sh);
    let largest = sizes.iter().copied().max().unwrap_or(0);
    if largest < (n / 1000).max(4) {
        return None;
    }
    let min_keep = (largest / 4).max(n / 1000);
    let mut fg: Vec<bool> = labels
        .iter()
        .map(|&l| l > 0 && sizes[l as usize - 1] >= min_keep)
        .collect();
    fill_holes(&mut fg, sw, sh);
    let fg = erode(&dilate(&fg, sw, sh, 1), sw, sh, 1);
    let fg_count = fg.iter().filter(|&&v| v).count();
    if fg_count * 100 > n * 98 {
        return None;
    }

    // Local background and garment colours by normalised convolution.
    let sure_bg: Vec<f32> = dilate(&fg, sw, sh, 1)
        .iter()
        .map(|&v| if v { 0.0 } else { 1.0 })
        .collect();
    let bg_color = local_colors(small, &sure_bg, 2, |c, i| bg[c].data[i]);

    // Confidence (see `Confidence`): the garment interior's share near the
    // backdrop colour and the border's fit.
    let near_distance = t_plain + NEAR_MARGIN;
    let interior = erode(&fg, sw, sh, 1);
    let (mut inside, mut near) = (0usize, 0usize);
    for (&on, &d) in interior.iter().zip(&d_plain) {
        if on {
            inside += 1;
            near += usize::from(d < near_distance);
        }
    }
    let near_share = if inside == 0 {
        1.0
    } else {
        near as f32 / inside as f32
    };
    let border_fit = inlier.iter().filter(|&&ok| ok).count() as f32 / inlier.len().max(1) as f32;
    let confidence = Confidence::from_measures(near_share, near_distance, border_fit);

    Some(Coarse {
        sw,
        sh,
        fg,
        bg_color,
        confidence,
    })
}

/// Mean colour of the pixels with weight 1 in a window of radius `r`, and
/// `fallback` where the window has none.
fn local_colors(
    small: &[Plane],
    weight: &[f32],
    r: usize,
    fallback: impl Fn(usize, usize) -> f32,
) -> [Plane; 3] {
    let (sw, sh) = (small[0].w, small[0].h);
    let wsum = box_mean(weight, sw, sh, r);
    let mut out = [Plane::new(sw, sh), Plane::new(sw, sh), Plane::new(sw, sh)];
    for (c, plane) in out.iter_mut().enumerate() {
        let weighted: Vec<f32> = small[c]
            .data
            .iter()
            .zip(weight)
            .map(|(v, w)| v * w)
            .collect();
        let num = box_mean(&weighted, sw, sh, r);
        for i in 0..sw * sh {
            plane.data[i] = if wsum[i] > 0.02 {
                num[i] / wsum[i]
            } else {
                fallback(c, i)
            };
        }
    }
    out
}

/// Full-resolution alpha: the coarse mask outside a band around its edge;
/// inside the band a flood from the background side through pixels close to
/// the local background colour (3x3 mean, noise-adaptive tolerance) decides
/// each pixel, and the pixels along the decided edge get a soft alpha from
/// their distance to the background relative to the garment pixels next to
/// them (`I = a F + (1 - a) B`, with `F` taken from the neighbourhood, so a
/// striped garment's edge is judged by the stripe it belongs to).
fn refine(image: &RgbImage, f: usize, coarse: &Coarse) -> Vec<u8> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (sw, sh) = (coarse.sw, coarse.sh);
    let outer = dilate(&coarse.fg, sw, sh, 2);
    let inner = erode(&coarse.fg, sw, sh, 3);
    // Work cells: 0 sure background, 1 sure garment, 2 band on the coarse
    // garment, 3 band on the coarse background.
    let cells: Vec<u8> = (0..sw * sh)
        .map(|i| match (outer[i], inner[i], coarse.fg[i]) {
            (false, _, _) => 0,
            (_, true, _) => 1,
            (_, _, true) => 2,
            _ => 3,
        })
        .collect();
    let cell = |x: usize, y: usize| cells[(y / f).min(sh - 1) * sw + (x / f).min(sw - 1)];
    // The columns of row `y` that lie in band cells.
    let band_xs = |y: usize| {
        let crow = &cells[(y / f).min(sh - 1) * sw..][..sw];
        (0..sw)
            .filter(move |&cx| crow[cx] >= 2)
            .flat_map(move |cx| cx * f..((cx + 1) * f).min(w))
    };
    let inv_f = 1.0 / f as f32;
    let raw = image.as_raw();
    let px = |x: usize, y: usize| {
        let i = (y * w + x) * 3;
        [
            f32::from(raw[i]),
            f32::from(raw[i + 1]),
            f32::from(raw[i + 2]),
        ]
    };

    // Distances to the local background, raw and of the 3x3 mean, in the band.
    let mut d_raw = vec![0u8; w * h];
    let mut d_smooth = vec![0u8; w * h];
    d_raw
        .par_chunks_mut(w)
        .zip(d_smooth.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, (row_raw, row_smooth))| {
            let fy = (y as f32 + 0.5) * inv_f;
            let (yu, yd) = (y.saturating_sub(1), (y + 1).min(h - 1));
            for x in band_xs(y) {
                let fx = (x as f32 + 0.5) * inv_f;
                let b = [0, 1, 2].map(|c| coarse.bg_color[c].sample(fx, fy));
                let (xl, xr) = (x.saturating_sub(1), (x + 1).min(w - 1));
                let mut m = [0.0f32; 3];
                for yy in [yu, y, yd] {
                    for xx in [xl, x, xr] {
                        let q = px(xx, yy);
                        for c in 0..3 {
                            m[c] += q[c];
                        }
                    }
                }
                let m = m.map(|v| v / 9.0);
                row_raw[x] = dist(px(x, y), b).min(255.0) as u8;
                row_smooth[x] = dist(m, b).min(255.0) as u8;
            }
        });

    // Tolerance from the band's background side away from the coarse edge.
    let near = dilate(&coarse.fg, sw, sh, 1);
    let band_cells: Vec<usize> = (0..sw * sh).filter(|&i| cells[i] >= 2).collect();
    let cell_pixels = |ci: usize| {
        let (cx, cy) = (ci % sw, ci / sw);
        (cy * f..((cy + 1) * f).min(h))
            .flat_map(move |y| (cx * f..((cx + 1) * f).min(w)).map(move |x| (x, y)))
    };
    let mut hist = [0u64; 256];
    for &ci in &band_cells {
        if cells[ci] == 3 && !near[ci] {
            for (x, y) in cell_pixels(ci) {
                hist[usize::from(d_smooth[y * w + x])] += 1;
            }
        }
    }
    let total: u64 = hist.iter().sum();
    let mut acc = 0u64;
    let mut p98 = 0usize;
    for (v, &c) in hist.iter().enumerate() {
        acc += c;
        if acc * 100 >= total * 98 {
            p98 = v;
            break;
        }
    }
    let tol = if total < 16 {
        8.0
    } else {
        (1.5 * p98 as f32 + 2.0).clamp(5.0, 40.0)
    };

    // Binary decision: 0 background, 255 garment, 128 undecided (the band).
    let mut alpha = vec![0u8; w * h];
    alpha.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let crow = &cells[(y / f).min(sh - 1) * sw..][..sw];
        for (run, &c) in row.chunks_mut(f).zip(crow) {
            run.fill(match c {
                0 => 0,
                1 => 255,
                _ => 128,
            });
        }
    });
    let accept = |i: usize, x: usize, y: usize| {
        let t = if cell(x, y) == 3 { 2.0 * tol } else { tol };
        f32::from(d_smooth[i]) < t
    };
    let mut stack = Vec::new();
    for &ci in &band_cells {
        for (x, y) in cell_pixels(ci) {
            let i = y * w + x;
            if alpha[i] != 128 || !accept(i, x, y) {
                continue;
            }
            let touches_bg = (x > 0 && alpha[i - 1] == 0)
                || (x + 1 < w && alpha[i + 1] == 0)
                || (y > 0 && alpha[i - w] == 0)
                || (y + 1 < h && alpha[i + w] == 0);
            if touches_bg {
                alpha[i] = 0;
                stack.push(i);
            }
        }
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % w, i / w);
        let mut visit = |j: usize, jx: usize, jy: usize| {
            if alpha[j] == 128 && accept(j, jx, jy) {
                alpha[j] = 0;
                stack.push(j);
            }
        };
        if x > 0 {
            visit(i - 1, x - 1, y);
        }
        if x + 1 < w {
            visit(i + 1, x + 1, y);
        }
        if y > 0 {
            visit(i - w, x, y - 1);
        }
        if y + 1 < h {
            visit(i + w, x, y + 1);
        }
    }
    alpha.par_iter_mut().for_each(|a| {
        if *a == 128 {
            *a = 255;
        }
    });

    // Soft alpha along the decided edge: within `zone` px of it, against the
    // garment colour within `reach` px (both grow with the photo: a large
    // photo's edge is blurred over more pixels).
    let zone = f.max(2);
    let reach = (2 * f + 2).max(EDGE_REACH);
    let binary = &alpha;
    // Decision-edge pairs: every 4-adjacent pair of differing pixels has a
    // band pixel (sure garment and sure background cells never touch).
    let pairs: Vec<(usize, usize)> = (0..h)
        .into_par_iter()
        .flat_map_iter(|y| {
            band_xs(y).flat_map(move |x| {
                let i = y * w + x;
                let v = binary[i];
                let right = (x + 1 < w && binary[i + 1] != v).then_some((i, i + 1));
                let left = (x > 0 && binary[i - 1] != v && cell(x - 1, y) < 2).then(|| (i, i - 1));
                let down = (y + 1 < h && binary[i + w] != v).then_some((i, i + w));
                let up = (y > 0 && binary[i - w] != v && cell(x, y - 1) < 2).then(|| (i, i - w));
                [right, left, down, up].into_iter().flatten()
            })
        })
        .collect();
    // near[v][p]: a pixel of value v (0 or 255) differing from its neighbour
    // lies within `zone` px (Chebyshev) of p. A pixel has a pixel of the
    // other value within its window exactly when such a one of that value
    // lies there (the first change on a path to it).
    let mut near = [vec![0u8; w * h], vec![0u8; w * h]];
    for &(a, b) in &pairs {
        for q in [a, b] {
            let plane = &mut near[usize::from(binary[q] == 255)];
            let (qx, qy) = (q % w, q / w);
            let (x0, x1) = (qx.saturating_sub(zone), (qx + zone).min(w - 1));
            for yy in qy.saturating_sub(zone)..=(qy + zone).min(h - 1) {
                plane[yy * w + x0..=yy * w + x1].fill(1);
            }
        }
    }
    // Garment pixels' distance to the background (0 elsewhere) and, per
    // pixel within reach of the band, the largest over `reach` px of its row
    // with the offset of the last such (raster-last over the window, as a
    // scan would pick it).
    let ext_r = reach.div_ceil(f);
    let ext_cells = dilate(
        &cells.iter().map(|&c| c >= 2).collect::<Vec<_>>(),
        sw,
        sh,
        ext_r,
    );
    let g = |j: usize| if binary[j] == 255 { d_raw[j] } else { 0 };
    let mut hv = vec![0u8; w * h];
    let mut hx = vec![0u16; w * h];
    hv.par_chunks_mut(w)
        .zip(hx.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, (vrow, xrow))| {
            let crow = &ext_cells[(y / f).min(sh - 1) * sw..][..sw];
            let grow = |xx: usize| g(y * w + xx);
            // Runs of ext cells, each a sliding window maximum (a deque of
            // decreasing values; an equal later value replaces an earlier).
            let mut deque = std::collections::VecDeque::new();
            let mut cx = 0;
            while cx < sw {
                if !crow[cx] {
                    cx += 1;
                    continue;
                }
                let start = cx;
                while cx < sw && crow[cx] {
                    cx += 1;
                }
                let (xa, xb) = (start * f, (cx * f).min(w));
                deque.clear();
                let mut next = xa.saturating_sub(reach);
                for x in xa..xb {
                    let hi = (x + reach).min(w - 1);
                    while next <= hi {
                        let v = grow(next);
                        while deque.back().is_some_and(|&(_, bv)| bv <= v) {
                            deque.pop_back();
                        }
                        deque.push_back((next, v));
                        next += 1;
                    }
                    let lo = x.saturating_sub(reach);
                    while deque.front().is_some_and(|&(fx, _)| fx < lo) {
                        deque.pop_front();
                    }
                    if let Some(&(at, m)) = deque.front() {
                        vrow[x] = m;
                        xrow[x] = (at + reach - x) as u16;
                    }
                }
            }
        });
    let mut out = binary.clone();
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for x in band_xs(y) {
            let o = &mut row[x];
            let own = binary[y * w + x];
            let edge = near[usize::from(own != 255)][y * w + x] != 0;
            if !edge {
                continue;
            }
            let d = f32::from(d_raw[y * w + x]);
            // A background-side pixel is soft only right at the edge.
            if own == 0
                && (d < 1.5 * tol
                    || !(y.saturating_sub(1)..=(y + 1).min(h - 1)).any(|yy| {
                        (x.saturating_sub(1)..=(x + 1).min(w - 1))
                            .any(|xx| binary[yy * w + xx] == 255)
                    }))
            {
                continue;
            }
            // The garment colour's distance: the largest among garment
            // pixels within EDGE_REACH px (beyond the edge's blur and a
            // JPEG's chroma smear).
            let (mut dmax, mut at) = (0u8, None);
            for yy in y.saturating_sub(reach)..=(y + reach).min(h - 1) {
                let j = yy * w + x;
                if hv[j] >= dmax {
                    dmax = hv[j];
                    at = Some((x + usize::from(hx[j]) - reach, yy));
                }
            }
            let value = match at {
                Some((gx, gy)) if f32::from(dmax) >= tol => {
                    // Project the pixel on the line from the local background
                    // to that garment colour (3x3 mean against noise).
                    let fx = (x as f32 + 0.5) * inv_f;
                    let fy = (y as f32 + 0.5) * inv_f;
                    let b = [0, 1, 2].map(|c| coarse.bg_color[c].sample(fx, fy));
                    let mut g = [0.0f32; 3];
                    let mut k = 0.0f32;
                    for yy in gy.saturating_sub(1)..=(gy + 1).min(h - 1) {
                        for xx in gx.saturating_sub(1)..=(gx + 1).min(w - 1) {
                            if binary[yy * w + xx] == 255 {
                                let q = px(xx, yy);
                                for c in 0..3 {
                                    g[c] += q[c];
                                }
                                k += 1.0;
                            }
                        }
                    }
                    let g = g.map(|v| v / k.max(1.0));
                    let p = px(x, y);
                    let dg = [g[0] - b[0], g[1] - b[1], g[2] - b[2]];
                    let gg = (dg[0] * dg[0] + dg[1] * dg[1] + dg[2] * dg[2]).max(1.0);
                    let t = ((p[0] - b[0]) * dg[0] + (p[1] - b[1]) * dg[1] + (p[2] - b[2]) * dg[2])
                        / gg;
                    t.clamp(0.0, 1.0)
                }
                _ => (d / f32::from(dmax).max(tol)).clamp(0.0, 1.0),
            };
            // Snap the noise floor to 0 and near-opaque to 1.
            let value = if value > 1.0 - ALPHA_FLOOR / 2.0 {
                1.0
            } else {
                ((value - ALPHA_FLOOR) / (1.0 - ALPHA_FLOOR)).clamp(0.0, 1.0)
            };
            *o = (value * 255.0 + 0.5) as u8;
        }
    });
    out
}
