//! Helpers over the `metav1.Condition` list of a ClothJob status (keyed by type).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type: a runner pod is working on the job.
pub const RUNNING: &str = "Running";
/// Condition type: the job finished and every output was written.
pub const COMPLETE: &str = "Complete";
/// Condition type: the job gave up.
pub const FAILED: &str = "Failed";
/// Condition type: the job is waiting for a runner pod that has not started (True while
/// waiting, with the kubelet's or the Job controller's reason, such as ErrImagePull,
/// ImagePullBackOff, CreateContainerConfigError, Unschedulable or FailedCreate).
pub const WAITING: &str = "Waiting";

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Sets a condition in place, keeping `lastTransitionTime` when the status did not change.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let new = |transition: Time| Condition {
        type_: type_.to_string(),
        status: status.clone(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let transition = if existing.status == status {
                existing.last_transition_time.clone()
            } else {
                now.clone()
            };
            *existing = new(transition);
        }
        None => conditions.push(new(now.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn keeps_transition_time_when_status_is_unchanged() {
        let mut c = Vec::new();
        set(
            &mut c,
            RUNNING,
            true,
            "Started",
            "pod started",
            Some(1),
            &at(10),
        );
        set(
            &mut c,
            RUNNING,
            true,
            "Started",
            "still running",
            Some(1),
            &at(20),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, at(10));
        assert_eq!(c[0].message, "still running");
        set(
            &mut c,
            RUNNING,
            false,
            "Succeeded",
            "done",
            Some(1),
            &at(30),
        );
        assert_eq!(c[0].last_transition_time, at(30));
        assert!(!is_true(&c, RUNNING));
        set(
            &mut c,
            COMPLETE,
            true,
            "Succeeded",
            "done",
            Some(1),
            &at(30),
        );
        assert!(is_true(&c, COMPLETE));
        assert_eq!(c.len(), 2);
    }
}
