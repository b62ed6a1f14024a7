//! Builds the batch/v1 Job that runs the runner for a ClothJob (pure: no API calls), under the
//! operator's policy: the image and service account from allow-lists, only the allowed volume
//! sources, no override of the operator's paths and variables, and the restricted Pod Security
//! profile (non-root, read-only root filesystem with an emptyDir at /tmp, no capabilities,
//! seccomp RuntimeDefault, no privilege escalation).

use std::collections::BTreeMap;

use clothjob_api::{ClothJob, RunnerEnvVar, RunnerVolume, RunnerVolumeMount, contract};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, KeyToPath, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecretEnvSource, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::config::OperatorConfig;
use crate::error::Error;

/// Where a Secret or ConfigMap source is mounted in the runner container.
pub const SOURCE_MOUNT: &str = "/var/run/clothjob/source";
/// Env var telling the runner the file holding a Secret or ConfigMap source.
pub const ENV_SOURCE_FILE: &str = "CLOTHJOB_SOURCE_FILE";
/// Env var holding the Gemini API key (from the Secret named in the spec).
pub const ENV_GEMINI_API_KEY: &str = "GEMINI_API_KEY";
/// The runner's scratch directory: an emptyDir (the root filesystem is read-only), also its
/// `TMPDIR` and `HOME`.
pub const SCRATCH_DIR: &str = "/tmp";
/// Name of the scratch emptyDir volume.
pub const SCRATCH_VOLUME: &str = "clothjob-tmp";
/// Name of the volume of a Secret or ConfigMap source.
pub const SOURCE_VOLUME: &str = "clothjob-source";
/// User and group the runner runs as (the runner image's `nonroot`).
pub const RUNNER_UID: i64 = 65532;

/// The deterministic name of the Job of a ClothJob: its name (cut to 52 characters) and the
/// first 8 characters of its uid, so a re-created ClothJob of the same name never adopts the
/// previous one's Job.
pub fn job_name(cj: &ClothJob) -> Result<String, Error> {
    let name = cj
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    let uid = cj
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingMetadata("uid"))?;
    let short: String = name.chars().take(52).collect();
    let short = short.trim_end_matches(['-', '.']);
    let uid8: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    Ok(format!("{short}-{uid8}"))
}

/// A label value from `s`: at most 63 characters, not ending in `-`, `_` or `.` (a label value
/// must begin and end with a letter or digit).
pub fn label_value(s: &str) -> String {
    let cut: String = s.chars().take(63).collect();
    cut.trim_end_matches(['-', '_', '.']).to_string()
}

/// The standard labels of the objects made for a ClothJob.
pub fn labels(cj: &ClothJob) -> BTreeMap<String, String> {
    let name = label_value(cj.metadata.name.as_deref().unwrap_or_default());
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            contract::APP_NAME.to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), name.clone()),
        (
            "app.kubernetes.io/component".to_string(),
            "runner".to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "clothjob".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            contract::MANAGED_BY.to_string(),
        ),
        (contract::LABEL_CLOTHJOB.to_string(), name),
        (
            contract::LABEL_CLOTHJOB_UID.to_string(),
            label_value(cj.metadata.uid.as_deref().unwrap_or_default()),
        ),
    ])
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..Default::default()
    }
}

fn invalid(msg: String) -> Result<(), Error> {
    Err(Error::InvalidSpec(msg))
}

