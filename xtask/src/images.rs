//! `cargo xtask images`: the operator and runner container images, built without a
//! container engine, as deterministic OCI archives.
//!
//! Each image is one layer holding a binary at `/usr/local/bin/<name>`, every shared library
//! it links (as `ldd` resolves them, stored at their real paths with the symbolic links that
//! lead there), the host's CA bundle, `/etc/passwd` and `/etc/group` with `root` and
//! `nonroot` (65532), `/etc/nsswitch.conf` and `/tmp`; the runner also carries ONNX Runtime's
//! shared library at `/usr/lib/clothjob/`. The archive is an OCI image layout in a tar
//! (`oci-layout`, `index.json`, `blobs/sha256/...`) plus a docker-archive `manifest.json`, so
//! `ctr images import`, `podman load` and `docker load` all take it.
//!
//! Every byte is a function of the inputs: tar entries are sorted by path, owned by root, with
//! normalised modes and `SOURCE_DATE_EPOCH` as mtime; gzip has no timestamp and a fixed level;
//! the config's `created` is `SOURCE_DATE_EPOCH` too. Building twice gives the same digests.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use flate2::{Compression, GzBuilder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// The registry and organisation the images are named under.
pub const REGISTRY: &str = "ghcr.io/closetconnect";
/// The workspace version: the tag of both images.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source repository (the `org.opencontainers.image.source` label).
pub const SOURCE: &str = env!("CARGO_PKG_REPOSITORY");
/// The licence of the images' contents (`org.opencontainers.image.licenses`).
pub const LICENSE: &str = "Apache-2.0";
/// The operator binary and image name.
pub const OPERATOR: &str = "clothjob-operator";
/// The runner binary and image name.
pub const RUNNER: &str = "clothjob-runner";
/// Where the runner image keeps ONNX Runtime's shared library.
pub const ORT_DIR: &str = "/usr/lib/clothjob";
/// `PATH` in both images.
pub const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The CA bundle's path, on the host and in the images (`SSL_CERT_FILE`).
pub const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The dynamic loader every dynamically linked x86-64 binary names.
pub const DYNAMIC_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
/// The user and group the images run as.
pub const USER: &str = "65532:65532";

const GZIP_LEVEL: u32 = 6;
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";

/// The full reference of an image: `ghcr.io/closetconnect/<name>:<workspace version>`.
pub fn reference(name: &str) -> String {
    format!("{REGISTRY}/{name}:{VERSION}")
}

/// What `build_images` builds and where.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The dev profile (`target/debug`) instead of release.
    pub debug: bool,
    /// Run `cargo build` for the two binaries first (else use what the target dir holds).
    pub build: bool,
    /// The cargo target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
    pub target_dir: PathBuf,
    /// Where the archives, digests and `images.json` go (`<target_dir>/images`).
    pub out_dir: PathBuf,
    /// Timestamp of every file and of the config's `created` (`SOURCE_DATE_EPOCH`, default 0).
    pub source_date_epoch: u64,
    /// ONNX Runtime's shared library (`ORT_DYLIB_PATH`); `None`: the rembg venv's wheel.
    pub ort_dylib_path: Option<PathBuf>,
}

impl ImageOptions {
    /// Options from the environment: `CARGO_TARGET_DIR`, `SOURCE_DATE_EPOCH`, `ORT_DYLIB_PATH`.
    pub fn from_env(debug: bool) -> Result<Self> {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|p| {
                if p.is_absolute() {
                    p
                } else {
                    workspace_root().join(p)
                }
            })
            .unwrap_or_else(|| workspace_root().join("target"));
        Ok(Self {
            debug,
            build: true,
            out_dir: target_dir.join("images"),
            target_dir,
            source_date_epoch: source_date_epoch()?,
            ort_dylib_path: std::env::var_os("ORT_DYLIB_PATH")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        })
    }

    /// The directory the binaries are in: `<target_dir>/release` or `<target_dir>/debug`.
    pub fn bin_dir(&self) -> PathBuf {
        self.target_dir
            .join(if self.debug { "debug" } else { "release" })
    }
}

