//! Background removal: the `BackgroundRemover` trait, backend selection and
//! the cut-out (alpha + edge colour decontamination) shared by all backends.

mod builtin;
mod cutout;

use image::{GrayImage, RgbImage};

pub use builtin::{AUTO_MIN_CONFIDENCE, BuiltinRemover, Confidence};
pub use cutout::compose_cutout;

use crate::error::PipelineError;
use crate::options::BackgroundRemovalBackend;
use crate::progress::StageName;

/// Something that estimates a garment's alpha mask from a photo. Backends
/// (builtin, ONNX model, remote service) implement it; the pipeline makes the
/// cut-out from the alpha with [`compose_cutout`].
pub trait BackgroundRemover: Send + Sync {
    /// The backend's name for reports (`builtin`, `onnx`, `remote`).
    fn name(&self) -> &str;

    /// The alpha mask (255 = garment, 0 = background) of `image`, same size.
    /// `progress` receives the fraction done, 0..=1.
    fn alpha(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<GrayImage, PipelineError>;
}

/// The remover this crate has for a configured backend: the builtin one for
/// `builtin` and for `auto` (which runs it first); `onnx` and `remote` need a
/// caller-supplied remover ([`crate::Backends`]) and give
/// [`PipelineError::BackendUnavailable`] here.
pub fn remover_for(
    backend: &BackgroundRemovalBackend,
) -> Result<Box<dyn BackgroundRemover>, PipelineError> {
    match backend {
        BackgroundRemovalBackend::Builtin | BackgroundRemovalBackend::Auto { .. } => {
            Ok(Box::new(BuiltinRemover::default()))
        }
        other => Err(PipelineError::BackendUnavailable {
            stage: StageName::BackgroundRemoval,
            backend: other.name().to_owned(),
            reason: "this build only has the builtin background remover".to_owned(),
        }),
    }
}
