//! Pod status (strategic-merge patches for the status subresource) and Events written by the
//! fake kubelet.

use anyhow::Result;
use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// RFC 3339 timestamp (seconds) for status fields.
pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// RFC 3339 timestamp with microseconds (Lease renewTime).
pub(crate) fn now_micro() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn conditions(ready: bool, reason: Option<&str>, ts: &str) -> Value {
    let ready_status = if ready { "True" } else { "False" };
    let mut not_ready =
        json!({ "type": "Ready", "status": ready_status, "lastTransitionTime": ts });
    let mut containers_ready =
        json!({ "type": "ContainersReady", "status": ready_status, "lastTransitionTime": ts });
    if let Some(r) = reason {
        not_ready["reason"] = json!(r);
        containers_ready["reason"] = json!(r);
    }
    json!([
        { "type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": ts },
        { "type": "Initialized", "status": "True", "lastTransitionTime": ts },
        not_ready,
        containers_ready,
        { "type": "PodScheduled", "status": "True", "lastTransitionTime": ts },
    ])
}

fn container_status(
    name: &str,
    image: &str,
    uid: &str,
    ready: bool,
    state: Value,
    restarts: i32,
) -> Value {
    json!({
        "name": name,
        "image": image,
        "imageID": format!("clothjob-fake://{image}"),
        "containerID": format!("clothjob-fake://{uid}"),
        "ready": ready,
        "started": ready,
        "restartCount": restarts,
        "state": state,
    })
}

/// Pod/host IPs, and `startTime` when given (omitted fields keep their value in a merge patch).
fn addresses(status: &mut Value, start_time: Option<&str>) {
    status["hostIP"] = json!("127.0.0.1");
    status["hostIPs"] = json!([{ "ip": "127.0.0.1" }]);
    status["podIP"] = json!("127.0.0.1");
    status["podIPs"] = json!([{ "ip": "127.0.0.1" }]);
    if let Some(ts) = start_time {
        status["startTime"] = json!(ts);
    }
}

/// Status of a pod whose container process is running.
pub(crate) fn running(
    container: &str,
    image: &str,
    uid: &str,
    started_at: &str,
    restarts: i32,
    last_state: Option<&Value>,
) -> Value {
    let mut cs = container_status(
        container,
        image,
        uid,
        true,
        json!({ "running": { "startedAt": started_at } }),
        restarts,
    );
    if let Some(last) = last_state {
        cs["lastState"] = last.clone();
    }
    let mut status = json!({
        "phase": "Running",
        "conditions": conditions(true, None, started_at),
        "containerStatuses": [cs],
    });
    addresses(&mut status, (restarts == 0).then_some(started_at));
    json!({ "status": status })
}

/// Status of a pod whose container exited and will be restarted (waiting, back-off).
pub(crate) fn restarting(
    container: &str,
    image: &str,
    uid: &str,
    restarts: i32,
    last_state: &Value,
) -> Value {
    let mut cs = container_status(
        container,
        image,
        uid,
        false,
        json!({ "waiting": { "reason": "CrashLoopBackOff", "message": "back-off restarting container" } }),
        restarts,
    );
    cs["lastState"] = last_state.clone();
    let mut status = json!({
        "phase": "Running",
        "conditions": conditions(false, Some("ContainersNotReady"), &now()),
        "containerStatuses": [cs],
    });
    addresses(&mut status, None);
    json!({ "status": status })
}

/// Terminal data of an exited container.
pub(crate) struct Exit<'a> {
    pub exit_code: i32,
    pub message: &'a str,
    pub started_at: &'a str,
    pub finished_at: &'a str,
}

/// `{"terminated": {...}}` container state of an exited container.
pub(crate) fn terminated_state(uid: &str, exit: &Exit<'_>) -> Value {
    let ok = exit.exit_code == 0;
    let mut terminated = json!({
        "exitCode": exit.exit_code,
        "reason": if ok { "Completed" } else { "Error" },
        "startedAt": exit.started_at,
        "finishedAt": exit.finished_at,
        "containerID": format!("clothjob-fake://{uid}"),
    });
    if !exit.message.is_empty() {
        terminated["message"] = json!(exit.message);
    }
    json!({ "terminated": terminated })
}

/// Status of a pod whose container process exited for good (phase Succeeded or Failed).
pub(crate) fn terminated(
    container: &str,
    image: &str,
    uid: &str,
    exit: &Exit<'_>,
    restarts: i32,
    last_state: Option<&Value>,
) -> Value {
    let ok = exit.exit_code == 0;
    let mut cs = container_status(
        container,
        image,
        uid,
        false,
        terminated_state(uid, exit),
        restarts,
    );
    if let Some(last) = last_state {
        cs["lastState"] = last.clone();
    }
    let mut status = json!({
        "phase": if ok { "Succeeded" } else { "Failed" },
        "conditions": conditions(false, Some("PodCompleted"), exit.finished_at),
        "containerStatuses": [cs],
    });
    addresses(&mut status, None);
    json!({ "status": status })
}

/// Status of a pod whose container cannot start yet (an image it cannot pull, a missing
/// Secret): phase Pending, the container waiting with `reason` (and `message`), as the
/// kubelet reports it.
pub(crate) fn waiting(
    container: &str,
    image: &str,
    reason: &str,
    message: Option<&str>,
    start_time: &str,
) -> Value {
    let mut waiting = json!({ "reason": reason });
    if let Some(m) = message {
        waiting["message"] = json!(m);
    }
    let mut status = json!({
        "phase": "Pending",
        "conditions": conditions(false, Some("ContainersNotReady"), start_time),
        "containerStatuses": [{
            "name": container,
            "image": image,
            "imageID": "",
            "ready": false,
            "started": false,
            "restartCount": 0,
            "state": { "waiting": waiting },
        }],
    });
    addresses(&mut status, Some(start_time));
    json!({ "status": status })
}

/// Status of a pod that could not start its process (e.g. the executable is missing): phase
/// Failed, container waiting.
pub(crate) fn failed_to_start(
    container: &str,
    image: &str,
    uid: &str,
    reason: &str,
    message: &str,
) -> Value {
    let ts = now();
    let mut status = json!({
        "phase": "Failed",
        "reason": reason,
        "message": message,
        "conditions": conditions(false, Some("ContainersNotReady"), &ts),
        "containerStatuses": [container_status(container, image, uid, false,
            json!({ "waiting": { "reason": reason, "message": message } }), 0)],
    });
    addresses(&mut status, Some(&ts));
    json!({ "status": status })
}

/// Applies a status patch; a pod that is already gone is not an error.
pub(crate) async fn patch(api: &Api<Pod>, name: &str, body: &Value) -> Result<()> {
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Records a core/v1 Event about the pod (best effort).
pub(crate) async fn event(
    client: &kube::Client,
    pod: &Pod,
    node: &str,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let ts = now();
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let ev = json!({
        "metadata": { "name": format!("{pod_name}.{nanos:x}"), "namespace": ns },
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": pod_name,
            "uid": pod.metadata.uid, "fieldPath": "spec.containers{0}",
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": { "component": "kubelet", "host": node },
        "reportingComponent": "kubelet",
        "reportingInstance": node,
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    });
    let Ok(ev) = serde_json::from_value::<Event>(ev) else {
        return;
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!("creating event for {ns}/{pod_name}: {e}");
    }
}
