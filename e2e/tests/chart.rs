//! The Helm chart with the real helm: lint, rendering with defaults, the values schema, the
//! optional objects (PodDisruptionBudget, NetworkPolicy, CRD), RBAC for a namespace list, image
//! references, the CRD template against the generated CRD, the README's values table against
//! values.yaml, checkov on the rendered chart, and `helm install` on a real API server (the
//! release notes, the operator running with only the namespaced Roles, the CRD kept on
//! uninstall).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use clothjob_testenv::bins;
use serde_yaml::Value;

const RELEASE: &str = "clothjob";
const NAMESPACE: &str = "clothjob-system";

fn chart() -> PathBuf {
    bins::workspace_root().join("charts/clothjob-operator")
}

fn helm(args: &[&str]) -> Result<Output> {
    let helm = bins::ensure_helm()?;
    Command::new(&helm)
        .args(args)
        .env("HELM_CACHE_HOME", scratch_home().join("cache"))
        .env("HELM_CONFIG_HOME", scratch_home().join("config"))
        .env("HELM_DATA_HOME", scratch_home().join("data"))
        .output()
        .with_context(|| format!("running {}", helm.display()))
}

/// Helm's own cache, config and data dirs (it writes none for template and lint, but may
/// create them): under the target dir, never the user's.
fn scratch_home() -> PathBuf {
    bins::workspace_root().join("target/chart-test/helm-home")
}

/// `helm template` with these extra arguments: stdout, or helm's stderr as the error.
fn template(extra: &[&str]) -> Result<String> {
    let chart = chart();
    let chart = chart.to_string_lossy();
    let mut args = vec![
        "template",
        RELEASE,
        chart.as_ref(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend_from_slice(extra);
    let out = helm(&args)?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The rendered objects.
fn objects(extra: &[&str]) -> Result<Vec<Value>> {
    // The release's objects: without the `helm test` hooks (checkov sees those too).
    let mut args = vec!["--skip-tests"];
    args.extend_from_slice(extra);
    docs(&template(&args)?)
}

#[test]
fn helm_test_hooks_are_a_smoke_test_pod_with_a_narrow_role() {
    let objs = docs(&template(&[]).unwrap()).unwrap();
    let pods = of_kind(&objs, "Pod");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["metadata"]["annotations"]["helm.sh/hook"], "test");
    assert_eq!(pods[0]["spec"]["containers"][0]["args"][0], "smoke-test");
    let roles: Vec<_> = of_kind(&objs, "Role")
        .into_iter()
        .filter(|r| r["metadata"]["annotations"]["helm.sh/hook"].as_str() == Some("test"))
        .collect();
    assert_eq!(roles.len(), 1);
    let rules = serde_yaml::to_string(&roles[0]["rules"]).unwrap();
    assert!(rules.contains("clothjobs"), "{rules}");
    assert!(!rules.contains("secrets"), "{rules}");
}

/// The documents of helm's output (separated by `---` lines), without empty ones.
fn docs(yaml: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut doc = String::new();
    for line in yaml.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let v: Value =
                serde_yaml::from_str(&doc).with_context(|| format!("parsing:\n{doc}"))?;
            if !v.is_null() {
                out.push(v);
            }
            doc.clear();
        } else {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    Ok(out)
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

fn of_kind<'a>(objs: &'a [Value], k: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind(o) == k).collect()
}

fn the<'a>(objs: &'a [Value], k: &str) -> &'a Value {
    let found = of_kind(objs, k);
    assert_eq!(found.len(), 1, "expected one {k}, got {}", found.len());
    found[0]
}

