//! Renders the ClothJob CustomResourceDefinition as the YAML committed under `crds/`, and as
//! the Helm chart's CRD template (the same YAML behind `crds.install`, kept on uninstall).

use kube::CustomResourceExt;

use crate::ClothJob;

/// File name of the CRD under `crds/`.
pub const CRD_FILE: &str = "clothjobs.closetconnect.io.yaml";

/// The chart's CRD template, relative to the workspace root.
pub const CHART_CRD_TEMPLATE: &str = "charts/clothjob-operator/templates/crds/clothjobs.yaml";

/// The metadata line the chart template adds its annotation and labels after.
const NAME_LINE: &str = "metadata:\n  name: clothjobs.closetconnect.io\n";

/// The CRD as YAML, with a header saying how it is made.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&ClothJob::crd())?;
    Ok(format!(
        "# Generated from the Rust types in api/ by `cargo xtask gen-crds`. Do not edit.\n{body}"
    ))
}

/// The chart's CRD template: [`crd_yaml`] rendered only when `crds.install` is true, with
/// `helm.sh/resource-policy: keep` (so `helm uninstall` never deletes the CRD and with it every
/// ClothJob) and the chart's labels. Template delimiters in the CRD's text are escaped.
pub fn chart_crd_template() -> Result<String, serde_yaml::Error> {
    let yaml = crd_yaml()?.replace("{{", "{{ \"{{\" }}");
    let metadata = concat!(
        "metadata:\n",
        "  name: clothjobs.closetconnect.io\n",
        "  annotations:\n",
        "    # Kept on `helm uninstall`: deleting the CRD would delete every ClothJob.\n",
        "    helm.sh/resource-policy: keep\n",
        "  labels:\n",
        "    {{- include \"clothjob.labels\" . | nindent 4 }}\n",
    );
    Ok(format!(
        "{{{{- if .Values.crds.install }}}}\n{}{{{{- end }}}}\n",
        yaml.replacen(NAME_LINE, metadata, 1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_are_fresh() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let files = [
            (root.join("crds").join(CRD_FILE), crd_yaml().unwrap()),
            (root.join(CHART_CRD_TEMPLATE), chart_crd_template().unwrap()),
        ];
        for (path, generated) in files {
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{} is stale: run `cargo xtask gen-crds` and commit the result",
                path.display()
            );
        }
    }

    #[test]
    fn chart_template_wraps_the_crd() {
        let t = chart_crd_template().unwrap();
        assert!(t.starts_with("{{- if .Values.crds.install }}\n# Generated"));
        assert!(t.ends_with("{{- end }}\n"));
        assert!(t.contains("\n  annotations:\n    # Kept"));
        assert!(t.contains("    helm.sh/resource-policy: keep\n"));
        assert!(t.contains("\nspec:\n  group: closetconnect.io\n"));
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
            [
                "Phase", "Queue", "Progress", "Stage", "Attempts", "Age", "Message"
            ]
        );
    }
}
