//! Quality measures of an alpha mask against a reference: IoU of the binarised
//! masks and boundary F1 (edge pixels matched within a distance tolerance),
//! used by the evaluation tests and benchmarks.

use image::GrayImage;

/// The boundary tolerance of [`boundary_f1`] as a fraction of the image diagonal.
pub const BOUNDARY_TOLERANCE: f64 = 0.004;

/// Intersection over union of `alpha` and `truth`, both binarised at 128.
/// Two empty masks give 1. Masks of different sizes give 0.
pub fn iou(alpha: &GrayImage, truth: &GrayImage) -> f64 {
    if alpha.dimensions() != truth.dimensions() {
        return 0.0;
    }
    let (mut inter, mut union) = (0u64, 0u64);
    for (a, t) in alpha.as_raw().iter().zip(truth.as_raw()) {
        let (a, t) = (*a > 127, *t > 127);
        inter += u64::from(a && t);
        union += u64::from(a || t);
    }
    if union == 0 {
        return 1.0;
    }
    inter as f64 / union as f64
}

/// The tolerance in pixels of [`boundary_f1`] for a `w` x `h` image
/// ([`BOUNDARY_TOLERANCE`] of the diagonal, at least 1 px).
pub fn boundary_tolerance(w: u32, h: u32) -> f64 {
    (BOUNDARY_TOLERANCE * (f64::from(w).hypot(f64::from(h)))).max(1.0)
}

/// Boundary F1 of `alpha` against `truth` (both binarised at 128): the
/// boundary pixels of each mask (a mask pixel with a 4-neighbour outside it,
/// the frame not counting as outside) match when a boundary pixel of the
/// other mask lies within `tolerance` pixels (Euclidean); precision is the
/// matched share of `alpha`'s boundary, recall that of `truth`'s, F1 their
/// harmonic mean. Two masks without boundaries give 1, one without gives 0.
pub fn boundary_f1(alpha: &GrayImage, truth: &GrayImage, tolerance: f64) -> f64 {
    if alpha.dimensions() != truth.dimensions() {
        return 0.0;
    }
    let (w, h) = (alpha.width() as usize, alpha.height() as usize);
    let a = boundary(alpha.as_raw(), w, h);
    let t = boundary(truth.as_raw(), w, h);
    let (na, nt) = (
        a.iter().filter(|&&v| v).count(),
        t.iter().filter(|&&v| v).count(),
    );
    if na == 0 || nt == 0 {
        return if na == nt { 1.0 } else { 0.0 };
    }
    let tol2 = tolerance * tolerance;
    let dt = distance_sq(&t, w, h);
    let da = distance_sq(&a, w, h);
    let matched = |edges: &[bool], dist: &[f32]| {
        edges
            .iter()
            .zip(dist)
            .filter(|(e, d)| **e && f64::from(**d) <= tol2)
            .count() as f64
    };
    let precision = matched(&a, &dt) / na as f64;
    let recall = matched(&t, &da) / nt as f64;
    if precision + recall <= 0.0 {
        return 0.0;
    }
    2.0 * precision * recall / (precision + recall)
}

/// Inner boundary of the mask `m > 127`.
fn boundary(m: &[u8], w: usize, h: usize) -> Vec<bool> {
    let on = |i: usize| m[i] > 127;
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if !on(i) {
                continue;
            }
            out[i] = (x > 0 && !on(i - 1))
                || (x + 1 < w && !on(i + 1))
                || (y > 0 && !on(i - w))
                || (y + 1 < h && !on(i + w));
        }
    }
    out
}

/// Squared Euclidean distance of every pixel to the nearest `true` pixel
/// (Felzenszwalb and Huttenlocher's separable transform).
fn distance_sq(seeds: &[bool], w: usize, h: usize) -> Vec<f32> {
    const INF: f32 = 1e20;
    let mut grid: Vec<f32> = seeds.iter().map(|&s| if s { 0.0 } else { INF }).collect();
    let mut f = vec![0.0f32; w.max(h)];
    let mut d = vec![0.0f32; w.max(h)];
    let mut v = vec![0usize; w.max(h)];
    let mut z = vec![0.0f32; w.max(h) + 1];
    for x in 0..w {
        for y in 0..h {
            f[y] = grid[y * w + x];
        }
        edt_1d(&f[..h], &mut d[..h], &mut v, &mut z);
        for y in 0..h {
            grid[y * w + x] = d[y];
        }
    }
    for y in 0..h {
        f[..w].copy_from_slice(&grid[y * w..(y + 1) * w]);
        edt_1d(&f[..w], &mut d[..w], &mut v, &mut z);
        grid[y * w..(y + 1) * w].copy_from_slice(&d[..w]);
    }
    grid
}

fn edt_1d(f: &[f32], d: &mut [f32], v: &mut [usize], z: &mut [f32]) {
    let n = f.len();
    if n == 0 {
        return;
    }
    let mut k = 0usize;
    v[0] = 0;
    z[0] = f32::NEG_INFINITY;
    z[1] = f32::INFINITY;
    let sq = |q: usize| (q * q) as f32;
    for q in 1..n {
        let mut s;
        loop {
            let p = v[k];
            s = ((f[q] + sq(q)) - (f[p] + sq(p))) / (2.0 * (q as f32 - p as f32));
            // z[0] is minus infinity: the loop stops at k = 0 at the latest.
            if s <= z[k] && k > 0 {
                k -= 1;
            } else {
                break;
            }
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f32::INFINITY;
    }
    k = 0;
    for (q, out) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f32 {
            k += 1;
        }
        let p = v[k];
        let dq = q as f32 - p as f32;
        *out = dq * dq + f[p];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    fn square(w: u32, h: u32, x0: u32, y0: u32, side: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let inside = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
            Luma([if inside { 255 } else { 0 }])
        })
    }

    #[test]
    fn the_distance_transform_is_euclidean() {
        let mut seeds = vec![false; 9 * 7];
        seeds[3 * 9 + 4] = true;
        let d = distance_sq(&seeds, 9, 7);
        assert_eq!(d[3 * 9 + 4], 0.0);
        assert_eq!(d[3 * 9 + 7], 9.0);
        assert_eq!(d[6 * 9 + 8], 9.0 + 16.0);
        assert_eq!(d[0], 16.0 + 9.0);
    }

    #[test]
    fn identical_masks_score_one_and_shifted_ones_by_tolerance() {
        let a = square(200, 200, 50, 50, 100);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(boundary_f1(&a, &a, 1.0), 1.0);
        let b = square(200, 200, 53, 50, 100);
        assert!(boundary_f1(&a, &b, 3.0) > 0.99);
        let f = boundary_f1(&a, &b, 2.0);
        // The two vertical sides (half the boundary) are 3 px away.
        assert!((0.4..0.6).contains(&f), "{f}");
        assert!((iou(&a, &b) - 97.0 / 103.0).abs() < 1e-9);
    }

    #[test]
    fn a_notch_costs_boundary_f1_more_than_iou() {
        let a = square(400, 400, 100, 100, 200);
        let mut b = a.clone();
        // A 20 x 40 bite out of the left side.
        for y in 180..220 {
            for x in 100..120 {
                b.put_pixel(x, y, Luma([0]));
            }
        }
        let tol = boundary_tolerance(400, 400);
        assert!((tol - 2.26).abs() < 0.01, "{tol}");
        let (i, f) = (iou(&a, &b), boundary_f1(&a, &b, tol));
        assert!(i > 0.97 && f < 0.97, "IoU {i}, F1 {f}");
    }
}
