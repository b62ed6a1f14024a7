//! The request-forgery guard on real clients, against loopback servers: a refused address
//! sees no connection at all (literal IPs, names after DNS resolution, redirect hops), an
//! allowed one is reached; the Gemini key never appears in any error's text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Cursor;
use std::time::Duration;

use clothjob_backends::netguard::{NetworkPolicy, Redirects};
use clothjob_backends::{GeminiConfig, GeminiError, GeminiExpander, RemoteRemover};
use clothjob_pipeline::PipelineError;
use clothjob_pipeline::matte::BackgroundRemover;
use image::{GrayImage, ImageFormat, Luma, RgbImage, RgbaImage};
use support::{MockServer, Reply, refused_address};

/// A fake key, long and unusual enough to be found anywhere it leaks.
const KEY: &str = "AIzaFAKE-k3y-Th4t-Must-Never-Leak-0123456";

fn mask_reply() -> Reply {
    let mut png = Vec::new();
    GrayImage::from_pixel(8, 8, Luma([255]))
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    Reply::new(200, "image/png", png)
}

fn policy(list: &str) -> NetworkPolicy {
    NetworkPolicy::parse(list).unwrap()
}

fn remover(url: &str, network: NetworkPolicy) -> RemoteRemover {
    RemoteRemover::new(url, "u2netp", false, Duration::from_secs(5))
        .unwrap()
        .with_network_policy(network)
}

fn remove(r: &RemoteRemover) -> Result<GrayImage, PipelineError> {
    r.alpha(&RgbImage::new(8, 8), &mut |_| {})
}

fn assert_refused(e: &PipelineError, what: &str) {
    let text = e.to_string();
    assert!(
        text.contains(&format!("refused to connect to {what}")),
        "{text}"
    );
    assert!(
        text.contains("allow it with the operator's --allowed-networks"),
        "{text}"
    );
    assert!(e.is_bad_input(), "a refusal is never retried: {text}");
    assert_eq!(e.category(), "InvalidOptions", "{text}");
}

#[test]
fn a_refused_literal_address_sees_no_connection_and_an_allowed_one_is_reached() {
    let server = MockServer::start(|_, _| mask_reply());
    let e = remove(&remover(&server.url(), NetworkPolicy::public_only())).unwrap_err();
    assert_refused(&e, "127.0.0.1: loopback address");
    assert_eq!(server.connections_so_far(), 0);

    let allowed = MockServer::start(|_, _| mask_reply());
    remove(&remover(&allowed.url(), policy("127.0.0.0/8"))).unwrap();
    assert_eq!(allowed.count(), 1);
}

#[test]
fn a_name_is_checked_after_resolution() {
    // `localhost` resolves (hosts file, no DNS server) to loopback addresses only.
    let server = MockServer::start(|_, _| mask_reply());
    let url = format!("http://localhost:{}", server.addr.port());
    let e = remove(&remover(&url, NetworkPolicy::public_only())).unwrap_err();
    assert_refused(&e, "localhost (");
    assert!(e.to_string().contains("loopback address"), "{e}");
    assert_eq!(server.connections_so_far(), 0);

    // Allowed by network: the IPv4 loopback address it resolves to is kept.
    let by_network = MockServer::start(|_, _| mask_reply());
    let url = format!("http://localhost:{}", by_network.addr.port());
    remove(&remover(&url, policy("127.0.0.0/8"))).unwrap();
    assert_eq!(by_network.count(), 1);

    // Allowed by name.
    let by_name = MockServer::start(|_, _| mask_reply());
    let url = format!("http://localhost:{}", by_name.addr.port());
    remove(&remover(&url, policy("localhost"))).unwrap();
    assert_eq!(by_name.count(), 1);
}

#[test]
fn a_redirect_to_a_refused_address_fails_before_connecting_to_it() {
    let target = MockServer::start_on("127.0.0.2", |_, _| mask_reply());
    let location = format!("http://{}/api/remove", target.addr);
    let first = MockServer::start(move |_, _| {
        Reply::new(302, "text/plain", "moved").header("Location", &location)
    });
    // Only 127.0.0.1 is allowed: the hop to 127.0.0.2 is refused.
    let e = remove(&remover(&first.url(), policy("127.0.0.1/32"))).unwrap_err();
    assert_refused(&e, "127.0.0.2: loopback address");
    assert_eq!(first.count(), 1);
    assert_eq!(target.connections_so_far(), 0);

    // With the whole loopback range allowed, the hop is followed.
    let target = MockServer::start_on("127.0.0.2", |_, _| mask_reply());
    let location = format!("http://{}/api/remove", target.addr);
    let first = MockServer::start(move |_, _| {
        Reply::new(302, "text/plain", "moved").header("Location", &location)
    });
    remove(&remover(&first.url(), policy("127.0.0.0/8"))).unwrap();
    assert_eq!(target.count(), 1);
}

