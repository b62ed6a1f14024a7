//! Locating (or building) the binaries the test environment runs.
//!
//! Kubernetes binaries (`etcd`, `kube-apiserver`, `kube-controller-manager`, `kubectl`) are
//! looked up per binary in `$CLOTHJOB_K8S_BIN_DIR`, then `$KUBEBUILDER_ASSETS` (envtest assets;
//! these lack `kube-controller-manager`), then the cache dir
//! `${XDG_CACHE_HOME:-~/.cache}/clothjob/bin/k8s-v1.37.2/`. Missing ones are built into the cache
//! with `go build` from the wrapper modules in `<workspace>/tools/{kube,etcd}`; `helm` comes from
//! `<workspace>/tools/helm`, and the S3 server is `cargo install`ed `s3s-fs`.
//!
//! Builds write to a temporary name and are renamed into place, under an exclusive file lock, so
//! concurrent test processes neither build twice nor see half-written files. All functions are
//! synchronous (they are also called by `cargo xtask`).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Kubernetes version of the wrapper module in `tools/kube`.
pub const K8S_VERSION: &str = "v1.37.2";
/// Version of `s3s-fs` installed for [`ensure_s3_server`] (newer ones need Rust 1.96).
pub const S3S_FS_VERSION: &str = "0.14.1";

/// Paths of the Kubernetes binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sBins {
    /// `etcd` server.
    pub etcd: PathBuf,
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `kube-controller-manager`.
    pub kube_controller_manager: PathBuf,
    /// `kubectl`.
    pub kubectl: PathBuf,
}

/// Root of the workspace (the parent of this crate's manifest dir).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `cargo` (`$CARGO` when set) in the workspace root, without the per-package variables cargo
/// gives a process it runs (`cargo xtask` is `cargo run -p xtask`: `CARGO_PKG_NAME=xtask`,
/// `CARGO_MANIFEST_DIR`, ...). ring's build script tracks some of them
/// (`rerun-if-env-changed`), so a cargo started with them and one started without (a shell,
/// the e2e harness's nested builds) would each rerun it and rebuild everything above ring:
/// rustls, kube, every workspace crate and test binary.
pub fn cargo_command() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_per_package_variable) {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Whether cargo sets `key` per package for what it runs (not `CARGO` or `CARGO_HOME`).
pub fn is_per_package_variable(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_MANIFEST_")
        || key.starts_with("CARGO_BIN_")
        || matches!(
            key,
            "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
        )
}

/// `${XDG_CACHE_HOME:-~/.cache}/clothjob`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("clothjob"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("clothjob"))
}

/// Cache directory of the Kubernetes binaries, `<cache>/bin/k8s-v1.37.2`.
pub fn k8s_cache_dir() -> Result<PathBuf> {
    Ok(cache_root()?.join("bin").join(format!("k8s-{K8S_VERSION}")))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn env_dir_candidate(var: &str, name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var).filter(|v| !v.is_empty())?;
    let path = PathBuf::from(dir).join(name);
    is_executable(&path).then_some(path)
}

/// Locates the Kubernetes binaries, building missing ones into the cache (see module docs).
pub fn ensure_k8s_binaries() -> Result<K8sBins> {
    let cache = k8s_cache_dir()?;
    let find = |name: &str| {
        env_dir_candidate("CLOTHJOB_K8S_BIN_DIR", name)
            .or_else(|| env_dir_candidate("KUBEBUILDER_ASSETS", name))
            .or_else(|| {
                let p = cache.join(name);
                is_executable(&p).then_some(p)
            })
    };
    let names = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ];
    let mut found: Vec<Option<PathBuf>> = names.iter().map(|n| find(n)).collect();
    let missing_kube: Vec<&str> = names[1..]
        .iter()
        .zip(&found[1..])
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if found[0].is_none() {
        go_build(
            &workspace_root().join("tools/etcd"),
            &[("etcd", "go.etcd.io/etcd/server/v3")],
            &cache,
        )?;
    }
    if !missing_kube.is_empty() {
        let tools: Vec<(&str, String)> = missing_kube
            .iter()
            .map(|n| (*n, format!("k8s.io/kubernetes/cmd/{n}")))
            .collect();
        let tools: Vec<(&str, &str)> = tools.iter().map(|(n, p)| (*n, p.as_str())).collect();
        go_build(&workspace_root().join("tools/kube"), &tools, &cache)?;
    }
    for (slot, name) in found.iter_mut().zip(names) {
        if slot.is_none() {
            *slot = find(name);
        }
    }
    let take = |i: usize| -> Result<PathBuf> {
        found[i]
            .clone()
            .with_context(|| format!("{} not found after building it", names[i]))
    };
    Ok(K8sBins {
        etcd: take(0)?,
        kube_apiserver: take(1)?,
        kube_controller_manager: take(2)?,
        kubectl: take(3)?,
    })
}

/// Paths of a real node's Kubernetes binaries (same module and version as the control plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBins {
    /// `kubelet`.
    pub kubelet: PathBuf,
    /// `kube-scheduler`.
    pub kube_scheduler: PathBuf,
    /// `kube-proxy`.
    pub kube_proxy: PathBuf,
}

