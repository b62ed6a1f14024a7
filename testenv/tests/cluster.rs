//! End-to-end checks of the test environment against a real control plane shared by the tests
//! of this binary (each test uses its own namespace and its own fake node).

mod common;

use std::time::Duration;

use anyhow::Result;
use clothjob_testenv::{ControlPlane, FakeNode, NodeConfig, wait_for};
use common::{init_tracing, wait_pod_phase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

fn busybox_node(ns: &str) -> NodeConfig {
    NodeConfig::new().namespace(ns).image("busybox", "/bin/sh")
}

fn job(name: &str, script: &str, backoff_limit: i32) -> Result<Job> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "backoffLimit": backoff_limit,
            "podFailurePolicy": { "rules": [
                { "action": "FailJob", "onExitCodes": { "operator": "In", "values": [42] } }
            ]},
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "main", "image": "busybox", "command": ["sh", "-c", script] }],
            }},
        },
    }))?)
}

/// Waits for a Job condition of `type_` with status True; returns its reason.
async fn wait_job_condition(
    jobs: &Api<Job>,
    name: &str,
    type_: &str,
    timeout: Duration,
) -> Result<String> {
    wait_for(
        &format!("job {name} condition {type_}"),
        timeout,
        Duration::from_millis(250),
        || async {
            let job = jobs.get(name).await?;
            let conds = job.status.and_then(|s| s.conditions).unwrap_or_default();
            if let Some(c) = conds
                .iter()
                .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
                && c.type_ != type_
            {
                anyhow::bail!(
                    "job {name} ended with {} ({:?}) instead of {type_}",
                    c.type_,
                    c.reason
                );
            }
            Ok(conds
                .iter()
                .find(|c| c.type_ == type_ && c.status == "True")
                .map(|c| c.reason.clone().unwrap_or_default()))
        },
    )
    .await
}

#[tokio::test]
async fn rbac_is_on_and_crds_install() -> Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace("rbac").await?;

    let sa_client = cp.client_for_service_account(&ns, "default").await?;
    let secrets: Api<Secret> = Api::namespaced(sa_client, &ns);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "unexpected status {s:?}"),
        other => panic!("expected 403, got {other:?}"),
    }

    let dir = tempfile::tempdir()?;
    assert!(cp.install_crds(dir.path()).await?.is_empty());
    std::fs::write(
        dir.path().join("widgets.yaml"),
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testenv.clothjob.dev
spec:
  group: testenv.clothjob.dev
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: { type: object, x-kubernetes-preserve-unknown-fields: true }
"#,
    )?;
    let names = cp.install_crds(dir.path()).await?;
    assert_eq!(names, vec!["widgets.testenv.clothjob.dev".to_string()]);
    cp.apply_yaml(&format!(
        "apiVersion: testenv.clothjob.dev/v1\nkind: Widget\nmetadata: {{ name: w1, namespace: {ns} }}\nspec: {{ size: 3 }}\n"
    ))
    .await?;
    let out = cp
        .kubectl()
        .args(["get", "widgets", "-n", &ns, "-o", "name"])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "widget.testenv.clothjob.dev/w1"
    );
    Ok(())
}

#[tokio::test]
async fn jobs_complete_fail_and_retry() -> Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace("jobs").await?;
    let node = FakeNode::start(cp, busybox_node(&ns)).await?;
    let jobs: Api<Job> = Api::namespaced(cp.client().await?, &ns);
    let pp = PostParams::default();

    jobs.create(&pp, &job("ok", "echo hello; exit 0", 1)?)
        .await?;
    jobs.create(&pp, &job("fatal", "exit 42", 3)?).await?;
    jobs.create(&pp, &job("flaky", "exit 3", 1)?).await?;

    assert_eq!(
        wait_job_condition(&jobs, "ok", "Complete", Duration::from_secs(60)).await?,
        "CompletionsReached"
    );
    assert_eq!(
        wait_job_condition(&jobs, "fatal", "Failed", Duration::from_secs(60)).await?,
        "PodFailurePolicy"
    );
    let fatal = jobs.get("fatal").await?;
    assert_eq!(
        fatal.status.and_then(|s| s.failed),
        Some(1),
        "exit 42 must not be retried"
    );

    assert_eq!(
        wait_job_condition(&jobs, "flaky", "Failed", Duration::from_secs(120)).await?,
        "BackoffLimitExceeded"
    );
    let flaky = jobs.get("flaky").await?;
    assert_eq!(
        flaky.status.and_then(|s| s.failed),
        Some(2),
        "exit 3 is retried once"
    );

    let pods: Api<Pod> = Api::namespaced(cp.client().await?, &ns);
    let ok_pods = pods
        .list(&ListParams::default().labels("job-name=ok"))
        .await?;
    let ok_pod = ok_pods.items.first().expect("pod of job ok");
    let name = ok_pod.metadata.name.clone().unwrap();
    assert!(node.logs(&ns, &name).contains("hello"));
    let term = ok_pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(term.exit_code, 0);
    assert_eq!(term.reason.as_deref(), Some("Completed"));
    assert_eq!(node.processes_started(), 4, "each pod runs exactly once");
    Ok(())
}

