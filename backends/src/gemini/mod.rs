//! `gemini` expansion: puts a garment cut-out on a catalog canvas with Gemini's
//! image model through the `generateContent` REST API.
//!
//! Request (Gemini API, v1beta): `POST {endpoint}/v1beta/models/{model}:generateContent`,
//! header `x-goog-api-key: KEY`, body
//! `{"contents":[{"parts":[{"text":PROMPT},{"inlineData":{"mimeType":"image/png","data":BASE64}}]}],
//!   "generationConfig":{"responseModalities":["TEXT","IMAGE"],"imageConfig":{"aspectRatio":"3:4"}}}`.
//! The request body stays under [`GeminiConfig::max_request_bytes`] (the API's
//! 20 MB inline limit): the input is first capped at
//! [`GeminiConfig::max_input_side`], then downscaled until the body fits.
//!
//! Reply: the image is the first `inlineData` (or `inline_data`) image part of
//! any candidate (parts marked `thought` only as a last resort); it is cropped
//! (centred, minimal) to exactly the requested aspect ratio. A reply without an
//! image fails with its reason: `promptFeedback.blockReason`, or a candidate's
//! `finishReason` (`IMAGE_SAFETY`, `SAFETY`, `NO_IMAGE`, `RECITATION`, …), or
//! the model's text when it stopped normally: [`GeminiError::Blocked`] /
//! [`GeminiError::NoImage`], never retried.
//!
//! The instructions ([`DEFAULT_PROMPT`]) ask for the garment unchanged,
//! centred on a plain studio background of the canvas colour at the aspect
//! ratio; [`GeminiConfig::extra_prompt`] and the call's extra text are
//! appended. As the pipeline's [`clothjob_pipeline::Expander`] (module
//! `expander`), the cut-out is sent composited on the background colour (the
//! photo when there is none) and errors map to
//! [`clothjob_pipeline::PipelineError`] by whether a retry can help.
//!
//! Retries: HTTP 408, 429, 500, 502, 503, 504, time-outs and connection errors
//! are retried with exponential back-off and jitter, waiting at least what the
//! server asks for (`Retry-After` header, or `google.rpc.RetryInfo.retryDelay`
//! in the error body), at most [`GeminiConfig::max_attempts`] attempts and never
//! past [`GeminiConfig::total_timeout`] (each attempt's time-out is cut to the
//! time left; a wait that would end past it is not started). Other statuses
//! (400, 401, 403, 404, …) and malformed replies are never retried.
//!
//! Network: requests go through [`GeminiConfig::network`] (a
//! [`NetworkPolicy`]): an endpoint on a non-public address the operator did not
//! allow is refused ([`GeminiError::Refused`], never retried), checked at
//! construction for literal IPs and after DNS resolution; the endpoint must be
//! `https` unless its host is allowed by the policy. Redirects are never
//! followed ([`GeminiError::Redirected`]), so the key is never sent to another
//! host. The key travels only in the `x-goog-api-key` header (marked sensitive)
//! and is cut out of every error text, even one a server echoes it in.

mod expander;
mod prompt;
mod wire;

use std::fmt;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use image::RgbaImage;
use image::imageops::FilterType;
use reqwest::blocking::Client;
use url::Url;

use crate::netguard::{self, NetworkPolicy, Redirects};
use crate::remote::chain;

pub use prompt::DEFAULT_PROMPT;

/// The backend's name in reports and errors.
pub const BACKEND_NAME: &str = "gemini";

/// The Gemini API's public endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://generativelanguage.googleapis.com";

/// The default image model.
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash-image";

/// The API's limit on a request with inline data is 20 MB; stay a little under.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 19_500_000;

/// The aspect ratios `imageConfig.aspectRatio` accepts.
pub const SUPPORTED_ASPECT_RATIOS: [(u32, u32); 10] = [
    (1, 1),
    (2, 3),
    (3, 2),
    (3, 4),
    (4, 3),
    (4, 5),
    (5, 4),
    (9, 16),
    (16, 9),
    (21, 9),
];

