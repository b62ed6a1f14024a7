//! clothjob-pipeline: turns a photo of a garment into catalog-ready images.
//!
//! Pure Rust, no Kubernetes. [`run`] decodes the input ([`decode`]), runs the
//! enabled stages in order — background removal, segmentation, expansion,
//! encoding — reports progress to a [`ProgressSink`], and returns the encoded
//! outputs with a report per stage and a segmentation summary.

mod colors;
mod error;
mod imgops;
mod limits;
mod options;
mod output;
mod progress;

pub mod decode;
pub mod encode;
pub mod expand;
pub mod matte;
pub mod pipeline;
pub mod quality;
pub mod segment;

pub use decode::decode;
pub use error::PipelineError;
pub use expand::Expander;
pub use limits::Limits;
pub use matte::BackgroundRemover;
pub use options::{
    BackgroundRemovalBackend, BackgroundRemovalOptions, EncodingOptions, ExpansionBackend,
    ExpansionOptions, Options, SegmentationBackend, SegmentationOptions,
};
pub use output::{
    AutoChoice, BoundingBox, EncodedOutput, LabelLegend, NamedColor, Region, RunOutput,
    label_legend,
};
pub use pipeline::{Backends, run, run_with};
pub use progress::{NoProgress, ProgressSink, StageName, StageReport};
pub use segment::{ClassMap, Segmenter};
