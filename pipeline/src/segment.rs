//! Builtin segmentation: colour clusters of the garment (k-means in Lab on a
//! subsample), a label map, and per region its box and named dominant colour.

use image::{GrayImage, RgbImage};
use rayon::prelude::*;

use crate::colors::{lab_to_srgb, name_of, srgb_to_lab};
use crate::error::PipelineError;
use crate::imgops::components;
use crate::options::SegmentationOptions;
use crate::output::{BoundingBox, NamedColor, Region};

/// The result of segmentation.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// 0 = background, 1..=k = the regions, same size as the input.
    pub labels: GrayImage,
    /// One entry per label, largest first (labels are numbered in that order).
    pub regions: Vec<Region>,
}

impl Segmentation {
    /// The mask of one region: 255 where the label map has `label`, else 0.
    pub fn mask_of(&self, label: u8) -> GrayImage {
        let mut mask = self.labels.clone();
        for v in mask.iter_mut() {
            *v = if *v == label && label != 0 { 255 } else { 0 };
        }
        mask
    }

    /// A short description of the garment's colours, e.g. `navy, light blue`.
    pub fn describe(&self) -> String {
        describe(&self.regions)
    }
}

/// Per-pixel classes predicted by a segmentation model.
#[derive(Debug, Clone)]
pub struct ClassMap {
    /// Class index per pixel (0 = background), same size as the image.
    pub labels: GrayImage,
    /// Name of each class index (`classes[0]` is the background's).
    pub classes: Vec<String>,
}

/// Something that predicts a class per pixel (an ONNX garment-parsing
/// model). The pipeline turns its [`ClassMap`] into regions with
/// [`from_class_map`].
pub trait Segmenter: Send + Sync {
    /// The backend's name for reports (`onnx`).
    fn name(&self) -> &str;

