//! Colour science helpers: sRGB <-> CIE Lab (D65) and plain colour names.

#[inline]
fn srgb_to_linear(c: u8) -> f32 {
    let c = f32::from(c) / 255.0;
    if c <= 0.040_45 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

#[inline]
fn linear_to_srgb(c: f32) -> u8 {
    let c = c.clamp(0.0, 1.0);
    let v = if c <= 0.003_130_8 {
        c * 12.92
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    };
    (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8
}

const WHITE: [f32; 3] = [0.950_47, 1.0, 1.088_83];

#[inline]
fn lab_f(t: f32) -> f32 {
    if t > 0.008_856 {
        t.cbrt()
    } else {
        7.787 * t + 16.0 / 116.0
    }
}

#[inline]
fn lab_f_inv(t: f32) -> f32 {
    if t > 0.206_893 {
        t * t * t
    } else {
        (t - 16.0 / 116.0) / 7.787
    }
}

/// sRGB (8-bit) to CIE L*a*b* under D65.
pub(crate) fn srgb_to_lab(rgb: [u8; 3]) -> [f32; 3] {
    let r = srgb_to_linear(rgb[0]);
    let g = srgb_to_linear(rgb[1]);
    let b = srgb_to_linear(rgb[2]);
    let x = (0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b) / WHITE[0];
    let y = (0.212_672_9 * r + 0.715_152_2 * g + 0.072_175 * b) / WHITE[1];
    let z = (0.019_333_9 * r + 0.119_192 * g + 0.950_304_1 * b) / WHITE[2];
    let (fx, fy, fz) = (lab_f(x), lab_f(y), lab_f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// CIE L*a*b* (D65) to 8-bit sRGB, clamped to the gamut.
pub(crate) fn lab_to_srgb(lab: [f32; 3]) -> [u8; 3] {
    let fy = (lab[0] + 16.0) / 116.0;
    let fx = fy + lab[1] / 500.0;
    let fz = fy - lab[2] / 200.0;
    let x = lab_f_inv(fx) * WHITE[0];
    let y = lab_f_inv(fy) * WHITE[1];
    let z = lab_f_inv(fz) * WHITE[2];
    let r = 3.240_454_2 * x - 1.537_138_5 * y - 0.498_531_4 * z;
    let g = -0.969_266 * x + 1.876_010_8 * y + 0.041_556 * z;
    let b = 0.055_643_4 * x - 0.204_025_9 * y + 1.057_225_2 * z;
    [linear_to_srgb(r), linear_to_srgb(g), linear_to_srgb(b)]
}

/// Named colours a closet app would show, as sRGB.
const PALETTE: &[(&str, [u8; 3])] = &[
    ("black", [20, 20, 20]),
    ("charcoal", [54, 54, 58]),
    ("dark grey", [90, 90, 92]),
    ("grey", [128, 128, 128]),
    ("light grey", [190, 190, 190]),
    ("white", [245, 245, 245]),
    ("cream", [245, 238, 215]),
    ("beige", [220, 200, 165]),
    ("tan", [190, 155, 110]),
    ("khaki", [170, 160, 110]),
    ("brown", [110, 70, 40]),
    ("dark brown", [65, 40, 25]),
    ("camel", [193, 154, 107]),
    ("navy", [25, 35, 80]),
    ("blue", [40, 80, 180]),
    ("royal blue", [45, 70, 200]),
    ("denim", [70, 100, 150]),
    ("light blue", [140, 175, 220]),
    ("sky blue", [120, 190, 235]),
    ("teal", [20, 120, 120]),
    ("turquoise", [60, 200, 200]),
    ("green", [40, 140, 60]),
    ("dark green", [20, 70, 35]),
    ("olive", [110, 110, 45]),
    ("mint", [170, 225, 190]),
    ("yellow", [240, 210, 40]),
    ("mustard", [200, 160, 40]),
    ("orange", [235, 120, 30]),
    ("red", [200, 30, 35]),
    ("burgundy", [115, 25, 40]),
    ("pink", [240, 160, 180]),
    ("hot pink", [230, 60, 140]),
    ("purple", [110, 50, 140]),
    ("lavender", [185, 165, 215]),
];

/// The nearest palette name of an sRGB colour (ΔE*ab).
pub(crate) fn name_of(rgb: [u8; 3]) -> &'static str {
    let lab = srgb_to_lab(rgb);
    let mut best = ("grey", f32::INFINITY);
    for (name, p) in PALETTE {
        let q = srgb_to_lab(*p);
        let d = (lab[0] - q[0]).powi(2) + (lab[1] - q[1]).powi(2) + (lab[2] - q[2]).powi(2);
        if d < best.1 {
            best = (name, d);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_round_trips_and_names() {
        for rgb in [[0, 0, 0], [255, 255, 255], [40, 70, 150], [200, 30, 35]] {
            let back = lab_to_srgb(srgb_to_lab(rgb));
            for c in 0..3 {
                assert!(
                    (i32::from(back[c]) - i32::from(rgb[c])).abs() <= 1,
                    "{rgb:?} {back:?}"
                );
            }
        }
        let white = srgb_to_lab([255, 255, 255]);
        assert!((white[0] - 100.0).abs() < 0.1 && white[1].abs() < 0.1 && white[2].abs() < 0.1);
        assert_eq!(name_of([250, 250, 250]), "white");
        assert_eq!(name_of([22, 33, 78]), "navy");
        assert_eq!(name_of([205, 28, 30]), "red");
    }
}
