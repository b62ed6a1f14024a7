//! The krew manifest in plugins/krew names this binary, this version and a well-formed
//! platform entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::path::Path;

#[test]
fn the_krew_manifest_matches_the_binary_and_version() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/krew/clothjob.yaml");
    let m: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    // krew runs `kubectl-<name>`: the plugin name is the binary's suffix.
    assert_eq!(m["metadata"]["name"], "clothjob");
    assert_eq!(
        m["spec"]["version"].as_str().unwrap(),
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(m["spec"]["shortDescription"].as_str().unwrap().len() <= 80);
    let platforms = m["spec"]["platforms"].as_sequence().unwrap();
    assert!(!platforms.is_empty());
    for p in platforms {
        assert_eq!(p["bin"], "kubectl-clothjob");
        let sha = p["sha256"].as_str().unwrap();
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            "{sha}"
        );
        let uri = p["uri"].as_str().unwrap();
        assert!(
            uri.ends_with(".tar.gz") && uri.starts_with("https://"),
            "{uri}"
        );
        let labels = &p["selector"]["matchLabels"];
        assert!(labels["os"].is_string() && labels["arch"].is_string());
        let files = p["files"].as_sequence().unwrap();
        assert!(files.iter().any(|f| f["from"] == "kubectl-clothjob"));
    }
    // The binary the manifest runs is the one this crate builds.
    let cargo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(cargo.contains("name = \"kubectl-clothjob\""));
}