    /// The class map of `image` (same size). `progress` receives 0..=1.
    fn classes(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<ClassMap, PipelineError>;
}

/// Regions from a model's class map: one region per class present (pixels
/// outside `alpha`, when given, become background), largest first, each with
/// its box, mean colour, pieces and class name. The label map keeps the
/// model's class indices, so `segments` reads the same for every photo.
pub fn from_class_map(
    image: &RgbImage,
    alpha: Option<&GrayImage>,
    map: ClassMap,
) -> Result<Segmentation, PipelineError> {
    let (w, h) = image.dimensions();
    if map.labels.dimensions() != (w, h) || alpha.is_some_and(|a| a.dimensions() != (w, h)) {
        return Err(PipelineError::Internal(format!(
            "class map {:?} differs from the image {:?}",
            map.labels.dimensions(),
            (w, h)
        )));
    }
    let mut labels = map.labels;
    if let Some(a) = alpha {
        for (l, &av) in labels.iter_mut().zip(a.as_raw()) {
            if av <= 127 {
                *l = 0;
            }
        }
    }
    let mut stats = vec![Stats::default(); 256];
    let raw = image.as_raw();
    for (i, &l) in labels.as_raw().iter().enumerate() {
        if l != 0 {
            let (x, y) = ((i % w as usize) as u32, (i / w as usize) as u32);
            stats[usize::from(l)].add(x, y, &raw[i * 3..i * 3 + 3]);
        }
    }
    let total: u64 = stats.iter().map(|s| s.count).sum();
    let mut present: Vec<usize> = (1..256).filter(|&l| stats[l].count > 0).collect();
    present.sort_by(|&a, &b| stats[b].count.cmp(&stats[a].count));
    let max_label = present.iter().copied().max().unwrap_or(0);
    let pieces = pieces(&labels, max_label);
    let regions = present
        .iter()
        .map(|&l| {
            let (components, pattern) = pieces.get(l - 1).copied().unwrap_or((0, "solid"));
            let class = map
                .classes
                .get(l)
                .cloned()
                .unwrap_or_else(|| format!("class{l}"));
            Region {
                class: Some(class),
                components,
                pattern,
                ..stats[l].region(l as u8, total.max(1) as f64)
            }
        })
        .collect();
    Ok(Segmentation { labels, regions })
}

/// Colour clusters closer than this (ΔE*ab) are merged into one region.
const MERGE_DELTA_E: f32 = 12.0;
/// Clusters with fewer of the garment's pixels than this are merged away.
const MIN_SHARE: f32 = 0.03;
/// Pixels sampled for k-means.
const SAMPLES: usize = 40_000;

/// Segments the garment (pixels with alpha > 127, or the whole picture when
/// there is no alpha) into colour regions.
pub fn segment(
    image: &RgbImage,
    alpha: Option<&GrayImage>,
    options: &SegmentationOptions,
    progress: &mut dyn FnMut(f64),
) -> Result<Segmentation, PipelineError> {
    if !(1..=8).contains(&options.max_colors) {
        return Err(PipelineError::InvalidOptions(format!(
            "segmentation.maxColors must be 1..=8, not {}",
            options.max_colors
        )));
    }
    let (w, h) = image.dimensions();
    if let Some(a) = alpha
        && a.dimensions() != (w, h)
    {
        return Err(PipelineError::Internal("alpha size differs".to_owned()));
    }
    let raw = image.as_raw();
    let inside = |i: usize| alpha.is_none_or(|a| a.as_raw()[i] > 127);
    let n = (w as usize) * (h as usize);
    let garment_pixels = (0..n).filter(|&i| inside(i)).count();
    if garment_pixels == 0 {
        return Ok(Segmentation {
            labels: GrayImage::new(w, h),
            regions: Vec::new(),
        });
    }

    // Subsample garment pixels on a regular grid.
    let step = ((garment_pixels as f64 / SAMPLES as f64).sqrt().floor() as usize).max(1);
    let mut samples = Vec::with_capacity(SAMPLES * 2);
    for y in (0..h as usize).step_by(step) {
        for x in (0..w as usize).step_by(step) {
            let i = y * w as usize + x;
            if inside(i) {
                samples.push(srgb_to_lab([raw[i * 3], raw[i * 3 + 1], raw[i * 3 + 2]]));
            }
        }
    }
    progress(0.1);
    let centres = cluster(&samples, usize::from(options.max_colors));
    progress(0.4);

    // Nearest centre for every 5-bit-per-channel RGB cell.
    let lut: Vec<u8> = (0..32 * 32 * 32)
        .into_par_iter()
        .map(|cell: usize| {
            let rgb = [
                ((cell >> 10) as u8) << 3 | 4,
                (((cell >> 5) & 31) as u8) << 3 | 4,
                ((cell & 31) as u8) << 3 | 4,
            ];
            nearest(&centres, srgb_to_lab(rgb)).0 as u8
        })
        .collect();
    let cell = |p: &[u8]| {
        (usize::from(p[0] >> 3) << 10) | (usize::from(p[1] >> 3) << 5) | usize::from(p[2] >> 3)
    };

    // Label map (cluster index + 1) and per-cluster statistics.
    let k = centres.len();
    let mut labels = vec![0u8; n];
    let stats = labels
        .par_chunks_mut(w as usize)
        .enumerate()
        .map(|(y, row)| {
            let mut st = vec![Stats::default(); k];
            for (x, l) in row.iter_mut().enumerate() {
                let i = y * w as usize + x;
                if !inside(i) {
                    continue;
                }
                let p = &raw[i * 3..i * 3 + 3];
                let c = usize::from(lut[cell(p)]);
                *l = c as u8 + 1;
                st[c].add(x as u32, y as u32, p);
            }
            st
        })
        .reduce(
            || vec![Stats::default(); k],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    x.merge(y);
                }
                a
            },
        );
    progress(0.9);

    // Renumber: largest region first, empty ones dropped.
    let mut order: Vec<usize> = (0..k).filter(|&c| stats[c].count > 0).collect();
    order.sort_by(|&a, &b| stats[b].count.cmp(&stats[a].count));
    let mut remap = [0u8; 256];
    for (new, &old) in order.iter().enumerate() {
        remap[old + 1] = new as u8 + 1;
    }
    for l in &mut labels {
        *l = remap[usize::from(*l)];
    }
    let total = garment_pixels as f64;
    let regions = order
        .iter()
        .enumerate()
        .map(|(new, &old)| stats[old].region(new as u8 + 1, total))
        .collect::<Vec<_>>();
    let labels = GrayImage::from_raw(w, h, labels)
        .ok_or_else(|| PipelineError::Internal("label buffer size".to_owned()))?;
    let mut regions = regions;
    for (r, (count, pattern)) in regions.iter_mut().zip(pieces(&labels, order.len())) {
        r.components = count;
        r.pattern = pattern;
    }
    Ok(Segmentation { labels, regions })
}

