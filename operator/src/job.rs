//! Builds the batch/v1 Job that runs the runner for a ClothJob (pure: no API calls).

use std::collections::BTreeMap;

use clothjob_api::{ClothJob, contract};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvFromSource, EnvVar, EnvVarSource, KeyToPath,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, SecretEnvSource, SecretKeySelector,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::config::OperatorConfig;
use crate::error::Error;

/// Where a Secret or ConfigMap source is mounted in the runner container.
pub const SOURCE_MOUNT: &str = "/var/run/clothjob/source";
/// Env var telling the runner the file holding a Secret or ConfigMap source.
pub const ENV_SOURCE_FILE: &str = "CLOTHJOB_SOURCE_FILE";
/// Env var holding the Gemini API key (from the Secret named in the spec).
pub const ENV_GEMINI_API_KEY: &str = "GEMINI_API_KEY";

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

/// The standard labels of the objects made for a ClothJob.
pub fn labels(cj: &ClothJob) -> BTreeMap<String, String> {
    let name = cj.metadata.name.clone().unwrap_or_default();
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            contract::APP_NAME.to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            name.chars().take(63).collect(),
        ),
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
        (
            contract::LABEL_CLOTHJOB.to_string(),
            name.chars().take(63).collect(),
        ),
        (
            contract::LABEL_CLOTHJOB_UID.to_string(),
            cj.metadata.uid.clone().unwrap_or_default(),
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

/// Builds the Job: one pod at a time, `backoffLimit` = retries, the spec's deadline, and a
/// podFailurePolicy that fails at once on the runner's bad-input exit code, ignores
/// disruptions (evictions, preemption) and retries every other failure.
pub fn build_job(cj: &ClothJob, cfg: &OperatorConfig) -> Result<Job, Error> {
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
    ];
    let mut volumes: Vec<Volume> = Vec::new();
    let mut mounts: Vec<VolumeMount> = Vec::new();
    let items = |key: &str| {
        Some(vec![KeyToPath {
            key: key.to_string(),
            path: "image".to_string(),
            ..Default::default()
        }])
    };
    if let Some(r) = &spec.source.secret_ref {
        volumes.push(Volume {
            name: "clothjob-source".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(r.name.clone()),
                items: items(&r.key),
                ..Default::default()
            }),
            ..Default::default()
        });
    } else if let Some(r) = &spec.source.config_map_ref {
        volumes.push(Volume {
            name: "clothjob-source".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: r.name.clone(),
                items: items(&r.key),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if !volumes.is_empty() {
        mounts.push(VolumeMount {
            name: "clothjob-source".to_string(),
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
    envs.extend(runner.env.iter().flatten().cloned());
    let env_from = spec.output.credentials_secret_name.as_ref().map(|secret| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]
    });
    for v in runner.volumes.iter().flatten() {
        let v: Volume = serde_json::from_value(v.clone()).map_err(|source| Error::Serialize {
            what: "spec.runner.volumes",
            source,
        })?;
        volumes.push(v);
    }
    for m in runner.volume_mounts.iter().flatten() {
        let m: VolumeMount =
            serde_json::from_value(m.clone()).map_err(|source| Error::Serialize {
                what: "spec.runner.volumeMounts",
                source,
            })?;
        mounts.push(m);
    }

    let labels = labels(cj);
    let container = Container {
        name: contract::RUNNER_CONTAINER.to_string(),
        image: Some(
            runner
                .image
                .clone()
                .unwrap_or_else(|| cfg.runner_image.clone()),
        ),
        image_pull_policy: runner.image_pull_policy.clone(),
        command: Some(vec!["clothjob-runner".to_string()]),
        args: Some(vec!["run".to_string()]),
        env: Some(envs),
        env_from,
        resources: runner.resources.clone(),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        termination_message_path: Some(contract::TERMINATION_MESSAGE_PATH.to_string()),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    let pod_spec = PodSpec {
        restart_policy: Some("Never".to_string()),
        service_account_name: Some(
            runner
                .service_account_name
                .clone()
                .unwrap_or_else(|| cfg.runner_service_account.clone()),
        ),
        containers: vec![container],
        volumes: (!volumes.is_empty()).then_some(volumes),
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
                    values: vec![contract::EXIT_BAD_INPUT],
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
            active_deadline_seconds: spec.active_deadline_seconds,
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
            vec![contract::EXIT_BAD_INPUT]
        );
        assert_eq!(rules[1].action, "Ignore");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(contract::DEFAULT_RUNNER_SERVICE_ACCOUNT)
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
        let v = &pod.volumes.unwrap()[0];
        let s = v.secret.as_ref().unwrap();
        assert_eq!(s.secret_name.as_deref(), Some("photos"));
        assert_eq!(s.items.as_ref().unwrap()[0].key, "shirt.jpg");
        let c = &pod.containers[0];
        assert_eq!(
            c.volume_mounts.as_ref().unwrap()[0].mount_path,
            SOURCE_MOUNT
        );
        assert!(c.env.iter().flatten().any(|e| e.name == ENV_SOURCE_FILE
            && e.value.as_deref() == Some("/var/run/clothjob/source/image")));
    }

    #[test]
    fn runner_settings_and_credentials_reach_the_pod() {
        let job = build_job(
            &cj("  source: {uri: 's3://b/k.jpg'}\n  output: {uri: 's3://b/out', credentialsSecretName: s3-creds}\n  runner: {image: 'my/runner:1', nodeSelector: {pool: gpu}, serviceAccountName: custom, volumes: [{name: m, emptyDir: {}}], volumeMounts: [{name: m, mountPath: /models}]}\n"),
            &OperatorConfig::defaults(),
        )
        .unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("custom"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "gpu");
        assert_eq!(pod.volumes.unwrap()[0].name, "m");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("my/runner:1"));
        assert_eq!(
            c.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "s3-creds"
        );
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/models");
    }
}