/// A shared library to put into an image, with its own `ldd` dependencies.
#[derive(Debug, Clone)]
pub struct Library {
    /// The file on the host (symbolic links are followed; the real file's name is kept).
    pub source: PathBuf,
    /// The absolute directory in the image, e.g. `/usr/lib/clothjob`.
    pub dir: String,
}

/// Everything one image is made of.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The image and binary name (`/usr/local/bin/<name>`, the title label).
    pub name: String,
    /// The full reference, e.g. `ghcr.io/closetconnect/clothjob-runner:0.1.0`.
    pub reference: String,
    /// The version label.
    pub version: String,
    /// The description label.
    pub description: String,
    /// The binary on the host.
    pub binary: PathBuf,
    /// Extra shared libraries (the runner's ONNX Runtime).
    pub libraries: Vec<Library>,
    /// Environment after `PATH` and `SSL_CERT_FILE`, in this order.
    pub env: Vec<(String, String)>,
    /// The CA bundle on the host, stored at `/etc/ssl/certs/ca-certificates.crt`.
    pub ca_certificates: PathBuf,
    /// mtime of every entry and the config's `created`.
    pub source_date_epoch: u64,
}

impl ImageSpec {
    /// A spec for `binary` named `name` with the defaults: the workspace reference and
    /// version, the host's CA bundle, no extra libraries or env, `SOURCE_DATE_EPOCH` 0.
    pub fn new(name: &str, binary: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            reference: reference(name),
            version: VERSION.to_string(),
            description: format!("{name} container image"),
            binary: binary.into(),
            libraries: Vec::new(),
            env: Vec::new(),
            ca_certificates: PathBuf::from(CA_CERTIFICATES),
            source_date_epoch: 0,
        }
    }

    /// `org.opencontainers.image.*` labels, as in the Dockerfiles.
    pub fn labels(&self) -> BTreeMap<String, String> {
        [
            ("org.opencontainers.image.title", self.name.as_str()),
            ("org.opencontainers.image.description", &self.description),
            ("org.opencontainers.image.source", SOURCE),
            ("org.opencontainers.image.licenses", LICENSE),
            ("org.opencontainers.image.version", &self.version),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The image's environment: `PATH`, `SSL_CERT_FILE`, then `env`.
    pub fn environment(&self) -> Vec<String> {
        let mut out = vec![
            format!("PATH={PATH_ENV}"),
            format!("SSL_CERT_FILE={CA_CERTIFICATES}"),
        ];
        out.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        out
    }
}

/// One archive written by `write_image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The image name.
    pub name: String,
    /// The full reference.
    pub reference: String,
    /// The archive (OCI layout + docker-archive manifest in a tar).
    pub archive: PathBuf,
    /// `sha256:...` of the OCI manifest: the image's digest.
    pub manifest_digest: String,
    /// `sha256:...` of the config blob (the docker image id).
    pub config_digest: String,
    /// `sha256:...` of the compressed layer.
    pub layer_digest: String,
    /// `sha256:...` of the uncompressed layer (`rootfs.diff_ids`).
    pub diff_id: String,
    /// Bytes of the archive.
    pub archive_size: u64,
    /// Bytes of the compressed layer.
    pub compressed_size: u64,
    /// Bytes of the uncompressed layer (the root filesystem as a tar).
    pub uncompressed_size: u64,
}

