//! `Limits`: how large an input may be, in bytes and in decoded pixels.

/// Limits on one input, checked before and during decoding so that a
/// decompression bomb fails fast with [`crate::PipelineError::TooLarge`].
///
/// Defaults: 64 MiB of encoded bytes (a phone JPEG is 2-12 MB, a 48 Mpx PNG
/// can reach ~60 MB) and 64 Mpx decoded (8192x8192: every phone main camera up
/// to 50 Mpx fits, 200 Mpx sensors bin to 12.5 Mpx by default). The decoded
/// image costs 3-8 bytes per pixel; the stages then work at most at
/// [`crate::pipeline::WORK_MAX_SIDE`] px (measured peak RSS of a whole run:
/// 113 MiB at 2000x2000, ~325 MiB at 4000x4000), so a 64 Mpx input peaks
/// around 200 MiB (decode) + 330 MiB (stages at 4096 px).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes.
    pub max_bytes: u64,
    /// Largest accepted decoded image, in pixels (width x height).
    pub max_pixels: u64,
}

impl Limits {
    /// 64 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
    /// 64 Mpx (8192 x 8192).
    pub const DEFAULT_MAX_PIXELS: u64 = 8192 * 8192;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_pixels: Self::DEFAULT_MAX_PIXELS,
        }
    }
}
