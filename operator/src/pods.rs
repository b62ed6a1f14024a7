//! What the runner pods of a Job say: whether one runs, why one cannot start, how the last
//! one failed (pure functions over observed objects).

use clothjob_api::contract;
use k8s_openapi::api::core::v1::{ContainerStatus, Event as CoreEvent, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Why no runner pod is running although the Job wants one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The kubelet's, scheduler's or Job controller's reason (ErrImagePull,
    /// ImagePullBackOff, ErrImageNeverPull, CreateContainerConfigError, Unschedulable,
    /// FailedCreate, ...) or ContainerCreating / Pending while nothing is wrong yet.
    pub reason: String,
    /// Their message.
    pub message: String,
}

impl Waiting {
    /// Whether the reason is a problem (worth a Warning Event), not the normal start-up.
    pub fn is_problem(&self) -> bool {
        !is_normal_start(&self.reason)
    }
}

/// Whether a waiting `reason` is a normal step of a pod's start (not a problem to report).
pub fn is_normal_start(reason: &str) -> bool {
    matches!(reason, "Pending" | "ContainerCreating" | "PodInitializing")
}

fn runner_status(p: &Pod) -> Option<&ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == contract::RUNNER_CONTAINER)
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

fn live(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

/// Whether a runner pod is running (not being deleted).
pub fn any_running(pods: &[Pod]) -> bool {
    pods.iter().any(|p| live(p) && phase(p) == Some("Running"))
}

/// Whether a runner pod finished successfully (not being deleted): its Job is about to be
/// marked Complete by the Job controller.
pub fn any_succeeded(pods: &[Pod]) -> bool {
    pods.iter()
        .any(|p| live(p) && phase(p) == Some("Succeeded"))
}

/// When the earliest runner container started running (or, lacking that, when a pod that is
/// running or finished was started by the kubelet).
pub fn first_start(pods: &[Pod]) -> Option<Time> {
    pods.iter()
        .filter_map(|p| {
            let cs = runner_status(p);
            let state = cs.and_then(|c| c.state.as_ref());
            state
                .and_then(|s| s.running.as_ref().and_then(|r| r.started_at.clone()))
                .or_else(|| state.and_then(|s| s.terminated.as_ref()?.started_at.clone()))
                .or_else(|| {
                    cs.and_then(|c| {
                        c.last_state
                            .as_ref()?
                            .terminated
                            .as_ref()?
                            .started_at
                            .clone()
                    })
                })
                .or_else(|| {
                    matches!(phase(p), Some("Running" | "Succeeded" | "Failed"))
                        .then(|| p.status.as_ref()?.start_time.clone())
                        .flatten()
                })
        })
        .min_by_key(|t| t.0)
}

/// The last failure of a runner pod: (exit code, termination message).
pub fn last_failure(pods: &[Pod]) -> Option<(i32, String)> {
    pods.iter()
        .filter_map(|p| {
            let t = runner_status(p)?.state.as_ref()?.terminated.as_ref()?;
            (t.exit_code != 0).then(|| {
                (
                    t.finished_at.clone(),
                    t.exit_code,
                    t.message.clone().unwrap_or_default(),
                )
            })
        })
        .max_by_key(|(finished, _, _)| finished.as_ref().map(|t| t.0))
        .map(|(_, code, msg)| (code, msg.trim().to_string()))
}

/// The newest time a pod of the Job was created or finished (to tell a FailedCreate Event
/// about the current attempt from one about an earlier one).
fn newest_pod_time(pods: &[Pod]) -> Option<k8s_openapi::jiff::Timestamp> {
    pods.iter()
        .flat_map(|p| {
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let finished = runner_status(p)
                .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
                .map(|t| t.0);
            [created, finished]
        })
        .flatten()
        .max()
}

/// When an Event was last seen.
fn event_time(e: &CoreEvent) -> Option<k8s_openapi::jiff::Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
}

/// Why the Job's runner pod is not running, if it is not: the waiting reason of a pending
/// pod's runner container, an unschedulable pod, or the Job controller's FailedCreate Event
/// (quota, Pod Security admission) when it could not create the pod at all. `None` while a
/// pod runs, and while the Job waits to retry after a failed attempt with nothing wrong.
pub fn waiting(pods: &[Pod], failed_create: &[CoreEvent], failed_attempts: i32) -> Option<Waiting> {
    if any_running(pods) {
        return None;
    }
    let pending = pods
        .iter()
        .filter(|p| live(p) && matches!(phase(p), Some("Pending") | None))
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    if let Some(p) = pending {
        if let Some(w) = runner_status(p)
            .and_then(|c| c.state.as_ref()?.waiting.as_ref())
            .and_then(|w| w.reason.clone().map(|r| (r, w.message.clone())))
        {
            return Some(Waiting {
                reason: w.0,
                message: w.1.unwrap_or_default(),
            });
        }
        let unscheduled = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            });
        if let Some(c) = unscheduled {
            return Some(Waiting {
                reason: c.reason.clone().unwrap_or_else(|| "Unschedulable".into()),
                message: c.message.clone().unwrap_or_default(),
            });
        }
        return Some(Waiting {
            reason: "Pending".into(),
            message: "the runner pod is starting".into(),
        });
    }
    let newest = newest_pod_time(pods);
    let create_failure = failed_create
        .iter()
        .filter(|e| match (event_time(e), newest) {
            (Some(at), Some(pod)) => at >= pod,
            (_, None) => true,
            (None, Some(_)) => false,
        })
        .max_by_key(|e| event_time(e));
    if let Some(e) = create_failure {
        return Some(Waiting {
            reason: "FailedCreate".into(),
            message: e.message.clone().unwrap_or_default(),
        });
    }
    (failed_attempts == 0 && pods.iter().all(|p| !live(p) || phase(p).is_none())).then(|| Waiting {
        reason: "Pending".into(),
        message: "waiting for the Job controller to create the runner pod".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn a_pull_error_outranks_the_schedule_and_a_running_pod_outranks_both() {
        let pulling = pod(serde_json::json!({
            "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
            }]}
        }));
        let w = waiting(std::slice::from_ref(&pulling), &[], 0);
        assert_eq!(
            w.as_ref().map(|w| w.reason.as_str()),
            Some("ImagePullBackOff")
        );
        assert!(w.is_some_and(|w| w.is_problem()));
        let running =
            pod(serde_json::json!({"metadata": {"name": "b"}, "status": {"phase": "Running"}}));
        assert_eq!(waiting(&[pulling, running], &[], 0), None);
    }

    #[test]
    fn an_old_failed_create_event_does_not_hide_a_retry_wait() {
        let failed = pod(serde_json::json!({
            "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:01:00Z"},
            "status": {"phase": "Failed"}
        }));
        let old: CoreEvent = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "e"}, "involvedObject": {},
            "reason": "FailedCreate", "message": "exceeded quota",
            "lastTimestamp": "2026-01-01T00:00:00Z"
        }))
        .unwrap_or_default();
        assert_eq!(
            waiting(std::slice::from_ref(&failed), std::slice::from_ref(&old), 1),
            None
        );
        assert_eq!(
            waiting(&[], &[old], 0).map(|w| w.reason),
            Some("FailedCreate".to_string())
        );
    }
}