/// `cargo xtask images [--debug]`.
pub fn run(args: &[String]) -> Result<()> {
    let mut debug = false;
    for a in args {
        match a.as_str() {
            "--debug" => debug = true,
            other => {
                bail!("cargo xtask images: unknown argument {other} (usage: images [--debug])")
            }
        }
    }
    let opts = ImageOptions::from_env(debug)?;
    let images = build_images(&opts)?;
    for i in &images {
        println!("{}", i.reference);
        println!("    archive      {}", i.archive.display());
        println!("    digest       {}", i.manifest_digest);
        println!(
            "    compressed   {} ({} bytes)",
            mib(i.archive_size),
            i.archive_size
        );
        println!(
            "    uncompressed {} ({} bytes)",
            mib(i.uncompressed_size),
            i.uncompressed_size
        );
    }
    println!(
        "load: ctr -n k8s.io images import <archive> | docker load -i <archive> | podman load -i <archive>"
    );
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Builds the binaries (when `opts.build`) and writes both images into `opts.out_dir`:
/// `<name>.tar`, `<name>.digest` and `images.json`.
pub fn build_images(opts: &ImageOptions) -> Result<Vec<BuiltImage>> {
    if opts.build {
        let mut cmd = crate::cargo_command();
        cmd.env("CARGO_TARGET_DIR", &opts.target_dir).arg("build");
        if !opts.debug {
            cmd.arg("--release");
        }
        cmd.args(["-p", OPERATOR, "-p", RUNNER, "--bins"]);
        eprintln!(
            "==> cargo build{} -p {OPERATOR} -p {RUNNER} --bins",
            if opts.debug { "" } else { " --release" }
        );
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of {OPERATOR} and {RUNNER} failed ({status})");
        }
    }
    let ort = find_onnxruntime(opts.ort_dylib_path.as_deref())?;
    fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let mut built = Vec::new();
    for spec in image_specs(&opts.bin_dir(), &ort, opts.source_date_epoch)? {
        eprintln!("==> {}", spec.reference);
        let archive = opts.out_dir.join(format!("{}.tar", spec.name));
        let image = write_image(&spec, &archive)?;
        write_atomic(
            &opts.out_dir.join(format!("{}.digest", spec.name)),
            format!("{}\n", image.manifest_digest).as_bytes(),
        )?;
        built.push(image);
    }
    let list: Vec<Value> = built
        .iter()
        .map(|i| {
            json!({
                "name": i.name,
                "reference": i.reference,
                "archive": i.archive.display().to_string(),
                "digest": i.manifest_digest,
                "size": i.archive_size,
                "uncompressedSize": i.uncompressed_size,
            })
        })
        .collect();
    let mut text = serde_json::to_vec_pretty(&list)?;
    text.push(b'\n');
    write_atomic(&opts.out_dir.join("images.json"), &text)?;
    Ok(built)
}

