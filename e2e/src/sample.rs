//! A synthetic product photo: a striped T-shirt on a light studio background.

use image::{Rgb, RgbImage};

fn inside(poly: &[(f32, f32)], x: f32, y: f32) -> bool {
    let mut c = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            c = !c;
        }
        j = i;
    }
    c
}

/// Whether (x, y) of a `w`×`h` photo is on the garment.
pub fn on_garment(w: u32, h: u32, x: u32, y: u32) -> bool {
    let (fx, fy) = (x as f32 * 1000.0 / w as f32, y as f32 * 1000.0 / h as f32);
    let body = [
        (330.0, 250.0),
        (670.0, 250.0),
        (700.0, 880.0),
        (300.0, 880.0),
    ];
    let left = [
        (330.0, 250.0),
        (170.0, 380.0),
        (230.0, 470.0),
        (345.0, 390.0),
    ];
    let right = [
        (670.0, 250.0),
        (830.0, 380.0),
        (770.0, 470.0),
        (655.0, 390.0),
    ];
    let neck =
        (fx - 500.0).powi(2) / 60.0f32.powi(2) + (fy - 250.0).powi(2) / 50.0f32.powi(2) < 1.0;
    (inside(&body, fx, fy) || inside(&left, fx, fy) || inside(&right, fx, fy)) && !neck
}

/// The photo: navy and off-white stripes on a mid-grey studio gradient.
pub fn tshirt(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if on_garment(w, h, x, y) {
            if (y * 1000 / h / 40).is_multiple_of(2) {
                Rgb([31, 42, 68])
            } else {
                Rgb([236, 236, 232])
            }
        } else {
            let g = 196 + (16 * y / h) as u8;
            Rgb([g, g, g - 2])
        }
    })
}

/// The photo as JPEG bytes.
pub fn tshirt_jpeg(w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    tshirt(w, h).write_to(&mut out, image::ImageFormat::Jpeg)?;
    Ok(out.into_inner())
}
