//! Renders the ClothJob CustomResourceDefinition as the YAML committed under `crds/`.

use kube::CustomResourceExt;

use crate::ClothJob;

/// File name of the CRD under `crds/` (and the chart's `crds/`).
pub const CRD_FILE: &str = "clothjobs.closetconnect.io.yaml";

/// The CRD as YAML, with a header saying how it is made.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&ClothJob::crd())?;
    Ok(format!(
        "# Generated from the Rust types in api/ by `cargo xtask gen-crds`. Do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_are_fresh() {
        let generated = crd_yaml().unwrap();
        for dir in ["../crds", "../charts/clothjob-operator/crds"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(dir)
                .join(CRD_FILE);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{} is stale: run `cargo xtask gen-crds` and commit the result",
                path.display()
            );
        }
    }

    #[test]
    fn crd_has_the_contract_names() {
        let crd = ClothJob::crd();
        assert_eq!(crd.spec.group, "closetconnect.io");
        assert_eq!(crd.spec.names.kind, "ClothJob");
        assert_eq!(crd.spec.names.plural, "clothjobs");
        assert_eq!(crd.spec.names.short_names, Some(vec!["cloth".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["all".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Phase", "Progress", "Stage", "Attempts", "Age", "Message"]
        );
    }
}
