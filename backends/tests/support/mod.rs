//! Test support: a tiny scripted HTTP/1.1 server on loopback (std only) that
//! records every request, a fake Gemini on it (`gemini`), and helpers to start
//! the real rembg server. Also included (`#[path]`) by the runner's and e2e tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod gemini;
pub mod rembg;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its headers arrived.
    pub at: Instant,
}

impl Recorded {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(
            status,
            "application/json",
            serde_json::to_vec(value).unwrap(),
        )
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = dyn Fn(usize, &Recorded) -> Reply + Send + Sync;

/// A scripted server: `handler(n, request)` answers the `n`-th request (0-based).
pub struct MockServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// The peers of the TCP connections accepted (a request or not), in order.
    connections: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
}

impl MockServer {
    pub fn start(handler: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1", handler)
    }

    /// A server on another loopback address (`127.0.0.2`, …).
    pub fn start_on(
        ip: &str,
        handler: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let counter = Arc::new(AtomicUsize::new(0));
        {
            let requests = requests.clone();
            let connections = connections.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(peer) = stream.peer_addr() {
                        connections.lock().unwrap().push(peer);
                    }
                    let (requests, handler, counter) =
                        (requests.clone(), handler.clone(), counter.clone());
                    thread::spawn(move || serve(stream, &requests, &*handler, &counter));
                }
            });
        }
        Self {
            addr,
            requests,
            connections,
            stop,
        }
    }

    /// The TCP connections made to the server before this call, settled: a probe
    /// connection is made and waited for (the listener accepts in order, so once
    /// the probe is accepted every earlier connection is); the probe is not counted.
    pub fn connections_so_far(&self) -> usize {
        let probe = TcpStream::connect(self.addr).unwrap();
        let me = probe.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self
                .connections
                .lock()
                .unwrap()
                .iter()
                .position(|p| *p == me)
            {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "the probe connection was never accepted"
            );
            thread::yield_now();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    stream: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    handler: &Handler,
    counter: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    // One request per connection (we answer `Connection: close`).
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let at = Instant::now();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        let _ = writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; n];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
    }
    let recorded = Recorded {
        method,
        path,
        headers,
        body,
        at,
    };
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let reply = handler(n, &recorded);
    requests.lock().unwrap().push(recorded);
    thread::sleep(reply.delay);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = writer.write_all(head.as_bytes());
    let _ = writer.write_all(&reply.body);
    let _ = writer.flush();
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// A loopback port nobody listens on (bound, then released). Another test's server may
/// be given it next; use [`refused_address`] to test a refused connection.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `host:port` that refuses every connection: port 0 on a loopback address no test server
/// binds. Nothing can listen on port 0 (a wildcard listener of another process on a recycled
/// port once accepted the connection this test expected to be refused).
pub fn refused_address() -> String {
    "127.45.0.1:0".to_string()
}

/// The parts of a multipart/form-data body: (name, bytes).
pub fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("a boundary")
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delim.as_bytes()) {
        rest = &rest[start + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(end) = find(rest, delim.as_bytes()) else {
            break;
        };
        let part = &rest[..end];
        let header_end = find(part, b"\r\n\r\n").expect("part headers");
        let headers = String::from_utf8_lossy(&part[..header_end]).to_string();
        let mut content = &part[header_end + 4..];
        if content.ends_with(b"\r\n") {
            content = &content[..content.len() - 2];
        }
        let name = headers
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .map(|n| n.split("\r\n").next().unwrap().trim_matches('"').to_owned())
            .unwrap_or_default();
        out.push((name, content.to_vec()));
        rest = &rest[end..];
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A synthetic garment photo: a dark T-shirt polygon on a light grey, slightly
/// shaded and noisy background; returns the photo and the drawn truth mask.
pub fn tshirt_photo(width: u32, height: u32) -> (image::RgbImage, image::GrayImage) {
    let (w, h) = (width as f64, height as f64);
    // A T-shirt: shoulders, short sleeves, body.
    let poly: Vec<(f64, f64)> = [
        (0.36, 0.12),
        (0.44, 0.16),
        (0.56, 0.16),
        (0.64, 0.12),
        (0.86, 0.24),
        (0.78, 0.38),
        (0.70, 0.33),
        (0.70, 0.88),
        (0.30, 0.88),
        (0.30, 0.33),
        (0.22, 0.38),
        (0.14, 0.24),
    ]
    .iter()
    .map(|&(x, y)| (x * w, y * h))
    .collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 9) as i32 - 4
    };
    let mut photo = image::RgbImage::new(width, height);
    let mut truth = image::GrayImage::new(width, height);
    for y in 0..height {
        for x in 0..width {
            let inside = point_in_polygon(x as f64 + 0.5, y as f64 + 0.5, &poly);
            let n = noise();
            let px = if inside {
                // Navy cotton with a little shading.
                let shade = (8.0 * ((x as f64 / w) - 0.5)) as i32;
                [30 + shade + n, 42 + shade + n, 78 + shade + n]
            } else {
                let g = 212 - (14.0 * y as f64 / h) as i32 + n;
                [g, g, g + 2]
            };
            photo.put_pixel(x, y, image::Rgb(px.map(|v| v.clamp(0, 255) as u8)));
            truth.put_pixel(x, y, image::Luma([if inside { 255 } else { 0 }]));
        }
    }
    (photo, truth)
}

fn point_in_polygon(x: f64, y: f64, poly: &[(f64, f64)]) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Intersection over union of two masks thresholded at 128.
pub fn iou(a: &image::GrayImage, b: &image::GrayImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let (mut inter, mut union) = (0u64, 0u64);
    for (pa, pb) in a.pixels().zip(b.pixels()) {
        let (x, y) = (pa.0[0] >= 128, pb.0[0] >= 128);
        inter += u64::from(x && y);
        union += u64::from(x || y);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}
