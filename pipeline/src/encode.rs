//! Encoding: Lanczos3 downscale to a max side, PNG where transparency or
//! losslessness is needed, JPEG otherwise; outputs encoded in parallel.

use std::sync::Mutex;

use fast_image_resize as fr;
use image::{DynamicImage, GrayImage, RgbImage, RgbaImage};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::PipelineError;
use crate::options::EncodingOptions;
use crate::output::EncodedOutput;

/// How an output's pixels must be treated by the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A photo-like image: PNG when any pixel is not opaque, else JPEG
    /// (alpha flattened on white).
    Picture,
    /// A soft alpha mask: grayscale PNG, resized with Lanczos3.
    Mask,
    /// A label map: grayscale PNG, resized with nearest-neighbour only so no
    /// label is invented.
    Labels,
}

/// Pixels of one output, borrowed or owned by the caller.
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// 8-bit RGB.
    Rgb(&'a RgbImage),
    /// 8-bit RGBA (straight alpha).
    Rgba(&'a RgbaImage),
    /// 8-bit grayscale.
    Gray(&'a GrayImage),
}

impl Pixels<'_> {
    fn dimensions(&self) -> (u32, u32) {
        match self {
            Pixels::Rgb(i) => i.dimensions(),
            Pixels::Rgba(i) => i.dimensions(),
            Pixels::Gray(i) => i.dimensions(),
        }
    }
}

/// One output to encode.
#[derive(Debug, Clone, Copy)]
pub struct OutputImage<'a> {
    /// Its role (becomes the file name's stem).
    pub role: &'a str,
    /// Its pixels.
    pub pixels: Pixels<'a>,
    /// How to treat them.
    pub kind: OutputKind,
}

/// Encodes all `images` in parallel, keeping their order.
pub fn encode_all(
    images: &[OutputImage<'_>],
    options: &EncodingOptions,
) -> Result<Vec<EncodedOutput>, PipelineError> {
    check_options(options)?;
    // One resizer per worker thread at a time, kept for the call: its
    // scratch buffers are allocated (and zeroed) once, not once an output.
    let pool = Mutex::new(Vec::<fr::Resizer>::new());
    images
        .par_iter()
        .map(|item| {
            let mut resizer = pool
                .lock()
                .ok()
                .and_then(|mut p| p.pop())
                .unwrap_or_default();
            let out = encode_with(item, options, &mut resizer);
            if let Ok(mut p) = pool.lock() {
                p.push(resizer);
            }
            out
        })
        .collect()
}

/// Encodes a decoded image of any colour type as a [`OutputKind::Picture`]
/// (or as the given kind), converting it to 8 bits first.
pub fn encode_dynamic(
    role: &str,
    image: &DynamicImage,
    kind: OutputKind,
    options: &EncodingOptions,
) -> Result<EncodedOutput, PipelineError> {
    check_options(options)?;
    let converted;
    let pixels = match (kind, image) {
        (OutputKind::Mask | OutputKind::Labels, DynamicImage::ImageLuma8(g)) => Pixels::Gray(g),
        (OutputKind::Mask | OutputKind::Labels, other) => {
            converted = Converted::Gray(other.to_luma8());
            converted.pixels()
        }
        (OutputKind::Picture, DynamicImage::ImageRgb8(i)) => Pixels::Rgb(i),
        (OutputKind::Picture, DynamicImage::ImageRgba8(i)) => Pixels::Rgba(i),
        (OutputKind::Picture, DynamicImage::ImageLuma8(i)) => Pixels::Gray(i),
        (OutputKind::Picture, other) if other.color().has_alpha() => {
            converted = Converted::Rgba(other.to_rgba8());
            converted.pixels()
        }
        (OutputKind::Picture, other) if other.color().has_color() => {
            converted = Converted::Rgb(other.to_rgb8());
            converted.pixels()
        }
        (OutputKind::Picture, other) => {
            converted = Converted::Gray(other.to_luma8());
            converted.pixels()
        }
    };
    encode_image(&OutputImage { role, pixels, kind }, options)
}

enum Converted {
    Rgb(RgbImage),
    Rgba(RgbaImage),
    Gray(GrayImage),
}

impl Converted {
    fn pixels(&self) -> Pixels<'_> {
        match self {
            Converted::Rgb(i) => Pixels::Rgb(i),
            Converted::Rgba(i) => Pixels::Rgba(i),
            Converted::Gray(i) => Pixels::Gray(i),
        }
    }
}

