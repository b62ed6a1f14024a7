//! Maps a ClothJob's `spec.pipeline` and `spec.output` to the pipeline's own options, and
//! reads the runner's network policy (`CLOTHJOB_ALLOWED_NETWORKS`, the operator's
//! `--allowed-networks`) that every outbound request goes through.

use std::time::Duration;

use clothjob_api::contract::ENV_ALLOWED_NETWORKS;
use clothjob_api::{
    BackgroundRemovalBackend, ExpansionBackend, OnnxModel, Output, Pipeline, SegmentationBackend,
};
use clothjob_backends::gemini::{DEFAULT_ENDPOINT, GeminiConfig, GeminiExpander};
use clothjob_backends::netguard::{self, NetworkPolicy, Redirects};
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
    /// The background-removal model, when that stage runs on `onnx`, or on `auto` with
    /// `onnx` set (the fallback: the run loads it and supplies it to the pipeline, keeping
    /// the options' `Auto` backend).
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

/// The ONNX models a pipeline spec asks for (none when no stage runs on `onnx`, nor
/// background removal on `auto` with a model).
pub fn onnx_models(p: &Pipeline) -> Result<OnnxModels, RunError> {
    let bg = &p.background_removal;
    let background_removal = match (&bg.onnx, bg.enabled, &bg.backend) {
        (Some(m), true, BackgroundRemovalBackend::Onnx | BackgroundRemovalBackend::Auto) => {
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

/// The network policy of this runner: public addresses, plus the networks and hosts listed
/// in [`ENV_ALLOWED_NETWORKS`] (set by the operator from its `--allowed-networks`). A value
/// that does not parse is a [`RunError::Config`].
pub fn network_policy_from_env() -> Result<NetworkPolicy, RunError> {
    match std::env::var(ENV_ALLOWED_NETWORKS) {
        Ok(list) => NetworkPolicy::parse(&list).map_err(|e| RunError::Config(e.to_string())),
        Err(std::env::VarError::NotPresent) => Ok(NetworkPolicy::public_only()),
        Err(std::env::VarError::NotUnicode(_)) => Err(RunError::Config(format!(
            "{ENV_ALLOWED_NETWORKS} is not UTF-8"
        ))),
    }
}

/// The HTTP client that downloads the ONNX model at `uri` (a path or `file://` needs none
/// but gets one): guarded by the network policy of [`ENV_ALLOWED_NETWORKS`]. An `https://`
/// model on a refused address (a literal IP, or a name whose every address is refused) is
/// [`PipelineError::InvalidOptions`] here, before any connection; the client checks again
/// when it connects and on every redirect.
pub async fn model_download_client(
    uri: &str,
) -> Result<reqwest::Client, clothjob_pipeline::PipelineError> {
    let policy = network_policy_from_env()
        .map_err(|e| clothjob_pipeline::PipelineError::InvalidOptions(e.to_string()))?;
    model_download_client_with(uri, &policy).await
}

/// [`model_download_client`] with the network policy given.
pub async fn model_download_client_with(
    uri: &str,
    policy: &NetworkPolicy,
) -> Result<reqwest::Client, clothjob_pipeline::PipelineError> {
    use clothjob_pipeline::PipelineError;
    let refused = |reason: String| {
        PipelineError::InvalidOptions(format!(
            "ONNX model {}: {reason}",
            netguard::redact_url_str(uri)
        ))
    };
    if let Ok(url) = url::Url::parse(uri)
        && matches!(url.scheme(), "http" | "https")
    {
        policy.check_url(&url).map_err(|e| refused(e.to_string()))?;
        if let Some(url::Host::Domain(host)) = url.host()
            && !policy.allows_host_name(host)
        {
            // Resolve once to fail clearly now; a resolution error is left to the download.
            if let Ok(addrs) = tokio::net::lookup_host((host, 0)).await
                && let Err(e) = policy.filter_resolved(host, addrs)
            {
                return Err(refused(e.to_string()));
            }
        }
    }
    let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(30));
    policy
        .guard_async(builder, Redirects::Follow)
        .build()
        .map_err(|e| PipelineError::Internal(format!("HTTP client: {e}")))
}

/// The value of [`ENV_GEMINI_API_KEY`], when set.
pub fn gemini_api_key_from_env() -> Option<String> {
    std::env::var(ENV_GEMINI_API_KEY).ok()
}

/// The Gemini client settings of a pipeline spec, when its expansion runs on Gemini:
/// model, endpoint (default the public API), the spec's prompt appended to the built-in one,
/// and `timeoutSeconds` (default 300) as the stage's total time cap. `api_key` is the value
/// of [`ENV_GEMINI_API_KEY`]; without one (or with a bad model or endpoint) this is a
/// [`RunError::Config`], before any work is done. The endpoint is under the network policy
/// of [`ENV_ALLOWED_NETWORKS`] ([`gemini_with`]).
pub fn gemini(p: &Pipeline, api_key: Option<String>) -> Result<Option<GeminiConfig>, RunError> {
    let stage = &p.expansion;
    if !stage.enabled || stage.backend != ExpansionBackend::Gemini {
        return Ok(None);
    }
    gemini_with(p, api_key, &network_policy_from_env()?)
}

/// [`gemini`] with the network policy given: the endpoint must be `https` unless its host
/// is allowed by `network`, and a literal non-public address it does not allow is a
/// [`RunError::Config`] (`refused to connect to …`).
pub fn gemini_with(
    p: &Pipeline,
    api_key: Option<String>,
    network: &NetworkPolicy,
) -> Result<Option<GeminiConfig>, RunError> {
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
    config.network = network.clone();
    GeminiExpander::new(config.clone())
        .map_err(|e| RunError::Config(format!("expansion.gemini: {e}")))?;
    Ok(Some(config))
}

/// Everything the runner derives from a ClothJob spec before it runs.
#[derive(Debug)]
pub struct SpecSettings {
    /// The parsed spec.
    pub spec: clothjob_api::ClothJobSpec,
    /// The stage options.
    pub options: Options,
    /// The ONNX models the stages need.
    pub onnx: OnnxModels,
    /// The remote background remover, when asked for.
    pub remote_remover: Option<RemoteRemoverSettings>,
    /// The Gemini settings, when expansion runs on Gemini (`Debug` hides the key).
    pub gemini: Option<GeminiConfig>,
    /// The source as shown in messages (`url`/`uri` without query or credentials).
    pub source_shown: Option<String>,
}

/// Parses a ClothJob spec as `kubectl apply` takes it (YAML or JSON; the whole manifest or
/// only its `spec`) and builds every setting the runner derives from it, `api_key` standing
/// for [`ENV_GEMINI_API_KEY`] and `network` for the runner's network policy. The entry point
/// of the spec parser and the option builders as a whole: any bytes give a value or an
/// error (a [`RunError::Config`] for what does not parse), never a panic (fuzzed by
/// `fuzz/fuzz_targets/spec.rs`).
pub fn settings_from_spec(
    bytes: &[u8],
    api_key: Option<String>,
    network: &NetworkPolicy,
) -> Result<SpecSettings, RunError> {
    let document: serde_yaml::Value = serde_yaml::from_slice(bytes)
        .map_err(|e| RunError::Config(format!("the ClothJob is not YAML: {e}")))?;
    let spec_value = match document.get("spec") {
        Some(spec) if document.get("kind").is_some() => spec.clone(),
        _ => document,
    };
    let spec: clothjob_api::ClothJobSpec =
        serde_yaml::from_value(spec_value).map_err(|e| RunError::Config(format!("spec: {e}")))?;
    let options = pipeline_options(&spec.pipeline, &spec.output)?;
    let onnx = onnx_models(&spec.pipeline)?;
    let remote_remover = remote_remover(&spec.pipeline);
    let gemini = gemini_with(&spec.pipeline, api_key, network)?;
    let source_shown = spec
        .source
        .url
        .as_deref()
        .or(spec.source.uri.as_deref())
        .map(netguard::redact_url_str);
    Ok(SpecSettings {
        spec,
        options,
        onnx,
        remote_remover,
        gemini,
        source_shown,
    })
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
            // `onnx` is optional for `auto`: without a model the builtin mask is kept and
            // the stage says so (accepted at apply time too).
            BackgroundRemovalBackend::Auto => clothjob_pipeline::BackgroundRemovalBackend::Auto {
                model_path: p.background_removal.onnx.as_ref().map(model_path),
            },
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
    fn auto_removal_takes_the_onnx_model_when_set_and_runs_without_one() {
        let p: Pipeline = serde_yaml::from_str(
            "backgroundRemoval: {backend: auto, onnx: {modelUri: 'file:///models/u2netp.onnx'}}\n",
        )
        .unwrap();
        let o = pipeline_options(&p, &output()).unwrap();
        assert_eq!(
            o.background_removal.unwrap().backend,
            clothjob_pipeline::BackgroundRemovalBackend::Auto {
                model_path: Some("/models/u2netp.onnx".into())
            }
        );
        let m = onnx_models(&p).unwrap().background_removal.unwrap();
        assert_eq!(m.uri, "file:///models/u2netp.onnx");
        assert_eq!(m.family, ModelFamily::U2Net);

        let bare: Pipeline = serde_yaml::from_str("backgroundRemoval: {backend: auto}\n").unwrap();
        let o = pipeline_options(&bare, &output()).unwrap();
        assert_eq!(
            o.background_removal.unwrap().backend,
            clothjob_pipeline::BackgroundRemovalBackend::Auto { model_path: None }
        );
        assert_eq!(onnx_models(&bare).unwrap(), OnnxModels::default());

        let off: Pipeline = serde_yaml::from_str(
            "backgroundRemoval: {enabled: false, backend: auto, onnx: {modelUri: '/m.onnx'}}\n",
        )
        .unwrap();
        assert_eq!(onnx_models(&off).unwrap(), OnnxModels::default());
        assert_eq!(
            pipeline_options(&off, &output())
                .unwrap()
                .background_removal,
            None
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
        let c = gemini_with(&p, Some("key-2".into()), &loopback())
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.network, loopback());
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
            assert_eq!(e.exit_code(), clothjob_api::contract::EXIT_INVALID_SPEC);
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

    fn loopback() -> NetworkPolicy {
        NetworkPolicy::parse("127.0.0.0/8").unwrap()
    }

    #[test]
    fn the_env_var_is_the_contract_one() {
        assert_eq!(netguard::ENV_ALLOWED_NETWORKS, ENV_ALLOWED_NETWORKS);
    }

    #[test]
    fn a_gemini_endpoint_must_be_https_and_public_unless_allowed() {
        let public = NetworkPolicy::public_only();
        let http = gemini_spec(", endpoint: 'http://127.0.0.1:9'");
        let e = gemini_with(&http, Some("k".into()), &public).unwrap_err();
        assert_eq!(e.category(), "InvalidSpec");
        assert!(e.to_string().contains("must be https"), "{e}");
        let http_name = gemini_spec(", endpoint: 'http://gemini.example.com'");
        assert!(gemini_with(&http_name, Some("k".into()), &public).is_err());
        let allowed_name = NetworkPolicy::parse("gemini.example.com").unwrap();
        assert!(gemini_with(&http_name, Some("k".into()), &allowed_name).is_ok());
        let metadata = gemini_spec(", endpoint: 'https://169.254.169.254'");
        let e = gemini_with(&metadata, Some("k".into()), &public).unwrap_err();
        assert_eq!(e.category(), "InvalidSpec");
        assert!(
            e.to_string().contains(
                "refused to connect to 169.254.169.254: link-local address; allow it with the operator's --allowed-networks"
            ),
            "{e}"
        );
        assert!(
            gemini_with(
                &metadata,
                Some("k".into()),
                &NetworkPolicy::parse("169.254.0.0/16").unwrap()
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn a_model_on_a_refused_address_is_an_invalid_spec_before_any_download() {
        let public = NetworkPolicy::public_only();
        for uri in [
            "https://169.254.169.254/models/u2netp.onnx?token=secret",
            "https://[::1]/m.onnx",
            "https://localhost:1/m.onnx",
        ] {
            let e = model_download_client_with(uri, &public).await.unwrap_err();
            assert_eq!(e.category(), "InvalidOptions", "{uri}: {e}");
            assert!(e.to_string().contains("refused to connect to"), "{e}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        model_download_client_with("https://localhost:1/m.onnx", &loopback())
            .await
            .unwrap();
        model_download_client_with("/models/u2netp.onnx", &public)
            .await
            .unwrap();
        // A public literal address (no resolution, no traffic: the client is only built).
        model_download_client_with("https://[2606:4700::1111]/u2netp.onnx", &public)
            .await
            .unwrap();
    }

    #[test]
    fn a_whole_manifest_or_its_spec_gives_every_setting() {
        let manifest = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/clothjob.yaml"
        ))
        .unwrap();
        let s = settings_from_spec(&manifest, None, &NetworkPolicy::public_only()).unwrap();
        assert_eq!(s.options, Options::default());
        assert!(s.gemini.is_none() && s.remote_remover.is_none());
        let spec = b"source: {url: 'https://u:p@photos.example.com/a.jpg?sig=1'}\noutput: {uri: 's3://b/p'}\npipeline: {backgroundRemoval: {backend: remote, remote: {url: 'http://rembg:7000'}}}\n";
        let s = settings_from_spec(spec, None, &NetworkPolicy::public_only()).unwrap();
        assert_eq!(
            s.source_shown.as_deref(),
            Some("https://photos.example.com/a.jpg")
        );
        assert_eq!(s.remote_remover.unwrap().url, "http://rembg:7000");
        for bad in [&b"{"[..], b"source: 3", b"- a", b"\xff\xfe", b""] {
            let e = settings_from_spec(bad, None, &NetworkPolicy::public_only()).unwrap_err();
            assert_eq!(e.category(), "InvalidSpec", "{e}");
        }
    }

    /// The fuzz target over the spec parser and option builders
    /// (`fuzz/fuzz_targets/spec.rs` runs the same): settings or an InvalidSpec error, never
    /// a panic.
    fn spec_target(data: &[u8]) {
        let policy = NetworkPolicy::public_only();
        if let Err(e) = settings_from_spec(data, Some("fuzz-key".into()), &policy) {
            assert_eq!(e.category(), "InvalidSpec", "{e}");
        }
    }

    /// A spec that sets every field the runner reads.
    const FULL_SPEC: &str = r##"apiVersion: closetconnect.io/v1alpha1
kind: ClothJob
metadata: {name: full, namespace: shop}
spec:
  source:
    url: "https://photos.example.com/a/b.jpg?X-Amz-Signature=abc"
  output: {uri: "s3://closet/catalog", maxSide: 800, jpegQuality: 90, credentialsSecretName: s3}
  pipeline:
    backgroundRemoval:
      enabled: true
      backend: remote
      remote: {url: "http://rembg.default.svc:7000", model: u2netp, alphaMatting: true, timeoutSeconds: 30}
      onnx: {modelUri: "https://models.example.com/u2net.onnx", model: u2net, sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
    segmentation: {enabled: true, backend: onnx, onnx: {modelUri: "/models/cloth.onnx"}}
    expansion:
      enabled: true
      backend: gemini
      background: "#F4F4F4"
      gemini: {model: gemini-2.5-flash-image, endpoint: "https://generativelanguage.googleapis.com", apiKeySecretRef: {name: g, key: k}, prompt: "Fold it.", timeoutSeconds: 60}
    encoding: {enabled: true}
  retries: 3
  activeDeadlineSeconds: 900
  ttlSecondsAfterFinished: 60
"##;

    #[test]
    fn a_corpus_of_broken_specs_never_panics() {
        let example = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/clothjob.yaml"
        ))
        .unwrap();
        let seeds: Vec<Vec<u8>> = vec![
            example,
            FULL_SPEC.as_bytes().to_vec(),
            // Aliases that would expand to billions of nodes.
            b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n".to_vec(),
            // Deep nesting.
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            b"source: {url: 'http://[::1'}\noutput: {uri: 'file:///x', maxSide: 99999999999999999999, jpegQuality: -5}\n".to_vec(),
        ];
        let replacements: [&[u8]; 12] = [
            b"-1",
            b"99999999999999999999",
            b"~",
            b"[]",
            b"{}",
            b"''",
            b"\"\\u0000\"",
            b"!!binary aGk=",
            b"*nope",
            b"&x y",
            b"1e308",
            b"\"#GGGGGG\"",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n.max(1) as u64) as usize
        };
        let mut cases = 0;
        for (i, seed) in seeds.iter().enumerate() {
            spec_target(seed);
            // The hostile seeds cost ~0.1 s each (the parser's own limits at work): a few.
            let (truncations, mutations) = if i < 2 { (200, 1300) } else { (10, 20) };
            let n = seed.len();
            for _ in 0..truncations {
                spec_target(&seed[..next(n + 1)]);
                cases += 1;
            }
            for round in 0..mutations {
                let mut b = seed.clone();
                let at = next(n);
                match round % 5 {
                    0 => b[at] ^= 1 << next(8),
                    1 => b[at] = b" :-[]{},&*!|>'\"#%@`\n\t0x"[next(22)],
                    2 => {
                        b.remove(at);
                    }
                    3 => {
                        // A value swapped for a hostile one.
                        let end = b[at..]
                            .iter()
                            .position(|&c| c == b'\n' || c == b',')
                            .map_or(n, |e| at + e);
                        let with = replacements[next(replacements.len())];
                        b.splice(at..end, with.iter().copied());
                    }
                    _ => {
                        // A line repeated (duplicate keys) or dropped.
                        let start = b[..at]
                            .iter()
                            .rposition(|&c| c == b'\n')
                            .map_or(0, |s| s + 1);
                        let end = b[at..]
                            .iter()
                            .position(|&c| c == b'\n')
                            .map_or(n, |e| at + e + 1);
                        let line = b[start..end].to_vec();
                        if next(2) == 0 {
                            b.splice(start..start, line);
                        } else {
                            b.drain(start..end);
                        }
                    }
                }
                spec_target(&b);
                cases += 1;
            }
        }
        assert!(cases >= 3000, "{cases} cases");
    }

    #[test]
    fn colours_parse() {
        assert_eq!(parse_color("#FFFFFF"), Some([255, 255, 255]));
        assert_eq!(parse_color("#0a0B0c"), Some([10, 11, 12]));
        assert_eq!(parse_color("FFFFFF"), None);
        assert_eq!(parse_color("#FFF"), None);
    }
}
