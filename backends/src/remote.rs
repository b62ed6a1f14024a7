//! `remote` background removal: a client of rembg's HTTP server (`rembg s`).
//!
//! The request is rembg 2.0.86's `POST {url}/api/remove`: multipart/form-data
//! with the image in the part `file` (PNG) and the options as form fields
//! (`model`, `a`, `af`, `ab`, `ae`, `om`, `ppm`); `bgc` and `extras` would be
//! query parameters and are not sent (the pipeline only wants the alpha).
//!
//! Without alpha matting the remover asks for the mask only (`om=true`): rembg
//! then skips the cut-out and returns the model's mask as a grayscale (`L`) PNG,
//! read as luma. With alpha matting `om` must be false (rembg's `only_mask`
//! branch comes before matting and would skip it), so the remover takes the
//! alpha channel of the RGBA cut-out it returns. Any reply is read the same way:
//! alpha if the PNG has one, luma otherwise; a mask of another size is resized
//! back to the photo's size (several masks stacked vertically are merged).
//!
//! Errors: connection refused, time-out, HTTP 408/429/5xx and replies that are
//! not an image are [`PipelineError::BackendUnavailable`] (category `Backend`,
//! not bad input: a retry can succeed). Other HTTP 4xx (rembg answers 422 for an
//! unknown model or an out-of-range option) are [`PipelineError::InvalidOptions`]
//! (never retried). An endpoint that is not an http(s) URL is `InvalidOptions`
//! at construction.
//!
//! Every request goes through a [`NetworkPolicy`] (from
//! [`crate::netguard::ENV_ALLOWED_NETWORKS`] unless one is given with
//! [`RemoteRemover::with_network_policy`]): a server on a non-public address that
//! the operator did not allow is refused before any connection, after DNS
//! resolution and on every redirect, as `InvalidOptions` (never retried). URLs
//! appear in messages without credentials or query.

use std::io::Cursor;
use std::sync::OnceLock;
use std::time::Duration;

use clothjob_pipeline::matte::BackgroundRemover;
use clothjob_pipeline::{PipelineError, StageName};
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};
use reqwest::blocking::{Client, multipart};
use url::Url;

use crate::netguard::{self, NetworkPolicy, Redirects};

/// The backend's name in reports and errors.
pub const BACKEND_NAME: &str = "remote";

/// The longest piece of an error reply quoted in an error message.
const MAX_QUOTED_BODY: usize = 300;

/// rembg's alpha-matting knobs (`af`, `ab`, `ae`); the defaults are the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlphaMattingThresholds {
    /// `af`: trimap foreground threshold (default 240).
    pub foreground_threshold: u8,
    /// `ab`: trimap background threshold (default 10).
    pub background_threshold: u8,
    /// `ae`: erosion size of the trimap (default 10).
    pub erode_size: u32,
}

impl Default for AlphaMattingThresholds {
    fn default() -> Self {
        Self {
            foreground_threshold: 240,
            background_threshold: 10,
            erode_size: 10,
        }
    }
}

/// Background removal by a rembg HTTP server.
///
/// ```no_run
/// # use std::time::Duration;
/// # use clothjob_backends::RemoteRemover;
/// let remover = RemoteRemover::new("http://rembg:7000", "u2netp", false, Duration::from_secs(60))?;
/// # Ok::<(), clothjob_pipeline::PipelineError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RemoteRemover {
    url: Url,
    endpoint: Url,
    model: String,
    alpha_matting: bool,
    thresholds: AlphaMattingThresholds,
    post_process_mask: bool,
    timeout: Duration,
    /// Which addresses the client may connect to.
    network: NetworkPolicy,
    /// The endpoint as shown in messages (no credentials, no query).
    shown: String,
    /// Built on first use, on the calling (blocking) thread: a blocking client
    /// must not be built inside an async task.
    client: OnceLock<Client>,
}