#[tokio::test]
async fn deleting_a_running_pod_kills_its_process() -> Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace("delete").await?;
    let node = FakeNode::start(cp, busybox_node(&ns)).await?;
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "sleeper" },
        "spec": { "restartPolicy": "Never", "containers": [
            { "name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "echo started; sleep 300"] }
        ]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    wait_pod_phase(&pods, "sleeper", "Running", Duration::from_secs(30)).await?;
    assert_eq!(node.process_count(), 1);
    let pid = node.pid(&ns, "sleeper").expect("pid of running pod");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    pods.delete("sleeper", &DeleteParams::default()).await?;
    wait_for(
        "pod sleeper gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { Ok(pods.get_opt("sleeper").await?.is_none().then_some(())) },
    )
    .await?;
    wait_for(
        "process gone",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            Ok((node.process_count() == 0
                && !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .then_some(()))
        },
    )
    .await?;

    Ok(())
}

/// Waits until container `main` of pod `name` is waiting with `reason`; returns the pod.
async fn wait_waiting(pods: &Api<Pod>, name: &str, reason: &str) -> Result<Pod> {
    wait_for(
        &format!("pod {name} waiting with {reason}"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let pod = pods.get(name).await?;
            let waiting = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone());
            Ok((waiting.as_deref() == Some(reason)).then_some(pod))
        },
    )
    .await
}

