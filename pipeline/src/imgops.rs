//! Small image operations on planar buffers: area downsampling, box means,
//! bilinear sampling, binary morphology and connected components.

/// A single-channel f32 plane of `w` x `h`.
#[derive(Debug, Clone)]
pub(crate) struct Plane {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Plane {
    pub fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            data: vec![0.0; w * h],
        }
    }

    #[inline]
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.w + x]
    }

    /// Bilinear sample at continuous coordinates (pixel centres at i + 0.5).
    #[inline]
    pub fn sample(&self, fx: f32, fy: f32) -> f32 {
        let x = (fx - 0.5).clamp(0.0, (self.w - 1) as f32);
        let y = (fy - 0.5).clamp(0.0, (self.h - 1) as f32);
        let x0 = x as usize;
        let y0 = y as usize;
        let x1 = (x0 + 1).min(self.w - 1);
        let y1 = (y0 + 1).min(self.h - 1);
        let tx = x - x0 as f32;
        let ty = y - y0 as f32;
        let a = self.at(x0, y0) + (self.at(x1, y0) - self.at(x0, y0)) * tx;
        let b = self.at(x0, y1) + (self.at(x1, y1) - self.at(x0, y1)) * tx;
        a + (b - a) * ty
    }
}

/// Area-average downsampling of interleaved 8-bit pixels with `channels`
/// channels by an integer `factor`; returns one plane per channel. Partial
/// blocks at the right and bottom edges average the pixels they have.
/// Output rows are computed in parallel.
pub(crate) fn downsample(
    data: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    factor: usize,
) -> Vec<Plane> {
    match channels {
        1 => downsample_n::<1>(data, w, h, factor),
        3 => downsample_n::<3>(data, w, h, factor),
        4 => downsample_n::<4>(data, w, h, factor),
        _ => downsample_any(data, w, h, channels, factor),
    }
}

fn downsample_n<const C: usize>(data: &[u8], w: usize, h: usize, factor: usize) -> Vec<Plane> {
    use rayon::prelude::*;
    let f = factor.max(1);
    let sw = w.div_ceil(f);
    let sh = h.div_ceil(f);
    // Interleaved output, split into planes at the end.
    let mut inter = vec![0.0f32; sw * sh * C];
    inter
        .par_chunks_mut(sw * C)
        .enumerate()
        .for_each(|(sy, out)| {
            let y0 = sy * f;
            let y1 = ((sy + 1) * f).min(h);
            let mut acc = vec![0u32; sw * C];
            for y in y0..y1 {
                let row = &data[y * w * C..(y + 1) * w * C];
                for (block, a) in row.chunks(f * C).zip(acc.chunks_exact_mut(C)) {
                    let mut s = [0u32; C];
                    for px in block.chunks_exact(C) {
                        for c in 0..C {
                            s[c] += u32::from(px[c]);
                        }
                    }
                    for c in 0..C {
                        a[c] += s[c];
                    }
                }
            }
            let rows = (y1 - y0) as f32;
            for (sx, (o, a)) in out.chunks_exact_mut(C).zip(acc.chunks_exact(C)).enumerate() {
                let cols = (((sx + 1) * f).min(w) - sx * f) as f32;
                let inv = 1.0 / (rows * cols);
                for c in 0..C {
                    o[c] = a[c] as f32 * inv;
                }
            }
        });
    let mut planes: Vec<Plane> = (0..C).map(|_| Plane::new(sw, sh)).collect();
    for (i, px) in inter.chunks_exact(C).enumerate() {
        for c in 0..C {
            planes[c].data[i] = px[c];
        }
    }
    planes
}