/// HTTP statuses that are retried.
const RETRYABLE_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Settings of a [`GeminiExpander`]. `Debug` does not show the key.
#[derive(Clone)]
pub struct GeminiConfig {
    /// API base, `https://generativelanguage.googleapis.com` by default.
    pub endpoint: String,
    /// Model name (`gemini-2.5-flash-image`, `gemini-3-pro-image-preview`, …);
    /// a leading `models/` is accepted.
    pub model: String,
    /// The API key, sent as `x-goog-api-key` (the caller reads `GEMINI_API_KEY`).
    pub api_key: String,
    /// Replaces [`DEFAULT_PROMPT`]; `{ratio}` in it becomes e.g. `3:4`,
    /// `{background}` the canvas colour, `{input}` what the picture is.
    pub prompt: Option<String>,
    /// Appended to the instructions of every call (a job's own wishes).
    pub extra_prompt: Option<String>,
    /// Time-out of one attempt (connect, upload, generation, reply).
    pub request_timeout: Duration,
    /// Cap on the whole call: all attempts and the waits between them. As a
    /// pipeline [`clothjob_pipeline::Expander`], the cap of the whole stage
    /// (every aspect ratio), counted from the first canvas asked of this value.
    pub total_timeout: Duration,
    /// Attempts at most, the first included (at least 1).
    pub max_attempts: u32,
    /// First back-off (doubled after each failure, with jitter).
    pub initial_backoff: Duration,
    /// Longest back-off of our own (a server's `Retry-After` may be longer).
    pub max_backoff: Duration,
    /// The longest side of the image sent (larger inputs are downscaled).
    pub max_input_side: u32,
    /// The request body is kept under this many bytes.
    pub max_request_bytes: usize,
    /// Which addresses the endpoint may resolve to (public only by default;
    /// the runner reads it from `CLOTHJOB_ALLOWED_NETWORKS`). Plain `http` is
    /// accepted only for a host this policy allows explicitly.
    pub network: NetworkPolicy,
}

impl GeminiConfig {
    /// Defaults for `model` with `api_key`: public endpoint, 120 s per attempt,
    /// 300 s in all, 5 attempts, back-off 1 s doubling up to 30 s, inputs at
    /// most 3072 px and 19.5 MB.
    pub fn new(api_key: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            model: model.into(),
            api_key: api_key.into(),
            prompt: None,
            extra_prompt: None,
            request_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(300),
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_input_side: 3072,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            network: NetworkPolicy::public_only(),
        }
    }
}

impl fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiConfig")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &"<redacted>")
            .field("prompt", &self.prompt)
            .field("extra_prompt", &self.extra_prompt)
            .field("request_timeout", &self.request_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_input_side", &self.max_input_side)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("network", &self.network.to_string())
            .finish()
    }
}

