//! `cargo xtask images`: archives are byte-for-byte reproducible, are consistent OCI image
//! layouts and docker archives, and their root filesystems run their binaries alone
//! (`chroot`, so these tests need root, as CI has).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::read::GzDecoder;
use serde_json::Value;
use sha2::{Digest, Sha256};
use xtask::images::{self, BuiltImage, ImageOptions, ImageSpec, Library};

/// A fresh directory under cargo's per-target temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("xtask-images")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small dynamically linked host binary that answers `--version` (coreutils' `true`).
fn host_binary() -> PathBuf {
    let p = fs::canonicalize("/usr/bin/true").unwrap();
    assert!(
        !images::ldd(&p).unwrap().is_empty(),
        "{} should be dynamically linked",
        p.display()
    );
    p
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The archive's entries in order: (path, entry type, mode, bytes).
fn entries(tar_bytes: impl Read) -> Vec<(String, tar::EntryType, u32, u64, u64, Vec<u8>)> {
    let mut ar = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((
            path,
            h.entry_type(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.mtime().unwrap(),
            data,
        ));
    }
    out
}

/// What `check_layout` found in an archive.
struct Layout {
    config: Value,
    layer_gz: Vec<u8>,
}

/// Checks index.json -> manifest -> config and layer against the blobs and `built`, the
/// docker-archive manifest.json, the order and metadata of the archive's own entries.
fn check_layout(built: &BuiltImage, epoch: u64) -> Layout {
    let bytes = fs::read(&built.archive).unwrap();
    assert_eq!(bytes.len() as u64, built.archive_size);
    let list = entries(bytes.as_slice());
    let names: Vec<&str> = list.iter().map(|e| e.0.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "archive entries are sorted");
    for e in &list {
        assert_eq!(e.3, 0, "{} is root's", e.0);
        assert_eq!(e.4, epoch, "{} has mtime SOURCE_DATE_EPOCH", e.0);
    }
    let files: BTreeMap<&str, &[u8]> = list
        .iter()
        .filter(|e| e.1 == tar::EntryType::Regular)
        .map(|e| (e.0.as_str(), e.5.as_slice()))
        .collect();
    let blob = |digest: &str| -> &[u8] {
        let path = format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap());
        let b = files
            .get(path.as_str())
            .unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(sha256(b), digest, "{path} holds what its name says");
        b
    };
    for (path, data) in &files {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256(data), format!("sha256:{hex}"));
        }
    }
    let layout: Value = serde_json::from_slice(files["oci-layout"]).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");

    let index: Value = serde_json::from_slice(files["index.json"]).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let m = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(m["digest"], built.manifest_digest.as_str());
    assert_eq!(
        m["annotations"]["io.containerd.image.name"],
        built.reference.as_str()
    );
    let tag = built.reference.rsplit_once(':').unwrap().1;
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], tag);
    let manifest_bytes = blob(&built.manifest_digest);
    assert_eq!(m["size"], manifest_bytes.len());

    let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(manifest["config"]["digest"], built.config_digest.as_str());
    let config_bytes = blob(&built.config_digest);
    assert_eq!(manifest["config"]["size"], config_bytes.len());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(layers[0]["digest"], built.layer_digest.as_str());
    let layer_gz = blob(&built.layer_digest).to_vec();
    assert_eq!(layers[0]["size"], layer_gz.len());
    assert_eq!(layer_gz.len() as u64, built.compressed_size);

    let mut layer = Vec::new();
    GzDecoder::new(layer_gz.as_slice())
        .read_to_end(&mut layer)
        .unwrap();
    assert_eq!(layer.len() as u64, built.uncompressed_size);
    let config: Value = serde_json::from_slice(config_bytes).unwrap();
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&layer));
    assert_eq!(config["rootfs"]["diff_ids"][0], built.diff_id.as_str());

    let docker: Value = serde_json::from_slice(files["manifest.json"]).unwrap();
    let d = &docker[0];
    assert_eq!(docker.as_array().unwrap().len(), 1);
    assert_eq!(
        d["Config"],
        format!(
            "blobs/sha256/{}",
            built.config_digest.strip_prefix("sha256:").unwrap()
        )
    );
    assert_eq!(d["RepoTags"][0], built.reference.as_str());
    assert_eq!(
        d["Layers"][0],
        format!(
            "blobs/sha256/{}",
            built.layer_digest.strip_prefix("sha256:").unwrap()
        )
    );
    Layout { config, layer_gz }
}

