//! `Limits`: how large an input may be, in bytes and in decoded pixels.

/// Limits on one input, checked before and during decoding so that a
/// decompression bomb fails fast with [`crate::PipelineError::TooLarge`].
///
/// Defaults: 64 MiB of encoded bytes (a phone JPEG is 2-12 MB, a 48 Mpx PNG
/// can reach ~60 MB) and 64 Mpx decoded (8192x8192: every phone main camera up
/// to 50 Mpx fits, 200 Mpx sensors bin to 12.5 Mpx by default). Working memory
/// grows with pixels (about 9 bytes per pixel at peak for the builtin stages),
/// so 64 Mpx needs roughly 600 MiB; size the pod accordingly or lower the limit.
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
