//! `OnnxSegmenter`: garment parsing with a model laid out like rembg's
//! `u2net_cloth_seg` (class scores per pixel, arg-max, nearest resize).

use std::path::Path;
use std::sync::Arc;

use clothjob_pipeline::{ClassMap, PipelineError, Segmenter, StageName};
use image::RgbImage;

use crate::error::OnnxError;
use crate::family::ModelFamily;
use crate::imaging::{argmax_labels, input_tensor, resize_labels};
use crate::runtime::Model;

/// The class names of a 4-class garment-parsing model (`u2net_cloth_seg`).
pub const CLOTH_SEG_CLASSES: [&str; 4] = ["background", "upper", "lower", "full"];

/// Most classes a label map (8-bit) can hold.
const MAX_CLASSES: usize = 256;

/// A [`Segmenter`] running a garment-parsing model: input 1x3xHxW, first
/// output 1xNxHxW class scores (N >= 2, class 0 is the background). Each
/// pixel takes the class with the highest score; the label map is resized to
/// the photo with nearest neighbours, so labels are never blended.
#[derive(Debug, Clone)]
pub struct OnnxSegmenter {
    model: Arc<Model>,
    family: ModelFamily,
    size: (u32, u32),
    classes: Option<Vec<String>>,
}

impl OnnxSegmenter {
    /// Loads a `u2net_cloth_seg`-like model ([`ModelFamily::ClothSeg`]
    /// normalisation). `classes` names the output channels in order; `None`
    /// gives `background, upper, lower, full` for 4 classes and
    /// `background, class1, …` otherwise.
    pub fn load(path: &Path, classes: Option<Vec<String>>) -> Result<Self, OnnxError> {
        Self::load_with(path, ModelFamily::ClothSeg, classes)
    }

    /// [`OnnxSegmenter::load`] with another family's input size and
    /// normalisation.
    pub fn load_with(
        path: &Path,
        family: ModelFamily,
        classes: Option<Vec<String>>,
    ) -> Result<Self, OnnxError> {
        let model = Model::load(path)?;
        let shape_err = |what: &str, expected: String, actual: String| OnnxError::ModelShape {
            path: path.to_path_buf(),
            what: what.to_owned(),
            expected,
            actual,
        };
        let input = model.input();
        if !(input.is_f32 && input.dims.len() == 4 && input.allows(0, 1) && input.allows(1, 3)) {
            return Err(shape_err(
                "input 0",
                "float 1x3xHxW".to_owned(),
                input.describe(),
            ));
        }
        let output = model.output();
        let declared = output.fixed(1).map(|n| n as usize);
        let classes_ok = declared.is_none_or(|n| (2..=MAX_CLASSES).contains(&n));
        if !(output.is_f32 && output.dims.len() == 4 && output.allows(0, 1) && classes_ok) {
            return Err(shape_err(
                "output 0",
                format!("float 1xNxHxW class scores with 2 <= N <= {MAX_CLASSES}"),
                output.describe(),
            ));
        }
        if let Some(names) = &classes {
            let count_ok = (2..=MAX_CLASSES).contains(&names.len())
                && declared.is_none_or(|n| n == names.len());
            if !count_ok {
                return Err(OnnxError::Settings {
                    path: path.to_path_buf(),
                    reason: format!(
                        "{} class names given, the model has {} classes",
                        names.len(),
                        declared.map_or_else(|| "2 or more".to_owned(), |n| n.to_string())
                    ),
                });
            }
        }
        let (dw, dh) = family.default_size();
        let size = (input.fixed(3).unwrap_or(dw), input.fixed(2).unwrap_or(dh));
        Ok(Self {
            model,
            family,
            size,
            classes,
        })
    }

    /// The model's input size (width, height).
    pub fn input_size(&self) -> (u32, u32) {
        self.size
    }

    /// The class names for a model output with `n` classes.
    pub fn class_names(&self, n: usize) -> Vec<String> {
        match &self.classes {
            Some(names) => names.clone(),
            None if n == CLOTH_SEG_CLASSES.len() => {
                CLOTH_SEG_CLASSES.iter().map(|s| (*s).to_owned()).collect()
            }
            None => (0..n)
                .map(|i| {
                    if i == 0 {
                        "background".to_owned()
                    } else {
                        format!("class{i}")
                    }
                })
                .collect(),
        }
    }

    /// The class map of `image` (same size), or why it could not be made.
    pub fn label_map(&self, image: &RgbImage) -> Result<ClassMap, OnnxError> {
        let (w, h) = self.size;
        let path = self.model.path();
        let run_err = |reason: String| OnnxError::RunModel {
            path: path.to_path_buf(),
            reason,
        };
        let input = input_tensor(image, self.size, self.family).map_err(run_err)?;
        self.model
            .run([1, 3, h as usize, w as usize], &input, |dims, scores| {
                let shape_err = |expected: String| OnnxError::ModelShape {
                    path: path.to_path_buf(),
                    what: "output 0".to_owned(),
                    expected,
                    actual: format!("{dims:?}"),
                };
                let [1, n, oh, ow] = *dims else {
                    return Err(shape_err("1xNxHxW".to_owned()));
                };
                if !(2..=MAX_CLASSES).contains(&n) {
                    return Err(shape_err(format!("1xNxHxW with 2 <= N <= {MAX_CLASSES}")));
                }
                let classes = self.class_names(n);
                if classes.len() != n {
                    return Err(shape_err(format!(
                        "1x{}xHxW (one channel per class name)",
                        classes.len()
                    )));
                }
                if scores.len() != n * ow * oh {
                    return Err(run_err(format!(
                        "output 0 has {} values for shape {dims:?}",
                        scores.len()
                    )));
                }
                let labels = argmax_labels(scores, n, ow * oh);
                let plane = (
                    u32::try_from(ow).unwrap_or(0),
                    u32::try_from(oh).unwrap_or(0),
                );
                let labels = resize_labels(&labels, plane, image.dimensions())
                    .ok_or_else(|| run_err(format!("empty output plane {ow}x{oh}")))?;
                Ok(ClassMap { labels, classes })
            })
    }
}

impl Segmenter for OnnxSegmenter {
    fn name(&self) -> &str {
        "onnx"
    }

    fn classes(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<ClassMap, PipelineError> {
        progress(0.0);
        let map = self
            .label_map(image)
            .map_err(|e| e.into_pipeline(StageName::Segmentation))?;
        progress(1.0);
        Ok(map)
    }
}
