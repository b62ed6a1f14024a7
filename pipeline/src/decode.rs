//! `decode`: bytes to an upright image, with format sniffing, limits and EXIF orientation.

use std::io::Cursor;

use image::error::{ImageError, LimitErrorKind};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::error::PipelineError;
use crate::limits::Limits;

/// Decodes a JPEG, PNG, WebP or GIF (first frame) from `bytes`.
///
/// The format is sniffed from the bytes (never from a file name), the
/// [`Limits`] are checked before the pixels are allocated (so a decompression
/// bomb fails fast with [`PipelineError::TooLarge`]), and the EXIF orientation
/// is applied, so the result is upright. Grayscale, grayscale+alpha, 16-bit and
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
            PipelineError::Decode("the image is truncated".to_owned())
        }
        other => PipelineError::Decode(other.to_string()),
    }
}