/// Checks `spec.runner` against the operator's policy: an image other than the configured
/// runner image must be in `--allowed-runner-images`, a service account in
/// `--allowed-runner-service-accounts`; env names, volume sources and mount paths as the
/// CRD's CEL rules say (checked again here, for objects stored before those rules existed).
/// Any violation is [`Error::InvalidSpec`]: the ClothJob fails, nothing is created.
pub fn check_runner_policy(cj: &ClothJob, cfg: &OperatorConfig) -> Result<(), Error> {
    let runner = &cj.spec.runner;
    if let Some(image) = &runner.image {
        let allowed = cfg.runner_images();
        if !allowed.iter().any(|a| a == image) {
            return invalid(format!(
                "spec.runner.image {image:?} is not allowed; the operator allows {} (its --allowed-runner-images, Helm value allowedRunnerImages)",
                allowed.join(", ")
            ));
        }
    }
    if let Some(sa) = &runner.service_account_name {
        let allowed = cfg.runner_service_accounts();
        if !allowed.iter().any(|a| a == sa) {
            let list = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            };
            return invalid(format!(
                "spec.runner.serviceAccountName {sa:?} is not allowed; the operator allows {list} (its --allowed-runner-service-accounts, Helm value allowedRunnerServiceAccounts)"
            ));
        }
    }
    for e in runner.env.iter().flatten() {
        check_env(e)?;
    }
    let volumes = runner.volumes.as_deref().unwrap_or_default();
    for v in volumes {
        check_volume(v)?;
    }
    for m in runner.volume_mounts.iter().flatten() {
        check_mount(m, volumes)?;
    }
    Ok(())
}

fn check_env(e: &RunnerEnvVar) -> Result<(), Error> {
    if clothjob_api::is_reserved_env_name(&e.name) {
        return invalid(format!(
            "spec.runner.env may not set {}: CLOTHJOB_*, LD_*, GEMINI_API_KEY, POD_NAME, TMPDIR, HOME and ORT_DYLIB_PATH are the operator's",
            e.name
        ));
    }
    if let Some(from) = &e.value_from {
        let n = [
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.field_ref.is_some(),
        ]
        .into_iter()
        .filter(|x| *x)
        .count();
        if n != 1 || e.value.is_some() {
            return invalid(format!(
                "spec.runner.env {}: valueFrom needs exactly one of configMapKeyRef, secretKeyRef or fieldRef, and no value",
                e.name
            ));
        }
    }
    Ok(())
}

fn check_volume(v: &RunnerVolume) -> Result<(), Error> {
    let n = [
        v.config_map.is_some(),
        v.secret.is_some(),
        v.empty_dir.is_some(),
        v.persistent_volume_claim.is_some(),
        v.csi.is_some(),
    ]
    .into_iter()
    .filter(|x| *x)
    .count();
    if n != 1 {
        return invalid(format!(
            "spec.runner.volumes {}: needs exactly one of configMap, secret, emptyDir, persistentVolumeClaim or csi",
            v.name
        ));
    }
    if v.csi.as_ref().is_some_and(|c| c.read_only != Some(true)) {
        return invalid(format!(
            "spec.runner.volumes {}: a csi volume must be readOnly: true",
            v.name
        ));
    }
    if v.name.starts_with("clothjob-") {
        return invalid(format!(
            "spec.runner.volumes {}: names starting with clothjob- are the operator's",
            v.name
        ));
    }
    Ok(())
}

fn check_mount(m: &RunnerVolumeMount, volumes: &[RunnerVolume]) -> Result<(), Error> {
    let relative = !m.mount_path.starts_with('/');
    let dots = m.mount_path.split('/').any(|p| p == "." || p == "..");
    if relative || dots || clothjob_api::is_reserved_mount_path(&m.mount_path) {
        return invalid(format!(
            "spec.runner.volumeMounts {}: mountPath {} must be absolute, without '.' or '..' parts, and not at, under or above /tmp, /var/run/clothjob, /var/run/secrets or /dev",
            m.name, m.mount_path
        ));
    }
    if m.sub_path
        .as_deref()
        .is_some_and(|p| p.starts_with('/') || p.split('/').any(|s| s == ".."))
    {
        return invalid(format!(
            "spec.runner.volumeMounts {}: subPath must be relative, without '..' parts",
            m.name
        ));
    }
    if !volumes.iter().any(|v| v.name == m.name) {
        return invalid(format!(
            "spec.runner.volumeMounts {}: no runner volume of that name",
            m.name
        ));
    }
    Ok(())
}

/// The service account the runner pod runs as: the allowed one the spec names, else the
/// ClothJob's own (see [`crate::access`]).
pub fn pod_service_account(cj: &ClothJob) -> Result<String, Error> {
    match &cj.spec.runner.service_account_name {
        Some(sa) => Ok(sa.clone()),
        None => crate::access::runner_service_account(cj),
    }
}

