//! The backends are built and dropped inside async code and used from
//! `spawn_blocking`, as the runner does: no "blocking inside a runtime" panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Cursor;
use std::time::Duration;

use clothjob_backends::{GeminiConfig, GeminiExpander, NetworkPolicy, RemoteRemover};
use clothjob_pipeline::matte::BackgroundRemover;
use image::{GrayImage, ImageFormat, Luma, RgbImage};
use support::{MockServer, Reply};

#[test]
fn built_in_async_code_and_used_from_spawn_blocking() {
    let server = MockServer::start(|_, _| {
        let mut png = Vec::new();
        GrayImage::from_pixel(8, 8, Luma([255]))
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        Reply::new(200, "image/png", png)
    });
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let remover = RemoteRemover::new(&url, "u2netp", false, Duration::from_secs(5))
            .unwrap()
            .with_network_policy(NetworkPolicy::parse("127.0.0.0/8").unwrap());
        let unused = GeminiExpander::new(GeminiConfig::new("k", "gemini-2.5-flash-image")).unwrap();
        drop(unused);
        let mask =
            tokio::task::spawn_blocking(move || remover.alpha(&RgbImage::new(8, 8), &mut |_| {}))
                .await
                .unwrap()
                .unwrap();
        assert!(mask.pixels().all(|p| p.0[0] == 255));
    });
    assert_eq!(server.count(), 1);
}
