//! Admission under the concurrency limits (issue 8): which waiting ClothJob may start its Job
//! now, and the place of every other one in the queue. Pure: the reconciler feeds it the
//! ClothJobs of its watch cache, so the queue survives a restart (it is derived from status,
//! never kept in memory).

use std::collections::HashMap;

use clothjob_api::ClothJob;
use clothjob_api::conditions::{self, COMPLETE, FAILED};
use k8s_openapi::api::batch::v1::Job;

/// The label naming a Kueue LocalQueue, on a ClothJob and copied onto its Job.
pub const KUEUE_QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";

/// Reason of the `Waiting` condition while Kueue keeps the Job suspended.
pub const SUSPENDED_BY_KUEUE: &str = "SuspendedByKueue";

/// Reason of the `Waiting` condition while a Job without a Kueue queue is suspended (by
/// someone else: the operator never suspends a Job).
pub const SUSPENDED: &str = "Suspended";

/// The limits on Jobs running at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// At most this many ClothJobs with a Job, operator-wide (`None`: no limit).
    pub max_concurrent: Option<usize>,
    /// At most this many per namespace (`None`: no limit).
    pub per_namespace: Option<usize>,
}

/// One ClothJob as admission sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.priority` (higher first; 0 by default).
    pub priority: i32,
    /// Creation time, RFC 3339 (earlier first among equal priorities).
    pub created: String,
    /// Whether it holds a slot: its Job exists and it has not finished.
    pub active: bool,
    /// Whether it has finished (holds no slot and does not wait).
    pub finished: bool,
}

/// What admission says about one ClothJob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It holds a slot already or may take one now: create (or keep) its Job.
    Start,
    /// It waits; `position` is 1 for the next to start.
    Queued {
        /// Place in the queue, from 1.
        position: usize,
        /// Which limit holds it back.
        limit: Limit,
    },
    /// Not among the entries (or finished): nothing to admit.
    NotWaiting,
}

/// A limit that holds a ClothJob back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The operator-wide limit.
    Cluster,
    /// The per-namespace limit.
    Namespace,
}

impl Limit {
    /// The reason written to status and Events.
    pub fn reason(self) -> &'static str {
        match self {
            Limit::Cluster => "MaxConcurrentJobs",
            Limit::Namespace => "NamespaceLimit",
        }
    }
}

impl Default for Admission {
    /// Without limits everyone starts.
    fn default() -> Self {
        Admission::Start
    }
}

/// The Kueue LocalQueue a ClothJob names: its `kueue.x-k8s.io/queue-name` label, else
/// `spec.queueName` (empty values are ignored).
pub fn kueue_queue(cj: &ClothJob) -> Option<String> {
    cj.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(KUEUE_QUEUE_LABEL))
        .filter(|q| !q.is_empty())
        .or(cj.spec.queue_name.as_ref().filter(|q| !q.is_empty()))
        .cloned()
}

/// Hands a new Job to Kueue: the queue label, and created suspended (as Kueue's webhook would
/// make it) so Kueue decides when it runs. The operator never changes `suspend` afterwards.
pub fn hand_to_kueue(job: &mut Job, queue: &str) {
    job.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(KUEUE_QUEUE_LABEL.to_string(), queue.to_string());
    if let Some(spec) = job.spec.as_mut() {
        spec.suspend = Some(true);
    }
}

/// Whether the ClothJob reached its terminal state (`Complete` or `Failed` true).
pub fn is_finished(cj: &ClothJob) -> bool {
    let conds = cj
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    conditions::is_true(conds, COMPLETE) || conditions::is_true(conds, FAILED)
}

/// The entry of a ClothJob as the watch cache shows it, `has_job` saying whether its Job
/// exists (in the Job cache, or as the operator just created it); `None` for a ClothJob whose
/// queue is Kueue's (the operator's limits do not count it).
pub fn entry(cj: &ClothJob, has_job: bool) -> Option<Entry> {
    if kueue_queue(cj).is_some() {
        return None;
    }
    let has_job = has_job || cj.status.as_ref().is_some_and(|s| s.job_uid.is_some());
    // A cancelled or deleted ClothJob without a Job never takes a slot.
    let gone = (cj.spec.cancel || cj.metadata.deletion_timestamp.is_some()) && !has_job;
    Some(Entry {
        namespace: cj.metadata.namespace.clone().unwrap_or_default(),
        name: cj.metadata.name.clone().unwrap_or_default(),
        priority: cj.spec.priority,
        created: cj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        active: has_job,
        finished: is_finished(cj) || gone,
    })
}

