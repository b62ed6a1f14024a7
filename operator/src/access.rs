//! The runner's identity, one per ClothJob: a ServiceAccount, a Role that may `get` only this
//! ClothJob and `get`/`patch` only its status (`resourceNames`), and the RoleBinding between
//! them, all owned by the ClothJob (the garbage collector removes them with it). Plus the
//! CEL of the chart's ValidatingAdmissionPolicy that keeps runners off the operator's status
//! fields, generated here from [`OPERATOR_FIELDS`] so it cannot drift (a test compares the
//! chart's template with it). See docs/adr/0006-runner-identity.md.

use clothjob_api::status::{OPERATOR_FIELDS, RUNNER_FIELDS};
use clothjob_api::{ClothJob, GROUP, contract};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};

use crate::error::Error;
use crate::job::{job_name, labels};

/// The chart template holding the ValidatingAdmissionPolicy (relative to the workspace root).
pub const STATUS_GUARD_TEMPLATE: &str =
    "charts/clothjob-operator/templates/runner-status-guard.yaml";

/// The per-job service account of a ClothJob's runner: [`contract::RUNNER_SA_PREFIX`] and the
/// Job's name (the ClothJob's name and 8 characters of its uid). The Role and RoleBinding
/// have the same name.
pub fn runner_service_account(cj: &ClothJob) -> Result<String, Error> {
    Ok(format!("{}{}", contract::RUNNER_SA_PREFIX, job_name(cj)?))
}

/// The objects that give a ClothJob's runner its access.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerAccess {
    /// The per-job ServiceAccount; `None` when the spec names an allowed service account of
    /// its own, which is bound instead.
    pub service_account: Option<ServiceAccount>,
    /// `get` on this ClothJob, `get`/`patch` on its status, nothing else.
    pub role: Role,
    /// Binds the Role to the runner pod's service account.
    pub role_binding: RoleBinding,
}

/// The runner's access objects of a ClothJob (pure), each owned by the ClothJob.
pub fn runner_access(cj: &ClothJob) -> Result<RunnerAccess, Error> {
    let namespace = cj
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let clothjob = cj
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let owner = cj
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let name = runner_service_account(cj)?;
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(labels(cj)),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    let subject = cj
        .spec
        .runner
        .service_account_name
        .clone()
        .unwrap_or_else(|| name.clone());
    let service_account = cj
        .spec
        .runner
        .service_account_name
        .is_none()
        .then(|| ServiceAccount {
            metadata: meta.clone(),
            ..Default::default()
        });
    let rule = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![GROUP.to_string()]),
        resources: Some(vec![resource.to_string()]),
        resource_names: Some(vec![clothjob.clone()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![
            rule("clothjobs", &["get"]),
            rule("clothjobs/status", &["get", "patch"]),
        ]),
    };
    let role_binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "Role".to_string(),
            name,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: subject,
            namespace: Some(namespace),
            ..Default::default()
        }]),
    };
    Ok(RunnerAccess {
        service_account,
        role,
        role_binding,
    })
}