fn container(objs: &[Value]) -> &Value {
    &the(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn env_value<'a>(objs: &'a [Value], name: &str) -> &'a str {
    container(objs)["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
        .unwrap_or("<no such env>")
}

/// YAML written in a test; a typo there becomes a string no rendered value equals.
fn y(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap_or_else(|e| Value::String(format!("bad YAML in the test: {e}")))
}

fn app_version() -> Result<String> {
    let chart: Value = serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml"))?)?;
    Ok(chart["appVersion"]
        .as_str()
        .context("appVersion")?
        .to_string())
}

#[test]
fn helm_lint_passes_with_defaults_and_with_every_option() {
    let chart = chart();
    let chart = chart.to_string_lossy();
    for extra in [
        &[][..],
        &[
            "--set",
            "replicaCount=3",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "crds.install=false",
            "--set",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", chart.as_ref()];
        args.extend_from_slice(extra);
        let out = helm(&args).unwrap();
        assert!(
            out.status.success(),
            "helm lint {extra:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn default_render_has_the_operator_and_cluster_wide_rbac() {
    let objs = objects(&[]).unwrap();
    let kinds: BTreeMap<&str, usize> = objs.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(kind(o)).or_default() += 1;
        m
    });
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("ClusterRole", 1),
            ("ClusterRoleBinding", 1),
            // The Grafana dashboard.
            ("ConfigMap", 1),
            ("CustomResourceDefinition", 1),
            ("Deployment", 1),
            // The leader election's Lease access, in the release namespace only.
            ("Role", 1),
            ("RoleBinding", 1),
            ("Service", 1),
            ("ServiceAccount", 1),
            ("ValidatingAdmissionPolicy", 1),
            ("ValidatingAdmissionPolicyBinding", 1),
        ])
    );
    let v = app_version().unwrap();
    let c = container(&objs);
    assert_eq!(
        c["image"].as_str(),
        Some(format!("ghcr.io/closetconnect/clothjob-operator:{v}").as_str())
    );
    assert_eq!(c["imagePullPolicy"].as_str(), Some("IfNotPresent"));
    // The chart's default runner image is the operator's built-in default.
    assert_eq!(
        env_value(&objs, "CLOTHJOB_RUNNER_IMAGE"),
        clothjob_api::contract::DEFAULT_RUNNER_IMAGE
    );
    assert_eq!(env_value(&objs, "CLOTHJOB_WATCH_NAMESPACES"), "");
    // The runner policy's defaults: only the runner image, no other service account, public
    // networks only, the operator's default deadline and pending time-out.
    for (name, want) in [
        ("CLOTHJOB_ALLOWED_RUNNER_IMAGES", ""),
        ("CLOTHJOB_ALLOWED_RUNNER_SERVICE_ACCOUNTS", ""),
        ("CLOTHJOB_ALLOWED_NETWORKS", ""),
        ("CLOTHJOB_DEFAULT_ACTIVE_DEADLINE_SECONDS", "3600"),
        ("CLOTHJOB_PENDING_TIMEOUT_SECONDS", "600"),
    ] {
        assert_eq!(env_value(&objs, name), want, "{name}");
    }
    // No shared runner account or role any more: each ClothJob gets its own.
    assert_eq!(
        env_value(&objs, "CLOTHJOB_RUNNER_SERVICE_ACCOUNT"),
        "<no such env>"
    );
    assert_eq!(
        env_value(&objs, "CLOTHJOB_RUNNER_CLUSTER_ROLE"),
        "<no such env>"
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(c["livenessProbe"]["periodSeconds"].as_u64(), Some(10));
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(c["readinessProbe"]["timeoutSeconds"].as_u64(), Some(2));
    assert_eq!(
        c["securityContext"],
        y(
            "{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, runAsUser: 65532, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}"
        )
    );
    let pod = &the(&objs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"],
        y(
            "{runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}"
        )
    );
    assert!(pod.get("priorityClassName").is_none());
    assert!(pod.get("imagePullSecrets").is_none());
    assert_eq!(
        c["resources"],
        y("{requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 256Mi}}")
    );
    let crb = the(&objs, "ClusterRoleBinding");
    assert_eq!(crb["subjects"][0]["namespace"].as_str(), Some(NAMESPACE));
}

#[test]
fn pod_settings_reach_the_pod() {
    let objs = objects(&[
        "--set",
        "priorityClassName=system-cluster-critical",
        "--set",
        "imagePullSecrets[0].name=regcred",
        "--set",
        "podAnnotations.team=imaging",
        "--set",
        "podLabels.tier=control",
        "--set",
        "podLabels.app\\.kubernetes\\.io/name=clash",
        "--set",
        "serviceAccount.annotations.iam\\.example\\.com/role=clothjob",
        "--set",
        "logLevel=debug",
    ])
    .unwrap();
    let template = &the(&objs, "Deployment")["spec"]["template"];
    assert_eq!(
        template["spec"]["priorityClassName"].as_str(),
        Some("system-cluster-critical")
    );
    assert_eq!(template["spec"]["imagePullSecrets"], y("[{name: regcred}]"));
    assert_eq!(template["metadata"]["annotations"], y("{team: imaging}"));
    assert_eq!(
        template["metadata"]["labels"]["tier"].as_str(),
        Some("control")
    );
    // The selector labels win over podLabels, so the Deployment still selects its pods.
    assert_eq!(
        template["metadata"]["labels"]["app.kubernetes.io/name"].as_str(),
        Some("clothjob-operator")
    );
    assert_eq!(
        the(&objs, "ServiceAccount")["metadata"]["annotations"],
        y("{iam.example.com/role: clothjob}")
    );
    assert_eq!(env_value(&objs, "RUST_LOG"), "debug");
}

/// Helm's error for these values, which must fail.
fn rejected(extra: &[&str]) -> Result<String> {
    match template(extra) {
        Ok(_) => bail!("helm template {extra:?} succeeded"),
        Err(e) => Ok(e.to_string()),
    }
}

