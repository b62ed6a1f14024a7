//! `resolve_model` against a real HTTPS server on 127.0.0.1 (a test CA and a
//! server certificate made with rcgen, tokio-rustls): download once into the
//! cache, sha256 checks, 404, size cap, time-out, untrusted certificates, and
//! local paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clothjob_onnx::{
    FetchLimits, OnnxSegmenter, ResolveModelError, resolve_model, resolve_model_with, testmodel,
};
use clothjob_pipeline::{PipelineError, StageName};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What the server answers on one path.
#[derive(Clone)]
enum Route {
    /// 200 with this body.
    Body(Vec<u8>),
    /// Headers for 1 MB, a few bytes, then nothing for a minute.
    Stall,
}

/// A loopback HTTPS server; `hits` counts the requests it answered.
struct Server {
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// A client that trusts the test CA.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_der(&self.ca).unwrap())
            .build()
            .unwrap()
    }
}

async fn start(routes: HashMap<&'static str, Route>) -> Server {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, routes, counter) =
                (acceptor.clone(), Arc::clone(&routes), Arc::clone(&counter));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&head);
                let path = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .split('?')
                    .next()
                    .unwrap_or("/")
                    .to_owned();
                match routes.get(path.as_str()) {
                    Some(Route::Body(body)) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = tls.write_all(head.as_bytes()).await;
                        let _ = tls.write_all(body).await;
                    }
                    Some(Route::Stall) => {
                        let _ = tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\nconnection: close\r\n\r\nONNX")
                            .await;
                        let _ = tls.flush().await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    None => {
                        let _ = tls
                            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot found")
                            .await;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    Server {
        addr,
        ca: ca.der().clone(),
        hits,
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every file in `dir` (none when it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

fn model_bytes() -> Vec<u8> {
    testmodel::pixel_classifier(
        Some((8, 8)),
        &[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        &[0.0, 0.0],
    )
}

#[tokio::test]
async fn an_https_model_is_downloaded_once_and_cached() {
    let model = model_bytes();
    let server = start(HashMap::from([(
        "/models/seg.onnx",
        Route::Body(model.clone()),
    )]))
    .await;
    let client = server.client();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("models");
    let url = server.url("/models/seg.onnx?token=abc");
    let digest = sha256(&model);

    let path = resolve_model(&client, &url, Some(&digest), &cache_dir)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert!(path.starts_with(&cache_dir));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(&format!("-{digest}-seg.onnx")), "{name}");
    assert_eq!(
        files_in(&cache_dir),
        std::slice::from_ref(&path),
        "no temporary files left"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // Again: from the cache, no request.
    let again = resolve_model(&client, &url, Some(&digest), &cache_dir)
        .await
        .unwrap();
    assert_eq!(again, path);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // A cached file that no longer matches its digest is fetched again.
    std::fs::write(&path, b"corrupted").unwrap();
    let healed = resolve_model(&client, &url, Some(&digest), &cache_dir)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&healed).unwrap(), model);
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);

    // Without a digest the cache entry is another one.
    let plain = resolve_model(&client, &url, None, &cache_dir)
        .await
        .unwrap();
    assert_ne!(plain, path);
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);

    // And the downloaded file is a model the segmenter loads.
    if support::runtime("an_https_model_is_downloaded_once_and_cached (model part)") {
        let seg = OnnxSegmenter::load(&path, None).unwrap();
        assert_eq!(seg.input_size(), (8, 8));
    }
}

#[tokio::test]
async fn a_sha256_mismatch_fails_and_keeps_nothing() {
    let model = model_bytes();
    let server = start(HashMap::from([("/m.onnx", Route::Body(model))])).await;
    let cache = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let e = resolve_model(
        &server.client(),
        &server.url("/m.onnx"),
        Some(&wrong),
        cache.path(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ResolveModelError::VerifySha256 { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&server.url("/m.onnx")) && text.contains(&wrong),
        "{text}"
    );
    assert!(
        files_in(cache.path()).is_empty(),
        "{:?}",
        files_in(cache.path())
    );
    assert!(matches!(
        e.into_pipeline(StageName::BackgroundRemoval),
        PipelineError::InvalidOptions(_)
    ));

    let e = resolve_model(
        &server.client(),
        &server.url("/m.onnx"),
        Some("abc"),
        cache.path(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the model's sha256 \"abc\" is not 64 hex digits"
    );
}

#[tokio::test]
async fn a_404_is_a_clear_configuration_error() {
    let server = start(HashMap::new()).await;
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/missing.onnx?sig=secret");
    let e = resolve_model(&server.client(), &url, None, cache.path())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "could not download the model from {}: HTTP 404",
            server.url("/missing.onnx")
        ),
        "the query (which may hold credentials) is not shown"
    );
    assert!(e.is_configuration());
    assert!(files_in(cache.path()).is_empty());
}

#[tokio::test]
async fn the_size_cap_and_the_time_out_hold() {
    let big = vec![7u8; 5000];
    let server = start(HashMap::from([
        ("/big.onnx", Route::Body(big)),
        ("/slow.onnx", Route::Stall),
    ]))
    .await;
    let cache = tempfile::tempdir().unwrap();
    let limits = FetchLimits {
        max_bytes: 4096,
        timeout: Duration::from_secs(30),
    };
    let e = resolve_model_with(
        &server.client(),
        &server.url("/big.onnx"),
        None,
        cache.path(),
        limits,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, ResolveModelError::TooLarge { limit: 4096, .. }),
        "{e}"
    );
    assert!(files_in(cache.path()).is_empty());

    let limits = FetchLimits {
        max_bytes: 1 << 30,
        timeout: Duration::from_millis(500),
    };
    let started = std::time::Instant::now();
    let e = resolve_model_with(
        &server.client(),
        &server.url("/slow.onnx"),
        None,
        cache.path(),
        limits,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ResolveModelError::TimedOut { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        files_in(cache.path()).is_empty(),
        "the partial download is removed"
    );
    let pe = e.into_pipeline(StageName::Segmentation);
    assert!(
        matches!(pe, PipelineError::BackendUnavailable { .. }),
        "a time-out may pass: {pe}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let server = start(HashMap::from([("/m.onnx", Route::Body(model_bytes()))])).await;
    let cache = tempfile::tempdir().unwrap();
    let e = resolve_model(
        &reqwest::Client::new(),
        &server.url("/m.onnx"),
        None,
        cache.path(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ResolveModelError::Download { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    assert!(files_in(cache.path()).is_empty());
}

#[tokio::test]
async fn local_paths_and_file_urls_are_checked_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_bytes();
    let path = dir.path().join("local.onnx");
    std::fs::write(&path, &model).unwrap();
    let cache = dir.path().join("cache");
    let client = reqwest::Client::new();
    let digest = sha256(&model);

    let got = resolve_model(&client, path.to_str().unwrap(), Some(&digest), &cache)
        .await
        .unwrap();
    assert_eq!(got, path);
    let url = format!("file://{}", path.display());
    assert_eq!(
        resolve_model(&client, &url, None, &cache).await.unwrap(),
        path
    );
    assert!(!cache.exists(), "local models are not copied");

    let e = resolve_model(&client, &url, Some(&"f".repeat(64)), &cache)
        .await
        .unwrap_err();
    assert!(matches!(e, ResolveModelError::VerifySha256 { .. }), "{e}");
    assert!(path.exists(), "the caller's file is left alone");

    let e = resolve_model(&client, "/nonexistent/m.onnx", None, &cache)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "could not read the model file /nonexistent/m.onnx: No such file or directory (os error 2)"
    );
    assert!(e.is_configuration());
    let e = resolve_model(&client, "s3://bucket/m.onnx", None, &cache)
        .await
        .unwrap_err();
    assert!(matches!(e, ResolveModelError::ParseUri { .. }), "{e}");
}