/// Applies the runner's access objects of a ClothJob (server-side apply, the operator's field
/// manager), before its Job is created. Idempotent. The ServiceAccount and the Role go out
/// together, then the RoleBinding (two round trips, not three): the apiserver checks a binding
/// against the rules of the Role it names, and answers 404 while that Role does not exist yet.
/// Both results of the pair are awaited: a failure of one never cancels the other mid-request
/// (tried all three at once under `try_join!`: a binding's 404 cancelled its Role's request,
/// again and again, and 4 of 200 load-benchmark jobs sat Queued for minutes).
pub async fn ensure_runner_access(client: &Client, cj: &ClothJob) -> Result<(), Error> {
    let access = runner_access(cj)?;
    let namespace = cj
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = runner_service_account(cj)?;
    let pp = PatchParams::apply(contract::OPERATOR_MANAGER).force();
    let err = |source| Error::EnsureRunnerAccess {
        namespace: namespace.clone(),
        source,
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let roles: Api<Role> = Api::namespaced(client.clone(), &namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
    let account = async {
        match &access.service_account {
            Some(sa) => accounts
                .patch(&name, &pp, &Patch::Apply(sa))
                .await
                .map(drop),
            None => Ok(()),
        }
    };
    let role = async {
        roles
            .patch(&name, &pp, &Patch::Apply(&access.role))
            .await
            .map(drop)
    };
    let binding = async {
        bindings
            .patch(&name, &pp, &Patch::Apply(&access.role_binding))
            .await
            .map(drop)
    };
    let (account, role) = futures::join!(account, role);
    account.map_err(err)?;
    role.map_err(err)?;
    binding.await.map_err(err)
}

/// Escapes RE2 metacharacters.
fn regex_quote(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let meta = "\\.+*?()|[]{}^$".contains(c);
            meta.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// The CEL that tells a runner's request: a per-job runner service account (any namespace),
/// or one of the allowed service accounts, whose CEL list literal is `allowed` (the chart
/// renders it from `allowedRunnerServiceAccounts`).
pub fn runner_identity_expression(allowed: &str) -> String {
    format!(
        "request.userInfo.username.matches('^system:serviceaccount:[^:]+:{}[^:]+$') || (request.userInfo.username.startsWith('system:serviceaccount:') && {allowed}.exists(n, request.userInfo.username.endsWith(':' + n)))",
        regex_quote(contract::RUNNER_SA_PREFIX)
    )
}

/// The CEL that holds when a status update leaves every operator field
/// ([`OPERATOR_FIELDS`]) as it was: present with the same value, or absent before and after.
pub fn operator_fields_unchanged_expression() -> String {
    OPERATOR_FIELDS
        .iter()
        .map(|f| {
            let new = format!("(has(object.status) && has(object.status.{f}))");
            let old = format!("(has(oldObject.status) && has(oldObject.status.{f}))");
            format!("({new} == {old} && (!{new} || object.status.{f} == oldObject.status.{f}))")
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// The message of the policy's denial.
pub fn operator_fields_message() -> String {
    format!(
        "a ClothJob runner may write only its own status fields ({}); {} are the operator's",
        RUNNER_FIELDS.join(", "),
        OPERATOR_FIELDS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cj(runner: &str) -> ClothJob {
        serde_yaml::from_str(&format!(
            "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: tshirt, namespace: closet, uid: 3f2a9c1b-aaaa-4000-8000-000000000001}}\nspec:\n  source: {{url: 'http://x/y.jpg'}}\n  output: {{uri: 'file:///out'}}\n{runner}"
        ))
        .unwrap()
    }

    #[test]
    fn each_clothjob_gets_its_own_account_role_and_binding() {
        let a = runner_access(&cj("")).unwrap();
        let name = "clothjob-runner-tshirt-3f2a9c1b";
        assert_eq!(runner_service_account(&cj("")).unwrap(), name);
        let sa = a.service_account.unwrap();
        for meta in [&sa.metadata, &a.role.metadata, &a.role_binding.metadata] {
            assert_eq!(meta.name.as_deref(), Some(name));
            assert_eq!(meta.namespace.as_deref(), Some("closet"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.controller),
                ("ClothJob", "tshirt", Some(true))
            );
            assert_eq!(owner.uid, "3f2a9c1b-aaaa-4000-8000-000000000001");
        }
        let rules = a.role.rules.unwrap();
        assert_eq!(rules.len(), 2);
        for r in &rules {
            assert_eq!(
                r.api_groups.as_deref(),
                Some(&["closetconnect.io".into()][..])
            );
            assert_eq!(r.resource_names.as_deref(), Some(&["tshirt".into()][..]));
        }
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["clothjobs".into()][..])
        );
        assert_eq!(rules[0].verbs, ["get"]);
        assert_eq!(
            rules[1].resources.as_deref(),
            Some(&["clothjobs/status".into()][..])
        );
        assert_eq!(rules[1].verbs, ["get", "patch"]);
        let rb = a.role_binding;
        assert_eq!(
            (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
            ("Role", name)
        );
        let s = &rb.subjects.unwrap()[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", name, Some("closet"))
        );
    }

    #[test]
    fn an_allowed_service_account_is_bound_instead_of_a_new_one() {
        let a = runner_access(&cj("  runner: {serviceAccountName: models-reader}\n")).unwrap();
        assert!(a.service_account.is_none());
        assert_eq!(a.role_binding.subjects.unwrap()[0].name, "models-reader");
        assert_eq!(
            a.role.metadata.name.as_deref(),
            Some("clothjob-runner-tshirt-3f2a9c1b")
        );
    }

    #[test]
    fn access_objects_serialize_for_server_side_apply() {
        let a = runner_access(&cj("")).unwrap();
        let v = serde_json::to_value(&a.role).unwrap();
        assert_eq!(v["apiVersion"], "rbac.authorization.k8s.io/v1");
        assert_eq!(v["kind"], "Role");
        let v = serde_json::to_value(a.service_account.unwrap()).unwrap();
        assert_eq!(
            (v["apiVersion"].as_str(), v["kind"].as_str()),
            (Some("v1"), Some("ServiceAccount"))
        );
    }

    #[test]
    fn the_guard_covers_every_operator_field_and_no_runner_field() {
        let e = operator_fields_unchanged_expression();
        for f in OPERATOR_FIELDS {
            assert!(
                e.contains(&format!("object.status.{f} == oldObject.status.{f}")),
                "{f}"
            );
        }
        for f in RUNNER_FIELDS {
            assert!(!e.contains(&format!("status.{f})")), "{f}");
        }
        let id = runner_identity_expression("[]");
        assert!(id.contains(":clothjob-runner-[^:]+$')"), "{id}");
        assert_eq!(regex_quote("a.b-c"), "a\\.b-c");
    }

    /// The chart's ValidatingAdmissionPolicy carries exactly the generated CEL.
    #[test]
    fn the_charts_policy_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(STATUS_GUARD_TEMPLATE);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.trim().trim_start_matches("- "))
            .collect();
        let want = [
            format!(
                "expression: \"{}\"",
                runner_identity_expression(
                    "[{{ range $i, $n := .Values.allowedRunnerServiceAccounts }}{{ if $i }}, {{ end }}'{{ $n }}'{{ end }}]"
                )
            ),
            format!("expression: \"{}\"", operator_fields_unchanged_expression()),
            format!("message: \"{}\"", operator_fields_message()),
        ];
        let missing: Vec<&String> = want
            .iter()
            .filter(|w| !lines.contains(&w.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{} is stale; it must have these lines (generated from OPERATOR_FIELDS):\n{}",
            path.display(),
            missing
                .iter()
                .map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