#[test]
fn schema_rejects_bad_values_with_a_clear_message() {
    let cases: [(&[&str], &[&str]); 13] = [
        (&["--set", "replicaCount=two"], &["replicaCount", "integer"]),
        (&["--set", "bogus=1"], &["bogus", "additional properties"]),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            &["pullPolicy", "Always"],
        ),
        (&["--set", "image.digest=latest"], &["digest"]),
        (
            &["--set", "watchNamespaces[0]=Team_A"],
            &["watchNamespaces"],
        ),
        (&["--set", "crds.install=maybe"], &["install", "boolean"]),
        (&["--set", "metrics.port=70000"], &["port"]),
        (
            &["--set", "runnerImage=my/runner:1"],
            &["runnerImage", "object"],
        ),
        (
            &["--set", "allowedRunnerServiceAccounts[0]=Bad_Name"],
            &["allowedRunnerServiceAccounts"],
        ),
        (
            &["--set", "allowedRunnerImages[0]=a b"],
            &["allowedRunnerImages"],
        ),
        (
            &["--set", "allowedNetworks[0]=10.0.0.0/8 x"],
            &["allowedNetworks"],
        ),
        (
            &["--set", "defaultActiveDeadlineSeconds=-1"],
            &["defaultActiveDeadlineSeconds"],
        ),
        (
            &["--set", "pendingTimeoutSeconds=0"],
            &["pendingTimeoutSeconds"],
        ),
    ];
    for (args, words) in cases {
        let msg = rejected(args).unwrap();
        assert!(
            msg.contains("values don't meet the specifications of the schema"),
            "{args:?}: {msg}"
        );
        for w in words {
            assert!(msg.contains(w), "{args:?}: {w:?} not in: {msg}");
        }
    }
    // lint checks the same schema (install too: see the test on a real API server).
    let chart = chart();
    let chart = chart.to_string_lossy();
    let lint = helm(&["lint", chart.as_ref(), "--set", "replicaCount=two"]).unwrap();
    assert!(!lint.status.success());
    assert!(
        String::from_utf8_lossy(&lint.stdout)
            .contains("at '/replicaCount': got string, want integer")
    );
}

#[test]
fn runner_policy_values_reach_the_operator() {
    let objs = objects(&[
        "--set",
        "allowedRunnerImages={registry.example.com/runner-gpu:1,registry.example.com/runner@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}",
        "--set",
        "allowedRunnerServiceAccounts={models-reader,s3.writer}",
        "--set",
        "allowedNetworks={127.0.0.0/8,198.18.0.0/15,minio.storage.svc}",
        "--set",
        "defaultActiveDeadlineSeconds=10000000",
        "--set",
        "pendingTimeoutSeconds=120",
    ])
    .unwrap();
    assert_eq!(
        env_value(&objs, "CLOTHJOB_ALLOWED_RUNNER_IMAGES"),
        "registry.example.com/runner-gpu:1,registry.example.com/runner@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        env_value(&objs, "CLOTHJOB_ALLOWED_RUNNER_SERVICE_ACCOUNTS"),
        "models-reader,s3.writer"
    );
    assert_eq!(
        env_value(&objs, "CLOTHJOB_ALLOWED_NETWORKS"),
        "127.0.0.0/8,198.18.0.0/15,minio.storage.svc"
    );
    // Integers stay integers (not 1e+07).
    assert_eq!(
        env_value(&objs, "CLOTHJOB_DEFAULT_ACTIVE_DEADLINE_SECONDS"),
        "10000000"
    );
    assert_eq!(env_value(&objs, "CLOTHJOB_PENDING_TIMEOUT_SECONDS"), "120");
    // The status guard also covers the allowed service accounts.
    let vap = the(&objs, "ValidatingAdmissionPolicy");
    let cond = vap["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap_or_default();
    assert!(
        cond.contains("['models-reader', 's3.writer'].exists(n, "),
        "{cond}"
    );
}

/// The operator's rules: enough to give each ClothJob's runner its own ServiceAccount, Role
/// and RoleBinding, holding what that Role grants (RBAC's escalation check), and no `bind`,
/// `escalate` or `impersonate`, no Secrets, no ClusterRoles.
#[test]
fn operator_rules_grant_per_job_identity_without_bind_or_escalate() {
    let objs = objects(&[]).unwrap();
    let role = the(&objs, "ClusterRole");
    let rules = role["rules"].as_sequence().unwrap();
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r["apiGroups"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|g| g.as_str() == Some(group))
                && r["resources"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|x| x.as_str() == Some(resource))
                && r["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|v| v.as_str() == Some(verb))
        })
    };
    for (group, resource, verbs) in [
        ("", "serviceaccounts", &["get", "create", "patch"][..]),
        (
            "rbac.authorization.k8s.io",
            "roles",
            &["get", "create", "patch"][..],
        ),
        (
            "rbac.authorization.k8s.io",
            "rolebindings",
            &["get", "create", "patch"][..],
        ),
        // What the per-job Role grants, which the operator must hold itself.
        ("closetconnect.io", "clothjobs", &["get"][..]),
        (
            "closetconnect.io",
            "clothjobs/status",
            &["get", "patch"][..],
        ),
    ] {
        for verb in verbs {
            assert!(allows(group, resource, verb), "{verb} {group}/{resource}");
        }
    }
    let listed = |key: &str| -> Vec<&str> {
        rules
            .iter()
            .flat_map(|r| r[key].as_sequence().into_iter().flatten())
            .filter_map(|v| v.as_str())
            .collect()
    };
    for verb in listed("verbs") {
        assert!(
            !["bind", "escalate", "impersonate", "*"].contains(&verb),
            "the operator may {verb}"
        );
    }
    for resource in listed("resources") {
        assert!(
            !["secrets", "clusterroles", "clusterrolebindings", "*"].contains(&resource),
            "the operator has rights on {resource}"
        );
    }
}

