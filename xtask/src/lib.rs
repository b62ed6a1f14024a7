//! Library side of `cargo xtask`: tasks that other Rust code (and tests) can call.
//!
//! - [`images`]: the operator and runner container images as deterministic OCI archives,
//!   built without a container engine (`cargo xtask images`).
//! - [`dashboard`]: README's dashboard picture, drawn from a real run's Prometheus data
//!   (`cargo xtask dashboard-picture`).
//! - [`lanes`]: `cargo xtask test`'s test run in concurrent lanes.

pub mod dashboard;
pub mod images;
pub mod lanes;

/// The workspace root.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub use clothjob_testenv::bins::cargo_command;

#[cfg(test)]
mod tests {
    use super::*;
    use clothjob_testenv::bins::is_per_package_variable;

    #[test]
    fn nested_cargo_runs_without_the_per_package_variables() {
        for key in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
        ] {
            assert!(is_per_package_variable(key), "{key}");
        }
        for key in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_INCREMENTAL",
        ] {
            assert!(!is_per_package_variable(key), "{key}");
        }
        // This test process has them (cargo test sets them); the command removes them.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let cmd = cargo_command();
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(
            removed.contains(&"CARGO_PKG_NAME".to_string()),
            "{removed:?}"
        );
        assert!(
            removed.contains(&"CARGO_MANIFEST_DIR".to_string()),
            "{removed:?}"
        );
    }
}
