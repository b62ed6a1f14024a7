//! Encoding: Lanczos3 downscale to a max side, PNG where transparency or
//! losslessness is needed, JPEG otherwise; outputs encoded in parallel.

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
    images
        .par_iter()
        .map(|item| encode_image(item, options))
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
            let data = resize(g.as_raw(), w, h, tw, th, fr::PixelType::U8, alg).map_err(err)?;
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
            let data =
                resize(g.as_raw(), w, h, tw, th, fr::PixelType::U8, lanczos()).map_err(err)?;
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
            let data =
                resize(i.as_raw(), w, h, tw, th, fr::PixelType::U8x3, lanczos()).map_err(err)?;
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
            let data = resize_rgba(i.as_raw(), w, h, tw, th).map_err(err)?;
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
    fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3)
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
    if (w, h) == (tw, th) {
        return Ok(data.to_vec());
    }
    let src = fr::images::ImageRef::new(w, h, data, pixel_type).map_err(|e| e.to_string())?;
    let mut dst = fr::images::Image::new(tw, th, pixel_type);
    let mut resizer = fr::Resizer::new();
    resizer
        .resize(&src, &mut dst, &fr::ResizeOptions::new().resize_alg(alg))
        .map_err(|e| e.to_string())?;
    Ok(dst.into_vec())
}

/// Lanczos3 resize of straight-alpha RGBA. A cut-out is mostly transparent:
/// only the destination rectangle around the source's alpha box (plus the
/// kernel's reach) is computed, with the same sampling positions as a full
/// resize; the rest stays transparent black, which is what a full resize with
/// premultiplied alpha gives there.
pub(crate) fn resize_rgba(
    data: &[u8],
    w: u32,
    h: u32,
    tw: u32,
    th: u32,
) -> Result<Vec<u8>, String> {
    if (w, h) == (tw, th) {
        return Ok(data.to_vec());
    }
    let (wu, hu) = (w as usize, h as usize);
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
    for (y, row) in data.chunks_exact(wu * 4).enumerate().take(hu) {
        let mut first = None;
        let mut last = 0;
        for (x, px) in row.chunks_exact(4).enumerate() {
            if px[3] != 0 {
                first.get_or_insert(x);
                last = x;
            }
        }
        if let Some(f) = first {
            x0 = x0.min(f);
            x1 = x1.max(last);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    let mut out = vec![0u8; tw as usize * th as usize * 4];
    if x0 > x1 {
        return Ok(out); // fully transparent
    }
    let (sx, sy) = (f64::from(tw) / f64::from(w), f64::from(th) / f64::from(h));
    // Lanczos3 reaches 3 source pixels (scaled) either side: 4 output pixels
    // of margin covers it for any downscale.
    let dx0 = ((x0 as f64 * sx).floor() as u32).saturating_sub(4);
    let dy0 = ((y0 as f64 * sy).floor() as u32).saturating_sub(4);
    let dx1 = (((x1 + 1) as f64 * sx).ceil() as u32 + 4).min(tw);
    let dy1 = (((y1 + 1) as f64 * sy).ceil() as u32 + 4).min(th);
    let (dw, dh) = (dx1 - dx0, dy1 - dy0);
    if u64::from(dw) * u64::from(dh) * 10 > u64::from(tw) * u64::from(th) * 7 {
        return resize(data, w, h, tw, th, fr::PixelType::U8x4, lanczos());
    }
    let src =
        fr::images::ImageRef::new(w, h, data, fr::PixelType::U8x4).map_err(|e| e.to_string())?;
    let mut dst = fr::images::Image::new(dw, dh, fr::PixelType::U8x4);
    let options = fr::ResizeOptions::new().resize_alg(lanczos()).crop(
        f64::from(dx0) / sx,
        f64::from(dy0) / sy,
        f64::from(dw) / sx,
        f64::from(dh) / sy,
    );
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| e.to_string())?;
    let part = dst.buffer();
    let (tw_us, dw_us) = (tw as usize, dw as usize);
    for (row, chunk) in part.chunks_exact(dw_us * 4).enumerate() {
        let o = ((dy0 as usize + row) * tw_us + dx0 as usize) * 4;
        out[o..o + dw_us * 4].copy_from_slice(chunk);
    }
    Ok(out)
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
        enc.set_deflate_compression(png::DeflateCompression::Level(3));
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
        // Measured on the fixture (zlib-rs): level 3 with the Up filter is within
        // 6 % of Pillow's optimize=True size at ~30x its speed.
        enc.set_deflate_compression(png::DeflateCompression::Level(3));
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
        let sparse = resize_rgba(&data, w, h, tw, th).unwrap();
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