#[test]
fn the_status_guard_is_rendered_and_bound() {
    let objs = objects(&[]).unwrap();
    let vap = the(&objs, "ValidatingAdmissionPolicy");
    assert_eq!(
        vap["apiVersion"].as_str(),
        Some("admissionregistration.k8s.io/v1")
    );
    assert_eq!(
        vap["spec"]["matchConstraints"]["resourceRules"],
        y(
            "[{apiGroups: [closetconnect.io], apiVersions: ['*'], operations: [UPDATE], resources: [clothjobs/status]}]"
        )
    );
    assert_eq!(vap["spec"]["failurePolicy"].as_str(), Some("Fail"));
    let cond = vap["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap_or_default();
    assert!(
        cond.contains(&format!(
            ":{}[^:]+$')",
            clothjob_api::contract::RUNNER_SA_PREFIX
        )),
        "{cond}"
    );
    assert!(
        cond.contains("[].exists(n, "),
        "no allowed accounts: {cond}"
    );
    let check = vap["spec"]["validations"][0]["expression"]
        .as_str()
        .unwrap_or_default();
    for f in clothjob_api::status::OPERATOR_FIELDS {
        assert!(
            check.contains(&format!("object.status.{f} == oldObject.status.{f}")),
            "{f} not guarded: {check}"
        );
    }
    for f in clothjob_api::status::RUNNER_FIELDS {
        assert!(
            !check.contains(&format!("status.{f})")),
            "{f} guarded: {check}"
        );
    }
    let binding = the(&objs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(
        binding["spec"],
        y("{policyName: clothjob-runner-status-guard, validationActions: [Deny]}")
    );
    // Rendered with watchNamespaces too (cluster-scoped, like the CRD).
    let objs = objects(&["--set", "watchNamespaces={team-a}"]).unwrap();
    assert_eq!(of_kind(&objs, "ValidatingAdmissionPolicy").len(), 1);
}

#[test]
fn pdb_only_with_more_than_one_replica() {
    for n in ["0", "1"] {
        let objs = objects(&["--set", &format!("replicaCount={n}")]).unwrap();
        assert!(
            of_kind(&objs, "PodDisruptionBudget").is_empty(),
            "replicaCount={n}"
        );
    }
    let objs = objects(&["--set", "replicaCount=2"]).unwrap();
    let pdb = the(&objs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"].as_str(), Some("policy/v1"));
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        the(&objs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        the(&objs, "Deployment")["spec"]["replicas"].as_u64(),
        Some(2)
    );
    let objs = objects(&[
        "--set",
        "replicaCount=4",
        "--set",
        "podDisruptionBudget.minAvailable=50%",
    ])
    .unwrap();
    assert_eq!(
        the(&objs, "PodDisruptionBudget")["spec"]["minAvailable"].as_str(),
        Some("50%")
    );
}

#[test]
fn network_policy_only_when_enabled() {
    assert!(of_kind(&objects(&[]).unwrap(), "NetworkPolicy").is_empty());
    let objs = objects(&["--set", "networkPolicy.enabled=true"]).unwrap();
    let np = &the(&objs, "NetworkPolicy")["spec"];
    assert_eq!(
        np["podSelector"]["matchLabels"],
        the(&objs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(np["policyTypes"], y("[Ingress, Egress]"));
    assert_eq!(np["ingress"], y("[]"), "no metricsFrom: no ingress");
    assert_eq!(
        np["egress"],
        y(
            "[{ports: [{protocol: TCP, port: 443}, {protocol: TCP, port: 6443}]},
            {ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]}]"
        )
    );

    let objs = objects(&[
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
        "--set",
        "networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus",
        "--set",
        "networkPolicy.apiServerCIDRs={10.0.0.1/32,fd00::1/128}",
        "--set",
        "networkPolicy.apiServerPorts={6443}",
        "--set",
        "networkPolicy.dns.to[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=kube-system",
        "--set",
        "metrics.port=9090",
    ])
    .unwrap();
    let np = &the(&objs, "NetworkPolicy")["spec"];
    assert_eq!(
        np["ingress"],
        y("[{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}, podSelector: {matchLabels: {app: prometheus}}}],
             ports: [{protocol: TCP, port: 9090}]}]")
    );
    assert_eq!(
        np["egress"],
        y("[{ports: [{protocol: TCP, port: 6443}], to: [{ipBlock: {cidr: 10.0.0.1/32}}, {ipBlock: {cidr: 'fd00::1/128'}}]},
            {ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}],
             to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]}]")
    );
    let objs = objects(&[
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.dns.enabled=false",
    ])
    .unwrap();
    let egress = the(&objs, "NetworkPolicy")["spec"]["egress"].clone();
    assert_eq!(egress.as_sequence().map(Vec::len), Some(1), "{egress:?}");
}

