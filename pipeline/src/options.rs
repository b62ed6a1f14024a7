//! `Options`: which stages run (None = disabled), their backends and settings.

use std::path::PathBuf;

/// Options of one run. `None` disables a stage; [`Options::default`] enables
/// all four with the builtin backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Background removal (alpha mask + cut-out).
    pub background_removal: Option<BackgroundRemovalOptions>,
    /// Segmentation (label map, regions, dominant colours).
    pub segmentation: Option<SegmentationOptions>,
    /// Expansion (trimmed garment, catalog images).
    pub expansion: Option<ExpansionOptions>,
    /// Encoding of the outputs. Disabled = no outputs at all.
    pub encoding: Option<EncodingOptions>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            background_removal: Some(BackgroundRemovalOptions::default()),
            segmentation: Some(SegmentationOptions::default()),
            expansion: Some(ExpansionOptions::default()),
            encoding: Some(EncodingOptions::default()),
        }
    }
}

impl Options {
    /// Only decoding and encoding (the `original` output).
    pub fn encode_only() -> Self {
        Self {
            background_removal: None,
            segmentation: None,
            expansion: None,
            encoding: Some(EncodingOptions::default()),
        }
    }
}

/// Which implementation removes the background.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackgroundRemovalBackend {
    /// Classical, model-free matting for garments on a plain or studio background.
    #[default]
    Builtin,
    /// A segmentation model run with ONNX Runtime (not available yet).
    Onnx {
        /// Path to the `.onnx` model file.
        model_path: PathBuf,
    },
    /// A remote service that returns a mask or an RGBA cut-out (not available yet).
    Remote {
        /// The service's URL.
        url: String,
    },
    /// The builtin remover first; where its [`crate::matte::Confidence`] is
    /// below [`crate::matte::AUTO_MIN_CONFIDENCE`] (not a plain-backdrop
    /// case), the ONNX model the caller supplies through
    /// [`crate::Backends::background_remover`]. Without one the builtin mask
    /// is kept. The stage reports the backend that made the mask (`builtin`
    /// or `onnx`, never `auto`) and why in [`crate::StageReport::detail`].
    Auto {
        /// Path to the fallback's `.onnx` model file, when one is configured.
        model_path: Option<PathBuf>,
    },
}

impl BackgroundRemovalBackend {
    /// `builtin`, `onnx`, `remote` or `auto` (the configured name; a stage
    /// on `auto` reports the backend that ran instead).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Onnx { .. } => "onnx",
            Self::Remote { .. } => "remote",
            Self::Auto { .. } => "auto",
        }
    }
}

/// Settings of background removal.
#[derive(Debug, Clone, PartialEq)]
pub struct BackgroundRemovalOptions {
    /// The implementation.
    pub backend: BackgroundRemovalBackend,
    /// Remove the background's colour spill from edge pixels of the cut-out.
    pub decontaminate: bool,
}

impl Default for BackgroundRemovalOptions {
    fn default() -> Self {
        Self {
            backend: BackgroundRemovalBackend::Builtin,
            decontaminate: true,
        }
    }
}

/// Which implementation segments the garment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SegmentationBackend {
    /// Colour clusters (k-means in Lab) and connected components of the mask.
    #[default]
    Builtin,
    /// A garment-parsing model run with ONNX Runtime (not available yet).
    Onnx {
        /// Path to the `.onnx` model file.
        model_path: PathBuf,
    },
    /// A remote service (not available yet).
    Remote {
        /// The service's URL.
        url: String,
    },
}

impl SegmentationBackend {
    /// `builtin`, `onnx` or `remote`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Onnx { .. } => "onnx",
            Self::Remote { .. } => "remote",
        }
    }
}

/// Settings of segmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationOptions {
    /// The implementation.
    pub backend: SegmentationBackend,
    /// Most colour clusters (k of k-means), 1..=8.
    pub max_colors: u8,
}

impl Default for SegmentationOptions {
    fn default() -> Self {
        Self {
            backend: SegmentationBackend::Builtin,
            max_colors: 4,
        }
    }
}

/// Which implementation makes the catalog images.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExpansionBackend {
    /// Trim, centre on the aspect ratio with margins, clean background, contact shadow.
    #[default]
    Builtin,
    /// Google Gemini image generation (outpainting to the catalog canvas); the
    /// caller supplies the client through [`crate::Backends::expander`].
    Gemini,
}

impl ExpansionBackend {
    /// `builtin` or `gemini`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Gemini => "gemini",
        }
    }
}

/// Settings of expansion.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpansionOptions {
    /// The implementation.
    pub backend: ExpansionBackend,
    /// Target aspect ratios as (width, height). (3, 4) makes the `catalog`
    /// output, (1, 1) the `square` output, any other `expanded_WxH`.
    pub aspect_ratios: Vec<(u32, u32)>,
    /// Background colour of the catalog images (sRGB).
    pub background: [u8; 3],
    /// Margin around the garment, as a fraction of the canvas's shorter side.
    pub margin: f32,
    /// Draw a soft contact shadow under the garment.
    pub shadow: bool,
}

impl Default for ExpansionOptions {
    fn default() -> Self {
        Self {
            backend: ExpansionBackend::Builtin,
            aspect_ratios: vec![(3, 4), (1, 1)],
            background: [255, 255, 255],
            margin: 0.08,
            shadow: true,
        }
    }
}

/// Settings of encoding (always builtin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingOptions {
    /// Longest side of every output; larger images are downscaled (Lanczos3,
    /// aspect ratio kept), smaller ones are never upscaled.
    pub max_side: u32,
    /// JPEG quality, 1..=100.
    pub jpeg_quality: u8,
}

impl Default for EncodingOptions {
    fn default() -> Self {
        Self {
            max_side: 1024,
            jpeg_quality: 85,
        }
    }
}