fn waiting_message(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default()
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// Pods that cannot start stay Pending with the reason a real kubelet gives, and start once
/// what they miss appears.
#[tokio::test]
async fn pods_that_cannot_start_stay_pending_with_the_kubelets_reason() -> Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace("pending").await?;
    let _node = FakeNode::start(cp, busybox_node(&ns)).await?;
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, &ns);
    let pp = PostParams::default();
    let pod =
        |name: &str, container: serde_json::Value, volumes: serde_json::Value| -> Result<Pod> {
            Ok(serde_json::from_value(json!({
                "metadata": { "name": name },
                "spec": { "restartPolicy": "Never", "containers": [container], "volumes": volumes },
            }))?)
        };

    // An image the node does not have: never pulled under pull policy Never, else pull errors
    // and back-off; either way the pod stays Pending.
    let never =
        json!({ "name": "main", "image": "example.invalid/nope:1", "imagePullPolicy": "Never" });
    pods.create(&pp, &pod("never-pull", never, json!([]))?)
        .await?;
    let p = wait_waiting(&pods, "never-pull", "ErrImageNeverPull").await?;
    assert_eq!(phase(&p), "Pending");
    let msg = waiting_message(&p);
    assert!(
        msg.contains("example.invalid/nope:1") && msg.contains("Never"),
        "{msg}"
    );
    let pull = json!({ "name": "main", "image": "example.invalid/nope:1" });
    pods.create(&pp, &pod("bad-image", pull, json!([]))?)
        .await?;
    let p = wait_waiting(&pods, "bad-image", "ErrImagePull").await?;
    assert_eq!(phase(&p), "Pending");
    let p = wait_waiting(&pods, "bad-image", "ImagePullBackOff").await?;
    assert_eq!(phase(&p), "Pending");
    assert!(
        waiting_message(&p).contains("Back-off pulling image"),
        "{p:?}"
    );

    // A missing Secret in env: CreateContainerConfigError naming it; a missing key names the
    // key; a missing Secret volume: ContainerCreating with a FailedMount Event.
    let env_secret = json!({ "name": "main", "image": "busybox", "command": ["sh", "-c", "test \"$V\" = v1"],
        "env": [{ "name": "V", "valueFrom": { "secretKeyRef": { "name": "later", "key": "v" } } }] });
    pods.create(&pp, &pod("env-secret", env_secret, json!([]))?)
        .await?;
    cp.apply_yaml(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: conf, namespace: {ns} }}\ndata: {{ other: x }}\n"
    ))
    .await?;
    let env_key = json!({ "name": "main", "image": "busybox", "command": ["sh", "-c", "true"],
        "env": [{ "name": "V", "valueFrom": { "configMapKeyRef": { "name": "conf", "key": "missing" } } }] });
    pods.create(&pp, &pod("env-key", env_key, json!([]))?)
        .await?;
    let vol = json!({ "name": "main", "image": "busybox", "command": ["sh", "-c", "test \"$(cat \"$1\")\" = v1", "sh", "/etc/later/v"],
        "volumeMounts": [{ "name": "later", "mountPath": "/etc/later" }] });
    pods.create(
        &pp,
        &pod(
            "vol-secret",
            vol,
            json!([{ "name": "later", "secret": { "secretName": "later" } }]),
        )?,
    )
    .await?;

    let p = wait_waiting(&pods, "env-secret", "CreateContainerConfigError").await?;
    assert_eq!(phase(&p), "Pending");
    assert_eq!(waiting_message(&p), "secret \"later\" not found");
    let p = wait_waiting(&pods, "env-key", "CreateContainerConfigError").await?;
    assert_eq!(
        waiting_message(&p),
        format!("couldn't find key missing in ConfigMap {ns}/conf")
    );
    let p = wait_waiting(&pods, "vol-secret", "ContainerCreating").await?;
    assert_eq!(phase(&p), "Pending");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(cp.client().await?, &ns);
    wait_for(
        "a FailedMount Event naming the Secret",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("FailedMount")
                        && e.message.as_deref().is_some_and(|m| {
                            m.contains("volume \"later\"")
                                && m.contains("secret \"later\" not found")
                        })
                })
                .then_some(()))
        },
    )
    .await?;

    // Once the Secret exists, both pods that waited for it start and succeed.
    cp.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: later, namespace: {ns} }}\nstringData: {{ v: v1 }}\n"
    ))
    .await?;
    for name in ["env-secret", "vol-secret"] {
        wait_pod_phase(&pods, name, "Succeeded", Duration::from_secs(60)).await?;
    }

    // Pods that never started are deleted as any other.
    for name in ["never-pull", "bad-image", "env-key"] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    wait_for(
        "the waiting pods gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let left = pods.list(&ListParams::default()).await?.items;
            Ok(left.iter().all(|p| phase(p) == "Succeeded").then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn env_secrets_volumes_and_token() -> Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace("env").await?;
    let node = FakeNode::start(cp, busybox_node(&ns)).await?;
    cp.apply_yaml(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{ name: creds, namespace: {ns} }}
stringData: {{ password: s3cr3t, config.txt: hello-file }}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{ name: runner, namespace: {ns} }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{ name: pod-reader, namespace: {ns} }}
rules: [{{ apiGroups: [""], resources: [pods], verbs: [get] }}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: runner-pod-reader, namespace: {ns} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader }}
subjects: [{{ kind: ServiceAccount, name: runner, namespace: {ns} }}]
"#
    ))
    .await?;
    let kubectl = cp.bins().kubectl.display().to_string();
    let script = r#"