#[test]
fn network_policy_lets_traces_reach_the_otlp_collector_only_when_set() {
    let otlp_rule = |args: &[&str]| {
        let mut all = vec!["--set", "networkPolicy.enabled=true"];
        all.extend_from_slice(args);
        let objs = objects(&all).unwrap();
        let egress = the(&objs, "NetworkPolicy")["spec"]["egress"].clone();
        let rules = egress.as_sequence().cloned().unwrap_or_default();
        assert!(rules.len() == 2 || rules.len() == 3, "{rules:?}");
        rules.get(2).cloned()
    };
    assert_eq!(otlp_rule(&[]), None, "no endpoint: no collector egress");
    assert_eq!(
        otlp_rule(&[
            "--set",
            "otlp.endpoint=http://otel-collector.monitoring:4318"
        ]),
        Some(y("{ports: [{protocol: TCP, port: 4318}]}"))
    );
    assert_eq!(
        otlp_rule(&[
            "--set",
            "otlp.endpoint=https://collector.example:9443/otlp",
            "--set",
            "networkPolicy.otlp.to[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
        ]),
        Some(y(
            "{ports: [{protocol: TCP, port: 9443}], to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]}"
        ))
    );
    assert_eq!(
        otlp_rule(&["--set", "otlp.endpoint=https://collector.example"]),
        Some(y("{ports: [{protocol: TCP, port: 443}]}")),
        "https without a port: 443"
    );
    assert_eq!(
        otlp_rule(&["--set", "otlp.endpoint=http://collector"]),
        Some(y("{ports: [{protocol: TCP, port: 4318}]}")),
        "http without a port: OTLP/HTTP's 4318"
    );
}

