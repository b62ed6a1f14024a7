//! Model input from a photo (Lanczos resize, normalisation, planar floats)
//! and pictures from model outputs (min-max alpha, arg-max labels, resizes
//! back to the photo's size).

use fast_image_resize as fr;
use image::{GrayImage, RgbImage};

use crate::family::ModelFamily;

fn lanczos() -> fr::ResizeOptions {
    fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
}

/// Lanczos3 resize of 8-bit pixels of `pixel_type`.
fn resize(
    data: &[u8],
    from: (u32, u32),
    to: (u32, u32),
    pixel_type: fr::PixelType,
) -> Result<Vec<u8>, String> {
    if from == to {
        return Ok(data.to_vec());
    }
    let src =
        fr::images::ImageRef::new(from.0, from.1, data, pixel_type).map_err(|e| e.to_string())?;
    let mut dst = fr::images::Image::new(to.0, to.1, pixel_type);
    fr::Resizer::new()
        .resize(&src, &mut dst, &lanczos())
        .map_err(|e| e.to_string())?;
    Ok(dst.into_vec())
}

/// The model input for `image`: resized to `size` (width, height), divided
/// by its largest channel value, `(x - mean) / std` per channel, planar
/// (1x3xHxW, red plane first).
pub(crate) fn input_tensor(
    image: &RgbImage,
    size: (u32, u32),
    family: ModelFamily,
) -> Result<Vec<f32>, String> {
    let small = resize(
        image.as_raw(),
        image.dimensions(),
        size,
        fr::PixelType::U8x3,
    )?;
    let max = f32::from(small.iter().copied().max().unwrap_or(0)).max(1e-6);
    let (mean, std) = family.normalisation();
    // One table per channel: every 8-bit value's normalised float.
    let table: Vec<[f32; 256]> = (0..3)
        .map(|c| std::array::from_fn(|v| (v as f32 / max - mean[c]) / std[c]))
        .collect();
    let n = size.0 as usize * size.1 as usize;
    let mut out = vec![0.0f32; 3 * n];
    let (r, rest) = out.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (i, px) in small.chunks_exact(3).enumerate() {
        r[i] = table[0][usize::from(px[0])];
        g[i] = table[1][usize::from(px[1])];
        b[i] = table[2][usize::from(px[2])];
    }
    Ok(out)
}

/// The alpha mask from one prediction plane of `from` (width, height):
/// min-max normalised to 0..=255 (truncated, as rembg does), then Lanczos3
/// resized to `to`. A constant plane gives an empty mask.
pub(crate) fn alpha_from_prediction(
    pred: &[f32],
    from: (u32, u32),
    to: (u32, u32),
) -> Result<GrayImage, String> {
    let (lo, hi) = pred
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = hi - lo;
    let small: Vec<u8> = if range > 0.0 && range.is_finite() {
        let scale = 255.0 / range;
        // `as u8` truncates (and saturates), like numpy's astype("uint8").
        pred.iter().map(|&v| ((v - lo) * scale) as u8).collect()
    } else {
        vec![0; pred.len()]
    };
    let big = resize(&small, from, to, fr::PixelType::U8)?;
    GrayImage::from_raw(to.0, to.1, big).ok_or_else(|| "alpha buffer size".to_owned())
}

/// The class with the highest score per pixel, from `classes` planes of
/// `pixels` scores each (NCHW with N = 1). Ties go to the lower class.
pub(crate) fn argmax_labels(scores: &[f32], classes: usize, pixels: usize) -> Vec<u8> {
    let mut best = scores[..pixels].to_vec();
    let mut labels = vec![0u8; pixels];
    for c in 1..classes.min(256) {
        let plane = &scores[c * pixels..(c + 1) * pixels];
        for ((b, l), &s) in best.iter_mut().zip(labels.iter_mut()).zip(plane) {
            if s > *b {
                *b = s;
                *l = c as u8;
            }
        }
    }
    labels
}

/// Nearest-neighbour resize of a label map (labels are never mixed): each
/// output pixel takes the source pixel under its centre.
pub(crate) fn resize_labels(labels: &[u8], from: (u32, u32), to: (u32, u32)) -> Option<GrayImage> {
    let (fw, fh) = (from.0 as usize, from.1 as usize);
    let (tw, th) = (to.0 as usize, to.1 as usize);
    if labels.len() != fw * fh || fw == 0 || fh == 0 {
        return None;
    }
    let source = |out: usize, out_len: usize, src_len: usize| {
        ((2 * out + 1) * src_len / (2 * out_len)).min(src_len - 1)
    };
    let xs: Vec<usize> = (0..tw).map(|x| source(x, tw, fw)).collect();
    let mut out = vec![0u8; tw * th];
    let mut last: Option<(usize, usize)> = None;
    for y in 0..th {
        let sy = source(y, th, fh);
        let (row_start, rest) = out.split_at_mut(y * tw);
        let row = &mut rest[..tw];
        match last {
            // Consecutive output rows from one source row: copy.
            Some((prev_sy, prev_y)) if prev_sy == sy => {
                row.copy_from_slice(&row_start[prev_y * tw..(prev_y + 1) * tw]);
            }
            _ => {
                let src = &labels[sy * fw..(sy + 1) * fw];
                for (o, &sx) in row.iter_mut().zip(&xs) {
                    *o = src[sx];
                }
            }
        }
        last = Some((sy, y));
    }
    GrayImage::from_raw(to.0, to.1, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_resize_takes_the_pixel_under_each_centre() {
        // 2x1 -> 5x2: centres at 0.1, 0.3, 0.5, 0.7, 0.9 of the width.
        let out = resize_labels(&[1, 3], (2, 1), (5, 2)).unwrap();
        assert_eq!(out.as_raw(), &[1, 1, 3, 3, 3, 1, 1, 3, 3, 3]);
        // Downscale 4x1 -> 2x1 takes pixels 1 and 3.
        let out = resize_labels(&[0, 1, 2, 3], (4, 1), (2, 1)).unwrap();
        assert_eq!(out.as_raw(), &[1, 3]);
    }

    #[test]
    fn argmax_picks_the_highest_class_per_pixel() {
        // 3 classes, 2 pixels.
        let scores = [0.1, 0.9, 0.5, 0.2, 0.7, 0.3];
        assert_eq!(argmax_labels(&scores, 3, 2), vec![2, 0]);
    }

    #[test]
    fn alpha_is_min_max_normalised_and_truncated() {
        let a = alpha_from_prediction(&[-1.0, 0.0, 1.0, 0.999], (4, 1), (4, 1)).unwrap();
        // (v + 1) / 2 * 255 truncated: 0, 127.5 -> 127, 255, 254.87 -> 254.
        assert_eq!(a.as_raw(), &[0, 127, 255, 254]);
        let flat = alpha_from_prediction(&[0.5; 4], (2, 2), (3, 3)).unwrap();
        assert!(flat.as_raw().iter().all(|&v| v == 0));
    }

    #[test]
    fn input_is_planar_and_normalised_by_the_largest_value() {
        let img = RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                image::Rgb([200, 100, 0])
            } else {
                image::Rgb([0, 50, 100])
            }
        });
        let t = input_tensor(&img, (2, 1), ModelFamily::IsNetGeneral).unwrap();
        // Max 200; mean 0.5, std 1: v / 200 - 0.5.
        let want = [0.5, -0.5, 0.0, -0.25, -0.5, 0.0];
        for (a, b) in t.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{t:?}");
        }
    }
}
