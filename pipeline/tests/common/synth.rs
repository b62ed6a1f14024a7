//! Synthetic garment photos with known masks: several shapes and fabrics on
//! plain, gradient, vignetted and paper backgrounds, with contact shadows,
//! sensor noise and optional JPEG artefacts, at any resolution.
#![allow(dead_code, clippy::needless_range_loop)]

use image::{GrayImage, Luma, Rgb, RgbImage};

/// A garment silhouette, in coordinates normalised to the garment's box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Body, short sleeves, a neck cut-out.
    TShirt,
    /// Long sleeves and a hood.
    Hoodie,
    /// Narrow straps, flared skirt.
    Dress,
    /// Waistband and two legs with a gap between them.
    Trousers,
}

/// The fabric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fabric {
    /// One colour with soft folds and a knit texture of amplitude `texture`.
    Plain { color: [f32; 3], texture: f32 },
    /// Vertical stripes of `period` px.
    Stripes {
        base: [f32; 3],
        stripe: [f32; 3],
        period: f32,
    },
    /// Checks of `period` px.
    Check {
        base: [f32; 3],
        line: [f32; 3],
        period: f32,
    },
    /// Horizontal stripes of `period` px, `duty` of each period in `stripe`
    /// (a Breton shirt; the stripes meet the silhouette's sides).
    HStripes {
        base: [f32; 3],
        stripe: [f32; 3],
        period: f32,
        duty: f32,
    },
    /// Thin vertical lines of `width` px every `period` px.
    Pinstripes {
        base: [f32; 3],
        stripe: [f32; 3],
        period: f32,
        width: f32,
    },
    /// Dots of `radius` px on a staggered grid of `period` px.
    Dots {
        base: [f32; 3],
        dot: [f32; 3],
        period: f32,
        radius: f32,
    },
    /// Three vertical panels (left, middle, right thirds of the frame).
    Blocks { colors: [[f32; 3]; 3] },
    /// Ombré: `top` fading into `bottom` down the garment.
    Ombre { top: [f32; 3], bottom: [f32; 3] },
}

/// The backdrop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backdrop {
    /// One colour.
    Plain([f32; 3]),
    /// From `top` to `bottom`.
    Gradient { top: [f32; 3], bottom: [f32; 3] },
    /// `centre` fading to `corner` (vignetting).
    Radial { centre: [f32; 3], corner: [f32; 3] },
    /// Paper or fabric texture of amplitude `amplitude` on `base`.
    Paper { base: [f32; 3], amplitude: f32 },
}

/// One synthetic photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
    pub shape: Shape,
    pub fabric: Fabric,
    pub backdrop: Backdrop,
    /// Darkening at the core of the contact shadow (0 = none).
    pub shadow: f32,
    /// Sensor noise standard deviation.
    pub noise: f32,
    /// Garment box as fractions of the frame: (left, top, right, bottom).
    pub frame: (f32, f32, f32, f32),
    /// JPEG round trip at this quality.
    pub jpeg: Option<u8>,
    /// Depth of the fabric's soft folds (brightness varies by this share).
    pub folds: f32,
    pub seed: u64,
}

impl Scene {
    pub fn new(name: &'static str, width: u32, height: u32) -> Self {
        Self {
            name,
            width,
            height,
            shape: Shape::TShirt,
            fabric: Fabric::Plain {
                color: [40.0, 70.0, 150.0],
                texture: 6.0,
            },
            backdrop: Backdrop::Plain([232.0, 232.0, 234.0]),
            shadow: 0.25,
            noise: 2.0,
            frame: (0.18, 0.18, 0.82, 0.86),
            jpeg: Some(92),
            folds: 0.06,
            seed: 7,
        }
    }
}

enum Prim {
    Poly(Vec<(f32, f32)>),
    Ellipse { cx: f32, cy: f32, rx: f32, ry: f32 },
}