#[test]
fn watch_namespaces_renders_a_role_and_binding_in_each_namespace() {
    let cluster = objects(&[]).unwrap();
    let cluster_rules = of_kind(&cluster, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"].as_str() == Some("clothjob-operator"))
        .map(|r| r["rules"].clone())
        .unwrap();

    let objs = objects(&["--set", "watchNamespaces={team-a,team-b}"]).unwrap();
    assert!(of_kind(&objs, "ClusterRoleBinding").is_empty());
    let cluster_roles: Vec<_> = of_kind(&objs, "ClusterRole")
        .into_iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    assert!(
        cluster_roles.is_empty(),
        "nothing cluster-wide but the status guard: {cluster_roles:?}"
    );
    // The operator's Roles (the leader election's Lease Role is the other one, in the
    // release namespace).
    let operators = |k: &str| -> Vec<Value> {
        of_kind(&objs, k)
            .into_iter()
            .filter(|r| r["metadata"]["name"].as_str() == Some("clothjob-operator"))
            .cloned()
            .collect()
    };
    for k in ["Role", "RoleBinding"] {
        let namespaces: Vec<_> = operators(k)
            .iter()
            .map(|r| {
                r["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(namespaces, ["team-a", "team-b"], "{k}");
    }
    for role in operators("Role") {
        assert_eq!(role["rules"], cluster_rules, "the same rules, namespaced");
    }
    for rb in operators("RoleBinding") {
        assert_eq!(
            rb["roleRef"],
            y("{apiGroup: rbac.authorization.k8s.io, kind: Role, name: clothjob-operator}")
        );
        assert_eq!(
            rb["subjects"],
            y(&format!(
                "[{{kind: ServiceAccount, name: clothjob-operator, namespace: {NAMESPACE}}}]"
            ))
        );
    }
    assert_eq!(
        env_value(&objs, "CLOTHJOB_WATCH_NAMESPACES"),
        "team-a,team-b"
    );
}

#[test]
fn digest_wins_over_tag() {
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let objs = objects(&["--set", "image.tag=9.9.9"]).unwrap();
    assert_eq!(
        container(&objs)["image"].as_str(),
        Some("ghcr.io/closetconnect/clothjob-operator:9.9.9")
    );
    let objs = objects(&[
        "--set",
        "image.tag=9.9.9",
        "--set",
        &format!("image.digest={d}"),
        "--set",
        "runnerImage.repository=registry.example.com/runner",
        "--set",
        "runnerImage.tag=2.0",
        "--set",
        &format!("runnerImage.digest={d}"),
    ])
    .unwrap();
    assert_eq!(
        container(&objs)["image"].as_str(),
        Some(format!("ghcr.io/closetconnect/clothjob-operator@{d}").as_str())
    );
    assert_eq!(
        env_value(&objs, "CLOTHJOB_RUNNER_IMAGE"),
        format!("registry.example.com/runner@{d}")
    );
    let objs = objects(&["--set", "runnerImage.tag=2.0"]).unwrap();
    assert_eq!(
        env_value(&objs, "CLOTHJOB_RUNNER_IMAGE"),
        "ghcr.io/closetconnect/clothjob-runner:2.0"
    );
}

#[test]
fn crds_install_false_renders_no_crd() {
    let objs = objects(&["--set", "crds.install=false"]).unwrap();
    assert!(of_kind(&objs, "CustomResourceDefinition").is_empty());
    assert_eq!(of_kind(&objs, "Deployment").len(), 1);
    // The chart has no crds/ directory, which helm would install on top of the template.
    assert!(!chart().join("crds").exists());
}

#[test]
fn crd_template_equals_the_generated_crd() {
    let objs = objects(&[]).unwrap();
    let mut rendered = the(&objs, "CustomResourceDefinition").clone();
    let meta = rendered["metadata"].as_mapping_mut().unwrap();
    let annotations = meta.remove("annotations").unwrap();
    assert_eq!(annotations, y("{helm.sh/resource-policy: keep}"));
    let labels = meta.remove("labels").unwrap();
    assert_eq!(
        labels["app.kubernetes.io/managed-by"].as_str(),
        Some("Helm")
    );
    let generated: Value = serde_yaml::from_str(&clothjob_api::crd::crd_yaml().unwrap()).unwrap();
    assert!(
        rendered == generated,
        "templates/crds/ is stale: run `cargo xtask gen-crds`"
    );
    let committed = std::fs::read_to_string(
        bins::workspace_root()
            .join("crds")
            .join(clothjob_api::crd::CRD_FILE),
    )
    .unwrap();
    assert_eq!(
        serde_yaml::from_str::<Value>(&committed).unwrap(),
        generated
    );
}

// ---- README <-> values.yaml ----

/// One row of the README's values table.
#[derive(Debug)]
struct Row {
    ty: String,
    default: String,
    description: String,
}

/// The rows of the first table under `heading` in the chart's README, as cells.
fn readme_table(heading: &str) -> Result<Vec<Vec<String>>> {
    let readme = std::fs::read_to_string(chart().join("README.md"))?;
    let Some((_, after)) = readme.split_once(&format!("\n{heading}\n")) else {
        bail!("README.md has no {heading:?} section");
    };
    let rows = after
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    Ok(rows)
}

fn unquote(cell: &str) -> Result<&str> {
    cell.strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .with_context(|| format!("{cell:?} is not in backticks"))
}

fn readme_values() -> Result<BTreeMap<String, Row>> {
    let mut out = BTreeMap::new();
    for cells in readme_table("## Values")? {
        let [key, ty, default, description] = &cells[..] else {
            bail!("values table row {cells:?} has not 4 cells");
        };
        let row = Row {
            ty: ty.clone(),
            default: unquote(default)?.to_string(),
            description: description.clone(),
        };
        if out.insert(unquote(key)?.to_string(), row).is_some() {
            bail!("{key} is listed twice");
        }
    }
    Ok(out)
}

/// values.yaml's keys, flattened along the schema: a mapping whose schema declares
/// `properties` is walked into; anything else (scalars, lists, free-form objects such as
/// `resources`) is one value. Every key must be in the schema.
fn flatten(
    value: &Value,
    schema: &serde_json::Value,
    prefix: &str,
    out: &mut BTreeMap<String, (Value, serde_json::Value)>,
) -> Result<()> {
    let Some(map) = value.as_mapping() else {
        bail!("{prefix} is not a mapping");
    };
    for (k, v) in map {
        let k = k.as_str().context("non-string key")?;
        let path = if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(s) = schema["properties"].get(k) else {
            bail!("{path} is in values.yaml but not in values.schema.json");
        };
        if v.is_mapping() && s.get("properties").is_some() {
            flatten(v, s, &path, out)?;
        } else {
            out.insert(path, (v.clone(), s.clone()));
        }
    }
    Ok(())
}

fn schema_type(s: &serde_json::Value) -> String {
    match &s["type"] {
        serde_json::Value::Array(types) => types
            .iter()
            .filter_map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
        t => t.as_str().unwrap_or("?").to_string(),
    }
}

/// Line of each key of values.yaml (block style), by flattened path.
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') || body.starts_with('-') {
            continue;
        }
        let Some((key, _)) = body.split_once(':') else {
            continue;
        };
        let indent = line.len() - body.len();
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        stack.push((indent, key.trim_matches('"').to_string()));
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        out.insert(path.join("."), i);
    }
    out
}

#[test]
fn readme_lists_every_value_and_nothing_else() {
    let text = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let values: Value = serde_yaml::from_str(&text).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    let mut flat = BTreeMap::new();
    flatten(&values, &schema, "", &mut flat).unwrap();
    let readme = readme_values().unwrap();

    let in_values: BTreeSet<&String> = flat.keys().collect();
    let in_readme: BTreeSet<&String> = readme.keys().collect();
    let undocumented: Vec<_> = in_values.difference(&in_readme).collect();
    let unknown: Vec<_> = in_readme.difference(&in_values).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "README.md values table out of sync with values.yaml: missing from README {undocumented:?}; not in values.yaml {unknown:?}"
    );

    let lines = key_lines(&text);
    let all: Vec<&str> = text.lines().collect();
    for (key, (value, s)) in &flat {
        let row = &readme[key];
        assert_eq!(row.ty, schema_type(s), "type of {key} in README.md");
        let default: Value = serde_yaml::from_str(&row.default)
            .unwrap_or_else(|e| panic!("default of {key} in README.md: {e}"));
        assert_eq!(&default, value, "default of {key} in README.md");
        assert!(!row.description.is_empty(), "{key} has no description");
        // Every value is commented in values.yaml: a comment line above it or at its end.
        let i = *lines
            .get(key)
            .unwrap_or_else(|| panic!("no line for {key}"));
        let above = i > 0 && all[i - 1].trim_start().starts_with('#');
        assert!(
            above || all[i].contains(" # "),
            "{key} has no comment in values.yaml"
        );
    }
    // Every top-level schema property is a value (bar helm's `global`).
    for k in schema["properties"].as_object().unwrap().keys() {
        assert!(
            k == "global" || values.get(k.as_str()).is_some(),
            "{k} is only in the schema"
        );
    }
}

// ---- checkov ----

/// The checks skipped on purpose, from the README's checkov table (its one source).
fn checkov_skips() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for cells in readme_table("## Checkov")? {
        let [check, reason] = &cells[..] else {
            bail!("checkov table row {cells:?} has not 2 cells");
        };
        let id = unquote(check)?;
        if !id.starts_with("CKV") || reason.len() < 20 {
            bail!("checkov table row {cells:?}: want a check ID and its reason");
        }
        out.push(id.to_string());
    }
    Ok(out)
}

