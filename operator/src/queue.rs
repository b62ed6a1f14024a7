//! Admission under the concurrency limits (issue 8): which waiting ClothJob may start its Job
//! now, and the place of every other one in the queue. Pure: the reconciler feeds it the
//! ClothJobs of its watch cache, so the queue survives a restart (it is derived from status,
//! never kept in memory).

use std::collections::HashMap;

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
    let mut running = 0usize;
    let mut per_ns: HashMap<&str, usize> = HashMap::new();
    for e in entries.iter().filter(|e| e.active && !e.finished) {
        running += 1;
        *per_ns.entry(e.namespace.as_str()).or_default() += 1;
    }
    let mut waiting: Vec<&Entry> = entries
        .iter()
        .filter(|e| !e.active && !e.finished)
        .collect();
    waiting.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.created.cmp(&b.created))
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut position = 0;
    for e in waiting {
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
                if is_target(e) {
                    return Admission::Start;
                }
                running += 1;
                *per_ns.entry(e.namespace.as_str()).or_default() += 1;
            }
            Some(limit) => {
                position += 1;
                if is_target(e) {
                    return Admission::Queued { position, limit };
                }
            }
        }
    }
    Admission::NotWaiting
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
}