/// The waiting entries (by index into `entries`) that may take a slot now, in queue order.
pub fn startable(entries: &[Entry], limits: Limits) -> Vec<usize> {
    plan(entries, limits)
        .into_iter()
        .filter_map(|(i, a)| (a == Admission::Start).then_some(i))
        .collect()
}

/// Every waiting entry (by index) in queue order with its admission: the waiting ones are
/// taken in order (priority, then creation, then name) into the free slots.
fn plan(entries: &[Entry], limits: Limits) -> Vec<(usize, Admission)> {
    let mut running = 0usize;
    let mut per_ns: HashMap<&str, usize> = HashMap::new();
    for e in entries.iter().filter(|e| e.active && !e.finished) {
        running += 1;
        *per_ns.entry(e.namespace.as_str()).or_default() += 1;
    }
    let mut waiting: Vec<usize> = (0..entries.len())
        .filter(|&i| !entries[i].active && !entries[i].finished)
        .collect();
    waiting.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.created.cmp(&b.created))
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut position = 0;
    let mut out = Vec::with_capacity(waiting.len());
    for i in waiting {
        let e = &entries[i];
        let in_ns = per_ns.get(e.namespace.as_str()).copied().unwrap_or(0);
        let blocked = if limits.max_concurrent.is_some_and(|m| running >= m) {
            Some(Limit::Cluster)
        } else if limits.per_namespace.is_some_and(|m| in_ns >= m) {
            Some(Limit::Namespace)
        } else {
            None
        };
        match blocked {
            None => {
                running += 1;
                *per_ns.entry(e.namespace.as_str()).or_default() += 1;
                out.push((i, Admission::Start));
            }
            Some(limit) => {
                position += 1;
                out.push((i, Admission::Queued { position, limit }));
            }
        }
    }
    out
}