/// The silhouette as (added, removed) primitives in unit coordinates.
fn silhouette(shape: Shape) -> (Vec<Prim>, Vec<Prim>) {
    match shape {
        Shape::TShirt => (
            vec![
                Prim::Poly(vec![(0.25, 0.0), (0.75, 0.0), (0.80, 1.0), (0.20, 1.0)]),
                Prim::Poly(vec![(0.25, 0.0), (0.0, 0.2), (0.09, 0.34), (0.27, 0.22)]),
                Prim::Poly(vec![(0.75, 0.0), (1.0, 0.2), (0.91, 0.34), (0.73, 0.22)]),
            ],
            vec![Prim::Ellipse {
                cx: 0.5,
                cy: -0.02,
                rx: 0.1,
                ry: 0.09,
            }],
        ),
        Shape::Hoodie => (
            vec![
                Prim::Poly(vec![(0.27, 0.12), (0.73, 0.12), (0.76, 1.0), (0.24, 1.0)]),
                Prim::Poly(vec![(0.27, 0.12), (0.02, 0.85), (0.12, 0.88), (0.30, 0.35)]),
                Prim::Poly(vec![(0.73, 0.12), (0.98, 0.85), (0.88, 0.88), (0.70, 0.35)]),
                Prim::Ellipse {
                    cx: 0.5,
                    cy: 0.12,
                    rx: 0.15,
                    ry: 0.12,
                },
            ],
            vec![],
        ),
        Shape::Dress => (
            vec![
                Prim::Poly(vec![
                    (0.33, 0.1),
                    (0.67, 0.1),
                    (0.68, 0.42),
                    (0.95, 1.0),
                    (0.05, 1.0),
                    (0.32, 0.42),
                ]),
                Prim::Poly(vec![(0.34, 0.0), (0.38, 0.0), (0.40, 0.11), (0.35, 0.11)]),
                Prim::Poly(vec![(0.62, 0.0), (0.66, 0.0), (0.65, 0.11), (0.60, 0.11)]),
            ],
            vec![Prim::Ellipse {
                cx: 0.5,
                cy: 0.1,
                rx: 0.12,
                ry: 0.07,
            }],
        ),
        Shape::Trousers => (
            vec![
                Prim::Poly(vec![(0.18, 0.0), (0.82, 0.0), (0.84, 0.12), (0.16, 0.12)]),
                Prim::Poly(vec![(0.16, 0.1), (0.52, 0.1), (0.47, 1.0), (0.12, 1.0)]),
                Prim::Poly(vec![(0.48, 0.1), (0.84, 0.1), (0.88, 1.0), (0.53, 1.0)]),
            ],
            vec![],
        ),
    }
}

/// Horizontal spans of a primitive at height `y` (pixel coordinates).
fn spans(p: &Prim, y: f32, out: &mut Vec<(f32, f32)>) {
    match p {
        Prim::Poly(pts) => {
            let mut xs = Vec::new();
            for i in 0..pts.len() {
                let (x0, y0) = pts[i];
                let (x1, y1) = pts[(i + 1) % pts.len()];
                if (y0 <= y && y < y1) || (y1 <= y && y < y0) {
                    xs.push(x0 + (y - y0) / (y1 - y0) * (x1 - x0));
                }
            }
            xs.sort_by(f32::total_cmp);
            for pair in xs.chunks_exact(2) {
                out.push((pair[0], pair[1]));
            }
        }
        Prim::Ellipse { cx, cy, rx, ry } => {
            let t = (y - cy) / ry;
            if t.abs() < 1.0 {
                let half = rx * (1.0 - t * t).sqrt();
                out.push((cx - half, cx + half));
            }
        }
    }
}