/// Unpacks a gzipped layer into `dir` with its modes.
fn unpack(layer_gz: &[u8], dir: &Path) {
    let mut ar = tar::Archive::new(GzDecoder::new(layer_gz));
    ar.set_preserve_permissions(true);
    ar.unpack(dir).unwrap();
}

/// Fails (never skips) when not root: `chroot` needs CAP_SYS_CHROOT.
fn require_root() {
    let out = Command::new("id").arg("-u").output().unwrap();
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        uid, "0",
        "these tests chroot into the image's root filesystem and must run as root (uid 0), not uid {uid}"
    );
}

/// `chroot rootfs args...` with only `PATH` and `env` in the environment.
fn chroot_env(rootfs: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new("chroot")
        .arg(rootfs)
        .args(args)
        .env_clear()
        .env("PATH", images::PATH_ENV)
        .envs(env.iter().copied())
        .output()
        .expect("running chroot (coreutils)")
}

/// `chroot rootfs args...`, which must succeed.
fn chroot(rootfs: &Path, args: &[&str]) -> Output {
    let out = chroot_env(rootfs, &[], args);
    assert!(
        out.status.success(),
        "chroot {} {args:?} failed ({}): {}{}",
        rootfs.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Inside the rootfs, the loader resolves every dependency of `path` to a file in the rootfs.
fn check_dependencies_inside(rootfs: &Path, path: &str) {
    let out = chroot(rootfs, &[images::DYNAMIC_LOADER, "--list", path]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains("not found"), "{path}: {text}");
    let mut seen = 0;
    for line in text.lines() {
        let resolved = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if let Some(rel) = resolved.strip_prefix('/') {
            assert!(
                rootfs.join(rel).exists(),
                "{path} needs {resolved}, missing in the rootfs"
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "{path}: the loader listed nothing: {text}");
}

#[test]
fn references_match_the_operator_default_and_the_workspace_version() {
    assert_eq!(images::VERSION, "0.1.0");
    assert_eq!(
        images::reference(images::RUNNER),
        clothjob_api::contract::DEFAULT_RUNNER_IMAGE
    );
    assert_eq!(
        images::reference(images::OPERATOR),
        "ghcr.io/closetconnect/clothjob-operator:0.1.0"
    );
}

#[test]
fn same_inputs_give_byte_identical_archives_and_digests() {
    let dir = scratch("determinism");
    let spec = ImageSpec::new("tiny", host_binary());
    let a = images::write_image(&spec, &dir.join("a.tar")).unwrap();
    let b = images::write_image(&spec, &dir.join("b.tar")).unwrap();
    assert_eq!(fs::read(&a.archive).unwrap(), fs::read(&b.archive).unwrap());
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(
        (a.layer_digest.as_str(), a.config_digest.as_str()),
        (b.layer_digest.as_str(), b.config_digest.as_str())
    );
    // Only the archive remains: no temporary files beside it.
    let mut left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["a.tar", "b.tar"]);

    // Another binary: another layer and digest.
    let mut other = spec.clone();
    other.binary = fs::canonicalize("/usr/bin/false").unwrap();
    let c = images::write_image(&other, &dir.join("c.tar")).unwrap();
    assert_ne!(c.layer_digest, a.layer_digest);
    assert_ne!(c.manifest_digest, a.manifest_digest);

    // Another SOURCE_DATE_EPOCH: other mtimes and `created`.
    let mut later = spec.clone();
    later.source_date_epoch = 1_700_000_000;
    let d = images::write_image(&later, &dir.join("d.tar")).unwrap();
    assert_ne!(d.diff_id, a.diff_id);
    assert_ne!(d.manifest_digest, a.manifest_digest);

    // Another env: the same layer, another config and digest.
    let mut env = spec;
    env.env.push(("FOO".into(), "bar".into()));
    let e = images::write_image(&env, &dir.join("e.tar")).unwrap();
    assert_eq!(e.layer_digest, a.layer_digest);
    assert_ne!(e.config_digest, a.config_digest);
    assert_ne!(e.manifest_digest, a.manifest_digest);
}

#[test]
fn archive_is_a_consistent_oci_layout_and_docker_archive() {
    let dir = scratch("layout");
    let epoch = 1_234_567_890;
    let mut spec = ImageSpec::new("tiny", host_binary());
    spec.source_date_epoch = epoch;
    spec.description = "a test image".into();
    // Any shared library stands in for ONNX Runtime.
    let lib = images::ldd(&spec.binary)
        .unwrap()
        .into_iter()
        .find(|l| l.to_string_lossy().contains("libc.so"))
        .unwrap();
    spec.libraries.push(Library {
        source: lib.clone(),
        dir: "/usr/lib/extra".into(),
    });
    spec.env
        .push(("ORT_DYLIB_PATH".into(), "/usr/lib/extra/libc.so.6".into()));
    let built = images::write_image(&spec, &dir.join("tiny.tar")).unwrap();
    assert_eq!(built.reference, images::reference("tiny"));
    let layout = check_layout(&built, epoch);

    let c = &layout.config;
    assert_eq!(c["os"], "linux");
    assert_eq!(c["architecture"], "amd64");
    assert_eq!(c["created"], "2009-02-13T23:31:30Z");
    assert_eq!(c["config"]["User"], "65532:65532");
    assert_eq!(c["config"]["Entrypoint"][0], "/usr/local/bin/tiny");
    assert_eq!(c["config"]["WorkingDir"], "/");
    let env: Vec<&str> = c["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        [
            &format!("PATH={}", images::PATH_ENV),
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "ORT_DYLIB_PATH=/usr/lib/extra/libc.so.6"
        ]
    );
    let labels = &c["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "tiny");
    assert_eq!(
        labels["org.opencontainers.image.description"],
        "a test image"
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
    assert_eq!(labels["org.opencontainers.image.source"], images::SOURCE);

    // The layer: sorted, parents first, root-owned, normalised modes, fixed mtime.
    let list = entries(GzDecoder::new(layout.layer_gz.as_slice()));
    let mut seen: Vec<String> = Vec::new();
    let mut by_path = BTreeMap::new();
    for (path, kind, mode, uid, mtime, data) in &list {
        let key = path.trim_end_matches('/').to_string();
        if let Some(prev) = seen.last() {
            assert!(prev < &key, "{prev} before {key}");
        }
        if let Some((parent, _)) = key.rsplit_once('/') {
            assert!(seen.iter().any(|s| s == parent), "{parent} before {key}");
        }
        assert_eq!(*uid, 0, "{path}");
        assert_eq!(*mtime, epoch, "{path}");
        match kind {
            tar::EntryType::Directory => {
                assert!(path.ends_with('/'));
                assert!([0o755, 0o700, 0o1777].contains(mode), "{path} {mode:o}");
            }
            tar::EntryType::Regular => {
                assert!([0o755, 0o644].contains(mode), "{path} {mode:o}")
            }
            tar::EntryType::Symlink => {}
            other => panic!("{path}: unexpected entry type {other:?}"),
        }
        seen.push(key.clone());
        by_path.insert(key, (*kind, *mode, data.clone()));
    }
    assert_eq!(by_path["tmp"].1, 0o1777);
    assert_eq!(by_path["usr/local/bin/tiny"].1, 0o755);
    assert_eq!(
        by_path["usr/local/bin/tiny"].2,
        fs::read(&spec.binary).unwrap()
    );
    assert!(String::from_utf8_lossy(&by_path["etc/passwd"].2).contains("nonroot:x:65532:65532:"));
    assert!(String::from_utf8_lossy(&by_path["etc/group"].2).contains("nonroot:x:65532:"));
    assert!(by_path.contains_key("etc/nsswitch.conf"));
    assert_eq!(
        by_path["etc/ssl/certs/ca-certificates.crt"].2,
        fs::read(images::CA_CERTIFICATES).unwrap()
    );
    assert!(by_path.contains_key("usr/lib/extra/libc.so.6"));
    assert!(by_path.contains_key("lib64/ld-linux-x86-64.so.2") || by_path.contains_key("lib64"));

    // umoci (Debian's package) agrees that this is a valid OCI layout.
    if Command::new("umoci").arg("--version").output().is_ok() {
        require_root();
        let layout_dir = dir.join("layout");
        fs::create_dir_all(&layout_dir).unwrap();
        tar::Archive::new(fs::File::open(&built.archive).unwrap())
            .unpack(&layout_dir)
            .unwrap();
        let bundle = dir.join("bundle");
        let image = format!("{}:0.1.0", layout_dir.display());
        let out = Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umoci unpack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::read(bundle.join("rootfs/usr/local/bin/tiny")).unwrap(),
            fs::read(&spec.binary).unwrap()
        );
        let oci: Value =
            serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(oci["process"]["user"]["uid"], 65532);
        assert_eq!(oci["process"]["args"][0], "/usr/local/bin/tiny");
    } else {
        eprintln!("umoci is not installed: the layout is checked by this test's own parser only");
    }
}

#[test]
fn a_host_binary_runs_with_only_its_image_rootfs() {
    require_root();
    let dir = scratch("chroot-host");
    let spec = ImageSpec::new("tiny", host_binary());
    let built = images::write_image(&spec, &dir.join("tiny.tar")).unwrap();
    let layout = check_layout(&built, 0);
    let rootfs = dir.join("rootfs");
    unpack(&layout.layer_gz, &rootfs);
    let out = chroot(&rootfs, &["/usr/local/bin/tiny", "--version"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("coreutils"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    check_dependencies_inside(&rootfs, "/usr/local/bin/tiny");
    let mode = fs::metadata(rootfs.join("tmp"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o1777);
}

/// `target/debug` of this test binary (`target/debug/deps/images-*`).
fn debug_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

#[test]
fn operator_and_runner_images_run_with_only_their_rootfs() {
    require_root();
    let debug = debug_dir();
    let target_dir = debug.parent().unwrap().to_path_buf();
    let missing = [images::OPERATOR, images::RUNNER]
        .iter()
        .any(|b| !debug.join(b).is_file());
    if missing {
        // `cargo test --workspace` has built them; a lone `cargo test -p xtask` has not.
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(images::workspace_root())
            .env("CARGO_TARGET_DIR", &target_dir)
            .args([
                "build",
                "-p",
                images::OPERATOR,
                "-p",
                images::RUNNER,
                "--bins",
            ])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cargo build of the operator and runner failed"
        );
    }
    let ort_env = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let ort = images::find_onnxruntime(ort_env.as_deref())
        .unwrap_or_else(|e| panic!("the runner image needs ONNX Runtime: {e:#}"));
    let out_dir = scratch("real");
    let opts = ImageOptions {
        debug: true,
        build: false,
        target_dir,
        out_dir: out_dir.clone(),
        source_date_epoch: 0,
        ort_dylib_path: Some(ort.clone()),
    };
    let built = images::build_images(&opts).unwrap();
    let names: Vec<&str> = built.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, [images::OPERATOR, images::RUNNER]);

    let listed: Value =
        serde_json::from_slice(&fs::read(out_dir.join("images.json")).unwrap()).unwrap();
    for (i, b) in built.iter().enumerate() {
        assert_eq!(b.archive, out_dir.join(format!("{}.tar", b.name)));
        assert_eq!(b.reference, images::reference(&b.name));
        assert_eq!(
            fs::read_to_string(out_dir.join(format!("{}.digest", b.name)))
                .unwrap()
                .trim(),
            b.manifest_digest
        );
        assert_eq!(listed[i]["name"], b.name.as_str());
        assert_eq!(listed[i]["reference"], b.reference.as_str());
        assert_eq!(listed[i]["digest"], b.manifest_digest.as_str());
        assert_eq!(listed[i]["size"], b.archive_size);

        let layout = check_layout(b, 0);
        let rootfs = out_dir.join(format!("{}-rootfs", b.name));
        unpack(&layout.layer_gz, &rootfs);
        let bin = format!("/usr/local/bin/{}", b.name);
        assert_eq!(layout.config["config"]["Entrypoint"][0], bin.as_str());
        let out = chroot(&rootfs, &[&bin, "--version"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.trim(), format!("{} {}", b.name, images::VERSION));
        check_dependencies_inside(&rootfs, &bin);

        let env: Vec<&str> = layout.config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let ort_in_image = env.iter().find_map(|e| e.strip_prefix("ORT_DYLIB_PATH="));
        if b.name == images::RUNNER {
            let path = ort_in_image.expect("the runner's config sets ORT_DYLIB_PATH");
            assert_eq!(
                path,
                format!(
                    "/usr/lib/clothjob/{}",
                    ort.file_name().unwrap().to_string_lossy()
                )
            );
            let inside = rootfs.join(path.trim_start_matches('/'));
            assert_eq!(fs::read(&inside).unwrap(), fs::read(&ort).unwrap());
            check_dependencies_inside(&rootfs, path);
            check_runner_pipeline(&rootfs, path);
        } else {
            assert_eq!(ort_in_image, None);
        }
    }
}

/// In the runner's rootfs: the builtin pipeline runs on the example photo, and the `onnx`
/// backend loads ONNX Runtime from `ort` (its own protobuf parser rejects a bogus model).
fn check_runner_pipeline(rootfs: &Path, ort: &str) {
    fs::copy(
        images::workspace_root().join("examples/tshirt.jpg"),
        rootfs.join("tmp/tshirt.jpg"),
    )
    .unwrap();
    let bin = "/usr/local/bin/clothjob-runner";
    let process = [
        bin,
        "process",
        "/tmp/tshirt.jpg",
        "--set",
        "output.maxSide=256",
    ];
    let out = chroot(rootfs, &[&process[..], &["--out", "/tmp/builtin"]].concat());
    assert!(
        rootfs.join("tmp/builtin/report.json").is_file(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    fs::write(rootfs.join("tmp/bogus.onnx"), b"not a model").unwrap();
    let onnx = [
        "--out",
        "/tmp/onnx",
        "--set",
        "segmentation.backend=onnx",
        "--set",
        "segmentation.onnx.modelUri=file:///tmp/bogus.onnx",
    ];
    let args = [&process[..], &onnx[..]].concat();
    let out = chroot_env(rootfs, &[("ORT_DYLIB_PATH", ort)], &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bogus model must fail: {err}");
    assert!(!err.contains("could not load ONNX Runtime"), "{err}");
    assert!(
        err.contains("/tmp/bogus.onnx") && err.contains("protobuf"),
        "{err}"
    );

    // The check above can tell: without the library, the runtime itself fails to load.
    let out = chroot_env(
        rootfs,
        &[("ORT_DYLIB_PATH", "/usr/lib/clothjob/missing.so")],
        &args,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not load ONNX Runtime"), "{err}");
}