fn runner_volume(v: &RunnerVolume) -> Volume {
    Volume {
        name: v.name.clone(),
        config_map: v.config_map.clone(),
        secret: v.secret.clone(),
        empty_dir: v.empty_dir.clone(),
        persistent_volume_claim: v.persistent_volume_claim.clone(),
        csi: v.csi.clone(),
        ..Default::default()
    }
}

fn runner_mount(m: &RunnerVolumeMount) -> VolumeMount {
    VolumeMount {
        name: m.name.clone(),
        mount_path: m.mount_path.clone(),
        read_only: m.read_only,
        sub_path: m.sub_path.clone(),
        ..Default::default()
    }
}

fn runner_env(e: &RunnerEnvVar) -> EnvVar {
    EnvVar {
        name: e.name.clone(),
        value: e.value.clone(),
        value_from: e.value_from.as_ref().map(|f| EnvVarSource {
            config_map_key_ref: f.config_map_key_ref.clone(),
            secret_key_ref: f.secret_key_ref.clone(),
            field_ref: f.field_ref.clone(),
            ..Default::default()
        }),
    }
}

/// The restricted Pod Security profile's pod-level settings.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUNNER_UID),
        run_as_group: Some(RUNNER_UID),
        fs_group: Some(RUNNER_UID),
        fs_group_change_policy: Some("OnRootMismatch".to_string()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The restricted Pod Security profile's container-level settings, plus a read-only root.
fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Default::default()
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUNNER_UID),
        run_as_group: Some(RUNNER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub use clothjob_api::contract::{ENV_TRACEPARENT, TRACEPARENT_ANNOTATION};

/// Whether `v` is a W3C traceparent of version 00 with non-zero trace and parent ids.
fn valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    matches!(parts.as_slice(), [ver, trace, parent, flags]
        if *ver == "00" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && parent.bytes().any(|b| b != b'0'))
}

/// The runner's `traceparent`: the ClothJob's annotation when it is valid, else one derived
/// from the uid (trace id: the uid's 32 hex digits; parent id: its last 16), the same for
/// every attempt and every operator replica.
pub fn traceparent(cj: &ClothJob, uid: &str) -> String {
    if let Some(v) = cj.annotations().get(TRACEPARENT_ANNOTATION)
        && valid_traceparent(v.trim())
    {
        return v.trim().to_string();
    }
    let mut hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() < 32 || hex.bytes().all(|b| b == b'0') {
        // Not a UUID: a fixed id rather than none (the env stays well-formed).
        hex = format!("{hex:0>31}1");
    }
    let trace = &hex[hex.len() - 32..];
    let parent = match &trace[16..] {
        p if p.bytes().all(|b| b == b'0') => "0000000000000001",
        p => p,
    };
    format!("00-{trace}-{parent}-01")
}

