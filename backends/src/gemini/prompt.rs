//! The catalog instructions sent with the image: a template with `{ratio}`,
//! `{background}` and `{input}`, then the job's and the call's extra text.

/// The default instructions. `{ratio}` becomes the aspect ratio (`3:4`),
/// `{background}` the colour (`white (#FFFFFF)`), `{input}` a sentence on
/// what the picture is (a cut-out on that colour, or a plain photo).
pub const DEFAULT_PROMPT: &str = "Make a professional e-commerce catalog photo of the \
garment in this image, with aspect ratio {ratio}. {input} Keep the garment exactly as it is: \
the same shape, proportions, colours, fabric texture, print, logos, labels, seams and every \
other detail; do not redesign, recolour, restyle or add anything to it. Show the whole \
garment, upright and facing the camera, centred with an even margin on every side and \
filling most of the frame. Use a plain, seamless, evenly lit studio background of \
{background}, with only a soft natural shadow beneath the garment. No person, model, \
mannequin, hanger, props, text or watermark.";

/// `{input}` when the picture is the garment cut out onto the background colour.
const INPUT_CUTOUT: &str = "The garment has already been cut out and placed on the \
background colour.";

/// `{input}` when the picture is the photo as taken.
const INPUT_PHOTO: &str = "It is a photo as taken: replace everything around the garment \
with the studio background.";

/// What the instructions say besides the template.
#[derive(Debug, Clone, Copy)]
pub(super) struct PromptParts<'a> {
    /// `3:4`.
    pub aspect_ratio: &'a str,
    /// The canvas colour.
    pub background: [u8; 3],
    /// The picture is a cut-out on `background` (else the photo as taken).
    pub cut_out: bool,
    /// Extra texts appended in order (the job's, then the call's); blank ones
    /// are skipped.
    pub extras: [Option<&'a str>; 2],
}

/// The instructions: `template` (the default when `None`) with its
/// placeholders filled in, then the extra texts.
pub(super) fn build(template: Option<&str>, parts: &PromptParts<'_>) -> String {
    let input = if parts.cut_out {
        INPUT_CUTOUT
    } else {
        INPUT_PHOTO
    };
    let mut prompt = template
        .unwrap_or(DEFAULT_PROMPT)
        .replace("{ratio}", parts.aspect_ratio)
        .replace("{background}", &describe_color(parts.background))
        .replace("{input}", input);
    for extra in parts.extras.iter().flatten() {
        let extra = extra.trim();
        if !extra.is_empty() {
            prompt.push(' ');
            prompt.push_str(extra);
        }
    }
    prompt
}

/// `#RRGGBB`, with a plain name first when the colour is neutral
/// (`white (#FFFFFF)`, `light grey (#D0D0D0)`): models follow names better
/// than codes.
pub(super) fn describe_color([r, g, b]: [u8; 3]) -> String {
    let hex = format!("#{r:02X}{g:02X}{b:02X}");
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    if max - min > 12 {
        return format!("the colour {hex}");
    }
    let lightness = (u32::from(r) + u32::from(g) + u32::from(b)) / 3;
    let name = match lightness {
        248.. => "white",
        230..=247 => "off-white",
        170..=229 => "light grey",
        90..=169 => "mid grey",
        30..=89 => "dark grey",
        _ => "black",
    };
    format!("{name} ({hex})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(cut_out: bool, extras: [Option<&str>; 2]) -> PromptParts<'_> {
        PromptParts {
            aspect_ratio: "3:4",
            background: [255, 255, 255],
            cut_out,
            extras,
        }
    }

    #[test]
    fn the_default_prompt_names_ratio_colour_and_input() {
        let p = build(None, &parts(true, [None, None]));
        assert!(p.contains("aspect ratio 3:4."), "{p}");
        assert!(p.contains("white (#FFFFFF)"), "{p}");
        assert!(p.contains("already been cut out"), "{p}");
        assert!(p.contains("exactly as it is"), "{p}");
        assert!(!p.contains('{'), "a placeholder is left: {p}");
        let p = build(None, &parts(false, [None, None]));
        assert!(p.contains("photo as taken"), "{p}");
    }

    #[test]
    fn extras_are_appended_in_order_and_blank_ones_skipped() {
        let p = build(
            Some("Ratio {ratio} on {background}."),
            &parts(true, [Some(" Fold the sleeves. "), Some("Brand X.")]),
        );
        assert_eq!(
            p,
            "Ratio 3:4 on white (#FFFFFF). Fold the sleeves. Brand X."
        );
        let p = build(Some("A"), &parts(true, [Some("  "), None]));
        assert_eq!(p, "A");
    }

    #[test]
    fn colours_are_named_when_neutral() {
        assert_eq!(describe_color([255, 255, 255]), "white (#FFFFFF)");
        assert_eq!(describe_color([244, 244, 240]), "off-white (#F4F4F0)");
        assert_eq!(describe_color([200, 200, 204]), "light grey (#C8C8CC)");
        assert_eq!(describe_color([0, 0, 0]), "black (#000000)");
        assert_eq!(describe_color([16, 32, 200]), "the colour #1020C8");
    }
}