/// checkov: CLOTHJOB_CHECKOV, the venv of charts/scripts/setup-checkov.sh, or PATH.
fn find_checkov() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLOTHJOB_CHECKOV") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let venv = std::env::var_os("CLOTHJOB_CHECKOV_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/clothjob/checkov-venv"));
    let candidate = venv.join("bin/checkov");
    if candidate.is_file() {
        return Some(candidate);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("checkov"))
        .find(|p| p.is_file())
}

/// Runs checkov on one rendered file; returns the failed checks as `ID resource`.
fn checkov_failures(checkov: &Path, file: &Path, skips: &[String]) -> Result<(u64, Vec<String>)> {
    let out = Command::new(checkov)
        .arg("-f")
        .arg(file)
        .args([
            "--framework",
            "kubernetes",
            "--skip-check",
            &skips.join(","),
        ])
        .args(["--compact", "--quiet", "-o", "json", "--skip-download"])
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
        .output()
        .with_context(|| format!("running {}", checkov.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "checkov's output is not JSON (exit {}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let reports = match report {
        serde_json::Value::Array(r) => r,
        r => vec![r],
    };
    let mut resources = 0;
    let mut failed = Vec::new();
    for r in &reports {
        resources += r["summary"]["resource_count"].as_u64().unwrap_or(0);
        for c in r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            failed.push(format!(
                "{} {} ({})",
                c["check_id"].as_str().unwrap_or("?"),
                c["resource"].as_str().unwrap_or("?"),
                c["check_name"].as_str().unwrap_or("?")
            ));
        }
        let n = r["summary"]["failed"].as_u64().unwrap_or(0);
        if n as usize > failed.len() {
            failed.push(format!("{n} failed checks in the summary"));
        }
    }
    Ok((resources, failed))
}

#[test]
fn checkov_finds_no_failed_check_but_the_documented_skips() {
    let skips = checkov_skips().unwrap();
    let Some(checkov) = find_checkov() else {
        let msg =
            "checkov not found: run charts/scripts/setup-checkov.sh (or set CLOTHJOB_CHECKOV)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipping: {msg}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let renders: [(&str, &[&str]); 2] = [
        ("defaults", &[]),
        (
            "replicas-networkpolicy-namespaces",
            &[
                "--set",
                "replicaCount=2",
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "watchNamespaces={team-a,team-b}",
            ],
        ),
    ];
    for (name, extra) in renders {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, template(extra).unwrap()).unwrap();
        let (resources, failed) = checkov_failures(&checkov, &file, &skips).unwrap();
        assert!(
            resources >= 6,
            "{name}: checkov scanned {resources} resources"
        );
        assert!(
            failed.is_empty(),
            "{name}: checkov failed checks (fix the chart, or skip one with its reason in the README's Checkov table):\n{}",
            failed.join("\n")
        );
    }
}

// ---- on a real API server ----

/// The operator binary, built like the other end-to-end tests build it (a no-op when fresh):
/// with the runner, as the images build does, so cargo resolves the same features and reuses
/// that build instead of compiling the operator a second time.
fn operator_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("locating the target directory")?;
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    // Without cargo's per-package variables, which would make build scripts rerun.
    let mut cmd = clothjob_e2e::harness::cargo_command();
    cmd.args([
        "build",
        "--bins",
        "-p",
        "clothjob-operator",
        "-p",
        "clothjob-runner",
    ]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if !cmd.status()?.success() {
        bail!("cargo build of the operator failed");
    }
    Ok(dir.join("clothjob-operator"))
}

