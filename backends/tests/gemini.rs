//! `GeminiExpander` against a local server speaking the documented
//! `generateContent` contract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Cursor;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clothjob_backends::{GeminiConfig, GeminiError, GeminiExpander, NetworkPolicy};
use image::{ImageFormat, Rgba, RgbaImage};
use serde_json::{Value, json};
use support::{MockServer, Reply, refused_address};

const KEY: &str = "test-key-0123";
const MODEL: &str = "gemini-2.5-flash-image";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn png(img: &RgbaImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

/// A recognisable picture: a gradient with a red square.
fn picture(w: u32, h: u32) -> RgbaImage {
    RgbaImage::from_fn(w, h, |x, y| {
        if x > w / 4 && x < w / 2 && y > h / 4 && y < h / 2 {
            Rgba([220, 20, 30, 255])
        } else {
            Rgba([(x * 255 / w) as u8, (y * 255 / h) as u8, 128, 255])
        }
    })
}

/// A cut-out: transparent around an opaque garment.
fn cutout(w: u32, h: u32) -> RgbaImage {
    RgbaImage::from_fn(w, h, |x, y| {
        if x > w / 5 && x < 4 * w / 5 && y > h / 6 && y < 5 * h / 6 {
            Rgba([30, 40, 90, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    })
}

/// The documented success reply: a text part, then the image.
fn success(img: &RgbaImage) -> Reply {
    Reply::json(
        200,
        &json!({
            "candidates": [{
                "content": {
                    "role": "model",
                    "parts": [
                        { "text": "Here is the catalog image." },
                        { "inlineData": { "mimeType": "image/png", "data": b64(&png(img)) } }
                    ]
                },
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": { "promptTokenCount": 1290, "candidatesTokenCount": 1300 }
        }),
    )
}

fn error_body(code: u16, status: &str, message: &str) -> Value {
    json!({ "error": { "code": code, "message": message, "status": status } })
}

/// The test servers are on loopback: the policy the operator's --allowed-networks would give.
fn loopback() -> NetworkPolicy {
    NetworkPolicy::parse("127.0.0.0/8").unwrap()
}

fn config(server: &MockServer) -> GeminiConfig {
    let mut c = GeminiConfig::new(KEY, MODEL);
    c.endpoint = server.url();
    c.network = loopback();
    c.request_timeout = Duration::from_secs(10);
    c.total_timeout = Duration::from_secs(30);
    c.initial_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c
}

fn expander(server: &MockServer) -> GeminiExpander {
    GeminiExpander::new(config(server)).unwrap()
}

/// Gaps between consecutive requests.
fn gaps(server: &MockServer) -> Vec<Duration> {
    let r = server.requests();
    r.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[test]
fn image_in_the_second_part_is_returned() {
    let reply = picture(600, 800);
    let expected = reply.clone();
    let server = MockServer::start(move |_, _| success(&reply));
    let out = expander(&server)
        .expand_detailed(&cutout(300, 400), (3, 4), None)
        .unwrap();
    assert_eq!(out.image, expected);
    assert_eq!(out.attempts, 1);
    assert_eq!(out.aspect_ratio, "3:4");
    assert_eq!(server.count(), 1);
}

#[test]
fn request_follows_the_documented_contract() {
    let reply = picture(600, 800);
    let server = MockServer::start(move |_, _| success(&reply));
    let input = cutout(320, 200);
    let g = expander(&server);
    g.expand(&input, (600, 800), Some("Use a warm white background."))
        .unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/v1beta/models/{MODEL}:generateContent"));
    assert_eq!(r.header("x-goog-api-key"), Some(KEY));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert!(r.header("authorization").is_none());

    let body: Value = serde_json::from_slice(&r.body).unwrap();
    let parts = body["contents"][0]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    let prompt = parts[0]["text"].as_str().unwrap();
    assert!(prompt.contains("3:4"), "{prompt}");
    assert!(prompt.ends_with("Use a warm white background."), "{prompt}");
    assert_eq!(parts[1]["inlineData"]["mimeType"], "image/png");
    let data = parts[1]["inlineData"]["data"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    let sent = image::load_from_memory_with_format(&bytes, ImageFormat::Png)
        .unwrap()
        .to_rgba8();
    assert_eq!(sent, input, "the inline image decodes to the sent image");
    assert_eq!(
        body["generationConfig"]["responseModalities"],
        json!(["TEXT", "IMAGE"])
    );
    assert_eq!(
        body["generationConfig"]["imageConfig"]["aspectRatio"],
        "3:4"
    );
}

#[test]
fn snake_case_inline_data_is_read_and_the_result_is_cropped_to_the_exact_ratio() {
    // 864x1184 is what the model gives for "3:4": not exactly 3:4.
    let reply = picture(864, 1184);
    let server = MockServer::start(move |_, _| {
        Reply::json(
            200,
            &json!({ "candidates": [{ "content": { "parts": [
                { "inline_data": { "mime_type": "image/png", "data": b64(&png(&reply)) } }
            ] }, "finish_reason": "STOP" }] }),
        )
    });
    let out = expander(&server)
        .expand_detailed(&cutout(30, 40), (3, 4), None)
        .unwrap();
    assert_eq!(out.raw_size, (864, 1184));
    assert_eq!(out.image.dimensions(), (864, 1152));
    // Centred crop: row 0 of the result is row 16 of the reply.
    assert_eq!(
        out.image.get_pixel(5, 0),
        picture(864, 1184).get_pixel(5, 16)
    );
}

#[test]
fn an_unsupported_ratio_is_sent_as_the_nearest_and_cropped_exactly() {
    let reply = picture(800, 1200); // 2:3
    let server = MockServer::start(move |_, _| success(&reply));
    let out = expander(&server)
        .expand_detailed(&cutout(30, 40), (7, 10), None)
        .unwrap();
    assert_eq!(out.aspect_ratio, "2:3");
    let (w, h) = out.image.dimensions();
    assert_eq!(u64::from(w) * 10, u64::from(h) * 7, "{w}x{h}");
    let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
    assert_eq!(
        body["generationConfig"]["imageConfig"]["aspectRatio"],
        "2:3"
    );
}

#[test]
fn http_429_with_retry_after_is_waited_out_then_succeeds() {
    let reply = picture(60, 80);
    let server = MockServer::start(move |n, _| {
        if n == 0 {
            Reply::json(429, &error_body(429, "RESOURCE_EXHAUSTED", "quota"))
                .header("Retry-After", "1")
        } else {
            success(&reply)
        }
    });
    let started = Instant::now();
    let out = expander(&server)
        .expand_detailed(&cutout(30, 40), (3, 4), None)
        .unwrap();
    assert_eq!(out.attempts, 2);
    assert_eq!(server.count(), 2);
    let gap = gaps(&server)[0];
    // Our own back-off is 20 ms: only the header explains a 1 s wait.
    assert!(gap >= Duration::from_millis(990), "waited {gap:?}");
    assert!(gap < Duration::from_millis(2500), "waited {gap:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn retry_info_in_the_error_body_is_honoured() {
    let reply = picture(60, 80);
    let server = MockServer::start(move |n, _| {
        if n == 0 {
            Reply::json(
                429,
                &json!({ "error": {
                    "code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
                    "details": [
                        { "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [] },
                        { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s" }
                    ]
                } }),
            )
        } else {
            success(&reply)
        }
    });
    let out = expander(&server)
        .expand_detailed(&cutout(30, 40), (1, 1), None)
        .unwrap();
    assert_eq!(out.attempts, 2);
    let gap = gaps(&server)[0];
    assert!(gap >= Duration::from_millis(990), "waited {gap:?}");
}

#[test]
fn http_500_twice_then_success_backs_off_exponentially() {
    let reply = picture(60, 80);
    let server = MockServer::start(move |n, _| {
        if n < 2 {
            Reply::json(
                500,
                &error_body(500, "INTERNAL", "An internal error has occurred"),
            )
        } else {
            success(&reply)
        }
    });
    let mut c = config(&server);
    c.initial_backoff = Duration::from_millis(200);
    c.max_backoff = Duration::from_secs(5);
    let out = GeminiExpander::new(c)
        .unwrap()
        .expand_detailed(&cutout(30, 40), (3, 4), None)
        .unwrap();
    assert_eq!(out.attempts, 3);
    assert_eq!(server.count(), 3);
    let g = gaps(&server);
    // Back-off with jitter: 50-100 % of 200 ms, then of 400 ms.
    assert!(
        g[0] >= Duration::from_millis(100) && g[0] < Duration::from_millis(1000),
        "{g:?}"
    );
    assert!(
        g[1] >= Duration::from_millis(200) && g[1] < Duration::from_millis(1500),
        "{g:?}"
    );
}

#[test]
fn retryable_statuses_are_all_retried() {
    for status in [408u16, 502, 503, 504] {
        let reply = picture(20, 20);
        let server = MockServer::start(move |n, _| {
            if n == 0 {
                Reply::new(status, "text/plain", "busy")
            } else {
                success(&reply)
            }
        });
        let out = expander(&server)
            .expand_detailed(&cutout(20, 20), (1, 1), None)
            .unwrap();
        assert_eq!(out.attempts, 2, "status {status}");
    }
}

#[test]
fn client_errors_are_not_retried() {
    for (status, name, category) in [
        (400u16, "INVALID_ARGUMENT", "InvalidRequest"),
        (403, "PERMISSION_DENIED", "Auth"),
        (404, "NOT_FOUND", "InvalidRequest"),
    ] {
        let server = MockServer::start(move |_, _| {
            Reply::json(
                status,
                &error_body(status, name, "API key not valid or bad request"),
            )
            .header("Retry-After", "0")
        });
        let e = expander(&server)
            .expand(&cutout(30, 40), (3, 4), None)
            .unwrap_err();
        assert_eq!(server.count(), 1, "status {status} was retried");
        assert!(
            matches!(&e, GeminiError::Http { status: s, status_name: Some(n), .. } if *s == status && n == name),
            "{e:?}"
        );
        assert!(!e.is_retryable());
        assert_eq!(e.category(), category);
        assert!(e.to_string().contains("API key not valid"), "{e}");
        let p = clothjob_pipeline::PipelineError::from(e);
        assert!(p.is_bad_input(), "{p}");
    }
}

#[test]
fn an_image_safety_finish_is_a_clear_non_retryable_error() {
    let server = MockServer::start(|_, _| {
        Reply::json(
            200,
            &json!({ "candidates": [{
                "content": { "parts": [{ "text": "I can't help with that image." }] },
                "finishReason": "IMAGE_SAFETY",
                "finishMessage": "The image was blocked by safety filters."
            }] }),
        )
    });
    let e = expander(&server)
        .expand(&cutout(30, 40), (3, 4), None)
        .unwrap_err();
    assert_eq!(server.count(), 1);
    assert!(
        matches!(&e, GeminiError::Blocked { reason, message: Some(m) } if reason == "IMAGE_SAFETY" && m.contains("safety")),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert_eq!(e.category(), "Blocked");
    assert!(e.to_string().contains("IMAGE_SAFETY"), "{e}");
}

#[test]
fn a_blocked_prompt_is_a_clear_non_retryable_error() {
    let server = MockServer::start(|_, _| {
        Reply::json(
            200,
            &json!({ "promptFeedback": { "blockReason": "SAFETY", "safetyRatings": [] } }),
        )
    });
    let e = expander(&server)
        .expand(&cutout(30, 40), (3, 4), None)
        .unwrap_err();
    assert_eq!(server.count(), 1);
    assert!(
        matches!(&e, GeminiError::Blocked { reason, .. } if reason == "SAFETY"),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("SAFETY"), "{e}");
}

#[test]
fn other_imageless_replies_say_why() {
    for (reason, expect) in [("NO_IMAGE", "NO_IMAGE"), ("RECITATION", "RECITATION")] {
        let server = MockServer::start(move |_, _| {
            Reply::json(200, &json!({ "candidates": [{ "finishReason": reason }] }))
        });
        let e = expander(&server)
            .expand(&cutout(30, 40), (3, 4), None)
            .unwrap_err();
        assert!(
            matches!(&e, GeminiError::Blocked { reason, .. } if reason == expect),
            "{e:?}"
        );
        assert_eq!(server.count(), 1);
    }
    let server = MockServer::start(|_, _| {
        Reply::json(
            200,
            &json!({ "candidates": [{ "content": { "parts": [{ "text": "Sure! Describe it more." }] }, "finishReason": "STOP" }] }),
        )
    });
    let e = expander(&server)
        .expand(&cutout(30, 40), (3, 4), None)
        .unwrap_err();
    assert!(matches!(&e, GeminiError::NoImage { .. }), "{e:?}");
    assert!(e.to_string().contains("Describe it more"), "{e}");
    assert!(!e.is_retryable());
}

#[test]
fn malformed_replies_are_clear_errors_and_not_retried() {
    let bodies: [(&str, &str); 4] = [
        ("{\"candidates\": [", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (
            r#"{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"@@@"}}]}}]}"#,
            "not base64",
        ),
        (
            r#"{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"aGVsbG8="}}]}}]}"#,
            "not an image",
        ),
    ];
    for (body, expect) in bodies {
        let server = MockServer::start(move |_, _| Reply::new(200, "application/json", body));
        let e = expander(&server)
            .expand(&cutout(30, 40), (3, 4), None)
            .unwrap_err();
        assert!(matches!(e, GeminiError::MalformedResponse(_)), "{e:?}");
        assert!(e.to_string().contains(expect), "{e}");
        assert_eq!(e.category(), "MalformedResponse");
        assert_eq!(server.count(), 1);
    }
}

#[test]
fn a_slow_server_times_out() {
    let reply = picture(20, 20);
    let server = MockServer::start(move |_, _| success(&reply).delayed(Duration::from_secs(5)));
    let mut c = config(&server);
    c.request_timeout = Duration::from_millis(400);
    c.max_attempts = 2;
    let started = Instant::now();
    let e = GeminiExpander::new(c)
        .unwrap()
        .expand(&cutout(30, 40), (3, 4), None)
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.category(), "Timeout", "{e:?}");
    assert!(
        matches!(&e, GeminiError::RetriesExhausted { attempts: 2, last, .. } if matches!(**last, GeminiError::Timeout(_))),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert_eq!(server.count(), 2);
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn the_total_time_cap_stops_retries() {
    let server = MockServer::start(|_, _| {
        Reply::json(
            503,
            &error_body(503, "UNAVAILABLE", "The model is overloaded."),
        )
        .header("Retry-After", "1")
    });
    let mut c = config(&server);
    c.max_attempts = 20;
    c.total_timeout = Duration::from_millis(2500);
    let started = Instant::now();
    let e = GeminiExpander::new(c)
        .unwrap()
        .expand(&cutout(30, 40), (3, 4), None)
        .unwrap_err();
    let took = started.elapsed();
    // Attempts at ~0 s, ~1 s, ~2 s; the next 1 s wait would pass 2.5 s.
    assert_eq!(server.count(), 3, "{e:?}");
    assert!(took < Duration::from_millis(3200), "{took:?}");
    assert!(
        matches!(&e, GeminiError::RetriesExhausted { attempts: 3, .. }),
        "{e:?}"
    );
    assert_eq!(e.category(), "Unavailable");
    assert!(e.to_string().contains("overloaded"), "{e}");
}

#[test]
fn the_total_time_cap_also_cuts_a_slow_attempt() {
    let reply = picture(20, 20);
    let server = MockServer::start(move |_, _| success(&reply).delayed(Duration::from_secs(10)));
    let mut c = config(&server);
    c.request_timeout = Duration::from_secs(60);
    c.total_timeout = Duration::from_millis(1000);
    let started = Instant::now();
    let e = GeminiExpander::new(c)
        .unwrap()
        .expand(&cutout(30, 40), (3, 4), None)
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.category(), "Timeout", "{e:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_closed_port_is_a_retryable_connection_error() {
    let mut c = GeminiConfig::new(KEY, MODEL);
    c.endpoint = format!("http://{}", refused_address());
    c.network = loopback();
    c.max_attempts = 2;
    c.initial_backoff = Duration::from_millis(10);
    let e = GeminiExpander::new(c)
        .unwrap()
        .expand(&cutout(30, 40), (3, 4), None)
        .unwrap_err();
    assert_eq!(e.category(), "Connection", "{e:?}");
    assert!(e.is_retryable());
    assert!(
        matches!(&e, GeminiError::RetriesExhausted { attempts: 2, .. }),
        "{e:?}"
    );
}

#[test]
fn a_huge_input_is_downscaled_under_20_mb() {
    // 6000x6000 of noise: about 144 MB raw, PNG cannot compress it.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut input = RgbaImage::new(6000, 6000);
    for p in input.pixels_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        p.0 = seed.to_le_bytes()[..4].try_into().unwrap();
        p.0[3] = 255;
    }
    let reply = picture(60, 80);
    let server = MockServer::start(move |_, _| success(&reply));
    let out = expander(&server)
        .expand_detailed(&input, (3, 4), None)
        .unwrap();
    let r = &server.requests()[0];
    assert!(
        r.body.len() < 20_000_000,
        "request of {} bytes",
        r.body.len()
    );
    assert_eq!(out.request_bytes, r.body.len());
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    let data = body["contents"][0]["parts"][1]["inlineData"]["data"]
        .as_str()
        .unwrap();
    let sent = image::load_from_memory(
        &base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    )
    .unwrap();
    assert_eq!((sent.width(), sent.height()), out.sent_size);
    assert!(
        sent.width() < 6000 && sent.width() >= 1000,
        "{}",
        sent.width()
    );
    assert_eq!(sent.width(), sent.height(), "the aspect ratio is kept");
    eprintln!(
        "6000x6000 noise sent as {}x{} in {} bytes",
        sent.width(),
        sent.height(),
        r.body.len()
    );
}
