//! The builtin, model-free background remover for garments photographed on a
//! plain or studio background (gradients, paper texture, contact shadows).
//!
//! 1. Work at about 512 px: area-average downsampling (also removes sensor noise).
//! 2. Background model from the border: a quadratic colour surface fitted by
//!    robust least squares to a border strip (handles gradients and vignetting,
//!    ignores a garment touching the border).
//! 3. Colour distance to the model, plain and shadow-aware (a pixel that is the
//!    background colour scaled darker is a shadow, not a garment).
//! 4. Tolerance flood fill from the border through background-like pixels; a
//!    shadow-like pixel is only crossed where the image is smooth, so a soft
//!    contact shadow is background while the garment's sharp edge stops the fill.
//! 5. What the fill did not reach is the garment: largest components, holes
//!    filled, a closing.
//! 6. Edge-aware alpha at full resolution in a thin band around the coarse edge:
//!    each pixel's colour is projected between the local background and the local
//!    garment colour, blended with the coarse mask where they are too alike, then
//!    smoothed with a self-guided filter.

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

/// Alpha below this is noise (0), above 1 minus this is opaque (1).
const ALPHA_FLOOR: f32 = 0.06;
/// Darkest shadow accepted, as a fraction of the background's brightness.
const SHADOW_DARKEST: f32 = 0.35;
/// Brightest accepted background, as a multiple of the model's brightness.
const BG_BRIGHTEST: f32 = 1.04;

impl BackgroundRemover for BuiltinRemover {
    fn name(&self) -> &str {
        "builtin"
    }

