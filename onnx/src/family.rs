//! Model families: the input size and normalisation each model of rembg's
//! zoo was trained with.

use std::path::Path;

/// A family of models sharing one input contract. The input is the photo
/// resized (Lanczos) to the input size, divided by its largest channel value,
/// then `(x - mean) / std` per channel, as a 1x3xHxW float tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFamily {
    /// U²-Net salient-object models: `u2net`, `u2netp`, `u2net_human_seg`,
    /// `silueta`. 320x320, ImageNet mean and std.
    U2Net,
    /// IS-Net `isnet-general-use`: 1024x1024, mean 0.5, std 1.
    IsNetGeneral,
    /// IS-Net `isnet-anime`: 1024x1024, ImageNet mean, std 1.
    IsNetAnime,
    /// U²-Net garment parsing `u2net_cloth_seg`: 768x768, ImageNet mean and
    /// std; 4 classes (background, upper, lower, full body).
    ClothSeg,
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl ModelFamily {
    /// The family of a rembg model name (`u2netp`, `isnet-general-use`, …),
    /// or `None` for a name this crate does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "u2net" | "u2netp" | "u2net-human-seg" | "silueta" => Some(Self::U2Net),
            "isnet-general-use" | "isnet" => Some(Self::IsNetGeneral),
            "isnet-anime" => Some(Self::IsNetAnime),
            "u2net-cloth-seg" | "cloth-seg" => Some(Self::ClothSeg),
            _ => None,
        }
    }

    /// The family guessed from a model file's name: `…isnet-anime….onnx`,
    /// `…isnet….onnx`, `…cloth_seg….onnx`, else [`ModelFamily::U2Net`].
    pub fn guess_from_path(path: &Path) -> Self {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_ascii_lowercase().replace('_', "-"))
            .unwrap_or_default();
        if stem.contains("isnet-anime") {
            Self::IsNetAnime
        } else if stem.contains("isnet") {
            Self::IsNetGeneral
        } else if stem.contains("cloth-seg") {
            Self::ClothSeg
        } else {
            Self::U2Net
        }
    }

    /// The input size (width, height) when the model file leaves it open.
    pub fn default_size(self) -> (u32, u32) {
        match self {
            Self::U2Net => (320, 320),
            Self::IsNetGeneral | Self::IsNetAnime => (1024, 1024),
            Self::ClothSeg => (768, 768),
        }
    }

    /// Per-channel (mean, std) applied after dividing by the largest value.
    pub fn normalisation(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Self::U2Net | Self::ClothSeg => (IMAGENET_MEAN, IMAGENET_STD),
            Self::IsNetGeneral => ([0.5; 3], [1.0; 3]),
            Self::IsNetAnime => (IMAGENET_MEAN, [1.0; 3]),
        }
    }
}
