//! The ClothJob runner: fetches the source photo, runs the pipeline, stores the outputs and
//! reports weighted progress to the ClothJob's status (or to a terminal with `process`).

pub mod error;
pub mod execute;
pub mod options;
pub mod pod;
pub mod process;
pub mod progress;
pub mod result;
pub mod reuse;
pub mod source;
pub mod store;
pub mod writer;