fn to_pixels(p: &Prim, frame: (f32, f32, f32, f32)) -> Prim {
    let (l, t, r, b) = frame;
    let map = |(x, y): (f32, f32)| (l + x * (r - l), t + y * (b - t));
    match p {
        Prim::Poly(pts) => Prim::Poly(pts.iter().map(|&q| map(q)).collect()),
        Prim::Ellipse { cx, cy, rx, ry } => {
            let (x, y) = map((*cx, *cy));
            Prim::Ellipse {
                cx: x,
                cy: y,
                rx: rx * (r - l),
                ry: ry * (b - t),
            }
        }
    }
}

/// Anti-aliased coverage (4 sub-scanlines, exact horizontal coverage).
fn coverage(scene: &Scene) -> Vec<f32> {
    let (w, h) = (scene.width as usize, scene.height as usize);
    let frame = (
        scene.frame.0 * w as f32,
        scene.frame.1 * h as f32,
        scene.frame.2 * w as f32,
        scene.frame.3 * h as f32,
    );
    let (add, sub) = silhouette(scene.shape);
    let add: Vec<Prim> = add.iter().map(|p| to_pixels(p, frame)).collect();
    let sub: Vec<Prim> = sub.iter().map(|p| to_pixels(p, frame)).collect();
    let mut cov = vec![0.0f32; w * h];
    let mut prim_row = vec![0.0f32; w];
    let mut sp = Vec::new();
    for y in 0..h {
        let row = &mut cov[y * w..(y + 1) * w];
        let mut removed = vec![0.0f32; w];
        for (set, is_add) in [(&add, true), (&sub, false)] {
            for p in set.iter() {
                prim_row.iter_mut().for_each(|v| *v = 0.0);
                for s in 0..4 {
                    let sy = y as f32 + (s as f32 + 0.5) / 4.0;
                    sp.clear();
                    spans(p, sy, &mut sp);
                    for &(a, b) in &sp {
                        let a = a.clamp(0.0, w as f32);
                        let b = b.clamp(0.0, w as f32);
                        if b <= a {
                            continue;
                        }
                        let (ia, ib) = (a.floor() as usize, (b.ceil() as usize).min(w));
                        for x in ia..ib {
                            let lo = a.max(x as f32);
                            let hi = b.min(x as f32 + 1.0);
                            if hi > lo {
                                prim_row[x] += 0.25 * (hi - lo);
                            }
                        }
                    }
                }
                let target: &mut [f32] = if is_add { row } else { &mut removed };
                for (t, v) in target.iter_mut().zip(&prim_row) {
                    *t = t.max(*v);
                }
            }
        }
        for (c, r) in row.iter_mut().zip(&removed) {
            *c = (*c - r).max(0.0);
        }
    }
    cov
}

