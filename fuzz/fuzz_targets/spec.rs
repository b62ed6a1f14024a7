//! Fuzz target: the ClothJob spec parser and the runner's option building
//! (`clothjob_runner::options::settings_from_spec`: serde_yaml into `ClothJobSpec`, then the
//! pipeline options, ONNX models, remote remover and Gemini settings). Any bytes give
//! settings or an InvalidSpec error, never a panic. The stable test
//! `options::tests::a_corpus_of_broken_specs_never_panics` (runner/src/options.rs) checks
//! the same over a deterministic corpus.
#![no_main]

use clothjob_backends::NetworkPolicy;
use clothjob_runner::options::settings_from_spec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = NetworkPolicy::public_only();
    if let Err(e) = settings_from_spec(data, Some("fuzz-key".into()), &policy) {
        assert_eq!(e.category(), "InvalidSpec", "{e}");
    }
});