#[test]
fn a_guarded_client_checks_every_hop_of_a_redirect_chain() {
    // 127.0.0.1 -> 127.0.0.1 (allowed) -> 169.254.169.254 (refused, never tried).
    let second = MockServer::start(|_, _| {
        Reply::new(302, "text/plain", "").header("Location", "http://169.254.169.254/latest/")
    });
    let location = format!("{}/next", second.url());
    let first = MockServer::start(move |_, _| {
        Reply::new(301, "text/plain", "").header("Location", &location)
    });
    let client = policy("127.0.0.1/32")
        .guard_blocking(reqwest::blocking::Client::builder(), Redirects::Follow)
        .build()
        .unwrap();
    let e = client.get(first.url()).send().unwrap_err();
    let refusal = clothjob_backends::netguard::refusal_in(&e).unwrap();
    assert_eq!(
        refusal,
        "refused to connect to 169.254.169.254: link-local address; allow it with the operator's --allowed-networks"
    );
    assert_eq!((first.count(), second.count()), (1, 1));
}

fn gemini_config(endpoint: String, network: NetworkPolicy) -> GeminiConfig {
    let mut c = GeminiConfig::new(KEY, "gemini-2.5-flash-image");
    c.endpoint = endpoint;
    c.network = network;
    c.request_timeout = Duration::from_secs(5);
    c.total_timeout = Duration::from_secs(20);
    c.max_attempts = 2;
    c.initial_backoff = Duration::from_millis(10);
    c.max_backoff = Duration::from_millis(20);
    c
}

fn expand(config: GeminiConfig) -> Result<RgbaImage, GeminiError> {
    GeminiExpander::new(config)?.expand(&RgbaImage::new(30, 40), (3, 4), None)
}

