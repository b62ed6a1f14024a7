//! `U2NetRemover`: background removal with a salient-object model of the
//! U²-Net family (u2netp, u2net, isnet, …), with rembg's pre- and
//! post-processing.

use std::path::Path;
use std::sync::Arc;

use clothjob_pipeline::{BackgroundRemover, PipelineError, StageName};
use image::{GrayImage, RgbImage};

use crate::error::OnnxError;
use crate::family::ModelFamily;
use crate::imaging::{alpha_from_prediction, input_tensor};
use crate::runtime::Model;

/// A [`BackgroundRemover`] running a U²-Net-family model: input 1x3xHxW,
/// first output 1x1xHxW (the saliency map, min-max normalised into the
/// alpha). The model session is loaded once per process and shared.
#[derive(Debug, Clone)]
pub struct U2NetRemover {
    model: Arc<Model>,
    family: ModelFamily,
    size: (u32, u32),
}

impl U2NetRemover {
    /// Loads (or takes from the process-wide cache) the model at `path` and
    /// checks that it is a background-removal model: float input 1x3xHxW and
    /// first output 1x1xHxW. The input size is the model's own when it fixes
    /// one, else the family's.
    pub fn load(path: &Path, family: ModelFamily) -> Result<Self, OnnxError> {
        let model = Model::load(path)?;
        let shape_err = |what: &str, expected: &str, actual: String| OnnxError::ModelShape {
            path: path.to_path_buf(),
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual,
        };
        let input = model.input();
        let input_ok =
            input.is_f32 && input.dims.len() == 4 && input.allows(0, 1) && input.allows(1, 3);
        if !input_ok {
            return Err(shape_err("input 0", "float 1x3xHxW", input.describe()));
        }
        let output = model.output();
        let output_ok =
            output.is_f32 && output.dims.len() == 4 && output.allows(0, 1) && output.allows(1, 1);
        if !output_ok {
            return Err(shape_err("output 0", "float 1x1xHxW", output.describe()));
        }
        let (dw, dh) = family.default_size();
        let size = (input.fixed(3).unwrap_or(dw), input.fixed(2).unwrap_or(dh));
        Ok(Self {
            model,
            family,
            size,
        })
    }

    /// The model's input size (width, height).
    pub fn input_size(&self) -> (u32, u32) {
        self.size
    }

    /// The model family (normalisation, default size).
    pub fn family(&self) -> ModelFamily {
        self.family
    }

    /// The alpha mask of `image` (same size), or why it could not be made.
    pub fn mask(&self, image: &RgbImage) -> Result<GrayImage, OnnxError> {
        let (w, h) = self.size;
        let path = self.model.path();
        let run_err = |reason: String| OnnxError::RunModel {
            path: path.to_path_buf(),
            reason,
        };
        let input = input_tensor(image, self.size, self.family).map_err(run_err)?;
        self.model
            .run([1, 3, h as usize, w as usize], &input, |dims, values| {
                let [1, 1, oh, ow] = *dims else {
                    return Err(OnnxError::ModelShape {
                        path: path.to_path_buf(),
                        what: "output 0".to_owned(),
                        expected: "1x1xHxW".to_owned(),
                        actual: format!("{dims:?}"),
                    });
                };
                let plane = (
                    u32::try_from(ow).unwrap_or(0),
                    u32::try_from(oh).unwrap_or(0),
                );
                alpha_from_prediction(values, plane, image.dimensions()).map_err(run_err)
            })
    }
}

impl BackgroundRemover for U2NetRemover {
    fn name(&self) -> &str {
        "onnx"
    }

    fn alpha(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<GrayImage, PipelineError> {
        progress(0.0);
        let alpha = self
            .mask(image)
            .map_err(|e| e.into_pipeline(StageName::BackgroundRemoval))?;
        progress(1.0);
        Ok(alpha)
    }
}