fn check_options(options: &EncodingOptions) -> Result<(), PipelineError> {
    if options.max_side == 0 {
        return Err(PipelineError::InvalidOptions(
            "encoding.maxSide must be at least 1".to_owned(),
        ));
    }
    if !(1..=100).contains(&options.jpeg_quality) {
        return Err(PipelineError::InvalidOptions(format!(
            "encoding.jpegQuality must be 1..=100, not {}",
            options.jpeg_quality
        )));
    }
    Ok(())
}

/// The size an image of `width`x`height` is encoded at: the longest side at
/// most `max_side`, aspect ratio kept, never upscaled.
pub fn target_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= max_side || long == 0 {
        return (width, height);
    }
    let scale = f64::from(max_side) / f64::from(long);
    let w = ((f64::from(width) * scale).round() as u32).clamp(1, max_side);
    let h = ((f64::from(height) * scale).round() as u32).clamp(1, max_side);
    (w, h)
}

/// Encodes one output.
pub fn encode_image(
    item: &OutputImage<'_>,
    options: &EncodingOptions,
) -> Result<EncodedOutput, PipelineError> {
    encode_with(item, options, &mut fr::Resizer::new())
}

fn encode_with(
    item: &OutputImage<'_>,
    options: &EncodingOptions,
    resizer: &mut fr::Resizer,
) -> Result<EncodedOutput, PipelineError> {
    let role = item.role;
    let err = |detail: String| PipelineError::Encode {
        role: role.to_owned(),
        detail,
    };
    let (w, h) = item.pixels.dimensions();
    let (tw, th) = target_size(w, h, options.max_side);
    let (format, width, height, bytes) = match (item.kind, item.pixels) {
        (OutputKind::Mask | OutputKind::Labels, Pixels::Gray(g)) => {
            let alg = if item.kind == OutputKind::Labels {
                fr::ResizeAlg::Nearest
            } else {
                fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3)
            };
            let data = resize_with(
                resizer,
                g.as_raw(),
                (w, h),
                (tw, th),
                fr::PixelType::U8,
                alg,
            )
            .map_err(err)?;
            let png = if item.kind == OutputKind::Labels {
                encode_png_indexed(&data, tw, th, &label_palette()).map_err(err)?
            } else {
                encode_png(&data, tw, th, png::ColorType::Grayscale).map_err(err)?
            };
            (Format::Png, tw, th, png)
        }
        (OutputKind::Mask | OutputKind::Labels, _) => {
            return Err(err("masks and label maps must be grayscale".to_owned()));
        }
        (OutputKind::Picture, Pixels::Gray(g)) => {
            let data = resize_with(
                resizer,
                g.as_raw(),
                (w, h),
                (tw, th),
                fr::PixelType::U8,
                lanczos(),
            )
            .map_err(err)?;
            let jpg = encode_jpeg(
                &data,
                tw,
                th,
                jpeg_encoder::ColorType::Luma,
                options.jpeg_quality,
            )
            .map_err(err)?;
            (Format::Jpeg, tw, th, jpg)
        }
        (OutputKind::Picture, Pixels::Rgb(i)) => {
            let data = resize_with(
                resizer,
                i.as_raw(),
                (w, h),
                (tw, th),
                fr::PixelType::U8x3,
                lanczos(),
            )
            .map_err(err)?;
            let jpg = encode_jpeg(
                &data,
                tw,
                th,
                jpeg_encoder::ColorType::Rgb,
                options.jpeg_quality,
            )
            .map_err(err)?;
            (Format::Jpeg, tw, th, jpg)
        }
        (OutputKind::Picture, Pixels::Rgba(i)) => {
            let data = resize_rgba(resizer, i.as_raw(), (w, h), (tw, th)).map_err(err)?;
            if data.chunks_exact(4).any(|p| p[3] != 255) {
                let png = encode_png(&data, tw, th, png::ColorType::Rgba).map_err(err)?;
                (Format::Png, tw, th, png)
            } else {
                let rgb = flatten_on_white(&data);
                let jpg = encode_jpeg(
                    &rgb,
                    tw,
                    th,
                    jpeg_encoder::ColorType::Rgb,
                    options.jpeg_quality,
                )
                .map_err(err)?;
                (Format::Jpeg, tw, th, jpg)
            }
        }
    };
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(EncodedOutput {
        role: role.to_owned(),
        file_name: format!("{role}.{}", format.extension()),
        media_type: format.media_type(),
        width,
        height,
        bytes,
        sha256,
    })
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Png,
    Jpeg,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpg",
        }
    }
    fn media_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
        }
    }
}

