//! Decoding: formats, colour types, EXIF orientation, limits and bad inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::io::Cursor;

use clothjob_pipeline::{Limits, PipelineError, decode};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

fn encode_with(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A 40x20 picture: red left half, blue right half.
fn halves() -> RgbImage {
    RgbImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([220, 20, 20])
        } else {
            Rgb([20, 20, 220])
        }
    })
}

#[test]
fn decodes_png_webp_gif_and_jpeg() {
    let img = DynamicImage::ImageRgb8(halves());
    for format in [
        ImageFormat::Png,
        ImageFormat::WebP,
        ImageFormat::Gif,
        ImageFormat::Jpeg,
    ] {
        let bytes = encode_with(&img, format);
        let out = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!((out.width(), out.height()), (40, 20), "{format:?}");
        let rgb = out.to_rgb8();
        let left = rgb.get_pixel(5, 10);
        let right = rgb.get_pixel(35, 10);
        assert!(left[0] > 180 && left[2] < 70, "{format:?} left {left:?}");
        assert!(
            right[2] > 180 && right[0] < 70,
            "{format:?} right {right:?}"
        );
    }
}

#[test]
fn keeps_grayscale_alpha_and_16_bit() {
    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 6, image::Luma([77])));
    let out = decode(&encode_with(&gray, ImageFormat::Png), &Limits::default()).unwrap();
    assert_eq!(out.color(), image::ColorType::L8);
    assert_eq!(out.to_luma8().get_pixel(3, 3)[0], 77);

    let la = DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_pixel(
        8,
        6,
        image::LumaA([200, 40]),
    ));
    let out = decode(&encode_with(&la, ImageFormat::Png), &Limits::default()).unwrap();
    assert_eq!(out.color(), image::ColorType::La8);
    assert_eq!(out.to_rgba8().get_pixel(1, 1).0, [200, 200, 200, 40]);

    let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
        8,
        6,
        Rgb([65535u16, 32768, 0]),
    ));
    let out = decode(&encode_with(&deep, ImageFormat::Png), &Limits::default()).unwrap();
    assert_eq!(out.color(), image::ColorType::Rgb16);
    assert_eq!(out.to_rgb8().get_pixel(0, 0).0, [255, 128, 0]);
}

#[test]
fn converts_cmyk_jpeg_to_rgb() {
    // Plain CMYK (Adobe, not inverted as jpeg-encoder writes it): pure cyan
    // C=255 M=0 Y=0 K=0 must come out cyan-ish: low red, high green and blue.
    let mut data = Vec::new();
    for _ in 0..(16 * 16) {
        data.extend_from_slice(&[255, 0, 0, 0]);
    }
    let mut bytes = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut bytes, 95);
    enc.encode(&data, 16, 16, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    let out = decode(&bytes, &Limits::default()).unwrap();
    let px = out.to_rgb8().get_pixel(8, 8).0;
    assert!(
        px[0] < 60 && px[1] > 200 && px[2] > 200,
        "cyan came out as {px:?}"
    );
}

/// An APP1 Exif segment with only an Orientation tag.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut d = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    d.extend_from_slice(&1u16.to_be_bytes()); // one entry
    d.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    d.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    d.extend_from_slice(&1u32.to_be_bytes()); // count
    d.extend_from_slice(&value.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    d
}

#[test]
fn applies_exif_orientation() {
    let img = halves();
    let mut bytes = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 95);
    enc.add_app_segment(1, exif_orientation(6)).unwrap();
    enc.encode(img.as_raw(), 40, 20, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let out = decode(&bytes, &Limits::default()).unwrap().to_rgb8();
    // Orientation 6: rotate 90° clockwise to display; the red left half
    // becomes the top half of a 20x40 upright image.
    assert_eq!(out.dimensions(), (20, 40));
    let top = out.get_pixel(10, 5).0;
    let bottom = out.get_pixel(10, 35).0;
    assert!(top[0] > 180 && top[2] < 70, "top {top:?}");
    assert!(bottom[2] > 180 && bottom[0] < 70, "bottom {bottom:?}");
}

#[test]
fn rejects_bad_inputs_as_bad_input() {
    let good = encode_with(&DynamicImage::ImageRgb8(halves()), ImageFormat::Png);

    let empty = decode(&[], &Limits::default()).unwrap_err();
    assert!(matches!(empty, PipelineError::EmptyInput));

    let text = decode(b"hello, this is not an image at all", &Limits::default()).unwrap_err();
    assert!(
        matches!(text, PipelineError::UnsupportedFormat(_)),
        "{text}"
    );

    let bmp = decode(b"BM\x3e\0\0\0\0\0\0\0\x3e\0\0\0", &Limits::default()).unwrap_err();
    assert!(matches!(bmp, PipelineError::UnsupportedFormat(_)), "{bmp}");

    let truncated = decode(&good[..good.len() / 2], &Limits::default()).unwrap_err();
    assert!(matches!(truncated, PipelineError::Decode(_)), "{truncated}");

    let too_many_bytes = decode(
        &good,
        &Limits {
            max_bytes: 10,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert!(matches!(
        too_many_bytes,
        PipelineError::TooLarge { what: "bytes", .. }
    ));

    let too_many_pixels = decode(
        &good,
        &Limits {
            max_pixels: 799,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert!(matches!(
        too_many_pixels,
        PipelineError::TooLarge {
            what: "pixels",
            actual: 800,
            limit: 799
        }
    ));

    for e in [
        &empty,
        &text,
        &bmp,
        &truncated,
        &too_many_bytes,
        &too_many_pixels,
    ] {
        assert!(e.is_bad_input(), "{e}");
        assert_eq!(e.category(), "BadInput", "{e}");
    }
}

#[test]
fn rejects_a_decompression_bomb_before_allocating() {
    // A PNG header claiming 100000x100000 pixels followed by almost nothing.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    for (kind, body) in [
        (&b"IDAT"[..], &b"\x78\x9c\x63\x00\x00"[..]),
        (&b"IEND"[..], &b""[..]),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(body);
        png.extend_from_slice(&(body.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    let err = decode(&png, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::TooLarge {
                what: "pixels",
                actual: 10_000_000_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_bad_input());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
