//! Maps a ClothJob's `spec.pipeline` and `spec.output` to the pipeline's own options.

use std::time::Duration;

use clothjob_api::{
    BackgroundRemovalBackend, ExpansionBackend, OnnxModel, Output, Pipeline, SegmentationBackend,
};
use clothjob_backends::gemini::{DEFAULT_ENDPOINT, GeminiConfig, GeminiExpander};
use clothjob_onnx::ModelFamily;
use clothjob_pipeline::{
    BackgroundRemovalOptions, EncodingOptions, ExpansionOptions, Options, SegmentationOptions,
};

use crate::error::RunError;

/// A model location as the pipeline's model path: the file itself for `file:///x` or `/x`;
/// for an `https://` URL nothing yet (the run fetches it into the model cache and fills the
/// path in, see [`OnnxModels`]).
fn model_path(m: &OnnxModel) -> std::path::PathBuf {
    let uri = m.model_uri.as_str();
    match uri.strip_prefix("file://") {
        Some(path) => path.into(),
        None if uri.starts_with('/') => uri.into(),
        None => std::path::PathBuf::new(),
    }
}

/// One ONNX model a run needs: where it is, its expected digest and its family.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxModelRef {
    /// `file:///x`, `/x` or `https://...`.
    pub uri: String,
    /// Expected sha256 (hex), checked before loading.
    pub sha256: Option<String>,
    /// Decides input size and normalisation.
    pub family: ModelFamily,
}

/// The ONNX models of a pipeline spec, per stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnnxModels {
    /// The background-removal model, when that stage runs on `onnx`.
    pub background_removal: Option<OnnxModelRef>,
    /// The segmentation model, when that stage runs on `onnx`.
    pub segmentation: Option<OnnxModelRef>,
}

fn model_ref(m: &OnnxModel, default: ModelFamily, stage: &str) -> Result<OnnxModelRef, RunError> {
    let family = match m.model.as_deref() {
        Some(name) => ModelFamily::from_name(name).ok_or_else(|| {
            RunError::Config(format!(
                "{stage}.onnx.model {name:?} is not a known model family (u2netp, u2net, \
                 u2net_human_seg, silueta, isnet-general-use, isnet-anime, u2net_cloth_seg)"
            ))
        })?,
        None if default == ModelFamily::ClothSeg => default,
        None => ModelFamily::guess_from_path(std::path::Path::new(&m.model_uri)),
    };
    Ok(OnnxModelRef {
        uri: m.model_uri.clone(),
        sha256: m.sha256.clone(),
        family,
    })
}

/// The ONNX models a pipeline spec asks for (none when no stage runs on `onnx`).
pub fn onnx_models(p: &Pipeline) -> Result<OnnxModels, RunError> {
    let bg = &p.background_removal;
    let background_removal = match (&bg.onnx, bg.enabled, &bg.backend) {
        (Some(m), true, BackgroundRemovalBackend::Onnx) => {
            Some(model_ref(m, ModelFamily::U2Net, "backgroundRemoval")?)
        }
        _ => None,
    };
    let seg = &p.segmentation;
    let segmentation = match (&seg.onnx, seg.enabled, &seg.backend) {
        (Some(m), true, SegmentationBackend::Onnx) => {
            Some(model_ref(m, ModelFamily::ClothSeg, "segmentation")?)
        }
        _ => None,
    };
    Ok(OnnxModels {
        background_removal,
        segmentation,
    })
}

/// Settings of a remote (rembg HTTP API) background remover.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteRemoverSettings {
    /// Base URL of the service.
    pub url: String,
    /// rembg model name.
    pub model: String,
    /// Whether the service applies alpha matting.
    pub alpha_matting: bool,
    /// Request time-out.
    pub timeout: std::time::Duration,
}

/// The remote remover settings of a pipeline spec, when its background removal is remote.
pub fn remote_remover(p: &Pipeline) -> Option<RemoteRemoverSettings> {
    let stage = &p.background_removal;
    if !stage.enabled || stage.backend != BackgroundRemovalBackend::Remote {
        return None;
    }
    let r = stage.remote.as_ref()?;
    Some(RemoteRemoverSettings {
        url: r.url.clone(),
        model: r.model.clone().unwrap_or_else(|| "u2net".into()),
        alpha_matting: r.alpha_matting.unwrap_or(false),
        timeout: std::time::Duration::from_secs(
            u64::try_from(r.timeout_seconds.unwrap_or(60)).unwrap_or(60),
        ),
    })
}

