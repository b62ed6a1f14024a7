//! Fuzz target: image decoding (`clothjob_pipeline::decode`). Any bytes give an image within
//! the limits or a bad-input error; never a panic, never an allocation past the limits. The
//! stable test `decode::tests::a_corpus_of_broken_images_never_panics_and_stays_within_the_limits`
//! (pipeline/src/decode.rs) checks the same over a deterministic corpus.
#![no_main]

use clothjob_pipeline::{Limits, decode};
use libfuzzer_sys::fuzz_target;

/// Small limits: a blown-up header must be refused before its pixels are allocated.
const LIMITS: Limits = Limits {
    max_bytes: 8 << 20,
    max_pixels: 2048 * 2048,
};

fuzz_target!(|data: &[u8]| {
    match decode(data, &LIMITS) {
        Ok(image) => {
            let pixels = u64::from(image.width()) * u64::from(image.height());
            assert!(pixels > 0 && pixels <= LIMITS.max_pixels, "{pixels} pixels");
        }
        Err(e) => assert!(e.is_bad_input(), "not a bad-input error: {e:?}"),
    }
});
