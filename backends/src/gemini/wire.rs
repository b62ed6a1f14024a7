//! The `generateContent` wire format: the request body, HTTP error bodies
//! (`error.status`, `RetryInfo`, `ErrorInfo`) and replies (the image, or why
//! there is none).

use std::io::Cursor;
use std::time::Duration;

use base64::Engine as _;
use image::{DynamicImage, ImageFormat, RgbaImage};
use serde_json::{Value, json};

use super::GeminiError;
use crate::remote::quote;

pub(super) fn encode_png(image: &RgbaImage) -> Result<Vec<u8>, GeminiError> {
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| GeminiError::Image(format!("PNG encoding: {e}")))?;
    Ok(png)
}

/// The documented `generateContent` body.
pub(super) fn request_body(
    prompt: &str,
    png: &[u8],
    aspect_ratio: &str,
) -> Result<Vec<u8>, GeminiError> {
    let data = base64::engine::general_purpose::STANDARD.encode(png);
    let body = json!({
        "contents": [{
            "parts": [
                { "text": prompt },
                { "inlineData": { "mimeType": "image/png", "data": data } }
            ]
        }],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": { "aspectRatio": aspect_ratio }
        }
    });
    serde_json::to_vec(&body).map_err(|e| GeminiError::Image(format!("JSON encoding: {e}")))
}

/// `Retry-After` in seconds (integer or decimal); HTTP dates are ignored.
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// A protobuf JSON duration (`"2s"`, `"1.5s"`, `"0.300s"`).
pub(super) fn parse_proto_duration(value: &str) -> Option<Duration> {
    parse_retry_after(value.trim().strip_suffix('s')?)
}

