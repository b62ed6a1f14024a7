//! Observe: reads what exists for a ClothJob (its Job and the Job's pods).

use clothjob_api::ClothJob;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
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
}

/// Reads the Job and its pods.
pub async fn observe(client: &Client, cj: &ClothJob) -> Result<Observed, Error> {
    let ns = cj
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = jobs
        .get_opt(&job_name(cj)?)
        .await
        .map_err(|source| Error::Observe {
            what: "Job",
            source,
        })?;
    let pods = match job.as_ref().and_then(|j| j.metadata.uid.as_deref()) {
        Some(uid) => {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let lp =
                ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}"));
            api.list(&lp)
                .await
                .map_err(|source| Error::Observe {
                    what: "pods",
                    source,
                })?
                .items
        }
        None => Vec::new(),
    };
    Ok(Observed { job, pods })
}