fn lanczos() -> fr::ResizeAlg {
    // Lanczos3, computed with one `sin` a tap instead of two (the library's
    // own filter calls `sin` twice; its coefficients are most of the cost of
    // setting up a resize).
    match fr::Filter::new("Lanczos3", lanczos3, 3.0) {
        Ok(filter) => fr::ResizeAlg::Convolution(fr::FilterType::Custom(filter)),
        Err(_) => fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3),
    }
}

/// The Lanczos3 kernel `sinc(x)·sinc(x/3)` on [-3, 3). With `t = πx/3`,
/// `sin(πx) = sin(3t) = sin t·(3 − 4 sin² t)`, so one `sin` gives both.
fn lanczos3(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    if !(-3.0..3.0).contains(&x) {
        return 0.0;
    }
    let t = x * (std::f64::consts::PI / 3.0);
    let s = t.sin();
    s * s * (3.0 - 4.0 * s * s) / (3.0 * t * t)
}

/// Resizes raw 8-bit pixels; returns them unchanged (copied) when the size
/// does not change. RGBA is resized with premultiplied alpha.
pub(crate) fn resize(
    data: &[u8],
    w: u32,
    h: u32,
    tw: u32,
    th: u32,
    pixel_type: fr::PixelType,
    alg: fr::ResizeAlg,
) -> Result<Vec<u8>, String> {
    resize_with(
        &mut fr::Resizer::new(),
        data,
        (w, h),
        (tw, th),
        pixel_type,
        alg,
    )
}

fn resize_with(
    resizer: &mut fr::Resizer,
    data: &[u8],
    (w, h): (u32, u32),
    (tw, th): (u32, u32),
    pixel_type: fr::PixelType,
    alg: fr::ResizeAlg,
) -> Result<Vec<u8>, String> {
    if (w, h) == (tw, th) {
        return Ok(data.to_vec());
    }
    let src = fr::images::ImageRef::new(w, h, data, pixel_type).map_err(|e| e.to_string())?;
    let mut dst = fr::images::Image::new(tw, th, pixel_type);
    resizer
        .resize(&src, &mut dst, &fr::ResizeOptions::new().resize_alg(alg))
        .map_err(|e| e.to_string())?;
    Ok(dst.into_vec())
}

/// The smallest box `(x0, y0, x1, y1)` (inclusive) holding every pixel of
/// RGBA `data` (`w` wide) whose alpha is not 0; `None` when all are 0.
fn alpha_box(data: &[u8], w: usize) -> Option<(usize, usize, usize, usize)> {
    let mut found: Option<(usize, usize, usize, usize)> = None;
    for (y, row) in data.chunks_exact(w * 4).enumerate() {
        let Some(first) = first_with_alpha(row) else {
            continue;
        };
        let last = last_with_alpha(row).unwrap_or(first);
        found = Some(match found {
            None => (first, y, last, y),
            Some((x0, y0, x1, _)) => (x0.min(first), y0, x1.max(last), y),
        });
    }
    found
}

/// Pixels (RGBA) tested a step when looking for alpha: a branch-free OR over
/// 16 pixels' little-endian words (vectorised), then the step's pixels one
/// by one only where it is not 0.
const ALPHA_STEP: usize = 16;

fn alpha_in(px: &[u8]) -> bool {
    px.chunks_exact(4)
        .fold(0u32, |acc, p| acc | u32::from(p[3]))
        != 0
}