/// Admission of `namespace/name` among `entries`: the waiting ones are taken in order
/// (priority, then creation, then name) into the free slots; a namespace at its own limit
/// does not hold back the others behind it.
pub fn admit(namespace: &str, name: &str, entries: &[Entry], limits: Limits) -> Admission {
    let is_target = |e: &Entry| e.namespace == namespace && e.name == name;
    match entries.iter().find(|e| is_target(e)) {
        None => return Admission::NotWaiting,
        Some(e) if e.finished => return Admission::NotWaiting,
        Some(e) if e.active => return Admission::Start,
        Some(_) => {}
    }
    plan(entries, limits)
        .into_iter()
        .find(|(i, _)| is_target(&entries[*i]))
        .map_or(Admission::NotWaiting, |(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(ns: &str, name: &str, created: &str, active: bool) -> Entry {
        Entry {
            namespace: ns.into(),
            name: name.into(),
            priority: 0,
            created: created.into(),
            active,
            finished: false,
        }
    }

    const LIMIT_2: Limits = Limits {
        max_concurrent: Some(2),
        per_namespace: None,
    };

    #[test]
    fn without_limits_everyone_starts() {
        let all = [e("a", "x", "1", false), e("a", "y", "2", false)];
        assert_eq!(admit("a", "y", &all, Limits::default()), Admission::Start);
    }

    #[test]
    fn over_the_limit_jobs_wait_in_creation_order_with_their_position() {
        let all = [
            e("a", "running", "0", true),
            e("a", "third", "3", false),
            e("a", "first", "1", false),
            e("a", "second", "2", false),
        ];
        assert_eq!(admit("a", "running", &all, LIMIT_2), Admission::Start);
        assert_eq!(admit("a", "first", &all, LIMIT_2), Admission::Start);
        let q = |position| Admission::Queued {
            position,
            limit: Limit::Cluster,
        };
        assert_eq!(admit("a", "second", &all, LIMIT_2), q(1));
        assert_eq!(admit("a", "third", &all, LIMIT_2), q(2));
    }

    #[test]
    fn finished_jobs_free_their_slot_and_priority_goes_first() {
        let mut done = e("a", "done", "0", true);
        done.finished = true;
        let mut urgent = e("a", "urgent", "9", false);
        urgent.priority = 10;
        let all = [
            done,
            e("a", "busy", "0", true),
            e("a", "old", "1", false),
            urgent,
        ];
        assert_eq!(admit("a", "urgent", &all, LIMIT_2), Admission::Start);
        assert!(matches!(
            admit("a", "old", &all, LIMIT_2),
            Admission::Queued { position: 1, .. }
        ));
        assert_eq!(admit("a", "done", &all, LIMIT_2), Admission::NotWaiting);
    }

    #[test]
    fn a_namespace_at_its_limit_does_not_hold_back_another() {
        let limits = Limits {
            max_concurrent: Some(10),
            per_namespace: Some(1),
        };
        let all = [
            e("busy", "a", "0", true),
            e("busy", "b", "1", false),
            e("quiet", "c", "2", false),
        ];
        assert_eq!(
            admit("busy", "b", &all, limits),
            Admission::Queued {
                position: 1,
                limit: Limit::Namespace
            }
        );
        assert_eq!(admit("quiet", "c", &all, limits), Admission::Start);
        assert_eq!(Limit::Namespace.reason(), "NamespaceLimit");
    }

    #[test]
    fn startable_lists_the_waiting_ones_that_fit_in_queue_order() {
        let all = [
            e("a", "running", "0", true),
            e("a", "third", "3", false),
            e("a", "first", "1", false),
            e("a", "second", "2", false),
        ];
        let names: Vec<&str> = startable(&all, LIMIT_2)
            .into_iter()
            .map(|i| all[i].name.as_str())
            .collect();
        assert_eq!(names, ["first"]);
        let three = Limits {
            max_concurrent: Some(3),
            per_namespace: None,
        };
        let names: Vec<&str> = startable(&all, three)
            .into_iter()
            .map(|i| all[i].name.as_str())
            .collect();
        assert_eq!(names, ["first", "second"]);
    }

    fn cj(yaml: &str) -> ClothJob {
        let base = "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {name: a, namespace: n, creationTimestamp: '2026-11-25T10:00:00Z'";
        serde_yaml::from_str(&format!("{base}{yaml}")).unwrap()
    }

    #[test]
    fn kueue_queues_come_from_the_label_or_the_spec_and_skip_the_limits() {
        let spec = "\nspec: {source: {url: 'http://x/y'}, output: {uri: 'file:///o'}";
        let plain = cj(&format!("}}{spec}, priority: 3}}"));
        assert_eq!(kueue_queue(&plain), None);
        let entry_ = entry(&plain, false).unwrap();
        assert_eq!(entry_.priority, 3);
        assert!(!entry_.active && !entry_.finished);
        assert_eq!(entry_.created, "2026-11-25T10:00:00Z");
        let by_spec = cj(&format!("}}{spec}, queueName: team-q}}"));
        assert_eq!(kueue_queue(&by_spec).as_deref(), Some("team-q"));
        assert!(entry(&by_spec, false).is_none());
        let by_label = cj(&format!(
            ", labels: {{kueue.x-k8s.io/queue-name: lq}}}}{spec}, queueName: other}}"
        ));
        assert_eq!(kueue_queue(&by_label).as_deref(), Some("lq"));
        let cancelled = cj(&format!("}}{spec}, cancel: true}}"));
        assert!(entry(&cancelled, false).unwrap().finished);
        let mut job = Job {
            spec: Some(Default::default()),
            ..Default::default()
        };
        hand_to_kueue(&mut job, "lq");
        assert_eq!(job.spec.unwrap().suspend, Some(true));
        assert_eq!(job.metadata.labels.unwrap()[KUEUE_QUEUE_LABEL], "lq");
    }
}
