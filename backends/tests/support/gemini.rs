//! A fake Gemini `generateContent` endpoint on loopback (a [`MockServer`]
//! speaking the documented contract): it answers with a solid-colour picture
//! of the asked aspect ratio, a safety block, or 503s, and reads back what
//! each request carried. Shared by the backends', runner's and e2e tests.

use std::io::Cursor;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{MockServer, Recorded, Reply};

/// What the fake answers to every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// A picture of [`generated_size`] filled with [`ratio_colour`].
    Image,
    /// The same picture after this long (a model that takes its time).
    SlowImage(std::time::Duration),
    /// HTTP 200 without an image: the candidate's `finishReason` is this.
    Blocked(&'static str),
    /// HTTP 503 `UNAVAILABLE` with `Retry-After: 1`.
    Unavailable,
}

/// The colour of the picture generated for `ratio` (`3:4` red, `1:1` green,
/// others blue), so a test can tell which reply an output came from.
pub fn ratio_colour(ratio: &str) -> [u8; 3] {
    match ratio {
        "3:4" => [196, 48, 52],
        "1:1" => [44, 150, 96],
        _ => [60, 80, 200],
    }
}

/// The size the real model gives for `ratio`: not always exactly the ratio
/// (864x1184 for 3:4), so the caller's crop is exercised.
pub fn generated_size(ratio: &str) -> (u32, u32) {
    match ratio {
        "3:4" => (864, 1184),
        "4:3" => (1184, 864),
        "2:3" => (832, 1248),
        "3:2" => (1248, 832),
        _ => (1024, 1024),
    }
}

/// A running fake; dropped, it stops.
pub struct FakeGemini {
    pub server: MockServer,
}

impl FakeGemini {
    pub fn start(behaviour: Behaviour) -> Self {
        let server = MockServer::start(move |_, request| {
            match behaviour {
            Behaviour::Image => {
                let ratio = GeminiCall::parse(request).aspect_ratio;
                let (w, h) = generated_size(&ratio);
                image_reply(ratio_colour(&ratio), w, h)
            }
            Behaviour::SlowImage(delay) => {
                std::thread::sleep(delay);
                let ratio = GeminiCall::parse(request).aspect_ratio;
                let (w, h) = generated_size(&ratio);
                image_reply(ratio_colour(&ratio), w, h)
            }
            Behaviour::Blocked(reason) => blocked_reply(reason),
            Behaviour::Unavailable => Reply::json(
                503,
                &json!({ "error": { "code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE" } }),
            )
            .header("Retry-After", "1"),
        }
        });
        Self { server }
    }

    /// The base URL to configure as the endpoint.
    pub fn endpoint(&self) -> String {
        self.server.url()
    }

    /// Every request so far, decoded.
    pub fn calls(&self) -> Vec<GeminiCall> {
        self.server
            .requests()
            .iter()
            .map(GeminiCall::parse)
            .collect()
    }
}

/// The documented success reply: a text part, then the picture as PNG.
pub fn image_reply(colour: [u8; 3], width: u32, height: u32) -> Reply {
    let picture = image::RgbImage::from_pixel(width, height, image::Rgb(colour));
    let mut png = Vec::new();
    picture
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    Reply::json(
        200,
        &json!({
            "candidates": [{
                "content": { "role": "model", "parts": [
                    { "text": "Here is the catalog image." },
                    { "inlineData": { "mimeType": "image/png",
                        "data": base64::engine::general_purpose::STANDARD.encode(&png) } }
                ] },
                "finishReason": "STOP",
                "index": 0
            }]
        }),
    )
}

/// A reply without an image, its candidate finished with `reason`.
pub fn blocked_reply(reason: &str) -> Reply {
    Reply::json(
        200,
        &json!({ "candidates": [{
            "content": { "parts": [{ "text": "I can't make that image." }] },
            "finishReason": reason,
            "finishMessage": "The image was blocked by the safety filters."
        }] }),
    )
}

/// One `generateContent` request as the fake saw it.
#[derive(Debug, Clone)]
pub struct GeminiCall {
    pub path: String,
    pub api_key: Option<String>,
    pub aspect_ratio: String,
    pub response_modalities: Vec<String>,
    pub prompt: String,
    /// The `inlineData` mime type and decoded picture.
    pub mime_type: String,
    pub image: image::DynamicImage,
    /// Bytes of the whole request body.
    pub body_bytes: usize,
}

impl GeminiCall {
    /// Decodes a request; panics when it breaks the contract.
    pub fn parse(r: &Recorded) -> Self {
        let body: Value = serde_json::from_slice(&r.body).expect("a JSON body");
        let parts = body["contents"][0]["parts"].as_array().expect("parts");
        let prompt = parts
            .iter()
            .find_map(|p| p["text"].as_str())
            .expect("a text part")
            .to_owned();
        let inline = parts
            .iter()
            .find_map(|p| p.get("inlineData"))
            .expect("an inlineData part");
        let data = base64::engine::general_purpose::STANDARD
            .decode(inline["data"].as_str().expect("inlineData.data"))
            .expect("base64");
        let config = &body["generationConfig"];
        Self {
            path: r.path.clone(),
            api_key: r.header("x-goog-api-key").map(str::to_owned),
            aspect_ratio: config["imageConfig"]["aspectRatio"]
                .as_str()
                .expect("imageConfig.aspectRatio")
                .to_owned(),
            response_modalities: config["responseModalities"]
                .as_array()
                .expect("responseModalities")
                .iter()
                .map(|m| m.as_str().unwrap_or_default().to_owned())
                .collect(),
            prompt,
            mime_type: inline["mimeType"].as_str().unwrap_or_default().to_owned(),
            image: image::load_from_memory(&data).expect("an image in inlineData"),
            body_bytes: r.body.len(),
        }
    }
}