/// The two images' specs: binaries from `bin_dir`, the runner with ONNX Runtime `ort`.
pub fn image_specs(bin_dir: &Path, ort: &Path, source_date_epoch: u64) -> Result<Vec<ImageSpec>> {
    let ort_name = ort
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", ort.display()))?;
    let mut specs = Vec::new();
    for name in [OPERATOR, RUNNER] {
        let binary = bin_dir.join(name);
        if !binary.is_file() {
            bail!(
                "{} is missing: build it (cargo build -p {name}) or run cargo xtask images",
                binary.display()
            );
        }
        let mut spec = ImageSpec::new(name, binary);
        spec.source_date_epoch = source_date_epoch;
        if name == RUNNER {
            spec.description =
                "ClothJob runner: the clothes image pipeline (background removal, segmentation, expansion, encoding), with ONNX Runtime".into();
            spec.libraries.push(Library {
                source: ort.to_path_buf(),
                dir: ORT_DIR.into(),
            });
            spec.env
                .push(("ORT_DYLIB_PATH".into(), format!("{ORT_DIR}/{ort_name}")));
        } else {
            spec.description =
                "ClothJob operator: runs ClothJobs (closetconnect.io/v1alpha1) as Kubernetes Jobs"
                    .into();
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// ONNX Runtime's shared library, canonicalised: `explicit` (`ORT_DYLIB_PATH`) when given,
/// else `libonnxruntime.so.1*` of the onnxruntime wheel in the rembg venv
/// (`CLOTHJOB_REMBG_VENV`, default `~/.cache/clothjob/rembg-venv`).
pub fn find_onnxruntime(explicit: Option<&Path>) -> Result<PathBuf> {
    const HINT: &str = "run backends/scripts/setup-rembg.sh (it installs the onnxruntime wheel into ~/.cache/clothjob/rembg-venv) or set ORT_DYLIB_PATH to a libonnxruntime.so.1.*";
    if let Some(p) = explicit {
        return fs::canonicalize(p)
            .with_context(|| format!("ORT_DYLIB_PATH={} does not exist; {HINT}", p.display()));
    }
    let venv = std::env::var_os("CLOTHJOB_REMBG_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/clothjob/rembg-venv"))
        })
        .context("neither CLOTHJOB_REMBG_VENV nor HOME is set")?;
    let mut found = Vec::new();
    if let Ok(dir) = fs::read_dir(venv.join("lib")) {
        for python in dir.flatten() {
            if !python.file_name().to_string_lossy().starts_with("python3") {
                continue;
            }
            let capi = python.path().join("site-packages/onnxruntime/capi");
            if let Ok(libs) = fs::read_dir(&capi) {
                for lib in libs.flatten() {
                    if lib
                        .file_name()
                        .to_string_lossy()
                        .starts_with("libonnxruntime.so.1")
                    {
                        found.push(lib.path());
                    }
                }
            }
        }
    }
    found.sort();
    match found.pop() {
        Some(p) => fs::canonicalize(&p).with_context(|| format!("resolving {}", p.display())),
        None => bail!(
            "ONNX Runtime's shared library (libonnxruntime.so.1*) not found under {}/lib/python3*/site-packages/onnxruntime/capi; {HINT}",
            venv.display()
        ),
    }
}

/// The shared libraries `path` links, as `ldd` resolves them (loader included); empty for a
/// static binary. A library `ldd` cannot find is an error.
pub fn ldd(path: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(path)
        .output()
        .with_context(|| format!("running ldd {}", path.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}{stderr}");
    if all.contains("not a dynamic executable") || all.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed ({}): {all}", path.display(), out.status);
    }
    let mut libs = Vec::new();
    let mut missing = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        let resolved = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    missing.push(name.trim().to_string());
                    continue;
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if resolved.starts_with('/') {
            libs.push(PathBuf::from(resolved));
        }
    }
    if !missing.is_empty() {
        bail!(
            "ldd {}: libraries not found: {}",
            path.display(),
            missing.join(", ")
        );
    }
    Ok(libs)
}

/// The content of a regular file in the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        content: Content,
        size: u64,
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// The root filesystem: relative paths (no leading `/`) to nodes, sorted.
#[derive(Debug, Default)]
struct Rootfs {
    nodes: BTreeMap<String, Node>,
}

/// `/a/b` -> `a/b`; refuses `..` and empty paths.
fn rel(path: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(
                s.to_str()
                    .with_context(|| format!("{} is not UTF-8", path.display()))?,
            ),
            Component::ParentDir | Component::Prefix(_) => {
                bail!("{} is not a plain absolute path", path.display())
            }
        }
    }
    if parts.is_empty() {
        bail!("empty path in the image");
    }
    Ok(parts.join("/"))
}