/// Locates `kubelet`, `kube-scheduler` and `kube-proxy` (`$CLOTHJOB_K8S_BIN_DIR`, then the
/// cache), building missing ones into the cache from `tools/kube`.
pub fn ensure_node_binaries() -> Result<NodeBins> {
    let cache = k8s_cache_dir()?;
    let names = ["kubelet", "kube-scheduler", "kube-proxy"];
    let find = |name: &str| {
        env_dir_candidate("CLOTHJOB_K8S_BIN_DIR", name).or_else(|| {
            let p = cache.join(name);
            is_executable(&p).then_some(p)
        })
    };
    let missing: Vec<(&str, String)> = names
        .iter()
        .filter(|n| find(n).is_none())
        .map(|n| (*n, format!("k8s.io/kubernetes/cmd/{n}")))
        .collect();
    if !missing.is_empty() {
        let tools: Vec<(&str, &str)> = missing.iter().map(|(n, p)| (*n, p.as_str())).collect();
        go_build(&workspace_root().join("tools/kube"), &tools, &cache)?;
    }
    let take =
        |name: &str| find(name).with_context(|| format!("{name} not found after building it"));
    Ok(NodeBins {
        kubelet: take(names[0])?,
        kube_scheduler: take(names[1])?,
        kube_proxy: take(names[2])?,
    })
}

/// Locates `helm` in the cache, building it from `tools/helm` if missing.
pub fn ensure_helm() -> Result<PathBuf> {
    let dir = cache_root()?.join("bin").join("helm-v3.22.0");
    let path = dir.join("helm");
    if !is_executable(&path) {
        go_build(
            &workspace_root().join("tools/helm"),
            &[("helm", "helm.sh/helm/v3/cmd/helm")],
            &dir,
        )?;
    }
    Ok(path)
}

/// Locates the `s3s-fs` binary in the cache, `cargo install`ing it there if missing.
pub fn ensure_s3_server() -> Result<PathBuf> {
    let root = cache_root()?.join(format!("s3s-fs-{S3S_FS_VERSION}"));
    let path = root.join("bin").join("s3s-fs");
    if is_executable(&path) {
        return Ok(path);
    }
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = lock(&root.join(".install.lock"))?;
    if is_executable(&path) {
        return Ok(path);
    }
    let staging = root.join(format!(".staging-{}", std::process::id()));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "clothjob-testenv: installing s3s-fs {S3S_FS_VERSION} into {} (one-off)",
        root.display()
    );
    let status = Command::new(&cargo)
        .args([
            "install",
            "s3s-fs",
            "--locked",
            "--features",
            "binary",
            "--version",
        ])
        .arg(S3S_FS_VERSION)
        .arg("--root")
        .arg(&staging)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .status()
        .context("running cargo install s3s-fs")?;
    if !status.success() {
        bail!("cargo install s3s-fs {S3S_FS_VERSION} failed: {status}");
    }
    fs::create_dir_all(root.join("bin"))?;
    fs::rename(staging.join("bin").join("s3s-fs"), &path).context("moving s3s-fs into place")?;
    let _ = fs::remove_dir_all(&staging);
    let _ = fs::remove_dir_all(root.join("target"));
    Ok(path)
}

/// Takes an exclusive lock on `path` (created if missing), released when the file is dropped.
fn lock(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Builds `(binary name, package)` pairs from the Go module in `module_dir` into `out_dir`.
fn go_build(module_dir: &Path, tools: &[(&str, &str)], out_dir: &Path) -> Result<()> {
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let _lock = lock(&out_dir.join(".build.lock"))?;
    let todo: Vec<&(&str, &str)> = tools
        .iter()
        .filter(|(n, _)| !is_executable(&out_dir.join(n)))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    if !module_dir.join("go.mod").is_file() {
        bail!(
            "cannot build {:?}: no Go module at {}",
            todo,
            module_dir.display()
        );
    }
    let staging = out_dir.join(format!(".staging-{}", std::process::id()));
    fs::create_dir_all(&staging)?;
    eprintln!(
        "clothjob-testenv: building {:?} with go build in {} (one-off, can take many minutes)",
        todo.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        module_dir.display()
    );
    let mut out_arg = staging.clone().into_os_string();
    out_arg.push("/");
    let status = Command::new("go")
        .current_dir(module_dir)
        .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
        .arg(&out_arg)
        .args(todo.iter().map(|(_, pkg)| *pkg))
        .status()
        .context("running go build (is Go installed?)")?;
    if !status.success() {
        let _ = fs::remove_dir_all(&staging);
        bail!(
            "go build of {:?} in {} failed: {status}",
            todo,
            module_dir.display()
        );
    }
    for (name, pkg) in todo {
        // `go build -o dir/` names the binary after the package's last path element.
        let built_name = pkg
            .rsplit('/')
            .find(|s| !s.starts_with('v') || s.len() > 3)
            .unwrap_or(name);
        let built = staging.join(built_name);
        let built = if built.exists() {
            built
        } else {
            staging.join(name)
        };
        fs::rename(&built, out_dir.join(name))
            .with_context(|| format!("moving {} into {}", built.display(), out_dir.display()))?;
    }
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}