#[test]
fn gemini_refuses_plain_http_and_non_public_endpoints() {
    let server = MockServer::start(|_, _| Reply::new(500, "text/plain", "no"));
    // Plain http to a host that is not allowed.
    let e = expand(gemini_config(server.url(), NetworkPolicy::public_only())).unwrap_err();
    assert!(matches!(e, GeminiError::InvalidConfig(_)), "{e:?}");
    assert!(e.to_string().contains("must be https"), "{e}");
    let e = expand(gemini_config(
        "http://gemini.example.com".to_owned(),
        NetworkPolicy::public_only(),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("must be https"), "{e}");
    // https to a literal loopback address: refused at construction.
    let e = expand(gemini_config(
        format!("https://{}", server.addr),
        NetworkPolicy::public_only(),
    ))
    .unwrap_err();
    assert!(matches!(e, GeminiError::Refused(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused to connect to 127.0.0.1: loopback address"),
        "{e}"
    );
    // https to a name that resolves to loopback: refused after resolution, not retried.
    let e = expand(gemini_config(
        format!("https://localhost:{}", server.addr.port()),
        NetworkPolicy::public_only(),
    ))
    .unwrap_err();
    assert!(matches!(e, GeminiError::Refused(_)), "{e:?}");
    assert!(!e.is_retryable());
    let p = PipelineError::from(e);
    assert_eq!(p.category(), "InvalidOptions", "{p}");
    assert_eq!(server.connections_so_far(), 0);
}

#[test]
fn gemini_follows_no_redirect_and_never_sends_the_key_elsewhere() {
    let elsewhere = MockServer::start_on("127.0.0.2", |_, _| Reply::new(200, "text/plain", ""));
    let location = format!("http://{}/steal?key={KEY}", elsewhere.addr);
    let server = MockServer::start(move |_, _| {
        Reply::new(307, "text/plain", "").header("Location", &location)
    });
    // Even with both addresses allowed, the redirect is not followed.
    let e = expand(gemini_config(server.url(), policy("127.0.0.0/8"))).unwrap_err();
    assert!(
        matches!(&e, GeminiError::Redirected { status: 307, location } if location.ends_with("/steal")),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert_eq!(server.count(), 1, "a redirect is not retried");
    assert_eq!(
        server.requests()[0].header("x-goog-api-key"),
        Some(KEY),
        "the key goes in its header"
    );
    assert!(!server.requests()[0].path.contains(KEY));
    assert_eq!(elsewhere.connections_so_far(), 0);
    assert_no_key(&e);
    let p = PipelineError::from(e);
    assert_eq!(p.category(), "InvalidOptions");
}

fn assert_no_key(e: &GeminiError) {
    let shown = format!("{e} | {e:?}");
    assert!(!shown.contains(KEY), "the key leaked: {shown}");
    let p = PipelineError::from(clone_error(e));
    let shown = format!("{p} | {p:?}");
    assert!(!shown.contains(KEY), "the key leaked: {shown}");
}

/// GeminiError is not Clone; rebuild it through its text for the pipeline mapping.
fn clone_error(e: &GeminiError) -> GeminiError {
    if e.is_settings_fault() {
        GeminiError::InvalidConfig(e.to_string())
    } else {
        GeminiError::MalformedResponse(e.to_string())
    }
}

#[test]
fn the_key_appears_in_no_error_even_when_a_server_echoes_it() {
    let echo = |status: u16| {
        move |_: usize, r: &support::Recorded| {
            let key = r.header("x-goog-api-key").unwrap_or_default().to_owned();
            Reply::json(
                status,
                &serde_json::json!({ "error": { "code": status, "message": format!("bad key {key}"), "status": format!("S{key}") } }),
            )
        }
    };
    let mut errors = Vec::new();
    for status in [400, 401, 403, 404, 429, 500, 503] {
        let server = MockServer::start(echo(status));
        errors.push(expand(gemini_config(server.url(), policy("127.0.0.0/8"))).unwrap_err());
    }
    // Malformed replies quoting the key.
    for body in [
        format!("not json {KEY}"),
        format!("{{\"candidates\": [], \"k\": \"{KEY}\"}}"),
    ] {
        let server =
            MockServer::start(move |_, _| Reply::new(200, "application/json", body.clone()));
        errors.push(expand(gemini_config(server.url(), policy("127.0.0.0/8"))).unwrap_err());
    }
    // A reply without an image whose text echoes the key.
    let server = MockServer::start(|_, r| {
        let key = r.header("x-goog-api-key").unwrap_or_default().to_owned();
        Reply::json(
            200,
            &serde_json::json!({ "candidates": [{ "content": { "parts": [{ "text": format!("your key is {key}") }] }, "finishReason": "STOP" }] }),
        )
    });
    errors.push(expand(gemini_config(server.url(), policy("127.0.0.0/8"))).unwrap_err());
    // A slow server (time-out), a closed port, a refused address, a redirect.
    let slow =
        MockServer::start(|_, _| Reply::new(200, "text/plain", "").delayed(Duration::from_secs(3)));
    let mut c = gemini_config(slow.url(), policy("127.0.0.0/8"));
    c.request_timeout = Duration::from_millis(300);
    c.total_timeout = Duration::from_millis(700);
    errors.push(expand(c).unwrap_err());
    errors.push(
        expand(gemini_config(
            format!("http://{}", refused_address()),
            policy("127.0.0.0/8"),
        ))
        .unwrap_err(),
    );
    errors.push(
        expand(gemini_config(
            format!("https://localhost:{}/?key={KEY}", slow.addr.port()),
            NetworkPolicy::public_only(),
        ))
        .unwrap_err(),
    );
    let redirect = MockServer::start(|_, r| {
        let key = r.header("x-goog-api-key").unwrap_or_default().to_owned();
        Reply::new(302, "text/plain", "").header(
            "Location",
            &format!("https://{key}@evil.example/{key}?key={key}"),
        )
    });
    errors.push(expand(gemini_config(redirect.url(), policy("127.0.0.0/8"))).unwrap_err());

    let categories: Vec<&str> = errors.iter().map(GeminiError::category).collect();
    for wanted in [
        "InvalidRequest",
        "Auth",
        "RateLimited",
        "Unavailable",
        "MalformedResponse",
        "NoImage",
        "Timeout",
        "Connection",
        "Refused",
        "Redirected",
    ] {
        assert!(
            categories.contains(&wanted),
            "no {wanted} in {categories:?}"
        );
    }
    for e in &errors {
        assert_no_key(e);
    }
    // The settings never show it either.
    let c = gemini_config(
        "https://example.com".to_owned(),
        NetworkPolicy::public_only(),
    );
    assert!(!format!("{c:?}").contains(KEY));
    let g = GeminiExpander::new(c).unwrap();
    assert!(!format!("{g:?}").contains(KEY));
}