fn downsample_any(data: &[u8], w: usize, h: usize, channels: usize, factor: usize) -> Vec<Plane> {
    let f = factor.max(1);
    let sw = w.div_ceil(f);
    let sh = h.div_ceil(f);
    let mut planes: Vec<Plane> = (0..channels).map(|_| Plane::new(sw, sh)).collect();
    let mut acc = vec![0u32; sw * channels];
    for sy in 0..sh {
        acc.iter_mut().for_each(|a| *a = 0);
        let y0 = sy * f;
        let y1 = ((sy + 1) * f).min(h);
        for y in y0..y1 {
            let row = &data[y * w * channels..(y + 1) * w * channels];
            for (x, px) in row.chunks_exact(channels).enumerate() {
                let base = (x / f) * channels;
                for c in 0..channels {
                    acc[base + c] += u32::from(px[c]);
                }
            }
        }
        let rows = (y1 - y0) as f32;
        for sx in 0..sw {
            let cols = (((sx + 1) * f).min(w) - sx * f) as f32;
            let inv = 1.0 / (rows * cols);
            for (c, plane) in planes.iter_mut().enumerate() {
                plane.data[sy * sw + sx] = acc[sx * channels + c] as f32 * inv;
            }
        }
    }
    planes
}

/// Mean over a (2r+1)² window, clamped at the edges (divides by the number
/// of pixels actually in the window).
pub(crate) fn box_mean(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut tmp = vec![0.0f32; w * h];
    // Horizontal running sums.
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        let out = &mut tmp[y * w..(y + 1) * w];
        let mut sum = 0.0f32;
        for &v in row.iter().take(r.min(w - 1) + 1) {
            sum += v;
        }
        for x in 0..w {
            let lo = x.saturating_sub(r);
            let hi = (x + r).min(w - 1);
            out[x] = sum / (hi - lo + 1) as f32;
            if x + r + 1 < w {
                sum += row[x + r + 1];
            }
            if x >= r {
                sum -= row[x - r];
            }
        }
    }
    // Vertical running sums, row by row for cache friendliness.
    let mut out = vec![0.0f32; w * h];
    let mut col = vec![0.0f32; w];
    for y in 0..=r.min(h - 1) {
        for (c, v) in col.iter_mut().zip(&tmp[y * w..(y + 1) * w]) {
            *c += v;
        }
    }
    for y in 0..h {
        let lo = y.saturating_sub(r);
        let hi = (y + r).min(h - 1);
        let inv = 1.0 / (hi - lo + 1) as f32;
        for (o, c) in out[y * w..(y + 1) * w].iter_mut().zip(&col) {
            *o = c * inv;
        }
        if y + r + 1 < h {
            let add = &tmp[(y + r + 1) * w..(y + r + 2) * w];
            for (c, v) in col.iter_mut().zip(add) {
                *c += v;
            }
        }
        if y >= r {
            let sub = &tmp[(y - r) * w..(y - r + 1) * w];
            for (c, v) in col.iter_mut().zip(sub) {
                *c -= v;
            }
        }
    }
    out
}

/// Binary dilation with a (2r+1)² square.
pub(crate) fn dilate(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let counts = box_count(mask, w, h, r);
    counts.iter().map(|&c| c > 0).collect()
}

/// Binary erosion with a (2r+1)² square (pixels outside the image count as set).
pub(crate) fn erode(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let inv: Vec<bool> = mask.iter().map(|&m| !m).collect();
    let counts = box_count(&inv, w, h, r);
    counts.iter().map(|&c| c == 0).collect()
}