/// A short description of the garment's colours for people, e.g.
/// `navy, white stripes`: the main colour, then the others with their pattern.
pub fn describe(regions: &[Region]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let Some(c) = r.colors.first() else { continue };
        let part = match (i, r.pattern) {
            (0, _) | (_, "solid" | "pieces") => c.name.clone(),
            (_, pattern) => format!("{} {pattern}", c.name),
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    parts.join(", ")
}

/// Pieces per label (1..=k) of a label map looked at with a long side of
/// about 256 px: (count, pattern).
fn pieces(labels: &GrayImage, k: usize) -> Vec<(u32, &'static str)> {
    let (w, h) = (labels.width() as usize, labels.height() as usize);
    let d = w.max(h).div_ceil(256).max(1);
    let (sw, sh) = (w.div_ceil(d), h.div_ceil(d));
    let raw = labels.as_raw();
    let small: Vec<u8> = (0..sw * sh)
        .map(|i| {
            let x = ((i % sw) * d + d / 2).min(w - 1);
            let y = ((i / sw) * d + d / 2).min(h - 1);
            raw[y * w + x]
        })
        .collect();
    (1..=k)
        .map(|label| {
            let mask: Vec<bool> = small.iter().map(|&l| usize::from(l) == label).collect();
            let area = mask.iter().filter(|&&m| m).count();
            let (comp, sizes) = components(&mask, sw, sh);
            let min_size = (area / 100).max(3);
            let mut boxes: Vec<(usize, usize, usize, usize)> =
                vec![(usize::MAX, usize::MAX, 0, 0); sizes.len()];
            for (i, &c) in comp.iter().enumerate() {
                if c > 0 {
                    let b = &mut boxes[c as usize - 1];
                    let (x, y) = (i % sw, i / sw);
                    *b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
                }
            }
            let kept: Vec<(usize, usize)> = sizes
                .iter()
                .zip(&boxes)
                .filter(|(s, _)| **s >= min_size)
                .map(|(_, b)| (b.2 - b.0 + 1, b.3 - b.1 + 1))
                .collect();
            let count = kept.len() as u32;
            let long = kept
                .iter()
                .filter(|(bw, bh)| bw.max(bh) >= &(3 * bw.min(bh)))
                .count();
            let pattern = match count {
                0 | 1 => "solid",
                n if n >= 3 && long * 3 >= kept.len() * 2 => "stripes",
                n if n >= 3 => "spots",
                _ => "pieces",
            };
            (count, pattern)
        })
        .collect()
}

fn name_and_hex(rgb: [u8; 3]) -> (String, String) {
    (
        name_of(rgb).to_owned(),
        format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]),
    )
}

#[derive(Debug, Clone)]
struct Stats {
    count: u64,
    sum: [u64; 3],
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            count: 0,
            sum: [0; 3],
            x0: u32::MAX,
            y0: u32::MAX,
            x1: 0,
            y1: 0,
        }
    }
}

impl Stats {
    /// A region of one colour (its mean) with this box; `total` is the
    /// garment's pixel count. Pieces are counted later.
    fn region(&self, label: u8, total: f64) -> Region {
        let (name, hex) = name_and_hex(self.mean());
        Region {
            label,
            class: None,
            pixels: self.count,
            area_fraction: (self.count as f64 / total) as f32,
            bbox: BoundingBox {
                x: self.x0,
                y: self.y0,
                width: self.x1 - self.x0 + 1,
                height: self.y1 - self.y0 + 1,
            },
            colors: vec![NamedColor {
                name,
                hex,
                fraction: 1.0,
            }],
            components: 0,
            pattern: "solid",
        }
    }

    #[inline]
    fn add(&mut self, x: u32, y: u32, p: &[u8]) {
        self.count += 1;
        for (s, v) in self.sum.iter_mut().zip(p) {
            *s += u64::from(*v);
        }
        self.x0 = self.x0.min(x);
        self.y0 = self.y0.min(y);
        self.x1 = self.x1.max(x);
        self.y1 = self.y1.max(y);
    }

    fn merge(&mut self, o: &Stats) {
        self.count += o.count;
        for c in 0..3 {
            self.sum[c] += o.sum[c];
        }
        self.x0 = self.x0.min(o.x0);
        self.y0 = self.y0.min(o.y0);
        self.x1 = self.x1.max(o.x1);
        self.y1 = self.y1.max(o.y1);
    }