#[inline]
fn hash(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[inline]
fn uniform(seed: u64, x: u64, y: u64) -> f32 {
    (hash(seed ^ hash(x ^ hash(y))) >> 40) as f32 / (1u64 << 24) as f32
}

/// Approximately standard normal.
#[inline]
fn normal(seed: u64, x: u64, y: u64) -> f32 {
    // Irwin-Hall: four 16-bit uniforms from one hash.
    let h = hash(seed ^ hash(x ^ hash(y)));
    let s = (h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48);
    (s as f32 / 65536.0 - 2.0) * 1.732
}

/// Smooth value noise with a lattice of `scale` px, in -1..1.
fn value_noise(seed: u64, x: f32, y: f32, scale: f32) -> f32 {
    let (gx, gy) = (x / scale, y / scale);
    let (x0, y0) = (gx.floor(), gy.floor());
    let (tx, ty) = (gx - x0, gy - y0);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let v =
        |i: f32, j: f32| uniform(seed, (x0 + i) as i64 as u64, (y0 + j) as i64 as u64) * 2.0 - 1.0;
    let a = v(0.0, 0.0) + (v(1.0, 0.0) - v(0.0, 0.0)) * sx;
    let b = v(0.0, 1.0) + (v(1.0, 1.0) - v(0.0, 1.0)) * sx;
    a + (b - a) * sy
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn backdrop_at(scene: &Scene, x: f32, y: f32) -> [f32; 3] {
    let (w, h) = (scene.width as f32, scene.height as f32);
    match scene.backdrop {
        Backdrop::Plain(c) => c,
        Backdrop::Gradient { top, bottom } => lerp3(top, bottom, y / h),
        Backdrop::Radial { centre, corner } => {
            let dx = (x - w / 2.0) / (w / 2.0);
            let dy = (y - h / 2.0) / (h / 2.0);
            lerp3(centre, corner, ((dx * dx + dy * dy) / 2.0).min(1.0))
        }
        Backdrop::Paper { base, amplitude } => {
            let s = w.max(h) / 1000.0;
            let n = 0.6 * value_noise(scene.seed + 11, x, y, 3.0 * s)
                + 0.3 * value_noise(scene.seed + 12, x, y, 12.0 * s)
                + 0.4 * value_noise(scene.seed + 13, x, y, 90.0 * s);
            let v = amplitude * n;
            [base[0] + v, base[1] + v, base[2] + v]
        }
    }
}

fn fabric_at(scene: &Scene, x: f32, y: f32) -> [f32; 3] {
    let s = scene.width.max(scene.height) as f32 / 1000.0;
    // Soft folds: low-frequency shading of the fabric.
    let fold = 1.0 + scene.folds * value_noise(scene.seed + 21, x, y, 120.0 * s);
    let knit = |amp: f32| amp * normal(scene.seed + 22, x as u64, y as u64);
    let c = match scene.fabric {
        Fabric::Plain { color, texture } => {
            let k = knit(texture);
            [color[0] + k, color[1] + k, color[2] + k]
        }
        Fabric::Stripes {
            base,
            stripe,
            period,
        } => {
            let on = (x / (period * s)).fract() < 0.3;
            let k = knit(6.0);
            let c = if on { stripe } else { base };
            [c[0] + k, c[1] + k, c[2] + k]
        }
        Fabric::Check { base, line, period } => {
            let p = period * s;
            let on = (x / p).fract() < 0.2 || (y / p).fract() < 0.2;
            let k = knit(5.0);
            let c = if on { line } else { base };
            [c[0] + k, c[1] + k, c[2] + k]
        }
        Fabric::HStripes {
            base,
            stripe,
            period,
            duty,
        } => {
            let on = (y / (period * s)).fract() < duty;
            let k = knit(4.0);
            let c = if on { stripe } else { base };
            [c[0] + k, c[1] + k, c[2] + k]
        }
        Fabric::Pinstripes {
            base,
            stripe,
            period,
            width,
        } => {
            let p = period * s;
            let on = x % p < width * s;
            let k = knit(3.0);
            let c = if on { stripe } else { base };
            [c[0] + k, c[1] + k, c[2] + k]
        }
        Fabric::Dots {
            base,
            dot,
            period,
            radius,
        } => {
            let p = period * s;
            let row = (y / p).floor();
            let shift = if row as i64 % 2 == 0 { 0.0 } else { 0.5 * p };
            let (cx, cy) = (
                ((x + shift) / p).floor() * p + 0.5 * p - shift,
                row * p + 0.5 * p,
            );
            let on = (x - cx).hypot(y - cy) < radius * s;
            let k = knit(4.0);
            let c = if on { dot } else { base };
            [c[0] + k, c[1] + k, c[2] + k]
        }
        Fabric::Blocks { colors } => {
            let (l, r) = (
                scene.frame.0 * scene.width as f32,
                scene.frame.2 * scene.width as f32,
            );
            let t = ((x - l) / (r - l)).clamp(0.0, 0.999);
            let c = colors[(t * 3.0) as usize];
            let k = knit(4.0);
            [c[0] + k, c[1] + k, c[2] + k]
        }
        Fabric::Ombre { top, bottom } => {
            let (t, b) = (
                scene.frame.1 * scene.height as f32,
                scene.frame.3 * scene.height as f32,
            );
            let c = lerp3(top, bottom, ((y - t) / (b - t)).clamp(0.0, 1.0));
            let k = knit(4.0);
            [c[0] + k, c[1] + k, c[2] + k]
        }
    };
    [c[0] * fold, c[1] * fold, c[2] * fold]
}

/// Renders the photo and its true mask (coverage, 0..=255).
pub fn render(scene: &Scene) -> (RgbImage, GrayImage) {
    let (w, h) = (scene.width as usize, scene.height as usize);
    let cov = coverage(scene);
    // Contact shadow: the silhouette shifted down and blurred, at 1/8 scale.
    let f = 8usize;
    let (sw, sh) = (w.div_ceil(f), h.div_ceil(f));
    let mut small = vec![0.0f32; sw * sh];
    let shift = (h as f32 * 0.0125) as usize;
    for y in 0..h {
        let ty = y + shift;
        if ty >= h {
            break;
        }
        for x in 0..w {
            small[(ty / f) * sw + x / f] += cov[y * w + x] / (f * f) as f32;
        }
    }
    let r = ((h as f32 / 60.0) / f as f32).max(1.0) as usize;
    for _ in 0..3 {
        small = blur(&small, sw, sh, r);
    }
    let mut photo = RgbImage::new(scene.width, scene.height);
    let mut truth = GrayImage::new(scene.width, scene.height);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let a = cov[y * w + x];
            let gx = (fx / f as f32 - 0.5).clamp(0.0, (sw - 1) as f32);
            let gy = (fy / f as f32 - 0.5).clamp(0.0, (sh - 1) as f32);
            let (x0, y0) = (gx as usize, gy as usize);
            let (x1, y1) = ((x0 + 1).min(sw - 1), (y0 + 1).min(sh - 1));
            let (tx, ty) = (gx - x0 as f32, gy - y0 as f32);
            let top = small[y0 * sw + x0] * (1.0 - tx) + small[y0 * sw + x1] * tx;
            let bottom = small[y1 * sw + x0] * (1.0 - tx) + small[y1 * sw + x1] * tx;
            let shade = 1.0 - scene.shadow * (top * (1.0 - ty) + bottom * ty).min(1.0);
            let b = backdrop_at(scene, fx, fy);
            let b = [b[0] * shade, b[1] * shade, b[2] * shade];
            let g = if a > 0.0 { fabric_at(scene, fx, fy) } else { b };
            let n = scene.noise * normal(scene.seed + 31, x as u64, y as u64);
            let px = [0, 1, 2]
                .map(|c| (g[c] * a + b[c] * (1.0 - a) + n).round().clamp(0.0, 255.0) as u8);
            photo.put_pixel(x as u32, y as u32, Rgb(px));
            truth.put_pixel(x as u32, y as u32, Luma([(a * 255.0).round() as u8]));
        }
    }
    if let Some(q) = scene.jpeg {
        let mut bytes = Vec::new();
        let enc = jpeg_encoder::Encoder::new(&mut bytes, q);
        enc.encode(
            photo.as_raw(),
            scene.width as u16,
            scene.height as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .expect("jpeg");
        photo = image::load_from_memory(&bytes).expect("decode").to_rgb8();
    }
    (photo, truth)
}

fn blur(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut tmp = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let (lo, hi) = (x.saturating_sub(r), (x + r).min(w - 1));
            let s: f32 = src[y * w + lo..=y * w + hi].iter().sum();
            tmp[y * w + x] = s / (hi - lo + 1) as f32;
        }
    }
    let mut out = vec![0.0f32; w * h];
    for y in 0..h {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(h - 1));
        for x in 0..w {
            let s: f32 = (lo..=hi).map(|yy| tmp[yy * w + x]).sum();
            out[y * w + x] = s / (hi - lo + 1) as f32;
        }
    }
    out
}