/// Env var holding the Gemini API key; the operator sets it from the Secret named by
/// `expansion.gemini.apiKeySecretRef`.
pub const ENV_GEMINI_API_KEY: &str = "GEMINI_API_KEY";

/// The total time cap of the gemini expansion stage when the spec sets none, in seconds.
pub const DEFAULT_GEMINI_TIMEOUT_SECONDS: i32 = 300;

/// The value of [`ENV_GEMINI_API_KEY`], when set.
pub fn gemini_api_key_from_env() -> Option<String> {
    std::env::var(ENV_GEMINI_API_KEY).ok()
}

/// The Gemini client settings of a pipeline spec, when its expansion runs on Gemini:
/// model, endpoint (default the public API), the spec's prompt appended to the built-in one,
/// and `timeoutSeconds` (default 300) as the stage's total time cap. `api_key` is the value
/// of [`ENV_GEMINI_API_KEY`]; without one (or with a bad model or endpoint) this is a
/// [`RunError::Config`], before any work is done.
pub fn gemini(p: &Pipeline, api_key: Option<String>) -> Result<Option<GeminiConfig>, RunError> {
    let stage = &p.expansion;
    if !stage.enabled || stage.backend != ExpansionBackend::Gemini {
        return Ok(None);
    }
    let g = stage.gemini.as_ref().ok_or_else(|| {
        RunError::Config(
            "expansion.gemini (model, apiKeySecretRef) is required for the gemini backend".into(),
        )
    })?;
    let key = api_key
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            RunError::Config(format!(
                "the gemini expansion backend needs the API key in the environment variable \
                 {ENV_GEMINI_API_KEY} (the operator sets it from the Secret key named by \
                 expansion.gemini.apiKeySecretRef)"
            ))
        })?;
    let mut config = GeminiConfig::new(key, g.model.trim());
    config.endpoint = g
        .endpoint
        .clone()
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    config.extra_prompt = g.prompt.clone();
    let seconds = g
        .timeout_seconds
        .unwrap_or(DEFAULT_GEMINI_TIMEOUT_SECONDS)
        .max(1);
    config.total_timeout = Duration::from_secs(u64::try_from(seconds).unwrap_or(300));
    GeminiExpander::new(config.clone())
        .map_err(|e| RunError::Config(format!("expansion.gemini: {e}")))?;
    Ok(Some(config))
}

