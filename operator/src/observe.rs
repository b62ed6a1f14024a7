//! Observe: what exists for a ClothJob (its Job, the Job's pods, the Job controller's
//! FailedCreate Events), read from the controller's watch caches. The one live read is the
//! confirmation that a Job the status names is really gone (a cache can lag behind a create).

use clothjob_api::ClothJob;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::error::Error;
use crate::job::job_name;

/// What the operator saw for one ClothJob.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The ClothJob's Job, if it exists.
    pub job: Option<Job>,
    /// The pods of that Job, in any state.
    pub pods: Vec<Pod>,
    /// The Job controller's FailedCreate Events about that Job (it could not create a pod).
    pub failed_create: Vec<CoreEvent>,
    /// What the concurrency limits say, for a ClothJob that has no Job yet (computed by the
    /// reconciler from the ClothJob cache; `Start` when there are no limits).
    pub admission: crate::queue::Admission,
    /// The reuse decision for the `reuseKey` the runner reported (computed by the
    /// reconciler from the ClothJob cache, see [`crate::reuse`]); `None` when the ClothJob
    /// takes no part in reuse.
    pub reuse: Option<clothjob_api::ReuseStatus>,
}

/// The watch caches of one controller scope.
#[derive(Clone)]
pub struct Caches {
    /// The ClothJobs themselves (the queue is derived from them).
    pub clothjobs: Store<ClothJob>,
    /// Jobs made by the operator.
    pub jobs: Store<Job>,
    /// Runner pods (made by those Jobs).
    pub pods: Store<Pod>,
    /// FailedCreate Events about Jobs.
    pub failed_create: Store<CoreEvent>,
    /// Whether every one of these caches has its first list in (decisions wait for it: a
    /// half-filled cache would look like missing Jobs and pods).
    pub synced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Caches {
    /// Whether every cache has its first list in.
    pub fn is_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Reads the Job, its pods and its FailedCreate Events from the caches.
pub async fn observe(client: &Client, caches: &Caches, cj: &ClothJob) -> Result<Observed, Error> {
    let ns = cj
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = job_name(cj)?;
    let mut job = caches
        .jobs
        .get(&ObjectRef::new(&name).within(ns))
        .map(|j| (*j).clone());
    let recorded = cj.status.as_ref().and_then(|s| s.job_uid.as_deref());
    let cached_uid = job.as_ref().and_then(|j| j.metadata.uid.as_deref());
    if recorded.is_some() && cached_uid != recorded {
        // The status names a Job the cache does not have (yet): ask the apiserver.
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        job = jobs.get_opt(&name).await.map_err(|source| Error::Observe {
            what: "Job",
            source,
        })?;
    }
    let Some(uid) = job.as_ref().and_then(|j| j.metadata.uid.clone()) else {
        return Ok(Observed {
            job,
            ..Default::default()
        });
    };
    let pods = caches
        .pods
        .state()
        .iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(ns)
                && p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("batch.kubernetes.io/controller-uid"))
                    .map(String::as_str)
                    == Some(uid.as_str())
        })
        .map(|p| (**p).clone())
        .collect();
    let failed_create = caches
        .failed_create
        .state()
        .iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid.as_str()))
        .map(|e| (**e).clone())
        .collect();
    Ok(Observed {
        job,
        pods,
        failed_create,
        ..Default::default()
    })
}
