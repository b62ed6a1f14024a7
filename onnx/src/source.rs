//! Model sources: a model URI is a local file (`/x`, `file:///x`) or an
//! `https://` URL fetched once into a cache directory (size cap, time-out,
//! atomic write, optional sha256 check).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clothjob_pipeline::{PipelineError, StageName};
use reqwest::Url;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The environment variable naming the model cache directory.
pub const CACHE_ENV: &str = "CLOTHJOB_MODEL_CACHE";

/// Bounds of one download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Most bytes a model may have (default 1 GiB: the largest models of
    /// rembg's zoo are under 1 GB).
    pub max_bytes: u64,
    /// Most time the whole download may take (default 10 minutes).
    pub timeout: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            timeout: Duration::from_secs(600),
        }
    }
}

/// An error of [`resolve_model`], named after the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveModelError {
    /// The URI is neither a path, a `file://` URL nor an `https://` URL.
    #[error("unusable model URI {uri}: {reason}")]
    ParseUri {
        /// The URI (its query removed).
        uri: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The expected sha256 is not 64 hex digits.
    #[error("the model's sha256 {value:?} is not 64 hex digits")]
    ParseSha256 {
        /// What was given.
        value: String,
    },
    /// A local model file could not be read.
    #[error("could not read the model file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model's sha256 is not the expected one.
    #[error("the model {what} has sha256 {actual}, expected {expected}")]
    VerifySha256 {
        /// The file or URL.
        what: String,
        /// The expected digest.
        expected: String,
        /// The digest of what was read.
        actual: String,
    },
    /// The request failed (connection, TLS, reading the body).
    #[error("could not download the model from {url}: {reason}")]
    Download {
        /// The URL (its query removed).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("could not download the model from {url}: HTTP {status}")]
    HttpStatus {
        /// The URL (its query removed).
        url: String,
        /// The status code.
        status: u16,
    },
    /// The model is larger than [`FetchLimits::max_bytes`].
    #[error("could not download the model from {url}: it is over the limit of {limit} bytes")]
    TooLarge {
        /// The URL (its query removed).
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The download took longer than [`FetchLimits::timeout`].
    #[error("could not download the model from {url}: no complete answer within {after:?}")]
    TimedOut {
        /// The URL (its query removed).
        url: String,
        /// The limit.
        after: Duration,
    },
    /// The cache directory or file could not be written.
    #[error("could not write the model cache {path}: {source}")]
    WriteCache {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ResolveModelError {
    /// True when the configuration is at fault (a wrong URI or digest, a
    /// missing file, a URL the server does not have): a retry cannot help.
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::ParseUri { .. } | Self::ParseSha256 { .. } | Self::VerifySha256 { .. } => true,
            Self::ReadFile { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Self::HttpStatus { status, .. } => {
                (400..500).contains(status) && *status != 408 && *status != 429
            }
            Self::TooLarge { .. } => true,
            Self::Download { .. } | Self::TimedOut { .. } | Self::WriteCache { .. } => false,
        }
    }

    /// The pipeline's error for this failure in `stage`: configuration faults
    /// are [`PipelineError::InvalidOptions`], the rest (network, disk)
    /// [`PipelineError::BackendUnavailable`].
    pub fn into_pipeline(self, stage: StageName) -> PipelineError {
        if self.is_configuration() {
            PipelineError::InvalidOptions(format!("stage {stage}, backend onnx: {self}"))
        } else {
            PipelineError::BackendUnavailable {
                stage,
                backend: "onnx".to_owned(),
                reason: self.to_string(),
            }
        }
    }
}

/// The environment variable naming the runner's scratch directory (an emptyDir in the pod,
/// whose root filesystem is read-only); the same name as the API contract's
/// `ENV_SCRATCH_DIR`.
pub const SCRATCH_ENV: &str = "CLOTHJOB_SCRATCH_DIR";

/// The model cache directory: `CLOTHJOB_MODEL_CACHE`, else
/// `$CLOTHJOB_SCRATCH_DIR/models` (in a runner pod: the writable scratch volume), else
/// `$XDG_CACHE_HOME/clothjob/models`, else `~/.cache/clothjob/models`.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`default_cache_dir`] over the environment `var` gives (pure, for tests).
fn cache_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(CACHE_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var(SCRATCH_ENV) {
        return PathBuf::from(dir).join("models");
    }
    let base = var("XDG_CACHE_HOME").map_or_else(
        || {
            var("HOME")
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
                .join(".cache")
        },
        PathBuf::from,
    );
    base.join("clothjob").join("models")
}

/// [`resolve_model_with`] with the default [`FetchLimits`].
pub async fn resolve_model(
    client: &reqwest::Client,
    uri: &str,
    sha256: Option<&str>,
    cache_dir: &Path,
) -> Result<PathBuf, ResolveModelError> {
    resolve_model_with(client, uri, sha256, cache_dir, FetchLimits::default()).await
}

/// The local file of the model at `uri`. A path or `file://` URL is checked
/// (exists; its sha256 when given) and returned as is. An `https://` URL is
/// downloaded once into `cache_dir` (under a name made of the URL's and the
/// expected sha256's digests) and later taken from there; a download is
/// written to a temporary file and renamed into place only when it is
/// complete and its sha256 (when given) matches.
pub async fn resolve_model_with(
    client: &reqwest::Client,
    uri: &str,
    sha256: Option<&str>,
    cache_dir: &Path,
    limits: FetchLimits,
) -> Result<PathBuf, ResolveModelError> {
    let expected = sha256.map(parse_sha256).transpose()?;
    match parse_uri(uri)? {
        Source::File(path) => {
            let actual = hash_file(&path)
                .await
                .map_err(|source| ResolveModelError::ReadFile {
                    path: path.clone(),
                    source,
                })?;
            check_digest(&path.display().to_string(), expected.as_deref(), &actual)?;
            Ok(path)
        }
        Source::Https(url) => {
            fetch_cached(client, &url, expected.as_deref(), cache_dir, limits).await
        }
    }
}

enum Source {
    File(PathBuf),
    Https(Url),
}

fn parse_uri(uri: &str) -> Result<Source, ResolveModelError> {
    let err = |reason: &str| ResolveModelError::ParseUri {
        uri: uri.split('?').next().unwrap_or_default().to_owned(),
        reason: reason.to_owned(),
    };
    if uri.is_empty() {
        return Err(err("it is empty"));
    }
    if !uri.contains("://") {
        return Ok(Source::File(PathBuf::from(uri)));
    }
    let url = Url::parse(uri).map_err(|e| err(&e.to_string()))?;
    match url.scheme() {
        "file" => url
            .to_file_path()
            .map(Source::File)
            .map_err(|()| err("not a local file URL")),
        "https" => Ok(Source::Https(url)),
        other => Err(err(&format!(
            "scheme {other} is not supported (a path, file:// or https://)"
        ))),
    }
}

fn parse_sha256(value: &str) -> Result<String, ResolveModelError> {
    let v = value.trim().to_ascii_lowercase();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v)
    } else {
        Err(ResolveModelError::ParseSha256 {
            value: value.to_owned(),
        })
    }
}

fn check_digest(what: &str, expected: Option<&str>, actual: &str) -> Result<(), ResolveModelError> {
    match expected {
        Some(e) if e != actual => Err(ResolveModelError::VerifySha256 {
            what: what.to_owned(),
            expected: e.to_owned(),
            actual: actual.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The URL without its query and fragment (which may hold credentials).
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The cache file of `url` (+ expected digest): `KEY-NAME` where KEY is the
/// start of the URL's sha256, then the expected sha256 when given, and NAME
/// the URL's last path segment (safe characters only).
fn cache_path(cache_dir: &Path, url: &Url, expected: Option<&str>) -> PathBuf {
    let url_key = hex::encode(Sha256::digest(url.as_str().as_bytes()));
    let name: String = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    let name = if name.is_empty() {
        "model.onnx".to_owned()
    } else {
        name
    };
    let key = match expected {
        Some(sha) => format!("{}-{sha}", &url_key[..16]),
        None => url_key[..16].to_owned(),
    };
    cache_dir.join(format!("{key}-{name}"))
}

async fn fetch_cached(
    client: &reqwest::Client,
    url: &Url,
    expected: Option<&str>,
    cache_dir: &Path,
    limits: FetchLimits,
) -> Result<PathBuf, ResolveModelError> {
    let target = cache_path(cache_dir, url, expected);
    if tokio::fs::try_exists(&target).await.unwrap_or(false) {
        match expected {
            None => return Ok(target),
            Some(e) => {
                // A cached file that no longer matches is fetched again.
                if hash_file(&target).await.is_ok_and(|a| a == e) {
                    return Ok(target);
                }
                let _ = tokio::fs::remove_file(&target).await;
            }
        }
    }
    tokio::fs::create_dir_all(cache_dir)
        .await
        .map_err(|source| ResolveModelError::WriteCache {
            path: cache_dir.to_path_buf(),
            source,
        })?;
    let part = PartFile::next_to(&target);
    match tokio::time::timeout(
        limits.timeout,
        download(client, url, &part.0, limits.max_bytes),
    )
    .await
    {
        Err(_) => Err(ResolveModelError::TimedOut {
            url: shown(url),
            after: limits.timeout,
        }),
        Ok(Err(e)) => Err(e),
        Ok(Ok(actual)) => {
            check_digest(&shown(url), expected, &actual)?;
            tokio::fs::rename(&part.0, &target)
                .await
                .map_err(|source| ResolveModelError::WriteCache {
                    path: target.clone(),
                    source,
                })?;
            Ok(target)
        }
    }
}

/// Streams `url` into `file`, at most `max_bytes`; returns the sha256 (hex).
async fn download(
    client: &reqwest::Client,
    url: &Url,
    file: &Path,
    max_bytes: u64,
) -> Result<String, ResolveModelError> {
    let failed = |reason: String| ResolveModelError::Download {
        url: shown(url),
        reason,
    };
    let too_large = || ResolveModelError::TooLarge {
        url: shown(url),
        limit: max_bytes,
    };
    let write_err = |source| ResolveModelError::WriteCache {
        path: file.to_path_buf(),
        source,
    };
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(ResolveModelError::HttpStatus {
            url: shown(url),
            status: status.as_u16(),
        });
    }
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(too_large());
    }
    let mut out = tokio::fs::File::create(file).await.map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(error_chain(&e)))?
    {
        total += chunk.len() as u64;
        if total > max_bytes {
            return Err(too_large());
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(write_err)?;
    }
    out.sync_all().await.map_err(write_err)?;
    Ok(hex::encode(hasher.finalize()))
}

/// An error and its causes, `a: b: c` (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The sha256 (hex) of a file, read in chunks.
async fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A download in progress beside its final name; removed when dropped (an
/// error, a time-out) unless it was renamed into place.
struct PartFile(PathBuf);

impl PartFile {
    fn next_to(target: &Path) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = target
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self(target.with_file_name(format!(".{name}.{}.{n}.part", std::process::id())))
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        // Gone already after a successful rename.
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_paths_file_urls_or_https() {
        assert!(
            matches!(parse_uri("/m/u2netp.onnx"), Ok(Source::File(p)) if p == Path::new("/m/u2netp.onnx"))
        );
        assert!(
            matches!(parse_uri("file:///m/x.onnx"), Ok(Source::File(p)) if p == Path::new("/m/x.onnx"))
        );
        assert!(matches!(
            parse_uri("https://h/m.onnx"),
            Ok(Source::Https(_))
        ));
        let e = parse_uri("http://h/m.onnx?token=secret")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "unusable model URI http://h/m.onnx: scheme http is not supported (a path, file:// or https://)"
            )
        );
        assert!(parse_uri("").is_err());
    }

    #[test]
    fn the_cache_is_the_named_dir_else_under_scratch_else_the_user_cache() {
        fn env<'a>(
            pairs: &'a [(&'a str, &'a str)],
        ) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
            move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        }
        let all = [
            (CACHE_ENV, "/cache"),
            (SCRATCH_ENV, "/tmp"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(cache_dir_from(env(&all)), Path::new("/cache"));
        assert_eq!(cache_dir_from(env(&all[1..])), Path::new("/tmp/models"));
        assert_eq!(
            cache_dir_from(env(&[(CACHE_ENV, ""), (SCRATCH_ENV, "/scratch")])),
            Path::new("/scratch/models")
        );
        assert_eq!(
            cache_dir_from(env(&all[2..])),
            Path::new("/xdg/clothjob/models")
        );
        assert_eq!(
            cache_dir_from(env(&all[3..])),
            Path::new("/home/u/.cache/clothjob/models")
        );
    }

    #[test]
    fn the_cache_name_holds_the_url_key_and_the_digest() {
        let url = Url::parse("https://h/models/u2netp.onnx?x=1").unwrap();
        let sha = "ab".repeat(32);
        let with = cache_path(Path::new("/c"), &url, Some(&sha));
        let without = cache_path(Path::new("/c"), &url, None);
        let name = with
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(name.ends_with(&format!("-{sha}-u2netp.onnx")), "{name}");
        assert_ne!(with, without);
        assert!(parse_sha256("xyz").is_err());
        assert_eq!(parse_sha256(&"AB".repeat(32)).ok(), Some("ab".repeat(32)));
    }
}