fn host_mode(meta: &fs::Metadata) -> u32 {
    if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

impl Rootfs {
    fn ensure_parents(&mut self, path: &str) -> Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            match self.nodes.get(parent) {
                None => {
                    self.nodes
                        .insert(parent.to_string(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => {
                    bail!("/{parent} is not a directory in the image, yet /{path} is under it")
                }
            }
            end += i + 1;
        }
        Ok(())
    }

    fn insert(&mut self, path: &str, node: Node) -> Result<()> {
        self.ensure_parents(path)?;
        match self.nodes.get(path) {
            None => {
                self.nodes.insert(path.to_string(), node);
                Ok(())
            }
            Some(existing) if *existing == node => Ok(()),
            Some(Node::Dir { .. }) if matches!(node, Node::Dir { .. }) => {
                self.nodes.insert(path.to_string(), node);
                Ok(())
            }
            Some(existing) => bail!("/{path} twice in the image: {existing:?} and {node:?}"),
        }
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.insert(path, Node::Dir { mode })
    }

    fn bytes(&mut self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        self.insert(
            path,
            Node::File {
                size: data.len() as u64,
                content: Content::Bytes(data.to_vec()),
                mode,
            },
        )
    }

    /// A host file at `path` in the image (symbolic links followed).
    fn host_file(&mut self, path: &str, host: &Path) -> Result<()> {
        let real =
            fs::canonicalize(host).with_context(|| format!("resolving {}", host.display()))?;
        let meta = fs::metadata(&real).with_context(|| format!("reading {}", real.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", real.display());
        }
        self.insert(
            path,
            Node::File {
                size: meta.len(),
                mode: host_mode(&meta),
                content: Content::Host(real),
            },
        )
    }

    /// A host file at its own path: every symbolic link met on the way (`/lib64`,
    /// `/lib64/ld-linux-x86-64.so.2`, ...) becomes the same link in the image, the file itself
    /// is stored at its real path.
    fn mirror(&mut self, host: &Path) -> Result<()> {
        self.mirror_hops(host, 0)
    }

    fn mirror_hops(&mut self, host: &Path, hops: usize) -> Result<()> {
        if hops > 40 {
            bail!("too many symbolic links resolving {}", host.display());
        }
        if !host.is_absolute() {
            bail!("{} is not an absolute path", host.display());
        }
        let comps: Vec<Component> = host.components().collect();
        let mut cur = PathBuf::from("/");
        for (i, comp) in comps.iter().enumerate() {
            match comp {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    cur.pop();
                }
                Component::Prefix(_) => bail!("{} is not a unix path", host.display()),
                Component::Normal(name) => {
                    let next = cur.join(name);
                    let meta = fs::symlink_metadata(&next)
                        .with_context(|| format!("reading {}", next.display()))?;
                    if meta.file_type().is_symlink() {
                        let target = fs::read_link(&next)
                            .with_context(|| format!("reading link {}", next.display()))?;
                        let text = target
                            .to_str()
                            .with_context(|| format!("link {} is not UTF-8", next.display()))?
                            .to_string();
                        self.insert(&rel(&next)?, Node::Symlink { target: text })?;
                        let mut resolved = if target.is_absolute() {
                            target
                        } else {
                            cur.join(target)
                        };
                        for rest in &comps[i + 1..] {
                            resolved.push(rest);
                        }
                        return self.mirror_hops(&resolved, hops + 1);
                    }
                    cur = next;
                }
            }
        }
        let path = rel(&cur)?;
        self.host_file(&path, &cur)
    }

    /// A binary or library's `ldd` dependencies, mirrored.
    fn dependencies_of(&mut self, host: &Path) -> Result<()> {
        let libs = ldd(host)?;
        if !libs.is_empty() && Path::new(DYNAMIC_LOADER).exists() {
            self.mirror(Path::new(DYNAMIC_LOADER))?;
        }
        for lib in libs {
            self.mirror(&lib)?;
        }
        Ok(())
    }

    /// Writes the layer tar into `out`.
    fn write_tar<W: Write>(&self, out: W, mtime: u64) -> Result<W> {
        let mut tar = tar::Builder::new(out);
        for (path, node) in &self.nodes {
            let mut h = Header::new_gnu();
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            match node {
                Node::Dir { mode } => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{path}/"), io::empty())
                        .with_context(|| format!("writing /{path}/"))?;
                }
                Node::Symlink { target } => {
                    h.set_entry_type(EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target)
                        .with_context(|| format!("writing /{path}"))?;
                }
                Node::File {
                    content,
                    size,
                    mode,
                } => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(*size);
                    match content {
                        Content::Bytes(b) => tar.append_data(&mut h, path, b.as_slice()),
                        Content::Host(src) => {
                            let file = fs::File::open(src)
                                .with_context(|| format!("opening {}", src.display()))?;
                            let now = file.metadata()?.len();
                            if now != *size {
                                bail!("{} changed size while the image was built", src.display());
                            }
                            tar.append_data(&mut h, path, file.take(*size))
                        }
                    }
                    .with_context(|| format!("writing /{path}"))?;
                }
            }
        }
        tar.into_inner().context("finishing the layer tar")
    }
}