/// The first pixel of an RGBA `row` with alpha not 0.
fn first_with_alpha(row: &[u8]) -> Option<usize> {
    let step = ALPHA_STEP * 4;
    for (i, chunk) in row.chunks(step).enumerate() {
        if alpha_in(chunk) {
            let x = chunk.chunks_exact(4).position(|p| p[3] != 0)?;
            return Some(i * ALPHA_STEP + x);
        }
    }
    None
}

/// The last pixel of an RGBA `row` with alpha not 0.
fn last_with_alpha(row: &[u8]) -> Option<usize> {
    let step = ALPHA_STEP * 4;
    let pixels = row.len() / 4;
    for (i, chunk) in row.rchunks(step).enumerate() {
        if alpha_in(chunk) {
            let x = chunk.chunks_exact(4).rposition(|p| p[3] != 0)?;
            return Some(pixels - chunk.len() / 4 - i * ALPHA_STEP + x);
        }
    }
    None
}

/// Lanczos3 resize of straight-alpha RGBA. A cut-out is mostly transparent:
/// only the destination rectangle around the source's alpha box (plus the
/// kernel's reach) is computed, from only the source pixels that rectangle
/// reads (premultiplied alpha is computed for those alone), with the same
/// sampling positions as a full resize; the rest stays transparent black,
/// which is what a full resize with premultiplied alpha gives there.
fn resize_rgba(
    resizer: &mut fr::Resizer,
    data: &[u8],
    (w, h): (u32, u32),
    (tw, th): (u32, u32),
) -> Result<Vec<u8>, String> {
    let full = |resizer: &mut fr::Resizer| {
        resize_with(
            resizer,
            data,
            (w, h),
            (tw, th),
            fr::PixelType::U8x4,
            lanczos(),
        )
    };
    if (w, h) == (tw, th) {
        return Ok(data.to_vec());
    }
    let Some((x0, y0, x1, y1)) = alpha_box(data, w as usize) else {
        return Ok(vec![0u8; tw as usize * th as usize * 4]); // fully transparent
    };
    let (sx, sy) = (f64::from(tw) / f64::from(w), f64::from(th) / f64::from(h));
    // Lanczos3 reaches 3 source pixels (scaled) either side: 4 output pixels
    // of margin covers it for any downscale.
    let dx0 = ((x0 as f64 * sx).floor() as u32).saturating_sub(4);
    let dy0 = ((y0 as f64 * sy).floor() as u32).saturating_sub(4);
    let dx1 = (((x1 + 1) as f64 * sx).ceil() as u32 + 4).min(tw);
    let dy1 = (((y1 + 1) as f64 * sy).ceil() as u32 + 4).min(th);
    let (dw, dh) = (dx1 - dx0, dy1 - dy0);
    if u64::from(dw) * u64::from(dh) * 10 > u64::from(tw) * u64::from(th) * 7 {
        return full(resizer);
    }
    // The source pixels the destination rectangle reads: its sampling
    // centres plus the kernel's reach (3 / scale), and a pixel for rounding.
    let reach = |scale: f64| (3.0 / scale.min(1.0)).ceil() + 1.0;
    let src_box = |d0: u32, d1: u32, scale: f64, size: u32| {
        let lo = (f64::from(d0) / scale - reach(scale)).floor().max(0.0) as u32;
        let hi = ((f64::from(d1) / scale + reach(scale)).ceil() as u32).min(size);
        (lo, hi)
    };
    let (rx0, rx1) = src_box(dx0, dx1, sx, w);
    let (ry0, ry1) = src_box(dy0, dy1, sy, h);
    let src =
        fr::images::ImageRef::new(w, h, data, fr::PixelType::U8x4).map_err(|e| e.to_string())?;
    let src = fr::images::CroppedImage::new(&src, rx0, ry0, rx1 - rx0, ry1 - ry0)
        .map_err(|e| e.to_string())?;
    let mut out = fr::images::Image::new(tw, th, fr::PixelType::U8x4);
    {
        let mut dst = fr::images::CroppedImageMut::new(&mut out, dx0, dy0, dw, dh)
            .map_err(|e| e.to_string())?;
        let options = fr::ResizeOptions::new().resize_alg(lanczos()).crop(
            f64::from(dx0) / sx - f64::from(rx0),
            f64::from(dy0) / sy - f64::from(ry0),
            f64::from(dw) / sx,
            f64::from(dh) / sy,
        );
        resizer
            .resize(&src, &mut dst, &options)
            .map_err(|e| e.to_string())?;
    }
    Ok(out.into_vec())
}