impl RemoteRemover {
    /// A remover for the rembg server at `url` (its base, e.g.
    /// `http://rembg:7000`; `/api/remove` is appended), using `model`
    /// (`u2netp`, `u2net`, `isnet-general-use`, `bria-rmbg`, …), with or without
    /// alpha matting; one request (connect, upload, inference, reply) must end
    /// within `timeout`. The network policy is read from
    /// [`netguard::ENV_ALLOWED_NETWORKS`] (public addresses only when unset; a bad
    /// value is `InvalidOptions`); [`Self::with_network_policy`] replaces it.
    pub fn new(
        url: &str,
        model: &str,
        alpha_matting: bool,
        timeout: Duration,
    ) -> Result<Self, PipelineError> {
        let url = Url::parse(url).map_err(|e| {
            PipelineError::InvalidOptions(format!(
                "remote background removal: url {:?} is not a URL: {e}",
                netguard::redact_url_str(url)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(PipelineError::InvalidOptions(format!(
                "remote background removal: url {} must be http(s)://host[:port][/path]",
                netguard::redact_url(&url)
            )));
        }
        if model.trim().is_empty() {
            return Err(PipelineError::InvalidOptions(
                "remote background removal: the model name is empty".to_owned(),
            ));
        }
        if timeout.is_zero() {
            return Err(PipelineError::InvalidOptions(
                "remote background removal: the time-out is zero".to_owned(),
            ));
        }
        let mut base = url.as_str().trim_end_matches('/').to_owned();
        base.push_str("/api/remove");
        let endpoint = Url::parse(&base).map_err(|e| {
            PipelineError::InvalidOptions(format!(
                "remote background removal: cannot make the endpoint from {}: {e}",
                netguard::redact_url(&url)
            ))
        })?;
        let network = NetworkPolicy::from_env().map_err(|e| {
            PipelineError::InvalidOptions(format!("remote background removal: {e}"))
        })?;
        let shown = netguard::redact_url(&endpoint);
        Ok(Self {
            url,
            endpoint,
            model: model.to_owned(),
            alpha_matting,
            thresholds: AlphaMattingThresholds::default(),
            post_process_mask: false,
            timeout,
            network,
            shown,
            client: OnceLock::new(),
        })
    }

    /// Uses `policy` to decide which addresses may be connected to.
    #[must_use]
    pub fn with_network_policy(mut self, policy: NetworkPolicy) -> Self {
        self.network = policy;
        self.client = OnceLock::new();
        self
    }

    /// The network policy requests go through.
    pub fn network_policy(&self) -> &NetworkPolicy {
        &self.network
    }

    /// The HTTP client, built on first use.
    fn client(&self) -> Result<&Client, PipelineError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let builder = Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)));
        let client = self
            .network
            .guard_blocking(builder, Redirects::Follow)
            .build()
            .map_err(|e| {
                PipelineError::Internal(format!("cannot build the HTTP client: {}", chain(&e)))
            })?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Sets the alpha-matting thresholds (used only with alpha matting on).
    #[must_use]
    pub fn with_thresholds(mut self, thresholds: AlphaMattingThresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// Asks rembg to post-process the mask (`ppm`: morphological smoothing).
    #[must_use]
    pub fn with_post_process_mask(mut self, on: bool) -> Self {
        self.post_process_mask = on;
        self
    }

    /// The server's base URL, as given.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The full endpoint, `{url}/api/remove`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The rembg model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether alpha matting is asked for.
    pub fn alpha_matting(&self) -> bool {
        self.alpha_matting
    }

    /// The time-out of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The form of one request: the PNG and the options.
    fn form(&self, png: Vec<u8>) -> Result<multipart::Form, PipelineError> {
        let file = multipart::Part::bytes(png)
            .file_name("image.png")
            .mime_str("image/png")
            .map_err(|e| PipelineError::Internal(format!("multipart part: {}", chain(&e))))?;
        let t = self.thresholds;
        Ok(multipart::Form::new()
            .part("file", file)
            .text("model", self.model.clone())
            .text("a", self.alpha_matting.to_string())
            .text("af", t.foreground_threshold.to_string())
            .text("ab", t.background_threshold.to_string())
            .text("ae", t.erode_size.to_string())
            // Only mask skips matting in rembg, so it is asked for only without it.
            .text("om", (!self.alpha_matting).to_string())
            .text("ppm", self.post_process_mask.to_string()))
    }

    fn unavailable(&self, reason: String) -> PipelineError {
        PipelineError::BackendUnavailable {
            stage: StageName::BackgroundRemoval,
            backend: BACKEND_NAME.to_owned(),
            reason,
        }
    }

    /// A refused address is `InvalidOptions` (the settings can never work);
    /// anything else `BackendUnavailable` (a retry may help).
    fn request_error(&self, e: reqwest::Error) -> PipelineError {
        if let Some(refused) = netguard::refusal_in(&e) {
            return self.refused(&refused);
        }
        // The error's text would repeat the URL with its query.
        let e = e.without_url();
        let shown = &self.shown;
        let reason = if e.is_timeout() {
            format!(
                "the rembg server at {shown} did not reply within {:?}",
                self.timeout
            )
        } else if e.is_connect() {
            format!(
                "cannot connect to the rembg server at {shown}: {}",
                chain(&e)
            )
        } else if e.is_body() && chain(&e).contains("receiver is gone") {
            // The blocking client streams the multipart body from another thread: when the
            // connection fails first, that thread's error can win the race over the
            // connect error.
            format!(
                "cannot connect to the rembg server at {shown} (the connection ended before the photo was sent): {}",
                chain(&e)
            )
        } else {
            format!(
                "request to the rembg server at {shown} failed: {}",
                chain(&e)
            )
        };
        self.unavailable(reason)
    }

    fn refused(&self, refusal: &str) -> PipelineError {
        PipelineError::InvalidOptions(format!(
            "remote background removal at {}: {refusal}",
            self.shown
        ))
    }
}

impl BackgroundRemover for RemoteRemover {
    fn name(&self) -> &str {
        BACKEND_NAME
    }