set -x
test "$PASSWORD" = s3cr3t || exit 10
test "$(cat "$CONF_FILE")" = hello-file || exit 11
test "$(cat "$1")" = hello-file || exit 12
test "$MY_NS" = "$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace 2>/dev/null || echo "$MY_NS")" || exit 13
"$KUBECTL" get pod "$POD_NAME" -o name || exit 14
"$KUBECTL" get secrets && exit 15
echo all-good > "$TERMINATION_LOG"
"#;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "checker" },
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "runner",
            "volumes": [{ "name": "creds", "secret": { "secretName": "creds" } }],
            "containers": [{
                "name": "main", "image": "docker.io/library/busybox:latest",
                "command": ["sh", "-c", script, "sh", "/etc/creds/config.txt"],
                "env": [
                    { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } },
                    { "name": "CONF_FILE", "value": "/etc/creds/config.txt" },
                    { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                    { "name": "MY_NS", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                    { "name": "KUBECTL", "value": kubectl },
                    // Rewritten by the node to the pod's termination-message file.
                    { "name": "TERMINATION_LOG", "value": "/dev/termination-log" },
                ],
                "volumeMounts": [{ "name": "creds", "mountPath": "/etc/creds", "readOnly": true }],
            }],
        },
    }))?;
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, &ns);
    pods.create(&PostParams::default(), &pod).await?;
    let done = wait_for(
        "pod checker terminal",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let p = pods.get("checker").await?;
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            Ok((phase == "Succeeded" || phase == "Failed").then_some(p))
        },
    )
    .await?;
    let logs = node.logs(&ns, "checker");
    let status = done.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"), "logs:\n{logs}");
    let term = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.message.as_deref().map(str::trim), Some("all-good"));
    assert!(logs.contains("pod/checker"), "logs:\n{logs}");
    Ok(())
}

#[tokio::test]
async fn active_deadline_kills_running_pods() -> Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace("deadline").await?;
    let node = FakeNode::start(cp, busybox_node(&ns)).await?;
    let jobs: Api<Job> = Api::namespaced(cp.client().await?, &ns);
    let mut slow = job("slow", "echo started; sleep 300", 0)?;
    slow.spec.as_mut().unwrap().active_deadline_seconds = Some(3);
    jobs.create(&PostParams::default(), &slow).await?;
    assert_eq!(
        wait_job_condition(&jobs, "slow", "Failed", Duration::from_secs(60)).await?,
        "DeadlineExceeded"
    );
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, &ns);
    wait_for(
        "pods of job slow gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let left = pods
                .list(&ListParams::default().labels("job-name=slow"))
                .await?;
            Ok((left.items.is_empty() && node.process_count() == 0).then_some(()))
        },
    )
    .await?;
    assert_eq!(node.processes_started(), 1);
    Ok(())
}

/// The workspace's generated CRDs (`cargo xtask gen-crds`, committed in `crds/`) install and
/// become established on the real apiserver.
#[tokio::test]
async fn workspace_crds_install() -> Result<()> {
    let cp = ControlPlane::shared().await?;
    let names = cp
        .install_crds(clothjob_testenv::bins::workspace_root().join("crds"))
        .await?;
    assert!(
        names.iter().any(|n| n == "clothjobs.closetconnect.io"),
        "installed CRDs: {names:?}"
    );
    Ok(())
}

#[tokio::test]
async fn on_failure_pods_are_restarted() -> Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace("restart").await?;
    let node = FakeNode::start(cp, busybox_node(&ns)).await?;
    let pods: Api<Pod> = Api::namespaced(cp.client().await?, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "flaky" },
        "spec": {
            "restartPolicy": "OnFailure",
            "volumes": [{ "name": "scratch", "emptyDir": {} }],
            "containers": [{
                "name": "main", "image": "busybox",
                // Scripts are not rewritten (only values starting with a mount path are): pass the path.
                "command": ["sh", "-c", "if [ -f $1/once ]; then echo second; exit 0; fi; touch $1/once; echo first; exit 1",
                    "sh", "/scratch"],
                "volumeMounts": [{ "name": "scratch", "mountPath": "/scratch" }],
            }],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let done = wait_pod_phase(&pods, "flaky", "Succeeded", Duration::from_secs(30)).await?;
    let cs = done.status.unwrap().container_statuses.unwrap().remove(0);
    assert_eq!(cs.restart_count, 1);
    assert_eq!(cs.last_state.unwrap().terminated.unwrap().exit_code, 1);
    assert_eq!(node.processes_started(), 2);
    let logs = node.logs(&ns, "flaky");
    assert!(logs.contains("first") && logs.contains("second"), "{logs}");
    Ok(())
}