/// IoU of two masks thresholded at 127.
pub fn iou(a: &GrayImage, b: &GrayImage) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let (x, y) = (*x > 127, *y > 127);
        inter += u64::from(x && y);
        union += u64::from(x || y);
    }
    inter as f64 / union.max(1) as f64
}

/// The varied test set: shapes, colours, backdrops, shadows, resolutions.
pub fn test_set() -> Vec<Scene> {
    vec![
        Scene {
            fabric: Fabric::Stripes {
                base: [40.0, 70.0, 150.0],
                stripe: [80.0, 110.0, 170.0],
                period: 70.0,
            },
            backdrop: Backdrop::Gradient {
                top: [238.0, 238.0, 240.0],
                bottom: [214.0, 214.0, 217.0],
            },
            ..Scene::new("blue_stripes_gradient", 1600, 1600)
        },
        Scene {
            fabric: Fabric::Plain {
                color: [247.0, 247.0, 245.0],
                texture: 3.0,
            },
            backdrop: Backdrop::Plain([212.0, 212.0, 215.0]),
            shadow: 0.2,
            ..Scene::new("white_on_light_grey", 1200, 1500)
        },
        Scene {
            shape: Shape::Dress,
            fabric: Fabric::Plain {
                color: [212.0, 188.0, 150.0],
                texture: 4.0,
            },
            backdrop: Backdrop::Plain([234.0, 222.0, 202.0]),
            ..Scene::new("beige_dress_on_beige", 1200, 1600)
        },
        Scene {
            shape: Shape::Trousers,
            fabric: Fabric::Plain {
                color: [26.0, 26.0, 29.0],
                texture: 4.0,
            },
            backdrop: Backdrop::Plain([78.0, 78.0, 82.0]),
            shadow: 0.3,
            ..Scene::new("black_trousers_on_dark_grey", 1400, 1400)
        },
        Scene {
            shape: Shape::Hoodie,
            fabric: Fabric::Check {
                base: [170.0, 30.0, 35.0],
                line: [90.0, 15.0, 20.0],
                period: 60.0,
            },
            backdrop: Backdrop::Paper {
                base: [236.0, 231.0, 221.0],
                amplitude: 7.0,
            },
            ..Scene::new("red_check_hoodie_on_paper", 1200, 1200)
        },
        Scene {
            shape: Shape::Dress,
            fabric: Fabric::Plain {
                color: [40.0, 120.0, 60.0],
                texture: 5.0,
            },
            backdrop: Backdrop::Radial {
                centre: [242.0, 242.0, 242.0],
                corner: [188.0, 188.0, 192.0],
            },
            ..Scene::new("green_dress_vignette", 1000, 1333)
        },
        Scene {
            fabric: Fabric::Plain {
                color: [128.0, 128.0, 130.0],
                texture: 5.0,
            },
            backdrop: Backdrop::Plain([245.0, 245.0, 245.0]),
            shadow: 0.35,
            ..Scene::new("grey_on_white_strong_shadow", 1200, 1200)
        },
        Scene {
            shape: Shape::Trousers,
            fabric: Fabric::Plain {
                color: [60.0, 90.0, 140.0],
                texture: 8.0,
            },
            frame: (0.15, 0.2, 0.85, 1.05),
            ..Scene::new("denim_touching_bottom_border", 1200, 1200)
        },
        Scene {
            shape: Shape::Hoodie,
            fabric: Fabric::Plain {
                color: [236.0, 226.0, 200.0],
                texture: 4.0,
            },
            backdrop: Backdrop::Paper {
                base: [247.0, 246.0, 243.0],
                amplitude: 4.0,
            },
            shadow: 0.2,
            ..Scene::new("cream_hoodie_on_white_paper", 1200, 1200)
        },
        Scene {
            fabric: Fabric::Plain {
                color: [170.0, 195.0, 225.0],
                texture: 4.0,
            },
            backdrop: Backdrop::Gradient {
                top: [226.0, 226.0, 228.0],
                bottom: [206.0, 206.0, 209.0],
            },
            ..Scene::new("light_blue_on_light_grey", 1200, 1200)
        },
        Scene {
            shape: Shape::Dress,
            fabric: Fabric::Plain {
                color: [235.0, 150.0, 175.0],
                texture: 5.0,
            },
            frame: (0.38, 0.25, 0.62, 0.8),
            jpeg: Some(85),
            ..Scene::new("small_pink_dress_landscape", 2400, 1800)
        },
        Scene {
            shape: Shape::Hoodie,
            fabric: Fabric::Plain {
                color: [25.0, 35.0, 80.0],
                texture: 5.0,
            },
            backdrop: Backdrop::Gradient {
                top: [236.0, 236.0, 236.0],
                bottom: [205.0, 205.0, 210.0],
            },
            jpeg: Some(88),
            ..Scene::new("navy_hoodie_phone_3024x4032", 3024, 4032)
        },
    ]
}