/// Lanczos3 resize of 8-bit RGB.
pub(crate) fn resize_rgb(data: &[u8], w: u32, h: u32, tw: u32, th: u32) -> Result<Vec<u8>, String> {
    resize(data, w, h, tw, th, fr::PixelType::U8x3, lanczos())
}

/// Lanczos3 resize of straight-alpha RGBA over the whole frame.
pub(crate) fn resize_rgba_full(
    data: &[u8],
    w: u32,
    h: u32,
    tw: u32,
    th: u32,
) -> Result<Vec<u8>, String> {
    resize(data, w, h, tw, th, fr::PixelType::U8x4, lanczos())
}

fn flatten_on_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for p in rgba.chunks_exact(4) {
        let a = u32::from(p[3]);
        for &c in &p[..3] {
            out.push(((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    out
}

fn encode_jpeg(
    data: &[u8],
    w: u32,
    h: u32,
    color: jpeg_encoder::ColorType,
    quality: u8,
) -> Result<Vec<u8>, String> {
    let (w16, h16) = match (u16::try_from(w), u16::try_from(h)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(format!("{w}x{h} is too large for JPEG (65535 max)")),
    };
    let mut out = Vec::with_capacity(data.len() / 8);
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    // Optimised Huffman tables would save ~12 % of JPEG bytes, but with 4:2:0
    // jpeg-encoder 0.7.1's optimised tables decode with a green cast in
    // zune-jpeg (the `image` crate's decoder); libjpeg reads them fine. Our
    // outputs must decode correctly everywhere, so keep the standard tables.
    enc.set_optimized_huffman_tables(false);
    enc.encode(data, w16, h16, color)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The colour a label map's value is shown in: 0 (background) black, then
/// twelve distinct colours, and further labels spread around the hue circle.
pub fn label_color(label: u8) -> [u8; 3] {
    const FIRST: [[u8; 3]; 12] = [
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [255, 225, 25],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [170, 110, 40],
    ];
    match label {
        0 => [0, 0, 0],
        1..=12 => FIRST[usize::from(label) - 1],
        _ => {
            // Golden-angle hues at full saturation and value.
            let hue = (f32::from(label) * 137.508).rem_euclid(360.0) / 60.0;
            let x = 1.0 - (hue.rem_euclid(2.0) - 1.0).abs();
            let (r, g, b) = match hue as u32 {
                0 => (1.0, x, 0.0),
                1 => (x, 1.0, 0.0),
                2 => (0.0, 1.0, x),
                3 => (0.0, x, 1.0),
                4 => (x, 0.0, 1.0),
                _ => (1.0, 0.0, x),
            };
            [r, g, b].map(|v: f32| (v * 255.0).round() as u8)
        }
    }
}

/// `#rrggbb` of [`label_color`].
pub fn label_hex(label: u8) -> String {
    let [r, g, b] = label_color(label);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The 256-entry RGB palette of the `segments` output.
fn label_palette() -> Vec<u8> {
    (0..=255u8).flat_map(label_color).collect()
}

/// The label values of a `segments` PNG (its palette indices; a grayscale
/// PNG's values), whatever its palette shows.
pub fn decode_labels(bytes: &[u8]) -> Result<image::GrayImage, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or("image too large")?];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    if info.bit_depth != png::BitDepth::Eight
        || !matches!(
            info.color_type,
            png::ColorType::Indexed | png::ColorType::Grayscale
        )
    {
        return Err(format!(
            "not an 8-bit label map: {:?} {:?}",
            info.color_type, info.bit_depth
        ));
    }
    buf.truncate(info.buffer_size());
    image::GrayImage::from_raw(info.width, info.height, buf).ok_or_else(|| "size".to_owned())
}

/// An 8-bit indexed PNG of `data` (one index a pixel) with `palette` (RGB).
fn encode_png_indexed(data: &[u8], w: u32, h: u32, palette: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() / 8);
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(palette.to_vec());
        enc.set_deflate_compression(png::DeflateCompression::Level(2));
        enc.set_filter(png::Filter::Up);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn encode_png(data: &[u8], w: u32, h: u32, color: png::ColorType) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() / 4);
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        // Measured on the fixture (zlib-rs, one thread): level 2 with the Up
        // filter encodes the two RGBA outputs in ~3-5 ms less than level 3 for
        // 2.3 % more PNG bytes (all seven outputs: 1.09x Pillow's, against
        // 1.07x at level 3). Levels 1 and fdeflate are 1.6x the bytes; libdeflate
        // was no faster at equal size; Sub/Avg/Paeth/adaptive no better than Up.
        enc.set_deflate_compression(png::DeflateCompression::Level(2));
        enc.set_filter(png::Filter::Up);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alpha_box_is_found_at_any_position() {
        let (w, h) = (37usize, 9usize);
        assert_eq!(alpha_box(&vec![0u8; w * h * 4], w), None);
        for &(x0, y0, x1, y1) in &[
            (0, 0, 0, 0),
            (36, 8, 36, 8),
            (3, 2, 20, 5),
            (0, 4, 36, 4),
            (16, 1, 17, 7),
        ] {
            let mut data = vec![0u8; w * h * 4];
            for &(x, y) in &[(x0, y0), (x1, y1)] {
                data[(y * w + x) * 4 + 3] = 1;
            }
            // Colour without alpha does not count.
            data[(8 * w + 30) * 4] = 255;
            assert_eq!(
                alpha_box(&data, w),
                Some((x0, y0, x1, y1)),
                "{x0},{y0},{x1},{y1}"
            );
        }
    }

    #[test]
    fn one_sin_lanczos3_is_the_lanczos3_kernel() {
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                (x * std::f64::consts::PI).sin() / (x * std::f64::consts::PI)
            }
        };
        for i in -400..=400 {
            let x = f64::from(i) / 100.0;
            let want = if x.abs() < 3.0 {
                sinc(x) * sinc(x / 3.0)
            } else {
                0.0
            };
            assert!(
                (lanczos3(x) - want).abs() < 1e-12,
                "x={x}: {} vs {want}",
                lanczos3(x)
            );
        }
    }

    #[test]
    fn our_lanczos3_resizes_as_the_librarys() {
        let (w, h) = (613u32, 401u32);
        let data: Vec<u8> = (0..w * h * 3)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let (tw, th) = target_size(w, h, 256);
        let ours = resize(&data, w, h, tw, th, fr::PixelType::U8x3, lanczos()).unwrap();
        let library = resize(
            &data,
            w,
            h,
            tw,
            th,
            fr::PixelType::U8x3,
            fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3),
        )
        .unwrap();
        let worst = ours.iter().zip(&library).map(|(a, b)| a.abs_diff(*b)).max();
        assert!(
            worst.is_some_and(|d| d <= 1),
            "largest difference {worst:?}"
        );
    }

    #[test]
    fn sparse_rgba_resize_matches_the_full_resize() {
        // A soft-edged opaque disc with texture on a transparent 700x500 frame.
        let (w, h) = (700u32, 500u32);
        let mut data = vec![0u8; (w * h * 4) as usize];
        for y in 0..h {
            for x in 0..w {
                let d = ((x as f32 - 420.0).powi(2) + (y as f32 - 260.0).powi(2)).sqrt();
                let a = ((120.0 - d) / 3.0).clamp(0.0, 1.0);
                if a > 0.0 {
                    let i = ((y * w + x) * 4) as usize;
                    data[i] = (x * 7 % 256) as u8;
                    data[i + 1] = (y * 3 % 256) as u8;
                    data[i + 2] = 90;
                    data[i + 3] = (a * 255.0) as u8;
                }
            }
        }
        let (tw, th) = target_size(w, h, 333);
        let full = resize(&data, w, h, tw, th, fr::PixelType::U8x4, lanczos()).unwrap();
        let sparse = resize_rgba(&mut fr::Resizer::new(), &data, (w, h), (tw, th)).unwrap();
        let worst = full
            .iter()
            .zip(&sparse)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 1, "largest difference {worst}");
        assert!(full.iter().any(|&v| v != 0));
    }
}
