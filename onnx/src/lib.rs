//! ONNX model backends of the clothjob pipeline, run with ONNX Runtime
//! (loaded at run time from `ORT_DYLIB_PATH`):
//!
//! - [`U2NetRemover`]: background removal with a U²-Net-family model
//!   (u2netp, u2net, isnet, …), rembg's pre- and post-processing;
//! - [`OnnxSegmenter`]: garment parsing with a `u2net_cloth_seg`-like model
//!   (class scores per pixel, arg-max, nearest-neighbour resize);
//! - [`resolve_model`]: a model URI (path, `file://`, `https://`) to a local
//!   file, downloads cached and checked;
//! - [`testmodel`]: tiny ONNX models built in code for tests.
//!
//! Model sessions are loaded once per process and shared (keyed by path).

mod error;
mod family;
mod imaging;
mod remover;
pub mod runtime;
mod segmenter;
mod source;
pub mod testmodel;

pub use error::OnnxError;
pub use family::ModelFamily;
pub use remover::U2NetRemover;
pub use runtime::{DYLIB_ENV, THREADS_ENV, init_runtime};
pub use segmenter::{CLOTH_SEG_CLASSES, OnnxSegmenter};
pub use source::{
    CACHE_ENV, FetchLimits, ResolveModelError, SCRATCH_ENV, default_cache_dir, resolve_model,
    resolve_model_with,
};
