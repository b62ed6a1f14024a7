//! The cut-out: RGBA from a photo and its alpha, with the background's colour
//! removed from semi-transparent edge pixels (decontamination).

use image::{GrayImage, RgbImage, RgbaImage};
use rayon::prelude::*;

use crate::error::PipelineError;
use crate::imgops::{Plane, box_mean, downsample};

/// Makes the RGBA cut-out of `image` with `alpha`. With `decontaminate`, an
/// edge pixel's colour is solved from `I = a F + (1 - a) B` with `B` the local
/// background colour, and leans on the local garment colour where alpha is
/// small; fully transparent pixels are stored as transparent black.
pub fn compose_cutout(
    image: &RgbImage,
    alpha: &GrayImage,
    decontaminate: bool,
) -> Result<RgbaImage, PipelineError> {
    if image.dimensions() != alpha.dimensions() {
        return Err(PipelineError::Internal(format!(
            "alpha is {:?}, image is {:?}",
            alpha.dimensions(),
            image.dimensions()
        )));
    }
    let (w, h) = (image.width() as usize, image.height() as usize);
    let maps = if decontaminate {
        EdgeColors::estimate(image, alpha)
    } else {
        None
    };
    let raw = image.as_raw();
    let a_raw = alpha.as_raw();
    let mut out = vec![0u8; w * h * 4];
    out.par_chunks_mut(w * 4).enumerate().for_each(|(y, row)| {
        let src = &raw[y * w * 3..(y + 1) * w * 3];
        let arow = &a_raw[y * w..(y + 1) * w];
        for x in 0..w {
            let a = arow[x];
            let o = &mut row[x * 4..x * 4 + 4];
            if a == 0 {
                continue;
            }
            let p = [src[x * 3], src[x * 3 + 1], src[x * 3 + 2]];
            let rgb = match (&maps, a) {
                (Some(m), 1..=254) => m.solve(p, a, x, y),
                _ => p,
            };
            o.copy_from_slice(&[rgb[0], rgb[1], rgb[2], a]);
        }
    });
    RgbaImage::from_raw(w as u32, h as u32, out)
        .ok_or_else(|| PipelineError::Internal("cut-out buffer size".to_owned()))
}

/// How far (RGB distance) a decontaminated edge colour may stray from the
/// local garment colour.
const MAX_EDGE_DEVIATION: f32 = 40.0;

/// Local background and garment colours at a coarse scale.
struct EdgeColors {
    f: usize,
    bg: [Plane; 3],
    fg: [Plane; 3],
}

impl EdgeColors {
    fn estimate(image: &RgbImage, alpha: &GrayImage) -> Option<Self> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let f = w.max(h).div_ceil(512).max(1);
        let small = downsample(image.as_raw(), w, h, 3, f);
        let a = downsample(alpha.as_raw(), w, h, 1, f).into_iter().next()?;
        let (sw, sh) = (a.w, a.h);
        let wb: Vec<f32> = a.data.iter().map(|&v| f32::from(v < 3.0)).collect();
        let wf: Vec<f32> = a.data.iter().map(|&v| f32::from(v > 252.0)).collect();
        let conv = |weight: &[f32], r: usize| -> [Plane; 3] {
            let ws = box_mean(weight, sw, sh, r);
            let mut out = [Plane::new(sw, sh), Plane::new(sw, sh), Plane::new(sw, sh)];
            for (c, plane) in out.iter_mut().enumerate() {
                let prod: Vec<f32> = small[c]
                    .data
                    .iter()
                    .zip(weight)
                    .map(|(v, w)| v * w)
                    .collect();
                let num = box_mean(&prod, sw, sh, r);
                for i in 0..sw * sh {
                    plane.data[i] = if ws[i] > 0.01 {
                        num[i] / ws[i]
                    } else {
                        small[c].data[i]
                    };
                }
            }
            out
        };
        Some(Self {
            f,
            bg: conv(&wb, 4),
            fg: conv(&wf, 4),
        })
    }

    #[inline]
    fn solve(&self, p: [u8; 3], a: u8, x: usize, y: usize) -> [u8; 3] {
        let fx = (x as f32 + 0.5) / self.f as f32;
        let fy = (y as f32 + 0.5) / self.f as f32;
        let af = f32::from(a) / 255.0;
        let lean = ((af - 0.15) / 0.45).clamp(0.0, 1.0);
        let b = [0, 1, 2].map(|c| self.bg[c].sample(fx, fy));
        let g = [0, 1, 2].map(|c| self.fg[c].sample(fx, fy));
        let mut solved =
            [0, 1, 2].map(|c| (b[c] + (f32::from(p[c]) - b[c]) / af.max(0.05)).clamp(0.0, 255.0));
        // An over-estimated alpha leaves background in the solved colour: keep
        // it within the garment's local colour range (texture survives, fringes
        // do not).
        let d =
            ((solved[0] - g[0]).powi(2) + (solved[1] - g[1]).powi(2) + (solved[2] - g[2]).powi(2))
                .sqrt();
        if d > MAX_EDGE_DEVIATION {
            let k = MAX_EDGE_DEVIATION / d;
            solved = [0, 1, 2].map(|c| g[c] + (solved[c] - g[c]) * k);
        }
        [0, 1, 2].map(|c| (lean * solved[c] + (1.0 - lean) * g[c] + 0.5).clamp(0.0, 255.0) as u8)
    }
}
