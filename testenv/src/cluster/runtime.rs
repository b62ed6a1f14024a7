//! The node's container runtime: containerd (CRI plugin, runc, overlayfs) with its state in the
//! cluster's directory, the pod network (CNI `ptp` + `host-local` in 198.18.1.0/24), the pause
//! image built from the kubernetes module's `pause.c`, and image imports with `ctr`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bins::workspace_root;

/// Image the CRI plugin runs as each pod's sandbox.
pub(crate) const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
/// Pod addresses.
pub(crate) const POD_CIDR: &str = "198.18.1.0/24";
/// Where Debian's containernetworking-plugins put the CNI plugins.
pub(crate) const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Paths of one node's runtime.
pub(crate) struct RuntimeDirs {
    /// containerd's root, state, config and socket live here.
    pub base: PathBuf,
}

impl RuntimeDirs {
    pub(crate) fn socket(&self) -> PathBuf {
        self.base.join("containerd.sock")
    }
    pub(crate) fn config(&self) -> PathBuf {
        self.base.join("config.toml")
    }
    fn cni_conf_dir(&self) -> PathBuf {
        self.base.join("net.d")
    }

    /// Writes containerd's config (version 2 schema, containerd 1.6/1.7) and the CNI config.
    pub(crate) fn write_configs(&self) -> Result<()> {
        std::fs::create_dir_all(self.cni_conf_dir())?;
        let b = self.base.display();
        let config = format!(
            r#"version = 2
root = "{b}/root"
state = "{b}/state"
[grpc]
  address = "{b}/containerd.sock"
[ttrpc]
  address = "{b}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{b}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{b}/net.d"
"#
        );
        std::fs::write(self.config(), config)?;
        let cni = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "clothjob",
            "plugins": [{
                "type": "ptp",
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": POD_CIDR }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": format!("{b}/cni-ipam"),
                },
            }],
        });
        std::fs::write(
            self.cni_conf_dir().join("10-clothjob.conflist"),
            serde_json::to_vec_pretty(&cni)?,
        )?;
        Ok(())
    }

    /// `ctr --address <socket> -n k8s.io images import <archive>`.
    pub(crate) fn import(&self, archive: &Path, base_name: Option<&str>) -> Result<String> {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io", "images", "import"]);
        if let Some(b) = base_name {
            cmd.args(["--base-name", b]);
        }
        let out = cmd
            .arg(archive)
            .output()
            .context("running ctr images import")?;
        if !out.status.success() {
            bail!(
                "ctr images import {} failed: {}{}",
                archive.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }
}

fn run(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Builds the pause image (static `pause` from the kubernetes module's `build/pause/linux/pause.c`)
/// as an OCI layout archive with `umoci`, cached under `cache`; returns the archive.
pub(crate) fn pause_archive(cache: &Path) -> Result<PathBuf> {
    let archive = cache.join("pause-3.10.1.oci.tar");
    if archive.is_file() {
        return Ok(archive);
    }
    std::fs::create_dir_all(cache)?;
    let module = workspace_root().join("tools/kube");
    let dir = run(
        "go list -m (the kubernetes module, for pause.c)",
        Command::new("go").current_dir(&module).args([
            "list",
            "-m",
            "-f",
            "{{.Dir}}",
            "k8s.io/kubernetes",
        ]),
    )?;
    let src = PathBuf::from(dir.trim()).join("build/pause/linux/pause.c");
    if !src.is_file() {
        bail!("{} not found", src.display());
    }
    let work = tempfile::Builder::new()
        .prefix("clothjob-pause-")
        .tempdir_in(cache)?;
    let w = work.path();
    let bin = w.join("pause");
    run(
        "gcc -static pause.c",
        Command::new("gcc")
            .args(["-Os", "-static", "-o"])
            .arg(&bin)
            .arg(&src)
            .arg("-DVERSION=3.10.1-clothjob"),
    )?;
    let layout = w.join("layout");
    let image = format!("{}:3.10.1", layout.display());
    run(
        "umoci init",
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    )?;
    run(
        "umoci new",
        Command::new("umoci").args(["new", "--image", &image]),
    )?;
    let bundle = w.join("bundle");
    run(
        "umoci unpack",
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    )?;
    std::fs::copy(&bin, bundle.join("rootfs/pause"))?;
    run(
        "umoci repack",
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    )?;
    run(
        "umoci config",
        Command::new("umoci").args([
            "config",
            "--image",
            &image,
            "--config.entrypoint",
            "/pause",
            "--config.user",
            "65535:65535",
        ]),
    )?;
    run(
        "umoci gc",
        Command::new("umoci").args(["gc", "--layout"]).arg(&layout),
    )?;
    let tmp = w.join("pause.tar");
    run(
        "tar the pause layout",
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tmp)
            .arg("."),
    )?;
    std::fs::rename(&tmp, &archive)?;
    Ok(archive)
}
