//! `decode`: bytes to an upright image, with format sniffing, limits, EXIF orientation and
//! a check that the file is whole.
//!
//! A truncated file is an error whose message starts with [`TRUNCATED`] (category
//! `BadInput`), never a picture with a grey block: the JPEG decoder fills what is missing
//! without a word, so the file's structure is walked first (a JPEG must reach its
//! end-of-image marker through its segments and entropy-coded data, a PNG its `IEND` chunk,
//! a WebP the length its RIFF header promises); decoder errors that mean the data ended
//! early (PNG, GIF) say so too.

use std::io::Cursor;

use image::error::{ImageError, LimitErrorKind};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::error::PipelineError;
use crate::limits::Limits;

/// How the message of a truncated input starts.
pub const TRUNCATED: &str = "truncated image";

/// Decodes a JPEG, PNG, WebP or GIF (first frame) from `bytes`.
///
/// The format is sniffed from the bytes (never from a file name), the
/// [`Limits`] are checked before the pixels are allocated (so a decompression
/// bomb fails fast with [`PipelineError::TooLarge`]), a truncated file is
/// [`PipelineError::Decode`] with a message starting with [`TRUNCATED`], and the
/// EXIF orientation is applied, so the result is upright. Grayscale, grayscale+alpha, 16-bit and
/// CMYK JPEG inputs come back as the matching [`DynamicImage`] variant (CMYK is
/// converted to RGB by the JPEG decoder).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<DynamicImage, PipelineError> {
    if bytes.is_empty() {
        return Err(PipelineError::EmptyInput);
    }
    let len = bytes.len() as u64;
    if len > limits.max_bytes {
        return Err(PipelineError::TooLarge {
            what: "bytes",
            actual: len,
            limit: limits.max_bytes,
        });
    }
    let format = sniff(bytes)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut image_limits = image::Limits::default();
    // Decoders may need the output buffer (up to 8 bytes per pixel for 16-bit
    // RGBA) plus some working memory.
    let max_alloc = limits
        .max_pixels
        .saturating_mul(8)
        .saturating_add(64 * 1024 * 1024);
    image_limits.max_alloc = Some(max_alloc);
    reader.limits(image_limits);
    let map_err = |e| map_image_error(e, max_alloc);
    let mut decoder = reader.into_decoder().map_err(map_err)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(PipelineError::TooLarge {
            what: "pixels",
            actual: pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(PipelineError::Decode(format!(
            "the image has no pixels ({width}x{height})"
        )));
    }
    check_whole(bytes, format)
        .map_err(|why| PipelineError::Decode(format!("{TRUNCATED}: {why}")))?;
    // A broken EXIF block must not fail an otherwise good photo.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(map_err)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// The format of `bytes` if it is one the pipeline reads.
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, PipelineError> {
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif)) => {
            Ok(f)
        }
        Ok(other) => Err(PipelineError::UnsupportedFormat(format!(
            "{other:?} images are not accepted (JPEG, PNG, WebP, GIF are)"
        ))),
        Err(_) => Err(PipelineError::UnsupportedFormat(
            "the bytes are not a JPEG, PNG, WebP or GIF image".to_owned(),
        )),
    }
}

fn map_image_error(err: ImageError, max_alloc: u64) -> PipelineError {
    match err {
        ImageError::Limits(limit) => match limit.kind() {
            LimitErrorKind::DimensionError => {
                PipelineError::Decode(format!("image dimensions rejected: {limit}"))
            }
            // The decoder wanted more working memory than the limit allows
            // (the amount it asked for is not reported).
            _ => PipelineError::TooLarge {
                what: "decoder memory (bytes)",
                actual: max_alloc.saturating_add(1),
                limit: max_alloc,
            },
        },
        ImageError::Unsupported(e) => PipelineError::UnsupportedFormat(e.to_string()),
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            PipelineError::Decode(format!("{TRUNCATED}: the data ends early"))
        }
        other => {
            let text = other.to_string();
            let lower = text.to_ascii_lowercase();
            if lower.contains("end of file") || lower.contains("unexpected eof") {
                PipelineError::Decode(format!("{TRUNCATED}: {text}"))
            } else {
                PipelineError::Decode(text)
            }
        }
    }
}

