//! The operator's own last status write per ClothJob, for reconciles that run before the
//! ClothJob cache shows it (see [`OwnWrites::view`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clothjob_api::{ClothJob, ClothJobStatus};
use kube::ResourceExt;

use crate::decide::with_operator_fields;

/// Entries kept before the table is cleared (it only saves writes).
const PRUNE_AT: usize = 8192;

/// Per ClothJob uid, the resourceVersion its cache entry had when this process last wrote its
/// status, and the status written. Memory only, and only an optimisation: lost on a restart
/// (the caches are listed afresh), it costs at most one repeated write each.
#[derive(Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<String, (String, ClothJobStatus)>>,
}

impl OwnWrites {
    /// Remembers `status`, just written for `cj` as read from the cache.
    pub fn remember(&self, cj: &ClothJob, status: &ClothJobStatus) {
        let (Some(uid), Some(rv)) = (cj.uid(), cj.resource_version()) else {
            return;
        };
        if let Ok(mut written) = self.written.lock() {
            if written.len() >= PRUNE_AT {
                written.clear();
            }
            written.insert(uid, (rv, status.clone()));
        }
    }

    /// `cj` as this process last wrote it, and whether the cache was behind: while the cache
    /// still shows the version `cj` had before this process' last status write (a reconcile
    /// triggered by its new Job or a pod ran before the ClothJob's watch delivered that write),
    /// the operator's own fields are taken from that write, so the decision repeats neither it
    /// nor its Events. The runner's fields stay as cached. Any other version (the write
    /// arrived, or someone else wrote since) drops the entry and returns `cj` as it is.
    pub fn view(&self, cj: Arc<ClothJob>) -> (Arc<ClothJob>, bool) {
        let (Some(uid), Some(rv)) = (cj.uid(), cj.resource_version()) else {
            return (cj, false);
        };
        let Ok(mut written) = self.written.lock() else {
            return (cj, false);
        };
        match written.get(&uid) {
            Some((seen, ours)) if *seen == rv => {
                let mut mine = (*cj).clone();
                mine.status = Some(with_operator_fields(
                    &cj.status.clone().unwrap_or_default(),
                    ours,
                ));
                (Arc::new(mine), true)
            }
            Some(_) => {
                written.remove(&uid);
                (cj, false)
            }
            None => (cj, false),
        }
    }

    /// How many writes are remembered.
    pub fn len(&self) -> usize {
        self.written.lock().map_or(0, |w| w.len())
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clothjob_api::Phase;

    fn cached(rv: &str, status: ClothJobStatus) -> Arc<ClothJob> {
        let mut cj: ClothJob = serde_yaml::from_str(
            "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\n\
             metadata: {name: a, namespace: n, uid: u1}\n\
             spec: {source: {url: 'https://x.test/a.jpg'}, output: {uri: 's3://b/o'}}\n",
        )
        .unwrap();
        cj.metadata.resource_version = Some(rv.into());
        cj.status = Some(status);
        Arc::new(cj)
    }

    #[test]
    fn a_cache_behind_the_last_write_shows_that_write_and_the_runners_fields() {
        let own = OwnWrites::default();
        let before = ClothJobStatus {
            phase: Some(Phase::Queued),
            queue_position: Some(2),
            ..Default::default()
        };
        let written = ClothJobStatus {
            phase: Some(Phase::Pending),
            job_uid: Some("j1".into()),
            ..Default::default()
        };
        own.remember(&cached("5", before.clone()), &written);
        // The cache still at version 5: the operator's fields come from the write, the
        // runner's (progress) from the cache.
        let lagging = cached(
            "5",
            ClothJobStatus {
                progress: Some(12),
                ..before
            },
        );
        let (view, behind) = own.view(lagging);
        assert!(behind);
        let s = view.status.clone().unwrap();
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(s.job_uid.as_deref(), Some("j1"));
        assert_eq!(s.queue_position, None, "the write removed the position");
        assert_eq!(s.progress, Some(12));
        // Asked again at the same version: the same answer (the entry stays).
        assert!(own.view(cached("5", ClothJobStatus::default())).1);
    }

    #[test]
    fn a_newer_version_is_shown_as_cached_and_forgets_the_write() {
        let own = OwnWrites::default();
        let written = ClothJobStatus {
            phase: Some(Phase::Pending),
            ..Default::default()
        };
        own.remember(&cached("5", ClothJobStatus::default()), &written);
        let newer = ClothJobStatus {
            phase: Some(Phase::Running),
            ..Default::default()
        };
        let (view, behind) = own.view(cached("7", newer.clone()));
        assert!(!behind);
        assert_eq!(view.status.as_ref(), Some(&newer));
        assert!(own.is_empty());
        // The old version again (a stale event) is no longer overlaid.
        let (_, behind) = own.view(cached("5", ClothJobStatus::default()));
        assert!(!behind);
    }

    #[test]
    fn an_object_without_uid_or_version_is_left_alone() {
        let own = OwnWrites::default();
        let mut cj = (*cached("5", ClothJobStatus::default())).clone();
        cj.metadata.uid = None;
        own.remember(&cj, &ClothJobStatus::default());
        assert!(own.is_empty());
        let (view, behind) = own.view(Arc::new(cj.clone()));
        assert!(!behind);
        assert_eq!(view.status, cj.status);
    }

    #[test]
    fn the_table_is_cleared_rather_than_grown_past_its_bound() {
        let own = OwnWrites::default();
        for i in 0..PRUNE_AT + 1 {
            let mut cj = (*cached("1", ClothJobStatus::default())).clone();
            cj.metadata.uid = Some(format!("u{i}"));
            own.remember(&cj, &ClothJobStatus::default());
        }
        assert_eq!(own.len(), 1);
    }
}
