//! Result types of a run: `RunOutput`, `EncodedOutput`, `Region` and friends.

use crate::matte::Confidence;
use crate::progress::StageReport;

/// Everything one run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    /// The encoded outputs, in role order (`original`, `cutout`, `mask`,
    /// `segments`, `garment`, `catalog`, `square`, …); only those the enabled
    /// stages made; empty when encoding is disabled.
    pub outputs: Vec<EncodedOutput>,
    /// The stages that ran, in order (skipped stages are not listed).
    pub stages: Vec<StageReport>,
    /// The segmentation summary: one entry per label of the `segments` map.
    pub regions: Vec<Region>,
    /// What background removal on `auto` decided; `None` for other backends
    /// (and when the input had its own transparency).
    pub auto_removal: Option<AutoChoice>,
}

/// The decision of background removal on `auto`.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoChoice {
    /// The backend whose mask was used: `builtin` or `onnx`.
    pub backend: String,
    /// The builtin remover's confidence in its mask.
    pub confidence: Confidence,
    /// The threshold it was compared with ([`crate::matte::AUTO_MIN_CONFIDENCE`]).
    pub threshold: f32,
    /// Why, for people (the stage's [`StageReport::detail`]).
    pub reason: String,
}

/// One encoded output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedOutput {
    /// `original`, `cutout`, `mask`, `segments`, `garment`, `catalog`,
    /// `square` or `expanded_WxH`.
    pub role: String,
    /// The role plus extension, e.g. `catalog.jpg`.
    pub file_name: String,
    /// `image/jpeg` or `image/png`.
    pub media_type: &'static str,
    /// Width in pixels of the encoded image.
    pub width: u32,
    /// Height in pixels of the encoded image.
    pub height: u32,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`, lowercase hex.
    pub sha256: String,
}

/// An axis-aligned box in pixels of the decoded (upright) input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BoundingBox {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// A dominant colour of a region, named for people ("navy") and given as hex.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedColor {
    /// A plain colour name (`navy`, `white`, `beige`, …).
    pub name: String,
    /// `#rrggbb`.
    pub hex: String,
    /// Share of the region's pixels with this colour, 0..=1.
    pub fraction: f32,
}

/// One region of the garment: a label of the `segments` map.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// The label in the `segments` map (1..=255; 0 is the background).
    pub label: u8,
    /// The model's class of this label (`upper`, `lower`, `full`, …) when a
    /// class-predicting backend made the map; `None` for colour regions.
    pub class: Option<String>,
    /// Pixels with this label (in the decoded input's pixels; counted at the
    /// working size and scaled when the input was larger than it).
    pub pixels: u64,
    /// Share of the garment's pixels with this label, 0..=1.
    pub area_fraction: f32,
    /// Bounding box of the label's pixels.
    pub bbox: BoundingBox,
    /// Dominant colours, most frequent first.
    pub colors: Vec<NamedColor>,
    /// Separate pieces of this region (specks ignored), measured at ~256 px.
    pub components: u32,
    /// How the pieces look: `solid` (one piece), `stripes` (three or more
    /// long thin pieces), `spots` (three or more compact pieces) or `pieces`.
    pub pattern: &'static str,
}

/// One entry of the `segments` map's legend: a label value, what it is and
/// the colour its palette shows it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelLegend {
    /// The value in the map (the PNG's palette index).
    pub value: u8,
    /// `background`, the model's class, or the region's dominant colour and
    /// pattern (`navy`, `white stripes`).
    pub name: String,
    /// `#rrggbb` the palette shows it in.
    pub color: String,
}

/// The legend of a `segments` map with these regions: the background, then
/// every region's label.
pub fn label_legend(regions: &[Region]) -> Vec<LabelLegend> {
    let mut out = vec![LabelLegend {
        value: 0,
        name: "background".to_owned(),
        color: crate::encode::label_hex(0),
    }];
    for r in regions {
        let name = match (&r.class, r.colors.first()) {
            (Some(class), _) => class.clone(),
            (None, Some(c)) if r.pattern == "solid" => c.name.clone(),
            (None, Some(c)) => format!("{} {}", c.name, r.pattern),
            (None, None) => format!("region {}", r.label),
        };
        out.push(LabelLegend {
            value: r.label,
            name,
            color: crate::encode::label_hex(r.label),
        });
    }
    out
}
