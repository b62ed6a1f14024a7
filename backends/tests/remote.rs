//! `RemoteRemover` against the real rembg server and against failing servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Cursor;
use std::time::{Duration, Instant};

use clothjob_backends::{NetworkPolicy, RemoteRemover};
use clothjob_pipeline::PipelineError;
use clothjob_pipeline::matte::BackgroundRemover;
use image::{GrayImage, ImageFormat, Luma, RgbImage};
use support::{MockServer, Reply, iou, multipart_parts, refused_address, tshirt_photo};

/// The test servers are on loopback: the policy the operator's --allowed-networks would give.
fn loopback() -> NetworkPolicy {
    NetworkPolicy::parse("127.0.0.0/8").unwrap()
}

fn png_of_gray(img: &GrayImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

fn run(remover: &RemoteRemover, photo: &RgbImage) -> (Result<GrayImage, PipelineError>, Vec<f64>) {
    let mut seen = Vec::new();
    let result = remover.alpha(photo, &mut |f| seen.push(f));
    (result, seen)
}

fn assert_retryable_backend(e: &PipelineError) {
    assert!(
        matches!(e, PipelineError::BackendUnavailable { backend, .. } if backend == "remote"),
        "{e:?}"
    );
    assert!(!e.is_bad_input(), "{e}");
    assert_eq!(e.category(), "Backend");
}

#[test]
fn real_rembg_server_masks_the_garment() {
    let Some(server) = support::rembg::start() else {
        return;
    };
    let (photo, truth) = tshirt_photo(480, 640);
    let remover = RemoteRemover::new(&server.url, "u2netp", false, Duration::from_secs(120))
        .unwrap()
        .with_network_policy(loopback());
    let started = Instant::now();
    let (result, progress) = run(&remover, &photo);
    let mask = result.unwrap_or_else(|e| panic!("{e}\nrembg log:\n{}", server.log()));
    assert_eq!(mask.dimensions(), photo.dimensions());
    let score = iou(&mask, &truth);
    eprintln!(
        "rembg u2netp (om=true): IoU {score:.4} in {:?}",
        started.elapsed()
    );
    assert!(score >= 0.9, "IoU {score} < 0.9");
    assert_eq!(progress.first(), Some(&0.0));
    assert_eq!(progress.last(), Some(&1.0));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
}

#[test]
fn real_rembg_server_with_alpha_matting_uses_the_cutout_alpha() {
    let Some(server) = support::rembg::start() else {
        return;
    };
    let (photo, truth) = tshirt_photo(360, 480);
    let remover = RemoteRemover::new(&server.url, "u2netp", true, Duration::from_secs(300))
        .unwrap()
        .with_network_policy(loopback());
    let started = Instant::now();
    let (result, _) = run(&remover, &photo);
    let mask = result.unwrap_or_else(|e| panic!("{e}\nrembg log:\n{}", server.log()));
    let score = iou(&mask, &truth);
    eprintln!(
        "rembg u2netp (alpha matting): IoU {score:.4} in {:?}",
        started.elapsed()
    );
    assert!(score >= 0.9, "IoU {score} < 0.9");
}

#[test]
fn real_rembg_server_rejects_an_unknown_model_as_invalid_options() {
    let Some(server) = support::rembg::start() else {
        return;
    };
    let (photo, _) = tshirt_photo(64, 64);
    let remover = RemoteRemover::new(&server.url, "no-such-model", false, Duration::from_secs(60))
        .unwrap()
        .with_network_policy(loopback());
    let e = run(&remover, &photo).0.unwrap_err();
    assert!(matches!(e, PipelineError::InvalidOptions(_)), "{e:?}");
    assert!(e.is_bad_input());
    assert!(e.to_string().contains("422"), "{e}");
}

#[test]
fn request_is_rembg_multipart_with_the_options_as_form_fields() {
    let server = MockServer::start(|_, _| {
        Reply::new(
            200,
            "image/png",
            png_of_gray(&GrayImage::from_pixel(8, 6, Luma([255]))),
        )
    });
    let (photo, _) = tshirt_photo(8, 6);
    let remover = RemoteRemover::new(
        &server.url(),
        "isnet-general-use",
        false,
        Duration::from_secs(5),
    )
    .unwrap()
    .with_network_policy(loopback())
    .with_post_process_mask(true);
    run(&remover, &photo).0.unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/remove");
    let content_type = r.header("content-type").unwrap();
    assert!(
        content_type.starts_with("multipart/form-data"),
        "{content_type}"
    );
    let parts = multipart_parts(content_type, &r.body);
    let field = |name: &str| {
        parts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
            .unwrap_or_else(|| panic!("no form field {name}: {parts:?}"))
    };
    assert_eq!(field("model"), "isnet-general-use");
    assert_eq!(field("om"), "true");
    assert_eq!(field("a"), "false");
    assert_eq!(field("ppm"), "true");
    assert_eq!(field("af"), "240");
    assert_eq!(field("ab"), "10");
    assert_eq!(field("ae"), "10");
    let file = &parts.iter().find(|(n, _)| n == "file").unwrap().1;
    let sent = image::load_from_memory_with_format(file, ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    assert_eq!(sent, photo, "the file part is the photo as PNG");
}

#[test]
fn alpha_matting_asks_for_the_cutout_and_reads_its_alpha() {
    let server = MockServer::start(|_, _| {
        let mut cutout = image::RgbaImage::from_pixel(4, 4, image::Rgba([9, 9, 9, 0]));
        cutout.put_pixel(1, 2, image::Rgba([9, 9, 9, 180]));
        let mut png = Vec::new();
        cutout
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        Reply::new(200, "image/png", png)
    });
    let remover = RemoteRemover::new(&server.url(), "u2netp", true, Duration::from_secs(5))
        .unwrap()
        .with_network_policy(loopback());
    let mask = run(&remover, &RgbImage::new(4, 4)).0.unwrap();
    assert_eq!(mask.get_pixel(1, 2).0[0], 180);
    assert_eq!(mask.get_pixel(0, 0).0[0], 0);
    let r = &server.requests()[0];
    let parts = multipart_parts(r.header("content-type").unwrap(), &r.body);
    let get = |name: &str| {
        parts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("a").as_deref(), Some(&b"true"[..]));
    assert_eq!(get("om").as_deref(), Some(&b"false"[..]));
}

#[test]
fn a_mask_of_another_size_is_resized_to_the_photo() {
    let server = MockServer::start(|_, _| {
        let mut small = GrayImage::new(50, 40);
        for y in 0..40 {
            for x in 25..50 {
                small.put_pixel(x, y, Luma([255]));
            }
        }
        Reply::new(200, "image/png", png_of_gray(&small))
    });
    let remover = RemoteRemover::new(&server.url(), "u2netp", false, Duration::from_secs(5))
        .unwrap()
        .with_network_policy(loopback());
    let mask = run(&remover, &RgbImage::new(200, 160)).0.unwrap();
    assert_eq!(mask.dimensions(), (200, 160));
    assert_eq!(mask.get_pixel(10, 80).0[0], 0);
    assert_eq!(mask.get_pixel(190, 80).0[0], 255);
}

#[test]
fn http_500_is_a_retryable_backend_error() {
    let server = MockServer::start(|_, _| Reply::new(500, "text/plain", "Internal Server Error"));
    let remover = RemoteRemover::new(&server.url(), "u2netp", false, Duration::from_secs(5))
        .unwrap()
        .with_network_policy(loopback());
    let e = run(&remover, &RgbImage::new(16, 16)).0.unwrap_err();
    assert_retryable_backend(&e);
    let msg = e.to_string();
    assert!(
        msg.contains("500") && msg.contains("Internal Server Error"),
        "{msg}"
    );
    assert_eq!(server.count(), 1, "the remover does not retry by itself");
}

#[test]
fn a_server_that_does_not_answer_in_time_is_a_retryable_timeout() {
    let server = MockServer::start(|_, _| {
        Reply::new(200, "image/png", Vec::new()).delayed(Duration::from_secs(5))
    });
    let remover = RemoteRemover::new(&server.url(), "u2netp", false, Duration::from_millis(500))
        .unwrap()
        .with_network_policy(loopback());
    let started = Instant::now();
    let e = run(&remover, &RgbImage::new(16, 16)).0.unwrap_err();
    let took = started.elapsed();
    assert_retryable_backend(&e);
    assert!(e.to_string().contains("did not reply within"), "{e}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn a_closed_port_is_a_retryable_connection_error() {
    let url = format!("http://{}", refused_address());
    let remover = RemoteRemover::new(&url, "u2netp", false, Duration::from_secs(5))
        .unwrap()
        .with_network_policy(loopback());
    let started = Instant::now();
    let e = run(&remover, &RgbImage::new(16, 16)).0.unwrap_err();
    assert_retryable_backend(&e);
    assert!(e.to_string().contains("cannot connect"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_reply_that_is_not_an_image_is_a_backend_error() {
    let server = MockServer::start(|_, _| Reply::new(200, "text/html", "<html>proxy</html>"));
    let remover = RemoteRemover::new(&server.url(), "u2netp", false, Duration::from_secs(5))
        .unwrap()
        .with_network_policy(loopback());
    let e = run(&remover, &RgbImage::new(16, 16)).0.unwrap_err();
    assert_retryable_backend(&e);
    assert!(e.to_string().contains("not an image"), "{e}");
}

#[test]
fn a_client_error_is_invalid_options_and_429_is_retryable() {
    let server = MockServer::start(|n, _| {
        if n == 0 {
            Reply::new(422, "application/json", r#"{"detail":"bad model"}"#)
        } else {
            Reply::new(429, "text/plain", "slow down")
        }
    });
    let remover = RemoteRemover::new(&server.url(), "u2netp", false, Duration::from_secs(5))
        .unwrap()
        .with_network_policy(loopback());
    let e = run(&remover, &RgbImage::new(16, 16)).0.unwrap_err();
    assert!(matches!(e, PipelineError::InvalidOptions(_)), "{e:?}");
    assert!(e.to_string().contains("bad model"), "{e}");
    let e = run(&remover, &RgbImage::new(16, 16)).0.unwrap_err();
    assert_retryable_backend(&e);
}