/// `Err(why)` when `bytes` (of `format`) end before the file does.
fn check_whole(bytes: &[u8], format: ImageFormat) -> Result<(), String> {
    match format {
        ImageFormat::Jpeg => jpeg_is_whole(bytes),
        ImageFormat::Png => png_is_whole(bytes),
        ImageFormat::WebP => webp_is_whole(bytes),
        // The GIF decoder reports a short file itself (its first frame is all we read).
        _ => Ok(()),
    }
}

/// Walks a JPEG's segments (lengths) and entropy-coded data (up to the next marker that
/// is not a stuffed byte or a restart) until the end-of-image marker.
fn jpeg_is_whole(bytes: &[u8]) -> Result<(), String> {
    let n = bytes.len();
    let short = |at: &str| {
        Err(format!(
            "the JPEG ends {at}, before its end-of-image marker ({n} bytes)"
        ))
    };
    let mut i = 2; // after SOI
    loop {
        // The next marker: 0xFF, any fill bytes, then the code.
        while i < n && bytes[i] != 0xFF {
            i += 1; // not at a marker: corrupt, not ours to judge; resynchronise
        }
        while i < n && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return short("between segments");
        };
        i += 1;
        match code {
            0xD9 => return Ok(()),
            // SOI, TEM, RST0-7, or a stuffed 0x00 out of place: no length.
            0xD8 | 0x01 | 0xD0..=0xD7 | 0x00 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(i..i + 2) else {
            return short("inside a segment header");
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            // Corrupt: leave it to the decoder.
            return Ok(());
        }
        i += len;
        if i > n {
            return short(&format!("inside a segment (marker 0x{code:02X})"));
        }
        if code == 0xDA {
            // Entropy-coded data: ends at a 0xFF that starts a marker.
            loop {
                let Some(&b) = bytes.get(i) else {
                    return short("inside the compressed image data");
                };
                if b != 0xFF {
                    i += 1;
                    continue;
                }
                match bytes.get(i + 1) {
                    None => return short("inside the compressed image data"),
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// Walks a PNG's chunks (length, type, data, CRC) until a whole `IEND` chunk.
fn png_is_whole(bytes: &[u8]) -> Result<(), String> {
    let n = bytes.len();
    let mut i = 8; // after the signature
    loop {
        let Some(head) = bytes.get(i..i + 8) else {
            return Err(format!("the PNG ends before its IEND chunk ({n} bytes)"));
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = String::from_utf8_lossy(&head[4..8]).into_owned();
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| i.checked_add(12)?.checked_add(l));
        match end {
            Some(end) if end <= n => {
                if &head[4..8] == b"IEND" {
                    return Ok(());
                }
                i = end;
            }
            _ => {
                return Err(format!(
                    "the PNG ends inside its {kind:?} chunk, before IEND ({n} bytes)"
                ));
            }
        }
    }
}

/// A WebP is as long as its RIFF header says.
fn webp_is_whole(bytes: &[u8]) -> Result<(), String> {
    let n = bytes.len() as u64;
    let Some(size) = bytes.get(4..8) else {
        return Err(format!("the WebP ends inside its header ({n} bytes)"));
    };
    let want = u64::from(u32::from_le_bytes([size[0], size[1], size[2], size[3]])) + 8;
    if n < want {
        return Err(format!(
            "the WebP has {n} of the {want} bytes its header announces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use image::{GenericImageView, Rgb, RgbImage};

    use super::*;

    /// A photo-like picture: gradients and texture, so every part of the file holds data.
    fn picture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 255 / w.max(1)) as u8,
                (y * 255 / h.max(1)) as u8,
                ((x * 7 + y * 13) % 256) as u8,
            ])
        })
    }

    fn jpeg(img: &RgbImage, progressive: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = jpeg_encoder::Encoder::new(&mut out, 85);
        e.set_progressive(progressive);
        let (w, h) = (img.width() as u16, img.height() as u16);
        e.encode(img.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), format).unwrap();
        out
    }

    fn assert_truncated(bytes: &[u8], what: &str) {
        match decode(bytes, &Limits::default()) {
            Err(e @ PipelineError::Decode(_)) => {
                assert!(e.to_string().contains(TRUNCATED), "{what}: {e}");
                assert!(e.is_bad_input());
                assert_eq!(e.category(), "BadInput");
            }
            Err(e) => panic!("{what}: {e}"),
            Ok(img) => panic!(
                "{what}: decoded as a {}x{} picture",
                img.width(),
                img.height()
            ),
        }
    }

    #[test]
    fn truncated_jpegs_and_pngs_are_errors_not_grey_blocks() {
        let img = picture(256, 192);
        let baseline = jpeg(&img, false);
        let progressive = jpeg(&img, true);
        let png = encoded(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png);
        let webp = encoded(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::WebP);
        let gif = encoded(&DynamicImage::ImageRgb8(img), ImageFormat::Gif);
        for (name, bytes) in [
            ("baseline JPEG", &baseline),
            ("progressive JPEG", &progressive),
            ("PNG", &png),
            ("WebP", &webp),
            ("GIF", &gif),
        ] {
            // The whole file decodes.
            let whole = decode(bytes, &Limits::default()).unwrap();
            assert_eq!(whole.dimensions(), (256, 192), "{name}");
            // Cut anywhere after the header: an error naming the truncation.
            let n = bytes.len();
            let header_end = if name == "GIF" { n / 4 } else { n / 10 };
            for cut in [header_end, n / 3, n / 2, n * 9 / 10, n - 12] {
                assert_truncated(&bytes[..cut], &format!("{name} cut at {cut}/{n}"));
            }
            // JPEG, PNG and WebP: even the last bytes missing (a GIF without its final
            // terminator and trailer still has its whole first frame, all that is read).
            if name != "GIF" {
                for missing in [1, 2, 3] {
                    assert_truncated(
                        &bytes[..n - missing],
                        &format!("{name} without its last {missing} bytes"),
                    );
                }
            }
        }
        // Trailing bytes after the end are fine (cameras append data).
        let mut trailing = baseline.clone();
        trailing.extend_from_slice(b"\0\0trailing data");
        decode(&trailing, &Limits::default()).unwrap();
    }

    #[test]
    fn the_jpeg_walk_knows_segments_and_entropy_coded_data() {
        // A JPEG with an EXIF segment holding a whole thumbnail (its own SOI..EOI).
        let img = picture(64, 48);
        let main = jpeg(&img, false);
        let thumb = jpeg(&picture(8, 8), false);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&thumb);
        let mut with_thumb = main[..2].to_vec();
        with_thumb.extend_from_slice(&[0xFF, 0xE1]);
        with_thumb.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        with_thumb.extend_from_slice(&app1);
        with_thumb.extend_from_slice(&main[2..]);
        assert_eq!(jpeg_is_whole(&with_thumb), Ok(()));
        // Cut right after the thumbnail's EOI: the main image is still missing.
        let cut = 2 + 4 + app1.len();
        assert!(jpeg_is_whole(&with_thumb[..cut]).is_err());
        // Cut inside the scan data, and inside a segment header.
        assert!(jpeg_is_whole(&main[..main.len() - 2]).is_err());
        assert!(jpeg_is_whole(&main[..5]).is_err());
        assert!(png_is_whole(b"\x89PNG\r\n\x1a\n\0\0\0").is_err());
        assert!(webp_is_whole(b"RIFF\x10\0\0\0WEBP").is_err());
    }

    /// The fuzz target over image decoding (`fuzz/fuzz_targets/decode.rs` runs the same):
    /// any bytes give an image within the limits or a bad-input error, never a panic.
    fn decode_target(data: &[u8], limits: &Limits) {
        match decode(data, limits) {
            Ok(img) => {
                let pixels = u64::from(img.width()) * u64::from(img.height());
                assert!(pixels <= limits.max_pixels, "{pixels} pixels decoded");
                assert!(pixels > 0);
            }
            Err(e) => assert!(e.is_bad_input(), "not a bad-input error: {e:?}"),
        }
    }

    /// A deterministic xorshift generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Peak resident memory of this process, in bytes (Linux), if known.
    fn peak_rss() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// The inputs of the corpus: real encoded images of every accepted format.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let img = picture(48, 32);
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(24, 16, |x, y| {
            image::Rgba([x as u8 * 9, y as u8 * 15, 128, (x * y) as u8])
        }));
        let gray16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(20, 12, |x, y| {
            image::Luma([(x * 3000 + y * 100) as u16])
        }));
        vec![
            ("jpeg", jpeg(&img, false)),
            ("progressive", jpeg(&img, true)),
            (
                "png",
                encoded(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png),
            ),
            ("png-rgba", encoded(&rgba, ImageFormat::Png)),
            ("png-16", encoded(&gray16, ImageFormat::Png)),
            (
                "gif",
                encoded(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Gif),
            ),
            (
                "webp",
                encoded(&DynamicImage::ImageRgb8(img), ImageFormat::WebP),
            ),
        ]
    }

    /// Header fields that set the size, blown up: the limits must refuse them before the
    /// pixels are allocated.
    fn huge_headers(name: &str, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut set = |at: usize, value: &[u8]| {
            if at + value.len() <= bytes.len() {
                let mut b = bytes.to_vec();
                b[at..at + value.len()].copy_from_slice(value);
                out.push(b);
            }
        };
        match name {
            "png" | "png-rgba" | "png-16" => {
                // IHDR width and height (CRC left wrong: decoders may or may not care).
                set(16, &[0x7F, 0xFF, 0xFF, 0xFF]);
                set(20, &[0x7F, 0xFF, 0xFF, 0xFF]);
                set(16, &[0, 1, 0, 0]);
            }
            "jpeg" | "progressive" => {
                // SOF0/SOF2: FF C0|C2 len(2) precision(1) height(2) width(2).
                if let Some(sof) = bytes
                    .windows(2)
                    .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
                {
                    set(sof + 5, &[0xFF, 0xFF]);
                    set(sof + 7, &[0xFF, 0xFF]);
                }
            }
            "gif" => {
                set(6, &[0xFF, 0xFF, 0xFF, 0xFF]);
            }
            "webp" => {
                // VP8L: 14-bit width-1 and height-1 after the signature byte.
                if let Some(at) = bytes.windows(4).position(|w| w == b"VP8L") {
                    set(at + 9, &[0xFF, 0xFF, 0xFF, 0xFF]);
                }
            }
            _ => {}
        }
        out
    }

    #[test]
    fn a_corpus_of_broken_images_never_panics_and_stays_within_the_limits() {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_pixels: 512 * 512,
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut cases = 0usize;
        let mut too_large = 0usize;
        for (name, seed) in seeds() {
            decode_target(&seed, &limits);
            let n = seed.len();
            // Every truncation in the first 64 bytes and the last 32, and 40 elsewhere.
            let cuts = (0..n.min(64))
                .chain(n.saturating_sub(32)..n)
                .chain((0..40).map(|_| rng.below(n)));
            for cut in cuts {
                decode_target(&seed[..cut], &limits);
                cases += 1;
            }
            // Single-bit flips, byte overwrites, runs of 0x00/0xFF, insertions, deletions.
            for round in 0..300 {
                let mut b = seed.clone();
                let at = rng.below(n);
                match round % 6 {
                    0 => b[at] ^= 1 << rng.below(8),
                    1 => b[at] = rng.next() as u8,
                    2 => {
                        let end = (at + 1 + rng.below(16)).min(n);
                        b[at..end].fill(0xFF);
                    }
                    3 => {
                        let end = (at + 1 + rng.below(16)).min(n);
                        b[at..end].fill(0x00);
                    }
                    4 => b.insert(at, rng.next() as u8),
                    _ => {
                        b.remove(at);
                    }
                }
                // Mostly in the headers, where the structure is.
                if round % 2 == 0 && n > 64 {
                    let at = rng.below(64);
                    b[at] ^= rng.next() as u8;
                }
                decode_target(&b, &limits);
                cases += 1;
            }
            for huge in huge_headers(name, &seed) {
                if let Err(PipelineError::TooLarge { .. }) = decode(&huge, &limits) {
                    too_large += 1;
                }
                decode_target(&huge, &limits);
                cases += 1;
            }
        }
        assert!(cases > 2500, "{cases} cases");
        assert!(
            too_large >= 5,
            "only {too_large} huge headers refused by the limits"
        );
        // Bounded memory: nothing came near what the blown-up headers ask for (65535 x
        // 65535 x 4 bytes = 16 GiB).
        if let Some(peak) = peak_rss() {
            assert!(peak < 1 << 30, "peak RSS {peak} bytes");
        }
    }
}
