//! Loading ONNX Runtime: a missing library or a file that is not one is a
//! clear `BackendUnavailable`, never a panic; a failed attempt does not stop
//! a later one with the right library. (Its own test binary: the runtime is
//! loaded once per process.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use clothjob_onnx::{OnnxError, init_runtime};
use clothjob_pipeline::{PipelineError, StageName};

#[test]
fn a_missing_or_broken_library_is_backend_unavailable() {
    let missing = Path::new("/nonexistent/onnxruntime/libonnxruntime.so.1.32.0");
    let e = init_runtime(missing).unwrap_err();
    assert!(matches!(e, OnnxError::LoadRuntime { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "could not load ONNX Runtime from {}: no such file",
            missing.display()
        )),
        "{text}"
    );
    assert!(text.contains("ORT_DYLIB_PATH"), "{text}");
    assert!(!e.is_configuration());
    let pe = e.into_pipeline(StageName::BackgroundRemoval);
    assert!(
        matches!(&pe, PipelineError::BackendUnavailable { stage: StageName::BackgroundRemoval, backend, .. } if backend == "onnx"),
        "{pe}"
    );

    let dir = tempfile::tempdir().unwrap();
    let not_a_library = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, b"not a shared object").unwrap();
    let e = init_runtime(&not_a_library).unwrap_err();
    assert!(matches!(e, OnnxError::LoadRuntime { .. }), "{e}");
    assert!(e.to_string().contains("libonnxruntime.so"), "{e}");

    // A real library (when this machine has one) still loads afterwards.
    if support::runtime("a_missing_or_broken_library_is_backend_unavailable (reload part)") {
        init_runtime(missing).expect("loaded once, the path is not looked at again");
    }
}
