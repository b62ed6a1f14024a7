//! Weighted progress: the original worker's spans per stage (background removal 0-30,
//! segmentation 30-45, expansion 45-95, encoding 95-98, storing and finishing 98-100).

use serde::{Deserialize, Serialize};

/// A stage of the pipeline, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    /// Background removal: alpha mask and cut-out.
    BackgroundRemoval,
    /// Garment segmentation: label map, regions, dominant colours.
    Segmentation,
    /// Expansion to catalog canvases.
    Expansion,
    /// Encoding of the outputs.
    Encoding,
    /// Storing the outputs and finishing.
    Storing,
}

impl Stage {
    /// Every stage in execution order.
    pub const ALL: [Stage; 5] = [
        Stage::BackgroundRemoval,
        Stage::Segmentation,
        Stage::Expansion,
        Stage::Encoding,
        Stage::Storing,
    ];

    /// The name used in `.status.stage`, `.status.stages[].name` and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Stage::BackgroundRemoval => "backgroundRemoval",
            Stage::Segmentation => "segmentation",
            Stage::Expansion => "expansion",
            Stage::Encoding => "encoding",
            Stage::Storing => "storing",
        }
    }

    /// Parses a stage name as written by [`Stage::name`].
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The progress span `[start, end)` of this stage, in percent.
    pub fn span(self) -> (u8, u8) {
        match self {
            Stage::BackgroundRemoval => (0, 30),
            Stage::Segmentation => (30, 45),
            Stage::Expansion => (45, 95),
            Stage::Encoding => (95, 98),
            Stage::Storing => (98, 100),
        }
    }
}

/// Progress in percent while `stage` is `fraction` (0.0-1.0, clamped) done.
pub fn progress_within(stage: Stage, fraction: f64) -> u8 {
    let (start, end) = stage.span();
    let f = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let value = f64::from(start) + f * f64::from(end - start);
    // Never report the end of a span before the stage has finished.
    let capped = if f < 1.0 {
        value.floor().min(f64::from(end) - 1.0)
    } else {
        value
    };
    capped.max(f64::from(start)) as u8
}

/// Progress in percent once `stage` has finished (or was skipped because it is disabled).
pub fn progress_after(stage: Stage) -> u8 {
    stage.span().1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_tile_zero_to_hundred() {
        let mut at = 0;
        for s in Stage::ALL {
            let (a, b) = s.span();
            assert_eq!(a, at, "{} starts where the previous ended", s.name());
            assert!(b > a);
            at = b;
        }
        assert_eq!(at, 100);
    }

    #[test]
    fn boundaries_match_the_original_worker() {
        let ends: Vec<u8> = Stage::ALL.into_iter().map(progress_after).collect();
        assert_eq!(ends, vec![30, 45, 95, 98, 100]);
    }

    #[test]
    fn fractions_stay_inside_the_span_and_never_reach_its_end_early() {
        assert_eq!(progress_within(Stage::Expansion, 0.0), 45);
        assert_eq!(progress_within(Stage::Expansion, 0.5), 70);
        assert_eq!(progress_within(Stage::Expansion, 0.999), 94);
        assert_eq!(progress_within(Stage::Expansion, 1.0), 95);
        assert_eq!(progress_within(Stage::Encoding, 0.99), 97);
        assert_eq!(progress_within(Stage::BackgroundRemoval, -3.0), 0);
        assert_eq!(progress_within(Stage::BackgroundRemoval, f64::NAN), 0);
        assert_eq!(progress_within(Stage::BackgroundRemoval, 7.0), 30);
    }

    #[test]
    fn progress_is_monotonic_over_the_whole_run() {
        let mut last = 0;
        for s in Stage::ALL {
            for i in 0..=20 {
                let p = progress_within(s, f64::from(i) / 20.0);
                assert!(
                    p >= last,
                    "{} at {i}/20 went back from {last} to {p}",
                    s.name()
                );
                last = p;
            }
        }
        assert_eq!(last, 100);
    }

    #[test]
    fn names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::from_name(s.name()), Some(s));
        }
        assert_eq!(Stage::from_name("nope"), None);
    }
}