/// Why an expansion failed.
#[derive(Debug, thiserror::Error)]
pub enum GeminiError {
    /// The settings cannot work (no key, a bad endpoint or model, zero limits,
    /// a zero aspect ratio).
    #[error("invalid Gemini settings: {0}")]
    InvalidConfig(String),
    /// The input image could not be prepared (encoded, shrunk to the size cap).
    #[error("cannot prepare the image for Gemini: {0}")]
    Image(String),
    /// Gemini answered an HTTP error.
    #[error("Gemini answered HTTP {status}{}: {message}", status_name.as_deref().map(|s| format!(" {s}")).unwrap_or_default())]
    Http {
        /// The HTTP status.
        status: u16,
        /// `error.status` of the body (`RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`, …).
        status_name: Option<String>,
        /// `error.message` of the body, or the start of the body.
        message: String,
        /// The `google.rpc.ErrorInfo` reason of the body (`API_KEY_INVALID`, …).
        reason: Option<String>,
        /// How long the server asked to wait (`Retry-After` or `RetryInfo`).
        retry_after: Option<Duration>,
    },
    /// No reply within the attempt's time-out.
    #[error("Gemini did not reply within {0:?}")]
    Timeout(Duration),
    /// The endpoint could not be reached (refused, reset, DNS, TLS).
    #[error("cannot reach Gemini at {endpoint}: {detail}")]
    Connection {
        /// The URL asked.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
    /// The reply has no image because the prompt or the output was blocked:
    /// `promptFeedback.blockReason` or a `finishReason` other than `STOP`.
    #[error("Gemini returned no image: blocked ({reason}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Blocked {
        /// `SAFETY`, `IMAGE_SAFETY`, `PROHIBITED_CONTENT`, `NO_IMAGE`, `RECITATION`, …
        reason: String,
        /// `blockReasonMessage` / `finishMessage`, if any.
        message: Option<String>,
    },
    /// The model stopped normally but answered without an image.
    #[error("Gemini returned no image (finishReason {finish_reason}){}", text.as_deref().map(|t| format!("; it said: {t}")).unwrap_or_default())]
    NoImage {
        /// The candidate's `finishReason` (`STOP`, or `none`).
        finish_reason: String,
        /// The model's text, shortened.
        text: Option<String>,
    },
    /// The reply is not the documented JSON (not JSON, no candidates, bad
    /// base64, an image that does not decode).
    #[error("malformed reply from Gemini: {0}")]
    MalformedResponse(String),
    /// The endpoint's address is not public and not allowed by
    /// [`GeminiConfig::network`].
    #[error("Gemini endpoint: {0}")]
    Refused(String),
    /// Gemini answered a redirect; it is not followed (the key must not reach
    /// another host).
    #[error(
        "Gemini answered HTTP {status}, a redirect to {location}: redirects are not followed (the API key is never sent to another host); set gemini.endpoint to the final address"
    )]
    Redirected {
        /// The 3xx status.
        status: u16,
        /// The `Location` header, without its query or credentials.
        location: String,
    },
    /// Every attempt failed with a retryable error, or the next wait would
    /// pass the total time cap.
    #[error("Gemini failed after {attempts} attempt(s) in {elapsed:.1?}: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// Time spent in all.
        elapsed: Duration,
        /// The last attempt's error.
        last: Box<GeminiError>,
    },
}