/// Number of set pixels in the (2r+1)² window around each pixel.
fn box_count(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<u32> {
    let mut tmp = vec![0u32; w * h];
    for y in 0..h {
        let row = &mask[y * w..(y + 1) * w];
        let mut prefix = vec![0u32; w + 1];
        for x in 0..w {
            prefix[x + 1] = prefix[x] + u32::from(row[x]);
        }
        for x in 0..w {
            let lo = x.saturating_sub(r);
            let hi = (x + r + 1).min(w);
            tmp[y * w + x] = prefix[hi] - prefix[lo];
        }
    }
    let mut out = vec![0u32; w * h];
    let mut prefix = vec![0u32; h + 1];
    for x in 0..w {
        for y in 0..h {
            prefix[y + 1] = prefix[y] + tmp[y * w + x];
        }
        for y in 0..h {
            let lo = y.saturating_sub(r);
            let hi = (y + r + 1).min(h);
            out[y * w + x] = prefix[hi] - prefix[lo];
        }
    }
    out
}

/// 4-connected components of the set pixels: (labels, sizes). Label 0 is
/// unset; component `i` has label `i + 1` and size `sizes[i]`.
pub(crate) fn components(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, Vec<usize>) {
    let mut labels = vec![0u32; w * h];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        let label = sizes.len() as u32 + 1;
        let mut size = 0usize;
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            let x = i % w;
            let y = i / w;
            let mut visit = |j: usize| {
                if mask[j] && labels[j] == 0 {
                    labels[j] = label;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        sizes.push(size);
    }
    (labels, sizes)
}

/// Sets to true every unset region not 4-connected to the image border.
pub(crate) fn fill_holes(mask: &mut [bool], w: usize, h: usize) {
    let mut outside = vec![false; w * h];
    let mut stack = Vec::new();
    for x in 0..w {
        for y in [0, h - 1] {
            let i = y * w + x;
            if !mask[i] && !outside[i] {
                outside[i] = true;
                stack.push(i);
            }
        }
    }
    for y in 0..h {
        for x in [0, w - 1] {
            let i = y * w + x;
            if !mask[i] && !outside[i] {
                outside[i] = true;
                stack.push(i);
            }
        }
    }
    while let Some(i) = stack.pop() {
        let x = i % w;
        let y = i / w;
        let mut visit = |j: usize| {
            if !mask[j] && !outside[j] {
                outside[j] = true;
                stack.push(j);
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < w {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - w);
        }
        if y + 1 < h {
            visit(i + w);
        }
    }
    for (m, o) in mask.iter_mut().zip(&outside) {
        if !*o {
            *m = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_mean_matches_brute_force() {
        let (w, h, r) = (7, 5, 2);
        let src: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 11) as f32).collect();
        let fast = box_mean(&src, w, h, r);
        for y in 0..h {
            for x in 0..w {
                let (mut s, mut n) = (0.0, 0.0);
                for yy in y.saturating_sub(r)..=(y + r).min(h - 1) {
                    for xx in x.saturating_sub(r)..=(x + r).min(w - 1) {
                        s += src[yy * w + xx];
                        n += 1.0;
                    }
                }
                assert!((fast[y * w + x] - s / n).abs() < 1e-4, "{x},{y}");
            }
        }
    }

    #[test]
    fn downsample_paths_agree() {
        let (w, h) = (11, 7);
        let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 53) % 251) as u8).collect();
        for f in 1..5 {
            let fast = downsample(&data, w, h, 3, f);
            let slow = downsample_any(&data, w, h, 3, f);
            for (a, b) in fast.iter().zip(&slow) {
                assert_eq!(a.data, b.data, "factor {f}");
            }
        }
    }

    #[test]
    fn downsample_averages_blocks() {
        // 5x3 gray, factor 2 -> 3x2.
        let data: Vec<u8> = (0..15).map(|i| i as u8 * 10).collect();
        let p = &downsample(&data, 5, 3, 1, 2)[0];
        assert_eq!((p.w, p.h), (3, 2));
        assert!((p.at(0, 0) - (0.0 + 10.0 + 50.0 + 60.0) / 4.0).abs() < 1e-4);
        assert!((p.at(2, 0) - (40.0 + 90.0) / 2.0).abs() < 1e-4);
        assert!((p.at(2, 1) - 140.0).abs() < 1e-4);
    }

    #[test]
    fn morphology_and_components() {
        let (w, h) = (9, 9);
        let mut m = vec![false; w * h];
        for y in 2..7 {
            for x in 2..7 {
                m[y * w + x] = true;
            }
        }
        m[4 * w + 4] = false; // a hole
        m[0] = true; // a speck
        let (labels, sizes) = components(&m, w, h);
        assert_eq!(sizes.len(), 2);
        assert_eq!(labels[0], 1);
        assert_eq!(sizes[1], 24);
        fill_holes(&mut m, w, h);
        assert!(m[4 * w + 4]);
        let e = erode(&m, w, h, 1);
        assert_eq!(e.iter().filter(|&&v| v).count(), 9);
        let d = dilate(&e, w, h, 1);
        assert_eq!(d.iter().filter(|&&v| v).count(), 25);
    }
}