/// Builds the Job: one pod at a time, `backoffLimit` = retries, the spec's deadline (or the
/// operator's default), and a podFailurePolicy that fails at once on the runner's bad-input
/// and invalid-spec exit codes, ignores disruptions (evictions, preemption) and retries every
/// other failure. Fails with [`Error::InvalidSpec`] when the spec breaks the operator's policy
/// ([`check_runner_policy`]).
pub fn build_job(cj: &ClothJob, cfg: &OperatorConfig) -> Result<Job, Error> {
    check_runner_policy(cj, cfg)?;
    let namespace = cj
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = cj
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let uid = cj
        .metadata
        .uid
        .clone()
        .ok_or(Error::MissingMetadata("uid"))?;
    let owner = cj
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let spec = &cj.spec;
    let runner = &spec.runner;

    let mut envs = vec![
        env(contract::ENV_NAMESPACE, &namespace),
        env(contract::ENV_NAME, &name),
        env(contract::ENV_UID, &uid),
        EnvVar {
            name: contract::ENV_POD_NAME.to_string(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        env(contract::ENV_SCRATCH_DIR, SCRATCH_DIR),
        env("TMPDIR", SCRATCH_DIR),
        env("HOME", SCRATCH_DIR),
    ];
    envs.push(env(ENV_TRACEPARENT, &traceparent(cj, &uid)));
    // The operator's own OTLP endpoint (never one from the ClothJob), only when set.
    if let Some(endpoint) = cfg
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        envs.push(env(clothjob_telemetry::ENV_OTLP_ENDPOINT, endpoint.trim()));
    }
    // Runners wait for a reuse decision only when this operator makes one.
    if cfg.reuse_window_seconds > 0 && spec.reuse != clothjob_api::ReusePolicy::Never {
        envs.push(env(contract::ENV_REUSE, "true"));
    }
    let networks = cfg.networks();
    if !networks.is_empty() {
        envs.push(env(contract::ENV_ALLOWED_NETWORKS, &networks.join(",")));
    }
    let mut volumes: Vec<Volume> = vec![Volume {
        name: SCRATCH_VOLUME.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts: Vec<VolumeMount> = vec![VolumeMount {
        name: SCRATCH_VOLUME.to_string(),
        mount_path: SCRATCH_DIR.to_string(),
        ..Default::default()
    }];
    let items = |key: &str| {
        Some(vec![KeyToPath {
            key: key.to_string(),
            path: "image".to_string(),
            ..Default::default()
        }])
    };
    let source_volume = if let Some(r) = &spec.source.secret_ref {
        Some(Volume {
            name: SOURCE_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(r.name.clone()),
                items: items(&r.key),
                ..Default::default()
            }),
            ..Default::default()
        })
    } else {
        spec.source.config_map_ref.as_ref().map(|r| Volume {
            name: SOURCE_VOLUME.to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: r.name.clone(),
                items: items(&r.key),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    if let Some(v) = source_volume {
        volumes.push(v);
        mounts.push(VolumeMount {
            name: SOURCE_VOLUME.to_string(),
            mount_path: SOURCE_MOUNT.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
        envs.push(env(ENV_SOURCE_FILE, &format!("{SOURCE_MOUNT}/image")));
    }
    if let Some(g) = &spec.pipeline.expansion.gemini {
        envs.push(EnvVar {
            name: ENV_GEMINI_API_KEY.to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: g.api_key_secret_ref.name.clone(),
                    key: g.api_key_secret_ref.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    envs.extend(runner.env.iter().flatten().map(runner_env));
    let env_from = spec.output.credentials_secret_name.as_ref().map(|secret| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]
    });
    volumes.extend(runner.volumes.iter().flatten().map(runner_volume));
    mounts.extend(runner.volume_mounts.iter().flatten().map(runner_mount));

    let labels = labels(cj);
    let container = Container {
        name: contract::RUNNER_CONTAINER.to_string(),
        image: Some(
            runner
                .image
                .clone()
                .unwrap_or_else(|| cfg.runner_image.clone()),
        ),
        image_pull_policy: runner.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec!["clothjob-runner".to_string()]),
        args: Some(vec!["run".to_string()]),
        env: Some(envs),
        env_from,
        resources: runner.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(container_security_context()),
        termination_message_path: Some(contract::TERMINATION_MESSAGE_PATH.to_string()),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    let pod_spec = PodSpec {
        restart_policy: Some("Never".to_string()),
        service_account_name: Some(pod_service_account(cj)?),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        containers: vec![container],
        volumes: Some(volumes),
        node_selector: runner.node_selector.clone(),
        tolerations: runner.tolerations.clone(),
        ..Default::default()
    };
    let policy = PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "FailJob".to_string(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(contract::RUNNER_CONTAINER.to_string()),
                    operator: "In".to_string(),
                    values: vec![contract::EXIT_BAD_INPUT, contract::EXIT_INVALID_SPEC],
                }),
                on_pod_conditions: None,
            },
            PodFailurePolicyRule {
                action: "Ignore".to_string(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".to_string(),
                    status: Some("True".to_string()),
                }]),
            },
        ],
    };
    let deadline = spec
        .active_deadline_seconds
        .or((cfg.default_active_deadline_seconds > 0)
            .then_some(cfg.default_active_deadline_seconds));
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj)?),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(spec.retries.max(0)),
            completions: Some(1),
            parallelism: Some(1),
            active_deadline_seconds: deadline,
            pod_failure_policy: Some(policy),
            pod_replacement_policy: Some("Failed".to_string()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cj(extra_spec: &str) -> ClothJob {
        let output = if extra_spec.contains("output:") {
            ""
        } else {
            "  output: {uri: 'file:///out'}\n"
        };
        let yaml = format!(
            "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: tshirt, namespace: closet, uid: 3f2a9c1b-aaaa-4000-8000-000000000001}}\nspec:\n{output}{extra_spec}"
        );
        serde_yaml::from_str(&yaml).unwrap()
    }

    #[test]
    fn job_names_are_deterministic_bounded_and_uid_bound() {
        let a = cj("  source: {url: 'http://x/y.jpg'}\n");
        assert_eq!(job_name(&a).unwrap(), "tshirt-3f2a9c1b");
        let mut long = a.clone();
        long.metadata.name = Some("x".repeat(200));
        let n = job_name(&long).unwrap();
        assert!(n.len() <= 61, "{n}");
        assert!(n.ends_with("-3f2a9c1b"));
    }

    #[test]
    fn the_job_retries_with_backoff_and_fails_at_once_on_bad_input() {
        let job = build_job(
            &cj("  source: {url: 'http://x/y.jpg'}\n  retries: 3\n  activeDeadlineSeconds: 600\n"),
            &OperatorConfig::defaults(),
        )
        .unwrap();
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(3));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!((spec.parallelism, spec.completions), (Some(1), Some(1)));
        let rules = spec.pod_failure_policy.unwrap().rules;
        assert_eq!(rules[0].action, "FailJob");
        assert_eq!(
            rules[0].on_exit_codes.as_ref().unwrap().values,
            vec![contract::EXIT_BAD_INPUT, contract::EXIT_INVALID_SPEC]
        );
        assert_eq!(rules[1].action, "Ignore");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("clothjob-runner-tshirt-3f2a9c1b"),
            "the ClothJob's own service account"
        );
        let c = &pod.containers[0];
        assert_eq!(c.name, contract::RUNNER_CONTAINER);
        assert_eq!(c.args.as_deref(), Some(&["run".to_string()][..]));
        let env: BTreeMap<_, _> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.clone()))
            .collect();
        assert_eq!(env[contract::ENV_NAME].as_deref(), Some("tshirt"));
        assert_eq!(
            env[contract::ENV_UID].as_deref(),
            Some("3f2a9c1b-aaaa-4000-8000-000000000001")
        );
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ClothJob", Some(true))
        );
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], contract::MANAGED_BY);
        assert_eq!(labels[contract::LABEL_CLOTHJOB], "tshirt");
    }

    #[test]
    fn secret_sources_are_mounted_not_read_through_the_api() {
        let job = build_job(
            &cj("  source: {secretRef: {name: photos, key: shirt.jpg}}\n"),
            &OperatorConfig::defaults(),
        )
        .unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        let v = volumes.iter().find(|v| v.name == SOURCE_VOLUME).unwrap();
        let s = v.secret.as_ref().unwrap();
        assert_eq!(s.secret_name.as_deref(), Some("photos"));
        assert_eq!(s.items.as_ref().unwrap()[0].key, "shirt.jpg");
        let c = &pod.containers[0];
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == SOURCE_VOLUME && m.mount_path == SOURCE_MOUNT)
        );
        assert!(c.env.iter().flatten().any(|e| e.name == ENV_SOURCE_FILE
            && e.value.as_deref() == Some("/var/run/clothjob/source/image")));
    }

    fn allowing(images: &[&str], sas: &[&str]) -> OperatorConfig {
        OperatorConfig {
            allowed_runner_images: images.iter().map(|s| s.to_string()).collect(),
            allowed_runner_service_accounts: sas.iter().map(|s| s.to_string()).collect(),
            ..OperatorConfig::defaults()
        }
    }

    fn invalid_spec(cj: &ClothJob, cfg: &OperatorConfig) -> String {
        match build_job(cj, cfg) {
            Err(Error::InvalidSpec(msg)) => msg,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn runner_settings_and_credentials_reach_the_pod() {
        let job = build_job(
            &cj("  source: {uri: 's3://b/k.jpg'}\n  output: {uri: 's3://b/out', credentialsSecretName: s3-creds}\n  runner: {image: 'my/runner:1', imagePullPolicy: IfNotPresent, nodeSelector: {pool: gpu}, serviceAccountName: custom, env: [{name: RUST_LOG, value: debug}, {name: AWS_REGION, valueFrom: {configMapKeyRef: {name: cfg, key: region}}}], volumes: [{name: m, persistentVolumeClaim: {claimName: models}}], volumeMounts: [{name: m, mountPath: /models, readOnly: true}]}\n"),
            &allowing(&["my/runner:1"], &["custom"]),
        )
        .unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("custom"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "gpu");
        let volumes = pod.volumes.unwrap();
        let m = volumes.iter().find(|v| v.name == "m").unwrap();
        assert_eq!(
            m.persistent_volume_claim.as_ref().unwrap().claim_name,
            "models"
        );
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("my/runner:1"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "s3-creds"
        );
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "m")
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/models", Some(true))
        );
        let env = c.env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug"))
        );
        let region = env.iter().find(|e| e.name == "AWS_REGION").unwrap();
        let from = region.value_from.as_ref().unwrap();
        assert_eq!(from.config_map_key_ref.as_ref().unwrap().key, "region");
    }

    #[test]
    fn only_allowed_images_and_service_accounts_are_used() {
        let spec = "  source: {url: 'http://x/y.jpg'}\n  runner: {image: 'evil/miner:1'}\n";
        let msg = invalid_spec(&cj(spec), &OperatorConfig::defaults());
        assert!(
            msg.contains("spec.runner.image \"evil/miner:1\" is not allowed"),
            "{msg}"
        );
        assert!(msg.contains(contract::DEFAULT_RUNNER_IMAGE), "{msg}");
        assert!(build_job(&cj(spec), &allowing(&["evil/miner:1"], &[])).is_ok());
        // The configured runner image may always be named.
        let named = format!(
            "  source: {{url: 'http://x/y.jpg'}}\n  runner: {{image: '{}'}}\n",
            contract::DEFAULT_RUNNER_IMAGE
        );
        assert!(build_job(&cj(&named), &OperatorConfig::defaults()).is_ok());

        let spec = "  source: {url: 'http://x/y.jpg'}\n  runner: {serviceAccountName: default}\n";
        let msg = invalid_spec(&cj(spec), &OperatorConfig::defaults());
        assert!(
            msg.contains("\"default\" is not allowed; the operator allows none"),
            "{msg}"
        );
        let msg = invalid_spec(&cj(spec), &allowing(&[], &["models-reader"]));
        assert!(msg.contains("allows models-reader"), "{msg}");
    }

    #[test]
    fn reserved_env_volumes_and_mounts_are_invalid_specs() {
        let cfg = OperatorConfig::defaults();
        for (runner, want) in [
            (
                "{env: [{name: CLOTHJOB_UID, value: x}]}",
                "may not set CLOTHJOB_UID",
            ),
            ("{env: [{name: HOME, value: /root}]}", "may not set HOME"),
            (
                "{env: [{name: LD_PRELOAD, value: /x.so}]}",
                "may not set LD_PRELOAD",
            ),
            (
                "{env: [{name: A, valueFrom: {}}]}",
                "exactly one of configMapKeyRef",
            ),
            (
                "{volumes: [{name: h, hostPath: {path: /}}]}",
                "exactly one of configMap, secret",
            ),
            (
                "{volumes: [{name: c, csi: {driver: d}}]}",
                "must be readOnly: true",
            ),
            (
                "{volumes: [{name: clothjob-tmp, emptyDir: {}}]}",
                "are the operator's",
            ),
            (
                "{volumes: [{name: s, emptyDir: {}}], volumeMounts: [{name: s, mountPath: /tmp}]}",
                "mountPath /tmp",
            ),
            (
                "{volumes: [{name: s, emptyDir: {}}], volumeMounts: [{name: s, mountPath: /var/run}]}",
                "mountPath /var/run",
            ),
            (
                "{volumes: [{name: s, emptyDir: {}}], volumeMounts: [{name: s, mountPath: /data/../tmp}]}",
                "mountPath /data/../tmp",
            ),
            (
                "{volumes: [{name: s, emptyDir: {}}], volumeMounts: [{name: s, mountPath: /x, subPath: ../y}]}",
                "subPath",
            ),
            (
                "{volumeMounts: [{name: nope, mountPath: /data}]}",
                "no runner volume",
            ),
        ] {
            let spec = format!("  source: {{url: 'http://x/y.jpg'}}\n  runner: {runner}\n");
            let msg = invalid_spec(&cj(&spec), &cfg);
            assert!(msg.contains(want), "{runner}: {want:?} not in {msg}");
        }
    }

    #[test]
    fn the_pod_runs_under_the_restricted_profile_with_a_scratch_tmp() {
        let job = build_job(
            &cj("  source: {configMapRef: {name: photos, key: a.jpg}}\n"),
            &OperatorConfig::defaults(),
        )
        .unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            (psc.run_as_user, psc.run_as_group),
            (Some(65532), Some(65532))
        );
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.enable_service_links, Some(false));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            (sc.run_as_user, sc.run_as_group),
            (Some(65532), Some(65532))
        );
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert!(sc.capabilities.as_ref().unwrap().add.is_none());
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let volumes = pod.volumes.as_ref().unwrap();
        let tmp = volumes.iter().find(|v| v.name == SCRATCH_VOLUME).unwrap();
        assert!(tmp.empty_dir.is_some());
        // Only volume types the restricted profile allows.
        for v in volumes {
            assert!(
                v.empty_dir.is_some() || v.config_map.is_some() || v.secret.is_some(),
                "{v:?}"
            );
        }
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == SCRATCH_VOLUME && m.mount_path == "/tmp")
        );
        let env: BTreeMap<_, _> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(env["TMPDIR"], Some("/tmp"));
        assert_eq!(env["HOME"], Some("/tmp"));
        assert_eq!(env[contract::ENV_SCRATCH_DIR], Some("/tmp"));
        assert!(!env.contains_key(contract::ENV_ALLOWED_NETWORKS));
    }

    #[test]
    fn the_runner_takes_part_in_reuse_only_when_the_operator_decides_it() {
        let reuse = |cfg: &OperatorConfig, extra: &str| {
            let job = build_job(
                &cj(&format!("  source: {{url: 'http://x/y.jpg'}}\n{extra}")),
                cfg,
            )
            .unwrap();
            let c = job.spec.unwrap().template.spec.unwrap().containers[0].clone();
            c.env
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.name == contract::ENV_REUSE)
                .and_then(|e| e.value)
        };
        let on = OperatorConfig::defaults();
        assert_eq!(reuse(&on, "").as_deref(), Some("true"));
        assert_eq!(reuse(&on, "  reuse: Never\n"), None);
        let off = OperatorConfig {
            reuse_window_seconds: 0,
            ..OperatorConfig::defaults()
        };
        assert_eq!(reuse(&off, ""), None);
    }

    #[test]
    fn the_runner_gets_the_operators_otlp_endpoint_only_when_set() {
        let otlp = |cfg: &OperatorConfig| {
            let job = build_job(&cj("  source: {url: 'http://x/y.jpg'}\n"), cfg).unwrap();
            let c = job.spec.unwrap().template.spec.unwrap().containers[0].clone();
            c.env
                .into_iter()
                .flatten()
                .find(|e| e.name == clothjob_telemetry::ENV_OTLP_ENDPOINT)
                .and_then(|e| e.value)
        };
        assert_eq!(otlp(&OperatorConfig::defaults()), None);
        let empty = OperatorConfig {
            otlp_endpoint: Some(String::new()),
            ..OperatorConfig::defaults()
        };
        assert_eq!(otlp(&empty), None);
        let set = OperatorConfig {
            otlp_endpoint: Some("http://otel-collector.monitoring:4318".into()),
            ..OperatorConfig::defaults()
        };
        assert_eq!(
            otlp(&set).as_deref(),
            Some("http://otel-collector.monitoring:4318")
        );
    }

    #[test]
    fn allowed_networks_and_the_default_deadline_reach_the_job() {
        let cfg = OperatorConfig {
            allowed_networks: vec!["127.0.0.0/8".into(), "198.18.0.0/15".into()],
            ..OperatorConfig::defaults()
        };
        let job = build_job(&cj("  source: {url: 'http://x/y.jpg'}\n"), &cfg).unwrap();
        let spec = job.spec.unwrap();
        assert_eq!(
            spec.active_deadline_seconds,
            Some(3600),
            "the operator's default"
        );
        let c = &spec.template.spec.unwrap().containers[0];
        let nets = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == contract::ENV_ALLOWED_NETWORKS)
            .unwrap();
        assert_eq!(nets.value.as_deref(), Some("127.0.0.0/8,198.18.0.0/15"));
        // The ClothJob's own deadline wins; 0 means no default.
        let own = cj("  source: {url: 'http://x/y.jpg'}\n  activeDeadlineSeconds: 60\n");
        let job = build_job(&own, &cfg).unwrap();
        assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(60));
        let none = OperatorConfig {
            default_active_deadline_seconds: 0,
            ..OperatorConfig::defaults()
        };
        let job = build_job(&cj("  source: {url: 'http://x/y.jpg'}\n"), &none).unwrap();
        assert_eq!(job.spec.unwrap().active_deadline_seconds, None);
    }

    #[test]
    fn label_values_cut_to_63_never_end_in_a_separator() {
        // 62 letters, then '-': cut to 63 characters it would end in '-'.
        let name = format!("{}-{}", "a".repeat(62), "b".repeat(7));
        assert_eq!(name.len(), 70);
        let mut c = cj("  source: {url: 'http://x/y.jpg'}\n");
        c.metadata.name = Some(name);
        let labels = labels(&c);
        for key in ["app.kubernetes.io/instance", contract::LABEL_CLOTHJOB] {
            assert_eq!(labels[key], "a".repeat(62), "{key}");
        }
        assert_eq!(label_value("x._-"), "x");
        assert_eq!(
            label_value(&format!("{}.b", "a".repeat(62))),
            "a".repeat(62)
        );
        for v in labels.values() {
            assert!(v.len() <= 63);
            assert!(!v.ends_with(['-', '_', '.']), "{v}");
        }
        // The Job for such a name is valid too.
        let job = build_job(&c, &OperatorConfig::defaults()).unwrap();
        assert!(job.metadata.name.unwrap().len() <= 63);
    }

    #[test]
    fn the_runner_gets_the_annotated_traceparent_or_one_from_the_uid() {
        let mut cj = ClothJob::new(
            "a",
            serde_json::from_value(serde_json::json!({
                "source": {"url": "https://example.com/a.jpg"},
                "output": {"uri": "file:///out"}
            }))
            .unwrap(),
        );
        let uid = "3F2A9C1B-0000-4000-8000-00000000abcd";
        assert_eq!(
            traceparent(&cj, uid),
            "00-3f2a9c1b00004000800000000000abcd-800000000000abcd-01"
        );
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        cj.metadata.annotations = Some(
            [(TRACEPARENT_ANNOTATION.to_string(), given.to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(traceparent(&cj, uid), given);
        for bad in [
            "junk",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            cj.metadata.annotations = Some(
                [(TRACEPARENT_ANNOTATION.to_string(), bad.to_string())]
                    .into_iter()
                    .collect(),
            );
            assert!(traceparent(&cj, uid).starts_with("00-3f2a9c1b"), "{bad}");
        }
        assert!(valid_traceparent(&traceparent(&cj, "not-a-uuid")));
    }
}