impl GeminiError {
    /// True when the same request may succeed later (server busy or down,
    /// time-out, connection error). Blocked replies, rejected requests
    /// (400/401/403/404 …), malformed replies and bad settings are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { status, .. } => RETRYABLE_STATUSES.contains(status),
            Self::Timeout(_) | Self::Connection { .. } | Self::RetriesExhausted { .. } => true,
            Self::InvalidConfig(_)
            | Self::Image(_)
            | Self::Blocked { .. }
            | Self::NoImage { .. }
            | Self::MalformedResponse(_)
            | Self::Refused(_)
            | Self::Redirected { .. } => false,
        }
    }

    /// True when the settings are at fault rather than the input or the
    /// server's load: bad settings, a rejected key (401, 403, or an
    /// `API_KEY_*` reason), an unknown model (404), replies that are not
    /// the API's (a wrong endpoint), a refused address or a redirect. Never
    /// retryable.
    pub fn is_settings_fault(&self) -> bool {
        match self {
            Self::InvalidConfig(_)
            | Self::MalformedResponse(_)
            | Self::Refused(_)
            | Self::Redirected { .. } => true,
            Self::Http { status, reason, .. } => {
                matches!(status, 401 | 403 | 404)
                    || reason.as_deref().is_some_and(|r| r.starts_with("API_KEY"))
            }
            _ => false,
        }
    }

    /// A small bounded label for metrics and events: `InvalidOptions`,
    /// `Internal`, `Auth` (401/403, `API_KEY_*`), `RateLimited` (429), `Unavailable`
    /// (408, 5xx), `InvalidRequest` (other 4xx and 1xx/3xx), `Timeout`,
    /// `Connection`, `Blocked`, `NoImage`, `MalformedResponse`, `Refused`,
    /// `Redirected`; after retries, the last error's.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidConfig(_) => "InvalidOptions",
            Self::Image(_) => "Internal",
            Self::Http { reason, .. }
                if reason.as_deref().is_some_and(|r| r.starts_with("API_KEY")) =>
            {
                "Auth"
            }
            Self::Http { status, .. } => match status {
                401 | 403 => "Auth",
                429 => "RateLimited",
                408 | 500..=599 => "Unavailable",
                _ => "InvalidRequest",
            },
            Self::Timeout(_) => "Timeout",
            Self::Connection { .. } => "Connection",
            Self::Blocked { .. } => "Blocked",
            Self::NoImage { .. } => "NoImage",
            Self::MalformedResponse(_) => "MalformedResponse",
            Self::Refused(_) => "Refused",
            Self::Redirected { .. } => "Redirected",
            Self::RetriesExhausted { last, .. } => last.category(),
        }
    }

    /// How long the server asked to wait before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// `self` with every occurrence of `secret` in its texts replaced by
    /// `<redacted>` (a server may echo the key back in a message).
    fn redacted(self, secret: &str) -> Self {
        // Too short a "secret" would cut ordinary words (real keys are 39 characters).
        if secret.len() < 6 {
            return self;
        }
        let cut = |text: String| {
            if text.contains(secret) {
                text.replace(secret, "<redacted>")
            } else {
                text
            }
        };
        let opt = |text: Option<String>| text.map(cut);
        match self {
            Self::InvalidConfig(t) => Self::InvalidConfig(cut(t)),
            Self::Image(t) => Self::Image(cut(t)),
            Self::Http {
                status,
                status_name,
                message,
                reason,
                retry_after,
            } => Self::Http {
                status,
                status_name: opt(status_name),
                message: cut(message),
                reason: opt(reason),
                retry_after,
            },
            Self::Timeout(d) => Self::Timeout(d),
            Self::Connection { endpoint, detail } => Self::Connection {
                endpoint: cut(endpoint),
                detail: cut(detail),
            },
            Self::Blocked { reason, message } => Self::Blocked {
                reason: cut(reason),
                message: opt(message),
            },
            Self::NoImage {
                finish_reason,
                text,
            } => Self::NoImage {
                finish_reason: cut(finish_reason),
                text: opt(text),
            },
            Self::MalformedResponse(t) => Self::MalformedResponse(cut(t)),
            Self::Refused(t) => Self::Refused(cut(t)),
            Self::Redirected { status, location } => Self::Redirected {
                status,
                location: cut(location),
            },
            Self::RetriesExhausted {
                attempts,
                elapsed,
                last,
            } => Self::RetriesExhausted {
                attempts,
                elapsed,
                last: Box::new(last.redacted(secret)),
            },
        }
    }
}

/// A successful expansion and how it went.
#[derive(Debug, Clone)]
pub struct Expansion {
    /// The catalog image, exactly the asked aspect ratio.
    pub image: RgbaImage,
    /// The size of the image Gemini returned (before the aspect crop).
    pub raw_size: (u32, u32),
    /// The size of the image sent (after any downscale).
    pub sent_size: (u32, u32),
    /// The `imageConfig.aspectRatio` sent (the nearest supported one).
    pub aspect_ratio: String,
    /// Bytes of the request body.
    pub request_bytes: usize,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
}

/// One catalog canvas to ask for.
#[derive(Debug, Clone, Copy)]
pub struct ExpandRequest<'a> {
    /// Aspect ratio (width, height) of the canvas.
    pub aspect: (u32, u32),
    /// The canvas colour, named in the instructions.
    pub background: [u8; 3],
    /// The image is the garment cut out onto `background`; else the photo as
    /// taken (the instructions then ask to replace its surroundings).
    pub cut_out: bool,
    /// Appended to the instructions, after [`GeminiConfig::extra_prompt`].
    pub prompt_extra: Option<&'a str>,
    /// The longest side sent when below [`GeminiConfig::max_input_side`].
    pub max_input_side: Option<u32>,
    /// No attempt runs past this instant (a stage's time budget), nor past
    /// [`GeminiConfig::total_timeout`] from the call's first attempt.
    pub deadline: Option<Instant>,
}