    fn alpha(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<GrayImage, PipelineError> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if w < 8 || h < 8 {
            return Ok(GrayImage::from_pixel(
                w as u32,
                h as u32,
                image::Luma([255]),
            ));
        }
        let f = w.max(h).div_ceil(self.work_side.max(64)).max(1);
        let small = downsample(image.as_raw(), w, h, 3, f);
        progress(0.15);
        let Some(coarse) = coarse_mask(&small) else {
            // No garment could be told from the background: keep the whole photo.
            return Ok(GrayImage::from_pixel(
                w as u32,
                h as u32,
                image::Luma([255]),
            ));
        };
        progress(0.5);
        let alpha = refine(image, f, &coarse);
        progress(1.0);
        GrayImage::from_raw(w as u32, h as u32, alpha)
            .ok_or_else(|| PipelineError::Internal("alpha buffer size".to_owned()))
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
    /// Local garment colour, per channel.
    pub fg_color: [Plane; 3],
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
    let mut grad = vec![0.0f32; n];
    for y in 0..sh {
        for x in 0..sw {
            let i = y * sw + x;
            let p = px(i);
            if x + 1 < sw {
                let d = dist(p, px(i + 1));
                grad[i] = grad[i].max(d);
                grad[i + 1] = grad[i + 1].max(d);
            }
            if y + 1 < sh {
                let d = dist(p, px(i + sw));
                grad[i] = grad[i].max(d);
                grad[i + sw] = grad[i + sw].max(d);
            }
        }
    }

    // Thresholds from the statistics of the background's inliers.
    let inl = |v: &[f32]| -> Vec<f32> {
        sample_idx
            .iter()
            .zip(&inlier)
            .filter(|(_, ok)| **ok)
            .map(|(&i, _)| v[i])
            .collect()
    };
    let t_plain = (1.5 * percentile(inl(&d_plain), 0.99)).clamp(8.0, 40.0);
    let t_shadow = (2.0 * percentile(inl(&d_shadow), 0.99)).clamp(12.0, 45.0);
    let t_grad = (2.0 * percentile(inl(&grad), 0.99)).clamp(8.0, 40.0);

    // Tolerance flood fill from the border.
    let accept = |i: usize| d_plain[i] < t_plain || (d_shadow[i] < t_shadow && grad[i] < t_grad);
    let mut bgmask = vec![false; n];
    let mut stack = Vec::new();
    for y in 0..sh {
        for x in 0..sw {
            if (x == 0 || y == 0 || x + 1 == sw || y + 1 == sh) && accept(y * sw + x) {
                bgmask[y * sw + x] = true;
                stack.push(y * sw + x);
            }
        }
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % sw, i / sw);
        let mut visit = |j: usize| {
            if !bgmask[j] && accept(j) {
                bgmask[j] = true;
                stack.push(j);
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < sw {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - sw);
        }
        if y + 1 < sh {
            visit(i + sw);
        }
    }

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
    let sure_bg: Vec<f32> = dilate(&fg, sw, sh, 2)
        .iter()
        .map(|&v| if v { 0.0 } else { 1.0 })
        .collect();
    let sure_fg: Vec<f32> = erode(&fg, sw, sh, 4)
        .iter()
        .map(|&v| if v { 1.0 } else { 0.0 })
        .collect();
    let bg_color = local_colors(small, &sure_bg, 4, |c, i| bg[c].data[i]);
    let mean_fg = mean_color(small, &fg);
    let fg_wide = local_colors(small, &sure_fg, 12, |c, _| mean_fg[c]);
    let fg_color = local_colors(small, &sure_fg, 4, |c, i| fg_wide[c].data[i]);

    Some(Coarse {
        sw,
        sh,
        fg,
        bg_color,
        fg_color,
    })
}

fn mean_color(small: &[Plane], mask: &[bool]) -> [f32; 3] {
    let mut sum = [0.0f64; 3];
    let mut n = 0.0f64;
    for (i, &m) in mask.iter().enumerate() {
        if m {
            for c in 0..3 {
                sum[c] += f64::from(small[c].data[i]);
            }
            n += 1.0;
        }
    }
    let n = n.max(1.0);
    [
        (sum[0] / n) as f32,
        (sum[1] / n) as f32,
        (sum[2] / n) as f32,
    ]
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

/// Full-resolution alpha: coarse mask outside a thin band around its edge,
/// colour projection between local background and garment colours inside.
fn refine(image: &RgbImage, f: usize, coarse: &Coarse) -> Vec<u8> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (sw, sh) = (coarse.sw, coarse.sh);
    let band: Vec<bool> = {
        let outer = dilate(&coarse.fg, sw, sh, 2);
        let inner = erode(&coarse.fg, sw, sh, 4);
        outer.iter().zip(&inner).map(|(&o, &i)| o && !i).collect()
    };
    let mut fg_plane = Plane::new(sw, sh);
    for (d, &m) in fg_plane.data.iter_mut().zip(&coarse.fg) {
        *d = if m { 1.0 } else { 0.0 };
    }
    let inv_f = 1.0 / f as f32;
    let raw = image.as_raw();
    let mut alpha = vec![0u8; w * h];
    alpha.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let sy = (y / f).min(sh - 1);
        let fy = (y as f32 + 0.5) * inv_f;
        let src = &raw[y * w * 3..(y + 1) * w * 3];
        for (x, a) in row.iter_mut().enumerate() {
            let sx = (x / f).min(sw - 1);
            let si = sy * sw + sx;
            if !band[si] {
                *a = if coarse.fg[si] { 255 } else { 0 };
                continue;
            }
            let fx = (x as f32 + 0.5) * inv_f;
            let p = [
                f32::from(src[x * 3]),
                f32::from(src[x * 3 + 1]),
                f32::from(src[x * 3 + 2]),
            ];
            let b = [
                coarse.bg_color[0].sample(fx, fy),
                coarse.bg_color[1].sample(fx, fy),
                coarse.bg_color[2].sample(fx, fy),
            ];
            let g = [
                coarse.fg_color[0].sample(fx, fy),
                coarse.fg_color[1].sample(fx, fy),
                coarse.fg_color[2].sample(fx, fy),
            ];
            let d = [g[0] - b[0], g[1] - b[1], g[2] - b[2]];
            let dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            let prior = fg_plane.sample(fx, fy);
            let value = if dd > 1.0 {
                let t = ((p[0] - b[0]) * d[0] + (p[1] - b[1]) * d[1] + (p[2] - b[2]) * d[2]) / dd;
                let trust = ((dd.sqrt() - 12.0) / 24.0).clamp(0.0, 1.0);
                trust * t.clamp(0.0, 1.0) + (1.0 - trust) * prior
            } else {
                prior
            };
            // Snap the noise floor to 0 and near-opaque to 1.
            let value = ((value - ALPHA_FLOOR) / (1.0 - 2.0 * ALPHA_FLOOR)).clamp(0.0, 1.0);
            *a = (value * 255.0 + 0.5) as u8;
        }
    });
    alpha
}