/// Patterned garments where one pattern colour is close to the backdrop
/// (down to about 10 grey levels): horizontal stripes meeting the silhouette,
/// checks, dots, colour blocks, pinstripes on a dark backdrop, white on white,
/// an ombré, gradients, vignetting, shadows and phone resolutions.
pub fn patterned_set() -> Vec<Scene> {
    const NAVY: [f32; 3] = [31.0, 43.0, 69.0];
    vec![
        // Like examples/tshirt.jpg: navy and off-white stripes on light grey.
        Scene {
            fabric: Fabric::HStripes {
                base: NAVY,
                stripe: [236.0, 237.0, 232.0],
                period: 80.0,
                duty: 0.5,
            },
            backdrop: Backdrop::Gradient {
                top: [196.0, 196.0, 194.0],
                bottom: [211.0, 211.0, 209.0],
            },
            shadow: 0.15,
            ..Scene::new("breton_navy_offwhite_on_grey", 1200, 1600)
        },
        // The stripe is 10 grey levels brighter than the backdrop.
        Scene {
            fabric: Fabric::HStripes {
                base: NAVY,
                stripe: [222.0, 222.0, 222.0],
                period: 60.0,
                duty: 0.4,
            },
            backdrop: Backdrop::Plain([212.0, 212.0, 212.0]),
            ..Scene::new("stripes_10_above_backdrop", 1500, 1500)
        },
        // The stripe is 10 grey levels darker than the backdrop (shadow-like).
        Scene {
            shape: Shape::Hoodie,
            fabric: Fabric::HStripes {
                base: [150.0, 30.0, 40.0],
                stripe: [200.0, 200.0, 202.0],
                period: 90.0,
                duty: 0.35,
            },
            backdrop: Backdrop::Plain([210.0, 210.0, 212.0]),
            ..Scene::new("stripes_10_below_backdrop_hoodie", 1400, 1400)
        },
        // Wide vertical stripes: whole panels of the backdrop's colour.
        Scene {
            fabric: Fabric::Stripes {
                base: [60.0, 110.0, 70.0],
                stripe: [226.0, 226.0, 229.0],
                period: 110.0,
            },
            backdrop: Backdrop::Plain([238.0, 238.0, 240.0]),
            ..Scene::new("vertical_stripes_12_from_backdrop", 1600, 1600)
        },
        Scene {
            shape: Shape::Hoodie,
            fabric: Fabric::Check {
                base: [40.0, 60.0, 130.0],
                line: [240.0, 238.0, 232.0],
                period: 70.0,
            },
            backdrop: Backdrop::Paper {
                base: [228.0, 226.0, 220.0],
                amplitude: 3.0,
            },
            ..Scene::new("check_light_lines_on_paper", 1300, 1300)
        },
        Scene {
            fabric: Fabric::Dots {
                base: [246.0, 246.0, 244.0],
                dot: NAVY,
                period: 50.0,
                radius: 9.0,
            },
            backdrop: Backdrop::Plain([236.0, 236.0, 236.0]),
            shadow: 0.2,
            // Folds of 2 % keep the white at least 5 levels above the backdrop.
            folds: 0.02,
            ..Scene::new("white_dots_shirt_on_white", 1400, 1400)
        },
        Scene {
            shape: Shape::Dress,
            fabric: Fabric::Blocks {
                colors: [
                    [214.0, 206.0, 190.0],
                    [170.0, 40.0, 45.0],
                    [30.0, 40.0, 70.0],
                ],
            },
            backdrop: Backdrop::Plain([224.0, 216.0, 202.0]),
            ..Scene::new("colour_block_dress_beige_panel", 1200, 1600)
        },
        Scene {
            shape: Shape::Trousers,
            fabric: Fabric::Pinstripes {
                base: [38.0, 38.0, 44.0],
                stripe: [150.0, 150.0, 155.0],
                period: 26.0,
                width: 2.5,
            },
            backdrop: Backdrop::Plain([52.0, 52.0, 58.0]),
            // A contact shadow deeper than about 15 % makes a dark backdrop
            // next to the garment darker than the garment itself.
            shadow: 0.12,
            ..Scene::new("pinstripe_trousers_on_dark", 1400, 1400)
        },
        Scene {
            shape: Shape::Hoodie,
            fabric: Fabric::Plain {
                color: [250.0, 250.0, 248.0],
                texture: 2.0,
            },
            backdrop: Backdrop::Paper {
                base: [240.0, 240.0, 239.0],
                amplitude: 2.0,
            },
            shadow: 0.2,
            folds: 0.02,
            ..Scene::new("white_hoodie_on_white_paper", 1300, 1300)
        },
        Scene {
            shape: Shape::Dress,
            fabric: Fabric::Ombre {
                top: [224.0, 224.0, 226.0],
                bottom: [40.0, 60.0, 120.0],
            },
            backdrop: Backdrop::Gradient {
                top: [236.0, 236.0, 238.0],
                bottom: [214.0, 214.0, 216.0],
            },
            ..Scene::new("ombre_dress_top_near_backdrop", 1200, 1600)
        },
        Scene {
            fabric: Fabric::Check {
                base: [200.0, 196.0, 188.0],
                line: [120.0, 40.0, 40.0],
                period: 55.0,
            },
            backdrop: Backdrop::Radial {
                centre: [210.0, 206.0, 198.0],
                corner: [176.0, 172.0, 166.0],
            },
            shadow: 0.35,
            ..Scene::new("check_base_near_vignette_strong_shadow", 1400, 1400)
        },
        Scene {
            shape: Shape::Hoodie,
            fabric: Fabric::HStripes {
                base: [20.0, 30.0, 60.0],
                stripe: [224.0, 224.0, 220.0],
                period: 70.0,
                duty: 0.5,
            },
            backdrop: Backdrop::Gradient {
                top: [236.0, 236.0, 236.0],
                bottom: [206.0, 206.0, 210.0],
            },
            jpeg: Some(88),
            ..Scene::new("striped_hoodie_phone_3024x4032", 3024, 4032)
        },
        Scene {
            shape: Shape::Trousers,
            fabric: Fabric::Dots {
                base: [190.0, 200.0, 215.0],
                dot: [250.0, 250.0, 250.0],
                period: 40.0,
                radius: 8.0,
            },
            backdrop: Backdrop::Plain([240.0, 240.0, 240.0]),
            frame: (0.3, 0.1, 0.7, 0.92),
            jpeg: Some(85),
            ..Scene::new("dotted_trousers_phone_landscape_4000x3000", 4000, 3000)
        },
        Scene {
            shape: Shape::Hoodie,
            fabric: Fabric::Blocks {
                colors: [[60.0, 60.0, 64.0], [200.0, 160.0, 40.0], [70.0, 72.0, 76.0]],
            },
            backdrop: Backdrop::Plain([80.0, 80.0, 84.0]),
            shadow: 0.12,
            ..Scene::new("dark_blocks_on_dark_grey", 1400, 1400)
        },
    ]
}