/// Parses `#RRGGBB`.
pub fn parse_color(hex: &str) -> Option<[u8; 3]> {
    let h = hex.strip_prefix('#')?;
    if h.len() != 6 {
        return None;
    }
    let v = u32::from_str_radix(h, 16).ok()?;
    Some([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

/// The pipeline options for a ClothJob's pipeline and output settings.
pub fn pipeline_options(p: &Pipeline, out: &Output) -> Result<Options, RunError> {
    let background_removal = if p.background_removal.enabled {
        let backend = match p.background_removal.backend {
            BackgroundRemovalBackend::Builtin => {
                clothjob_pipeline::BackgroundRemovalBackend::Builtin
            }
            BackgroundRemovalBackend::Onnx => {
                let m = p.background_removal.onnx.as_ref().ok_or_else(|| {
                    RunError::Config(
                        "backgroundRemoval.onnx is required for the onnx backend".into(),
                    )
                })?;
                clothjob_pipeline::BackgroundRemovalBackend::Onnx {
                    model_path: model_path(m),
                }
            }
            BackgroundRemovalBackend::Remote => {
                let r = p.background_removal.remote.as_ref().ok_or_else(|| {
                    RunError::Config(
                        "backgroundRemoval.remote is required for the remote backend".into(),
                    )
                })?;
                clothjob_pipeline::BackgroundRemovalBackend::Remote { url: r.url.clone() }
            }
        };
        Some(BackgroundRemovalOptions {
            backend,
            ..Default::default()
        })
    } else {
        None
    };
    let segmentation = if p.segmentation.enabled {
        let backend = match p.segmentation.backend {
            SegmentationBackend::Builtin => clothjob_pipeline::SegmentationBackend::Builtin,
            SegmentationBackend::Onnx => {
                let m = p.segmentation.onnx.as_ref().ok_or_else(|| {
                    RunError::Config("segmentation.onnx is required for the onnx backend".into())
                })?;
                clothjob_pipeline::SegmentationBackend::Onnx {
                    model_path: model_path(m),
                }
            }
        };
        Some(SegmentationOptions {
            backend,
            ..Default::default()
        })
    } else {
        None
    };
    let expansion = if p.expansion.enabled {
        let mut e = ExpansionOptions::default();
        match p.expansion.backend {
            ExpansionBackend::Builtin => {}
            ExpansionBackend::Gemini => {
                e.backend = clothjob_pipeline::ExpansionBackend::Gemini;
            }
        }
        if let Some(bg) = &p.expansion.background {
            e.background =
                parse_color(bg).ok_or_else(|| RunError::Config(format!("bad colour {bg}")))?;
        }
        Some(e)
    } else {
        None
    };
    let encoding = p.encoding.enabled.then(|| EncodingOptions {
        max_side: u32::try_from(out.max_side).unwrap_or(1024).max(1),
        jpeg_quality: u8::try_from(out.jpeg_quality.clamp(1, 100)).unwrap_or(85),
    });
    Ok(Options {
        background_removal,
        segmentation,
        expansion,
        encoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output() -> Output {
        serde_yaml::from_str("uri: file:///tmp/out\n").unwrap()
    }

    #[test]
    fn defaults_enable_every_stage_with_builtin_backends() {
        let p: Pipeline = serde_yaml::from_str("{}").unwrap();
        let o = pipeline_options(&p, &output()).unwrap();
        assert_eq!(o, Options::default());
        let enc = o.encoding.unwrap();
        assert_eq!((enc.max_side, enc.jpeg_quality), (1024, 85));
    }

    #[test]
    fn disabled_stages_are_none_and_output_settings_pass_through() {
        let p: Pipeline = serde_yaml::from_str(
            "backgroundRemoval: {enabled: false}\nsegmentation: {enabled: false}\nexpansion: {enabled: true, background: '#102030'}\n",
        )
        .unwrap();
        let out: Output =
            serde_yaml::from_str("uri: s3://b/p\nmaxSide: 512\njpegQuality: 70\n").unwrap();
        let o = pipeline_options(&p, &out).unwrap();
        assert!(o.background_removal.is_none());
        assert!(o.segmentation.is_none());
        assert_eq!(o.expansion.unwrap().background, [0x10, 0x20, 0x30]);
        let enc = o.encoding.unwrap();
        assert_eq!((enc.max_side, enc.jpeg_quality), (512, 70));
    }

    #[test]
    fn onnx_models_come_from_paths_or_https_with_their_family() {
        let p: Pipeline = serde_yaml::from_str(
            "backgroundRemoval: {backend: onnx, onnx: {modelUri: 'file:///models/u2netp.onnx'}}\n",
        )
        .unwrap();
        let o = pipeline_options(&p, &output()).unwrap();
        assert_eq!(
            o.background_removal.unwrap().backend,
            clothjob_pipeline::BackgroundRemovalBackend::Onnx {
                model_path: "/models/u2netp.onnx".into()
            }
        );
        let m = onnx_models(&p).unwrap();
        assert_eq!(m.background_removal.unwrap().family, ModelFamily::U2Net);
        assert!(m.segmentation.is_none());

        let p: Pipeline = serde_yaml::from_str(concat!(
            "backgroundRemoval: {backend: onnx, onnx: {modelUri: 'https://models.example/isnet.onnx', ",
            "model: isnet-general-use, sha256: '",
            "0000000000000000000000000000000000000000000000000000000000000000'}}\n",
            "segmentation: {backend: onnx, onnx: {modelUri: '/m/cloth.onnx'}}\n",
        ))
        .unwrap();
        let m = onnx_models(&p).unwrap();
        let bg = m.background_removal.unwrap();
        assert_eq!(bg.family, ModelFamily::IsNetGeneral);
        assert_eq!(bg.uri, "https://models.example/isnet.onnx");
        assert!(bg.sha256.is_some());
        assert_eq!(m.segmentation.unwrap().family, ModelFamily::ClothSeg);

        let p: Pipeline = serde_yaml::from_str(
            "backgroundRemoval: {backend: onnx, onnx: {modelUri: '/m.onnx', model: bogus}}\n",
        )
        .unwrap();
        let e = onnx_models(&p).unwrap_err();
        assert!(
            matches!(&e, RunError::Config(m) if m.contains("bogus")),
            "{e}"
        );
    }

    #[test]
    fn remote_removal_carries_its_settings() {
        let p: Pipeline = serde_yaml::from_str(
            "backgroundRemoval: {backend: remote, remote: {url: 'http://127.0.0.1:7000', model: u2netp, timeoutSeconds: 5}}\n",
        )
        .unwrap();
        let r = remote_remover(&p).unwrap();
        assert_eq!(
            (r.url.as_str(), r.model.as_str(), r.alpha_matting),
            ("http://127.0.0.1:7000", "u2netp", false)
        );
        assert_eq!(r.timeout, std::time::Duration::from_secs(5));
        let o = pipeline_options(&p, &output()).unwrap();
        assert!(matches!(
            o.background_removal.unwrap().backend,
            clothjob_pipeline::BackgroundRemovalBackend::Remote { .. }
        ));
        let builtin: Pipeline = serde_yaml::from_str("{}").unwrap();
        assert!(remote_remover(&builtin).is_none());
    }

    fn gemini_spec(extra: &str) -> Pipeline {
        serde_yaml::from_str(&format!(
            "expansion: {{backend: gemini, gemini: {{model: gemini-2.5-flash-image, apiKeySecretRef: {{name: g, key: k}}{extra}}}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn gemini_expansion_carries_its_settings_and_defaults() {
        let p = gemini_spec("");
        let o = pipeline_options(&p, &output()).unwrap();
        assert_eq!(
            o.expansion.unwrap().backend,
            clothjob_pipeline::ExpansionBackend::Gemini
        );
        let c = gemini(&p, Some("key-1".into())).unwrap().unwrap();
        assert_eq!(c.api_key, "key-1");
        assert_eq!(c.model, "gemini-2.5-flash-image");
        assert_eq!(c.endpoint, "https://generativelanguage.googleapis.com");
        assert_eq!(c.total_timeout, Duration::from_secs(300));
        assert_eq!(c.extra_prompt, None);

        let p = gemini_spec(
            ", endpoint: 'http://127.0.0.1:9', prompt: 'Fold the sleeves.', timeoutSeconds: 20",
        );
        let c = gemini(&p, Some("key-2".into())).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.extra_prompt.as_deref(), Some("Fold the sleeves."));
        assert_eq!(c.total_timeout, Duration::from_secs(20));
    }

    #[test]
    fn gemini_without_a_key_or_settings_is_a_config_error() {
        let p = gemini_spec("");
        for key in [None, Some(String::new()), Some("  ".into())] {
            let e = gemini(&p, key).unwrap_err();
            assert!(matches!(e, RunError::Config(_)), "{e}");
            assert!(e.to_string().contains("GEMINI_API_KEY"), "{e}");
            assert_eq!(e.category(), "InvalidSpec");
            assert_eq!(e.exit_code(), clothjob_api::contract::EXIT_BAD_INPUT);
        }
        let no_block: Pipeline = serde_yaml::from_str("expansion: {backend: gemini}\n").unwrap();
        let e = gemini(&no_block, Some("k".into())).unwrap_err();
        assert!(e.to_string().contains("expansion.gemini"), "{e}");
        let bad_endpoint = gemini_spec(", endpoint: 'ftp://x'");
        assert!(matches!(
            gemini(&bad_endpoint, Some("k".into())),
            Err(RunError::Config(_))
        ));
        // Builtin expansion or a disabled stage needs no key.
        let builtin: Pipeline = serde_yaml::from_str("{}").unwrap();
        assert!(gemini(&builtin, None).unwrap().is_none());
        let off: Pipeline = serde_yaml::from_str(
            "expansion: {enabled: false, backend: gemini, gemini: {model: m, apiKeySecretRef: {name: g, key: k}}}\n",
        )
        .unwrap();
        assert!(gemini(&off, None).unwrap().is_none());
    }

    #[test]
    fn colours_parse() {
        assert_eq!(parse_color("#FFFFFF"), Some([255, 255, 255]));
        assert_eq!(parse_color("#0a0B0c"), Some([10, 11, 12]));
        assert_eq!(parse_color("FFFFFF"), None);
        assert_eq!(parse_color("#FFF"), None);
    }
}