    fn alpha(
        &self,
        image: &RgbImage,
        progress: &mut dyn FnMut(f64),
    ) -> Result<GrayImage, PipelineError> {
        progress(0.0);
        let mut png = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .map_err(|e| PipelineError::Internal(format!("cannot encode the photo as PNG: {e}")))?;
        progress(0.1);

        // Literal IPs never reach the resolver: check them here.
        self.network
            .check_url(&self.endpoint)
            .map_err(|e| self.refused(&e.to_string()))?;
        // Resolve a name once to fail clearly now: a refusal inside the blocking client can
        // lose the race with its body thread and read as a broken connection (retried). The
        // guarded resolver still checks what the request itself resolves.
        if let Some(url::Host::Domain(host)) = self.endpoint.host()
            && !self.network.allows_host_name(host)
        {
            let port = self.endpoint.port_or_known_default().unwrap_or(80);
            if let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                && let Err(netguard::ResolveRefused::Refused(e)) =
                    self.network.filter_resolved(host, addrs)
            {
                return Err(self.refused(&e.to_string()));
            }
        }
        let response = self
            .client()?
            .post(self.endpoint.clone())
            .multipart(self.form(png)?)
            .send()
            .map_err(|e| self.request_error(e))?;
        let status = response.status();
        let body = response.bytes().map_err(|e| self.request_error(e))?;
        if !status.is_success() {
            let quoted = quote(&body);
            let code = status.as_u16();
            return Err(if status.is_client_error() && code != 408 && code != 429 {
                PipelineError::InvalidOptions(format!(
                    "the rembg server at {} rejected the request (model {:?}): HTTP {status}: {quoted}",
                    self.shown, self.model
                ))
            } else {
                self.unavailable(format!(
                    "the rembg server at {} answered HTTP {status}: {quoted}",
                    self.shown
                ))
            });
        }
        progress(0.9);

        let reply = image::load_from_memory(&body).map_err(|e| {
            self.unavailable(format!(
                "the rembg server at {} replied with {} bytes that are not an image: {e}",
                self.shown,
                body.len()
            ))
        })?;
        let mask = mask_of(&reply, image.width(), image.height());
        progress(1.0);
        Ok(mask)
    }
}

/// The mask in a reply: its alpha channel if it has one, else its luma; merged
/// (maximum) when it is several masks stacked vertically; resized to
/// `width x height` when its size differs.
pub fn mask_of(reply: &DynamicImage, width: u32, height: u32) -> GrayImage {
    let gray = if reply.color().has_alpha() {
        let rgba = reply.to_rgba8();
        GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            image::Luma([rgba.get_pixel(x, y).0[3]])
        })
    } else {
        reply.to_luma8()
    };
    let (w, h) = gray.dimensions();
    // rembg concatenates several masks vertically (models giving more than one).
    let gray = if w == width && height > 0 && h > height && h % height == 0 {
        GrayImage::from_fn(width, height, |x, y| {
            let mut v = 0u8;
            let mut yy = y;
            while yy < h {
                v = v.max(gray.get_pixel(x, yy).0[0]);
                yy += height;
            }
            image::Luma([v])
        })
    } else {
        gray
    };
    if gray.dimensions() == (width, height) {
        gray
    } else {
        image::imageops::resize(&gray, width, height, image::imageops::FilterType::Triangle)
    }
}