/// The root filesystem of `spec`.
fn rootfs(spec: &ImageSpec) -> Result<Rootfs> {
    let mut fs = Rootfs::default();
    for d in ["etc", "usr/local/bin", "usr/lib"] {
        fs.dir(d, 0o755)?;
    }
    fs.dir("root", 0o700)?;
    fs.dir("tmp", 0o1777)?;
    fs.bytes("etc/passwd", PASSWD.as_bytes(), 0o644)?;
    fs.bytes("etc/group", GROUP.as_bytes(), 0o644)?;
    fs.bytes("etc/nsswitch.conf", NSSWITCH.as_bytes(), 0o644)?;
    let certs = fs::read(&spec.ca_certificates).with_context(|| {
        format!(
            "reading the CA bundle {} (Debian: apt-get install ca-certificates)",
            spec.ca_certificates.display()
        )
    })?;
    fs.bytes(&rel(Path::new(CA_CERTIFICATES))?, &certs, 0o644)?;

    fs.host_file(&format!("usr/local/bin/{}", spec.name), &spec.binary)?;
    let binary_meta = fs::metadata(&spec.binary)?;
    if binary_meta.permissions().mode() & 0o111 == 0 {
        bail!("{} is not executable", spec.binary.display());
    }
    fs.dependencies_of(&spec.binary)?;
    for lib in &spec.libraries {
        let real = fs::canonicalize(&lib.source)
            .with_context(|| format!("resolving {}", lib.source.display()))?;
        let name = real
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no UTF-8 file name", real.display()))?;
        let dir = rel(Path::new(&lib.dir))?;
        fs.host_file(&format!("{dir}/{name}"), &real)?;
        fs.dependencies_of(&real)?;
    }
    Ok(fs)
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }
    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hash.finalize())),
            self.len,
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// Removes a temporary file unless it was kept.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn temp_beside(path: &Path, what: &str) -> Result<TempFile> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(TempFile(
        dir.join(format!(".{name}.{what}.{}", std::process::id())),
    ))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = temp_beside(path, "tmp")?;
    fs::write(&tmp.0, data).with_context(|| format!("writing {}", tmp.0.display()))?;
    fs::rename(&tmp.0, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Writes the image `spec` to the archive `out` (atomically: a temporary file beside it,
/// then a rename): an OCI image layout in a tar plus a docker-archive `manifest.json`.
pub fn write_image(spec: &ImageSpec, out: &Path) -> Result<BuiltImage> {
    let rootfs = rootfs(spec)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    // The layer: tar -> sha256 (diff_id) -> gzip -> sha256 (digest) -> temporary file.
    let layer_tmp = temp_beside(out, "layer")?;
    let file = fs::File::create(&layer_tmp.0)
        .with_context(|| format!("creating {}", layer_tmp.0.display()))?;
    let compressed = Hashing::new(BufWriter::new(file));
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(compressed, Compression::new(GZIP_LEVEL));
    let plain = rootfs.write_tar(Hashing::new(gz), spec.source_date_epoch)?;
    let (gz, diff_id, uncompressed_size) = plain.finish();
    let compressed = gz.finish().context("finishing gzip")?;
    let (mut file, layer_digest, compressed_size) = compressed.finish();
    file.flush().context("writing the layer")?;
    drop(file);

    let created = rfc3339(spec.source_date_epoch);
    let config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": USER,
            "Env": spec.environment(),
            "Entrypoint": [format!("/usr/local/bin/{}", spec.name)],
            "WorkingDir": "/",
            "Labels": spec.labels(),
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": "cargo xtask images" }],
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = sha256(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": MEDIA_LAYER, "digest": layer_digest, "size": compressed_size }],
        "annotations": {
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.title": spec.name,
            "org.opencontainers.image.version": spec.version,
        },
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256(&manifest);
    let tag = spec
        .reference
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
        .unwrap_or("latest");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": spec.reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let index = serde_json::to_vec(&index)?;
    let docker = json!([{
        "Config": blob_path(&config_digest),
        "RepoTags": [spec.reference],
        "Layers": [blob_path(&layer_digest)],
    }]);
    let docker = serde_json::to_vec(&docker)?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();

    // The archive, entries sorted by path.
    enum Blob<'a> {
        Dir,
        Bytes(&'a [u8]),
        Layer,
    }
    let mut entries: BTreeMap<String, Blob> = BTreeMap::new();
    entries.insert("blobs".into(), Blob::Dir);
    entries.insert("blobs/sha256".into(), Blob::Dir);
    entries.insert(blob_path(&layer_digest), Blob::Layer);
    entries.insert(blob_path(&config_digest), Blob::Bytes(&config));
    entries.insert(blob_path(&manifest_digest), Blob::Bytes(&manifest));
    entries.insert("index.json".into(), Blob::Bytes(&index));
    entries.insert("manifest.json".into(), Blob::Bytes(&docker));
    entries.insert("oci-layout".into(), Blob::Bytes(&layout));

    let archive_tmp = temp_beside(out, "tmp")?;
    let file = fs::File::create(&archive_tmp.0)
        .with_context(|| format!("creating {}", archive_tmp.0.display()))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    for (path, blob) in &entries {
        let mut h = Header::new_gnu();
        h.set_mtime(spec.source_date_epoch);
        h.set_uid(0);
        h.set_gid(0);
        match blob {
            Blob::Dir => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, format!("{path}/"), io::empty())?;
            }
            Blob::Bytes(b) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(b.len() as u64);
                tar.append_data(&mut h, path, *b)?;
            }
            Blob::Layer => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(compressed_size);
                let layer = fs::File::open(&layer_tmp.0)?;
                if layer.metadata()?.len() != compressed_size {
                    bail!("the layer file {} is incomplete", layer_tmp.0.display());
                }
                tar.append_data(&mut h, path, layer.take(compressed_size))?;
            }
        }
    }
    let mut file = tar.into_inner().context("finishing the archive")?;
    file.flush()?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let archive_size = file.metadata()?.len();
    drop(file);
    fs::rename(&archive_tmp.0, out)
        .with_context(|| format!("renaming {} to {}", archive_tmp.0.display(), out.display()))?;

    Ok(BuiltImage {
        name: spec.name.clone(),
        reference: spec.reference.clone(),
        archive: out.to_path_buf(),
        manifest_digest,
        config_digest,
        layer_digest,
        diff_id,
        archive_size,
        compressed_size,
        uncompressed_size,
    })
}

/// `SOURCE_DATE_EPOCH` (seconds), 0 when unset.
pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s} is not a number of seconds")),
        _ => Ok(0),
    }
}

/// Seconds since the epoch as RFC 3339 UTC, e.g. `1970-01-01T00:00:00Z`.
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn parents_come_before_children() {
        let mut fs = Rootfs::default();
        fs.bytes("usr/lib/x/y", b"1", 0o644).unwrap();
        fs.bytes("usr/lib-a", b"2", 0o644).unwrap();
        let keys: Vec<&String> = fs.nodes.keys().collect();
        assert_eq!(
            keys,
            ["usr", "usr/lib", "usr/lib-a", "usr/lib/x", "usr/lib/x/y"]
        );
        assert!(fs.bytes("usr/lib", b"3", 0o644).is_err());
    }
}
