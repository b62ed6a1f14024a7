//! Binary lookup, and helm built (or found in the cache) from the Go module proxy.

#[test]
fn k8s_binaries_are_found() {
    let bins = clothjob_testenv::ensure_k8s_binaries().unwrap();
    for p in [
        &bins.etcd,
        &bins.kube_apiserver,
        &bins.kube_controller_manager,
        &bins.kubectl,
    ] {
        assert!(p.is_file(), "{}", p.display());
    }
}

/// Builds helm with `go build` on first use (minutes; `cargo xtask test` has built it for
/// `helm lint` before the tests run, so here it is found in the cache).
#[test]
fn helm_is_built() {
    let helm = clothjob_testenv::ensure_helm().unwrap();
    let out = std::process::Command::new(&helm)
        .arg("version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("v3.22"));
}

#[test]
fn s3_server_binary_is_found() {
    assert!(clothjob_testenv::ensure_s3_server().unwrap().is_file());
}