impl ExpandRequest<'_> {
    /// A cut-out onto a white canvas of ratio `aspect`, nothing else asked.
    pub fn new(aspect: (u32, u32)) -> Self {
        Self {
            aspect,
            background: [255, 255, 255],
            cut_out: true,
            prompt_extra: None,
            max_input_side: None,
            deadline: None,
        }
    }
}

/// A Gemini `generateContent` client that expands cut-outs onto catalog canvases.
#[derive(Debug, Clone)]
pub struct GeminiExpander {
    config: GeminiConfig,
    url: Url,
    /// The request URL as shown in messages (no credentials, no query).
    shown: String,
    /// Built on first use, on the calling (blocking) thread: a blocking client
    /// must not be built inside an async task.
    client: OnceLock<Client>,
    /// When the first canvas was asked of this value as a pipeline expander:
    /// the start of the stage's time budget.
    stage_start: OnceLock<Instant>,
}

impl GeminiExpander {
    /// Checks `config`; the HTTP client is built on first use (so this is safe
    /// inside an async task, [`Self::expand`] is not).
    pub fn new(config: GeminiConfig) -> Result<Self, GeminiError> {
        if config.api_key.trim().is_empty() {
            return Err(GeminiError::InvalidConfig(
                "the API key is empty (set GEMINI_API_KEY)".to_owned(),
            ));
        }
        if config.api_key.chars().any(|c| c.is_control() || c == ' ') {
            return Err(GeminiError::InvalidConfig(
                "the API key has spaces or control characters".to_owned(),
            ));
        }
        let model = config.model.trim().trim_start_matches("models/");
        if model.is_empty()
            || !model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(GeminiError::InvalidConfig(format!(
                "model {:?} is not a model name",
                config.model
            )));
        }
        let base = Url::parse(config.endpoint.trim()).map_err(|e| {
            GeminiError::InvalidConfig(format!(
                "endpoint {:?}: {e}",
                netguard::redact_url_str(&config.endpoint)
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(GeminiError::InvalidConfig(format!(
                "endpoint {} must be http(s)://host[:port][/path]",
                netguard::redact_url(&base)
            )));
        }
        if base.scheme() == "http" && !config.network.explicitly_allows(&base) {
            return Err(GeminiError::InvalidConfig(format!(
                "endpoint {} must be https (plain http only to a host allowed with the \
                 operator's --allowed-networks)",
                netguard::redact_url(&base)
            )));
        }
        // A literal IP never reaches the resolver: refuse it now.
        config
            .network
            .check_url(&base)
            .map_err(|e| GeminiError::Refused(e.to_string()))?;
        let url = format!(
            "{}/v1beta/models/{model}:generateContent",
            base.as_str().trim_end_matches('/')
        );
        let url = Url::parse(&url).map_err(|e| {
            GeminiError::InvalidConfig(format!(
                "request URL {:?}: {e}",
                netguard::redact_url_str(&url)
            ))
        })?;
        if config.request_timeout.is_zero() || config.total_timeout.is_zero() {
            return Err(GeminiError::InvalidConfig(
                "the time-outs must be above zero".to_owned(),
            ));
        }
        if config.max_attempts == 0 {
            return Err(GeminiError::InvalidConfig(
                "max_attempts must be at least 1".to_owned(),
            ));
        }
        if config.max_input_side < 64 || config.max_request_bytes < 100_000 {
            return Err(GeminiError::InvalidConfig(
                "max_input_side must be at least 64 and max_request_bytes at least 100000"
                    .to_owned(),
            ));
        }
        let shown = netguard::redact_url(&url);
        Ok(Self {
            config,
            url,
            shown,
            client: OnceLock::new(),
            stage_start: OnceLock::new(),
        })
    }

    /// The HTTP client, built on first use.
    fn client(&self) -> Result<&Client, GeminiError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let builder = Client::builder()
            .connect_timeout(self.config.request_timeout.min(Duration::from_secs(15)));
        let client = self
            .config
            .network
            .guard_blocking(builder, Redirects::None)
            .build()
            .map_err(|e| {
                GeminiError::InvalidConfig(format!("cannot build the HTTP client: {}", chain(&e)))
            })?;
        Ok(self.client.get_or_init(|| client))
    }

    /// The settings.
    pub fn config(&self) -> &GeminiConfig {
        &self.config
    }

    /// The request URL, `{endpoint}/v1beta/models/{model}:generateContent`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// `image` (a cut-out) on a white catalog canvas of aspect ratio `aspect`
    /// (width, height), made by Gemini; `prompt_extra` is appended to the
    /// instructions. See [`Self::expand_request`] for the other settings.
    pub fn expand(
        &self,
        image: &RgbaImage,
        aspect: (u32, u32),
        prompt_extra: Option<&str>,
    ) -> Result<RgbaImage, GeminiError> {
        self.expand_detailed(image, aspect, prompt_extra)
            .map(|e| e.image)
    }

    /// [`Self::expand`], with the details of the call.
    pub fn expand_detailed(
        &self,
        image: &RgbaImage,
        aspect: (u32, u32),
        prompt_extra: Option<&str>,
    ) -> Result<Expansion, GeminiError> {
        self.expand_request(
            image,
            &ExpandRequest {
                prompt_extra,
                ..ExpandRequest::new(aspect)
            },
        )
    }

    /// `image` on the catalog canvas `request` describes, made by Gemini,
    /// with the details of the call.
    pub fn expand_request(
        &self,
        image: &RgbaImage,
        request: &ExpandRequest<'_>,
    ) -> Result<Expansion, GeminiError> {
        let aspect = reduce(request.aspect)?;
        let (sent_ratio_w, sent_ratio_h) = nearest_supported(aspect);
        let aspect_ratio = format!("{sent_ratio_w}:{sent_ratio_h}");
        let prompt = prompt::build(
            self.config.prompt.as_deref(),
            &prompt::PromptParts {
                aspect_ratio: &aspect_ratio,
                background: request.background,
                cut_out: request.cut_out,
                extras: [self.config.extra_prompt.as_deref(), request.prompt_extra],
            },
        );
        let max_side = request
            .max_input_side
            .map_or(self.config.max_input_side, |m| {
                m.clamp(1, self.config.max_input_side)
            });
        let (body, sent_size) = self.body(image, &prompt, &aspect_ratio, max_side)?;

        // The call's own cap counts the attempts and the waits between them,
        // not the (CPU-bound, load-dependent) downscale and encoding above.
        let start = Instant::now();
        let own = start + self.config.total_timeout;
        let deadline = request.deadline.map_or(own, |d| d.min(own));
        let mut attempts = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(GeminiError::RetriesExhausted {
                    attempts,
                    elapsed: start.elapsed(),
                    last: Box::new(GeminiError::Timeout(
                        deadline.saturating_duration_since(start),
                    )),
                });
            }
            attempts += 1;
            let error = match self.attempt(&body, self.config.request_timeout.min(left)) {
                Ok(raw) => {
                    let raw_size = raw.dimensions();
                    return Ok(Expansion {
                        image: crop_to_aspect(raw, aspect),
                        raw_size,
                        sent_size,
                        aspect_ratio,
                        request_bytes: body.len(),
                        attempts,
                    });
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            let exhausted = |last: GeminiError| GeminiError::RetriesExhausted {
                attempts,
                elapsed: start.elapsed(),
                last: Box::new(last),
            };
            if attempts >= self.config.max_attempts {
                return Err(exhausted(error));
            }
            let wait = self.wait_before_retry(attempts, error.retry_after());
            if Instant::now() + wait >= deadline {
                return Err(exhausted(error));
            }
            thread::sleep(wait);
        }
    }

    /// The JSON body, with the image downscaled until it fits the size cap.
    fn body(
        &self,
        image: &RgbaImage,
        prompt: &str,
        aspect_ratio: &str,
        max_side: u32,
    ) -> Result<(Vec<u8>, (u32, u32)), GeminiError> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Err(GeminiError::Image("the image is empty".to_owned()));
        }
        let limit = self.config.max_request_bytes;
        let mut scale = (f64::from(max_side) / f64::from(w.max(h))).min(1.0);
        for _ in 0..8 {
            let (sw, sh) = scaled(w, h, scale);
            let png = if (sw, sh) == (w, h) {
                wire::encode_png(image)?
            } else {
                wire::encode_png(&image::imageops::resize(
                    image,
                    sw,
                    sh,
                    FilterType::Triangle,
                ))?
            };
            let body = wire::request_body(prompt, &png, aspect_ratio)?;
            if body.len() < limit {
                return Ok((body, (sw, sh)));
            }
            // The PNG's size goes roughly with the pixel count.
            scale *= (limit as f64 / body.len() as f64).sqrt() * 0.9;
        }
        Err(GeminiError::Image(format!(
            "cannot bring a {w}x{h} image under {limit} bytes"
        )))
    }

    /// One request; the image of a successful reply. No error text holds the key.
    fn attempt(&self, body: &[u8], timeout: Duration) -> Result<RgbaImage, GeminiError> {
        let key = self.config.api_key.trim();
        self.attempt_once(body, timeout, key)
            .map_err(|e| e.redacted(key))
    }

    fn attempt_once(
        &self,
        body: &[u8],
        timeout: Duration,
        key: &str,
    ) -> Result<RgbaImage, GeminiError> {
        let mut key_header = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
            GeminiError::InvalidConfig("the API key is not a valid HTTP header value".to_owned())
        })?;
        key_header.set_sensitive(true);
        let sent = self
            .client()?
            .post(self.url.clone())
            .timeout(timeout)
            .header("x-goog-api-key", key_header)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send();
        let response = sent.map_err(|e| self.transport_error(e, timeout))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| "(no Location)".to_owned(), netguard::redact_url_str);
            return Err(GeminiError::Redirected {
                status: status.as_u16(),
                location,
            });
        }
        let header_delay = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(wire::parse_retry_after);
        let bytes = response
            .bytes()
            .map_err(|e| self.transport_error(e, timeout))?;
        if !status.is_success() {
            return Err(wire::http_error(status.as_u16(), &bytes, header_delay));
        }
        wire::parse_reply(&bytes)
    }

    fn transport_error(&self, e: reqwest::Error, timeout: Duration) -> GeminiError {
        if let Some(refused) = netguard::refusal_in(&e) {
            return GeminiError::Refused(refused);
        }
        if e.is_timeout() {
            GeminiError::Timeout(timeout)
        } else {
            GeminiError::Connection {
                endpoint: self.shown.clone(),
                detail: chain(&e.without_url()),
            }
        }
    }

    /// The wait before attempt `failed + 1`: at least the server's ask (plus up
    /// to 10 % jitter), else exponential back-off with jitter (50-100 % of it).
    fn wait_before_retry(&self, failed: u32, server: Option<Duration>) -> Duration {
        if let Some(ask) = server {
            return ask.mul_f64(1.0 + 0.1 * random_fraction());
        }
        let exp = 2f64.powi(
            i32::try_from(failed.saturating_sub(1))
                .unwrap_or(30)
                .min(30),
        );
        let backoff = self
            .config
            .initial_backoff
            .mul_f64(exp)
            .min(self.config.max_backoff);
        backoff.mul_f64(0.5 + 0.5 * random_fraction())
    }
}