fn helm_on(cp: &clothjob_testenv::ControlPlane, args: &[&str]) -> Result<Output> {
    let helm = bins::ensure_helm()?;
    Command::new(&helm)
        .args(args)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("HELM_CACHE_HOME", scratch_home().join("cache"))
        .env("HELM_CONFIG_HOME", scratch_home().join("config"))
        .env("HELM_DATA_HOME", scratch_home().join("data"))
        .output()
        .with_context(|| format!("running {}", helm.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm install` on a real API server with watchNamespaces, a PDB and the NetworkPolicy: every
/// object is accepted, the notes say how to submit a job, and the operator, running as its
/// service account with only the Roles the chart grants, syncs its caches and runs a ClothJob in
/// a watched namespace (making the runner's own ServiceAccount, Role and RoleBinding there),
/// while it never sees one outside.
/// `helm uninstall` keeps the CRD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_with_watch_namespaces_on_a_real_api_server() {
    use clothjob_api::ClothJob;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::Api;
    use std::time::Duration;

    let cp = clothjob_testenv::ControlPlane::start().await.unwrap();
    let operator = tokio::task::spawn_blocking(operator_binary)
        .await
        .unwrap()
        .unwrap();
    let mut nss = String::new();
    for ns in [NAMESPACE, "team-a", "team-b", "outside"] {
        nss.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n"
        ));
    }
    cp.apply_yaml(&nss).await.unwrap();
    let chart = chart();
    let chart = chart.to_string_lossy();

    // The schema applies to install too.
    let bad = helm_on(
        &cp,
        &[
            "install",
            RELEASE,
            chart.as_ref(),
            "-n",
            NAMESPACE,
            "--set",
            "replicaCount=two",
        ],
    )
    .unwrap();
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("at '/replicaCount': got string, want integer"),
        "{}",
        text(&bad)
    );

    let out = helm_on(
        &cp,
        &[
            "install",
            RELEASE,
            chart.as_ref(),
            "-n",
            NAMESPACE,
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "replicaCount=2",
            "--set",
            "networkPolicy.enabled=true",
        ],
    )
    .unwrap();
    assert!(out.status.success(), "helm install: {}", text(&out));
    let notes = text(&out);
    for want in [
        "It watches ClothJobs in: team-a, team-b.",
        "NS=team-a",
        "kubectl -n $NS create configmap tshirt-photo --from-file=tshirt.jpg=examples/tshirt.jpg",
        "kubectl -n $NS apply -f examples/clothjob.yaml",
        "kubectl -n $NS get cloth -w",
        "kubectl -n $NS wait --for=condition=Complete clothjob/tshirt",
    ] {
        assert!(notes.contains(want), "{want:?} not in the notes:\n{notes}");
    }
    assert!(!notes.contains("crds.install is false"));
    // A dry run of a second release without the CRD says so, and watches everything.
    let dry = helm_on(
        &cp,
        &[
            "install",
            "other",
            chart.as_ref(),
            "-n",
            NAMESPACE,
            "--dry-run=server",
            "--set",
            "crds.install=false",
        ],
    )
    .unwrap();
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains("crds.install is false"),
        "{}",
        text(&dry)
    );
    assert!(
        text(&dry).contains("It watches ClothJobs in: all namespaces."),
        "{}",
        text(&dry)
    );

    // The operator as its own service account, with the Roles only.
    let kubeconfig = cp
        .write_kubeconfig_for_service_account(NAMESPACE, "clothjob-operator")
        .await
        .unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let log = cp.dir().join("operator.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let _child = tokio::process::Command::new(&operator)
        .args(["--watch-namespaces", "team-a,team-b", "--http-addr", &http])
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let readyz = format!("http://{http}/readyz");
    clothjob_testenv::wait_for(
        "operator /readyz",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || async {
            Ok(reqwest::get(&readyz)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", logs()));

    for ns in ["team-b", "outside"] {
        cp.apply_yaml(&format!(
            "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: tshirt, namespace: {ns}}}\nspec:\n  source: {{configMapRef: {{name: tshirt-photo, key: tshirt.jpg}}}}\n  output: {{uri: 'file:///tmp/clothjob-outputs'}}\n"
        ))
        .await
        .unwrap();
    }
    let client = cp.client().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "team-b");
    clothjob_testenv::wait_for(
        "the Job in team-b",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            Ok(jobs
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .next())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", logs()));
    // The runner's own identity, made by the operator with only the namespaced Role the chart
    // grants (no `bind`, no `escalate`): a ServiceAccount, a Role and a RoleBinding named after
    // the Job, owned by the ClothJob, and the Job's pod runs as that account.
    let cj: Api<ClothJob> = Api::namespaced(client.clone(), "team-b");
    let owner_uid = cj.get("tshirt").await.unwrap().metadata.uid.unwrap();
    let job = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let job_name = job.metadata.name.clone().unwrap();
    let runner_sa = format!("{}{job_name}", clothjob_api::contract::RUNNER_SA_PREFIX);
    let pod_sa = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.service_account_name.clone());
    assert_eq!(pod_sa.as_deref(), Some(runner_sa.as_str()));
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-b");
    let roles: Api<Role> = Api::namespaced(client.clone(), "team-b");
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), "team-b");
    let sa = sas.get(&runner_sa).await.unwrap();
    let role = roles.get(&runner_sa).await.unwrap();
    let rb = rbs.get(&runner_sa).await.unwrap();
    for meta in [&sa.metadata, &role.metadata, &rb.metadata] {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ClothJob", owner_uid.as_str())
        );
    }
    for rule in role.rules.unwrap() {
        assert_eq!(rule.resource_names, Some(vec!["tshirt".to_string()]));
    }
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", runner_sa.as_str())
    );
    assert!(
        sas.get_opt("clothjob-runner").await.unwrap().is_none(),
        "no shared runner account"
    );
    clothjob_testenv::wait_for(
        "team-b's ClothJob status",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { Ok(cj.get("tshirt").await?.status.and_then(|s| s.phase)) },
    )
    .await
    .unwrap();
    // Outside the list: never seen.
    let outside: Api<Job> = Api::namespaced(client.clone(), "outside");
    assert!(
        outside
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let outside_cj: Api<ClothJob> = Api::namespaced(client.clone(), "outside");
    assert!(outside_cj.get("tshirt").await.unwrap().status.is_none());
    assert!(!logs().contains("forbidden"), "operator log:\n{}", logs());

    let out = helm_on(&cp, &["uninstall", RELEASE, "-n", NAMESPACE]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = crds.get("clothjobs.closetconnect.io").await.unwrap();
    assert!(
        crd.metadata.deletion_timestamp.is_none(),
        "the CRD is kept on uninstall"
    );
}