/// The error of a non-2xx reply: `error.message`, `error.status`, the
/// `google.rpc.ErrorInfo` reason and the longer of the `Retry-After` header
/// and a `google.rpc.RetryInfo.retryDelay`.
pub(super) fn http_error(status: u16, body: &[u8], header_delay: Option<Duration>) -> GeminiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let details = || {
        error
            .and_then(|e| e.get("details"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    let of_type = |d: &Value, name: &str| {
        d.get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with(name))
    };
    let body_delay = details()
        .filter(|d| of_type(d, "google.rpc.RetryInfo"))
        .filter_map(|d| {
            field(d, "retryDelay", "retry_delay")
                .and_then(Value::as_str)
                .and_then(parse_proto_duration)
        })
        .max();
    let reason = details()
        .filter(|d| of_type(d, "google.rpc.ErrorInfo"))
        .find_map(|d| d.get("reason").and_then(Value::as_str))
        .map(str::to_owned);
    GeminiError::Http {
        status,
        status_name: text("status"),
        message: text("message").unwrap_or_else(|| quote(body)),
        reason,
        retry_after: header_delay.max(body_delay),
    }
}

/// `v[camel]`, or `v[snake]`.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

/// The image of a successful reply, or why there is none.
pub(super) fn parse_reply(body: &[u8]) -> Result<RgbaImage, GeminiError> {
    let reply: Value = serde_json::from_slice(body)
        .map_err(|e| GeminiError::MalformedResponse(format!("not JSON ({e}): {}", quote(body))))?;
    if !reply.is_object() {
        return Err(GeminiError::MalformedResponse(format!(
            "not a JSON object: {}",
            quote(body)
        )));
    }
    let candidates: &[Value] = reply
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let parts = || {
        candidates
            .iter()
            .filter_map(|c| c.get("content")?.get("parts")?.as_array())
            .flatten()
    };
    let images = || {
        parts().filter_map(|p| {
            let inline = field(p, "inlineData", "inline_data")?;
            let mime = field(inline, "mimeType", "mime_type").and_then(Value::as_str);
            if mime.is_some_and(|m| !m.starts_with("image/")) {
                return None;
            }
            let thought = p.get("thought").and_then(Value::as_bool).unwrap_or(false);
            Some((inline.get("data").and_then(Value::as_str), thought))
        })
    };
    let chosen = images()
        .find(|(_, thought)| !thought)
        .or_else(|| images().next_back());
    if let Some((data, _)) = chosen {
        let data = data.ok_or_else(|| {
            GeminiError::MalformedResponse("an inlineData part without data".to_owned())
        })?;
        return decode_image(data);
    }

    let feedback = field(&reply, "promptFeedback", "prompt_feedback");
    if let Some(reason) = feedback
        .and_then(|f| field(f, "blockReason", "block_reason"))
        .and_then(Value::as_str)
    {
        let message = feedback
            .and_then(|f| field(f, "blockReasonMessage", "block_reason_message"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Err(GeminiError::Blocked {
            reason: reason.to_owned(),
            message,
        });
    }
    if candidates.is_empty() {
        return Err(GeminiError::MalformedResponse(format!(
            "no candidates and no promptFeedback.blockReason: {}",
            quote(body)
        )));
    }
    let finish = |c: &Value| {
        field(c, "finishReason", "finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Some(c) = candidates
        .iter()
        .find(|c| finish(c).is_some_and(|r| r != "STOP" && r != "FINISH_REASON_UNSPECIFIED"))
    {
        return Err(GeminiError::Blocked {
            reason: finish(c).unwrap_or_default(),
            message: field(c, "finishMessage", "finish_message")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    let text: String = parts()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    Err(GeminiError::NoImage {
        finish_reason: candidates
            .iter()
            .find_map(finish)
            .unwrap_or_else(|| "none".to_owned()),
        text: (!text.trim().is_empty()).then(|| quote(text.as_bytes())),
    })
}

fn decode_image(data: &str) -> Result<RgbaImage, GeminiError> {
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&compact))
        .map_err(|e| {
            GeminiError::MalformedResponse(format!("inlineData.data is not base64: {e}"))
        })?;
    let image: DynamicImage = image::load_from_memory(&bytes).map_err(|e| {
        GeminiError::MalformedResponse(format!(
            "inlineData.data ({} bytes) is not an image: {e}",
            bytes.len()
        ))
    })?;
    Ok(image.to_rgba8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_parse() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_proto_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_proto_duration("0.300s"),
            Some(Duration::from_millis(300))
        );
        assert_eq!(parse_proto_duration("2"), None);
        let e = http_error(
            429,
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2s"}]}}"#,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.category(), "RateLimited");
        assert!(e.is_retryable());
        assert!(e.to_string().contains("RESOURCE_EXHAUSTED"), "{e}");
    }

    #[test]
    fn an_invalid_key_is_read_from_error_info() {
        let e = http_error(
            400,
            br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#,
            None,
        );
        assert!(
            matches!(&e, GeminiError::Http { reason: Some(r), .. } if r == "API_KEY_INVALID"),
            "{e:?}"
        );
        assert_eq!(e.category(), "Auth");
        assert!(e.is_settings_fault());
        assert!(!e.is_retryable());
        let plain = http_error(400, b"bad", None);
        assert!(!plain.is_settings_fault());
        assert_eq!(plain.category(), "InvalidRequest");
    }

    #[test]
    fn a_final_image_wins_over_a_thought_image() {
        let png = |v: u8| {
            let mut out = Vec::new();
            RgbaImage::from_pixel(2, 2, image::Rgba([v, v, v, 255]))
                .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
                .unwrap();
            base64::engine::general_purpose::STANDARD.encode(out)
        };
        let reply = json!({ "candidates": [{ "content": { "parts": [
            { "inlineData": { "mimeType": "image/png", "data": png(10) }, "thought": true },
            { "text": "done" },
            { "inlineData": { "mimeType": "image/png", "data": png(200) } }
        ] }, "finishReason": "STOP" }] });
        let img = parse_reply(&serde_json::to_vec(&reply).unwrap()).unwrap();
        assert_eq!(img.get_pixel(0, 0).0[0], 200);
        let only_thought = json!({ "candidates": [{ "content": { "parts": [
            { "inlineData": { "mimeType": "image/png", "data": png(10) }, "thought": true }
        ] } }] });
        let img = parse_reply(&serde_json::to_vec(&only_thought).unwrap()).unwrap();
        assert_eq!(img.get_pixel(0, 0).0[0], 10);
    }
}