    fn mean(&self) -> [u8; 3] {
        let n = self.count.max(1);
        [
            ((self.sum[0] + n / 2) / n) as u8,
            ((self.sum[1] + n / 2) / n) as u8,
            ((self.sum[2] + n / 2) / n) as u8,
        ]
    }
}

#[inline]
fn d2(a: [f32; 3], b: [f32; 3]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

fn nearest(centres: &[[f32; 3]], p: [f32; 3]) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (i, c) in centres.iter().enumerate() {
        let d = d2(*c, p);
        if d < best.1 {
            best = (i, d);
        }
    }
    best
}

/// k-means++ (deterministic) then Lloyd iterations; close or tiny clusters
/// are merged so a plain garment gives one colour.
fn cluster(samples: &[[f32; 3]], k: usize) -> Vec<[f32; 3]> {
    if samples.is_empty() {
        return vec![[50.0, 0.0, 0.0]];
    }
    // Deterministic k-means++ seeding: the farthest-weighted choice by a fixed LCG.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((rng >> 11) as f64) / ((1u64 << 53) as f64)
    };
    let mut centres = vec![samples[samples.len() / 2]];
    let mut dist: Vec<f32> = samples.iter().map(|s| d2(*s, centres[0])).collect();
    while centres.len() < k {
        let total: f64 = dist.iter().map(|&d| f64::from(d)).sum();
        if total <= 0.0 {
            break;
        }
        let mut target = next() * total;
        let mut pick = samples.len() - 1;
        for (i, &d) in dist.iter().enumerate() {
            target -= f64::from(d);
            if target <= 0.0 {
                pick = i;
                break;
            }
        }
        let c = samples[pick];
        centres.push(c);
        for (d, s) in dist.iter_mut().zip(samples) {
            *d = d.min(d2(*s, c));
        }
    }
    let mut assign = vec![0usize; samples.len()];
    for _ in 0..12 {
        lloyd(samples, &mut centres, &mut assign);
    }
    // Merge close or tiny clusters, then settle again.
    loop {
        let counts = counts_of(&assign, centres.len());
        let mut merge: Option<(usize, usize)> = None;
        let smallest = (0..centres.len()).min_by_key(|&i| counts[i]);
        if let Some(s) = smallest
            && centres.len() > 1
            && (counts[s] as f32) < MIN_SHARE * samples.len() as f32
        {
            let other = (0..centres.len())
                .filter(|&j| j != s)
                .min_by(|&a, &b| d2(centres[s], centres[a]).total_cmp(&d2(centres[s], centres[b])));
            merge = other.map(|o| (s, o));
        }
        if merge.is_none() {
            let mut best = (MERGE_DELTA_E * MERGE_DELTA_E, None);
            for a in 0..centres.len() {
                for b in a + 1..centres.len() {
                    let d = d2(centres[a], centres[b]);
                    if d < best.0 {
                        best = (d, Some((b, a)));
                    }
                }
            }
            merge = best.1;
        }
        let Some((gone, _)) = merge else { break };
        centres.remove(gone);
        for _ in 0..4 {
            lloyd(samples, &mut centres, &mut assign);
        }
    }
    // Report centres as the sRGB-rounded Lab values (stable naming).
    centres
        .iter()
        .map(|c| srgb_to_lab(lab_to_srgb(*c)))
        .collect()
}

fn counts_of(assign: &[usize], k: usize) -> Vec<usize> {
    let mut counts = vec![0usize; k];
    for &a in assign {
        counts[a] += 1;
    }
    counts
}

fn lloyd(samples: &[[f32; 3]], centres: &mut [[f32; 3]], assign: &mut [usize]) {
    let k = centres.len();
    let mut sum = vec![[0.0f64; 3]; k];
    let mut count = vec![0usize; k];
    for (s, a) in samples.iter().zip(assign.iter_mut()) {
        let (i, _) = nearest(centres, *s);
        *a = i;
        for c in 0..3 {
            sum[i][c] += f64::from(s[c]);
        }
        count[i] += 1;
    }
    for i in 0..k {
        if count[i] > 0 {
            let n = count[i] as f64;
            centres[i] = [
                (sum[i][0] / n) as f32,
                (sum[i][1] / n) as f32,
                (sum[i][2] / n) as f32,
            ];
        }
    }
}