/// `a:b` in lowest terms.
fn reduce((a, b): (u32, u32)) -> Result<(u32, u32), GeminiError> {
    if a == 0 || b == 0 {
        return Err(GeminiError::InvalidConfig(format!(
            "aspect ratio {a}:{b} has a zero side"
        )));
    }
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    Ok((a / x, b / x))
}

/// The supported aspect ratio closest to `aspect` (in log scale).
fn nearest_supported(aspect: (u32, u32)) -> (u32, u32) {
    let ratio = |(a, b): (u32, u32)| (f64::from(a) / f64::from(b)).ln();
    let want = ratio(aspect);
    let mut best = SUPPORTED_ASPECT_RATIOS[0];
    for candidate in SUPPORTED_ASPECT_RATIOS {
        if (ratio(candidate) - want).abs() < (ratio(best) - want).abs() {
            best = candidate;
        }
    }
    best
}

/// `w x h` scaled by `scale`, at least 1 x 1.
fn scaled(w: u32, h: u32, scale: f64) -> (u32, u32) {
    let s = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, v);
    (s(w), s(h))
}

/// The centred, minimal crop of `image` to exactly `a:b` (when its size allows).
fn crop_to_aspect(image: RgbaImage, (a, b): (u32, u32)) -> RgbaImage {
    let (w, h) = image.dimensions();
    let (w64, h64, a64, b64) = (u64::from(w), u64::from(h), u64::from(a), u64::from(b));
    if w64 * b64 == h64 * a64 {
        return image;
    }
    // The largest a*k x b*k inside w x h.
    let k = (w64 / a64).min(h64 / b64);
    if k == 0 {
        return image;
    }
    let (cw, ch) = ((a64 * k) as u32, (b64 * k) as u32);
    image::imageops::crop_imm(&image, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image()
}

/// A number in 0..1, random enough for jitter.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aspect_ratios_reduce_and_snap() {
        assert_eq!(reduce((600, 800)).unwrap(), (3, 4));
        assert!(reduce((0, 4)).is_err());
        assert_eq!(nearest_supported((3, 4)), (3, 4));
        assert_eq!(nearest_supported((7, 10)), (2, 3));
        assert_eq!(nearest_supported((1, 1)), (1, 1));
        assert_eq!(nearest_supported((3, 1)), (21, 9));
    }

    #[test]
    fn crop_is_exact_and_centred() {
        let img = RgbaImage::new(864, 1184);
        let out = crop_to_aspect(img, (3, 4));
        assert_eq!(out.dimensions(), (864, 1152));
        let img = RgbaImage::new(900, 1200);
        assert_eq!(crop_to_aspect(img, (3, 4)).dimensions(), (900, 1200));
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..50).map(|_| random_fraction()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn config_debug_hides_the_key() {
        let c = GeminiConfig::new("secret-key-123", DEFAULT_MODEL);
        assert!(!format!("{c:?}").contains("secret-key-123"));
    }

    #[test]
    fn bad_settings_are_rejected() {
        let ok = GeminiConfig::new("k", DEFAULT_MODEL);
        assert!(GeminiExpander::new(ok.clone()).is_ok());
        let mut c = ok.clone();
        c.api_key = String::new();
        assert_eq!(
            GeminiExpander::new(c).unwrap_err().category(),
            "InvalidOptions"
        );
        let mut c = ok.clone();
        c.model = "../x".to_owned();
        assert!(GeminiExpander::new(c).is_err());
        let mut c = ok.clone();
        c.endpoint = "file:///tmp".to_owned();
        assert!(GeminiExpander::new(c).is_err());
        let mut c = ok;
        c.model = "models/gemini-2.5-flash-image".to_owned();
        let g = GeminiExpander::new(c).unwrap();
        assert_eq!(
            g.url().as_str(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image:generateContent"
        );
    }
}