/// An error with its sources, `a: b: c`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// The start of a reply body, printable, for an error message.
pub(crate) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut out: String = text
        .chars()
        .take(MAX_QUOTED_BODY)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX_QUOTED_BODY {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgba, RgbaImage};

    #[test]
    fn mask_from_alpha_and_luma_and_resized() {
        let mut rgba = RgbaImage::from_pixel(4, 2, Rgba([10, 20, 30, 0]));
        rgba.put_pixel(1, 1, Rgba([255, 255, 255, 200]));
        let m = mask_of(&DynamicImage::ImageRgba8(rgba), 4, 2);
        assert_eq!(m.get_pixel(1, 1).0[0], 200);
        assert_eq!(m.get_pixel(0, 0).0[0], 0);

        let gray = GrayImage::from_pixel(2, 1, Luma([77]));
        let m = mask_of(&DynamicImage::ImageLuma8(gray), 8, 4);
        assert_eq!(m.dimensions(), (8, 4));
        assert!(m.pixels().all(|p| p.0[0] == 77));
    }

    #[test]
    fn stacked_masks_are_merged() {
        let mut gray = GrayImage::new(3, 4);
        gray.put_pixel(0, 0, Luma([100]));
        gray.put_pixel(0, 2, Luma([50]));
        gray.put_pixel(2, 3, Luma([255]));
        let m = mask_of(&DynamicImage::ImageLuma8(gray), 3, 2);
        assert_eq!(m.dimensions(), (3, 2));
        assert_eq!(m.get_pixel(0, 0).0[0], 100);
        assert_eq!(m.get_pixel(2, 1).0[0], 255);
        assert_eq!(m.get_pixel(1, 1).0[0], 0);
    }

    #[test]
    fn bad_options_are_invalid_options() {
        let t = Duration::from_secs(1);
        for (url, model) in [
            ("ftp://host/", "u2netp"),
            ("not a url", "u2netp"),
            ("http://127.0.0.1:1", " "),
        ] {
            let e = RemoteRemover::new(url, model, false, t).expect_err(url);
            assert!(e.is_bad_input(), "{e}");
            assert_eq!(e.category(), "InvalidOptions");
        }
        let r =
            RemoteRemover::new("http://127.0.0.1:7000/rembg/", "u2netp", false, t).expect("valid");
        assert_eq!(
            r.endpoint().as_str(),
            "http://127.0.0.1:7000/rembg/api/remove"
        );
        assert!(RemoteRemover::new("http://h", "u2netp", false, Duration::ZERO).is_err());
    }

    #[test]
    fn quote_is_short_and_printable() {
        assert_eq!(quote(b""), "(empty body)");
        let long = "x\n".repeat(1000);
        let q = quote(long.as_bytes());
        assert!(q.chars().count() <= MAX_QUOTED_BODY + 1);
        assert!(!q.contains('\n'));
    }
}
