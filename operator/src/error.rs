//! Errors of the reconciler, named after the action that failed.

/// What went wrong while reconciling one ClothJob.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the Job or pods of a ClothJob failed.
    #[error("observing {what}: {source}")]
    Observe {
        what: &'static str,
        source: kube::Error,
    },
    /// Creating the runner Job failed.
    #[error("creating Job {name}: {source}")]
    CreateJob { name: String, source: kube::Error },
    /// Deleting the Job of a ClothJob that failed before its pod started failed.
    #[error("deleting Job {name}: {source}")]
    DeleteJob { name: String, source: kube::Error },
    /// Keeping the runner service account or its RoleBinding failed.
    #[error("ensuring runner RBAC in {namespace}: {source}")]
    EnsureRunnerAccess {
        namespace: String,
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("applying status: {0}")]
    ApplyStatus(kube::Error),
    /// Deleting a finished ClothJob after its TTL failed.
    #[error("deleting expired ClothJob: {0}")]
    DeleteExpired(kube::Error),
    /// Serializing an object failed.
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    /// The spec asks for something the operator's policy or the apiserver refuses (a runner
    /// image or service account not allowed, a Job the apiserver rejects as invalid):
    /// terminal, the ClothJob fails with reason InvalidSpec.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The object lacks a namespace, name or uid.
    #[error("ClothJob has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// A bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Observe { .. } => "Observe",
            Error::CreateJob { .. } => "CreateJob",
            Error::DeleteJob { .. } => "DeleteJob",
            Error::EnsureRunnerAccess { .. } => "RunnerAccess",
            Error::ApplyStatus(_) => "ApplyStatus",
            Error::DeleteExpired(_) => "DeleteExpired",
            Error::Serialize { .. } => "Serialize",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingMetadata(_) => "InvalidObject",
        }
    }
}

impl Error {
    /// Whether retrying cannot help: the spec itself is refused (by the operator's policy or
    /// by the apiserver's validation: 400, 403 or 422 on the Job, other than an exceeded
    /// quota). The ClothJob then fails with reason InvalidSpec; everything else backs off.
    pub fn permanent_reason(&self) -> Option<String> {
        match self {
            Error::InvalidSpec(msg) => Some(msg.clone()),
            Error::CreateJob {
                source: kube::Error::Api(s),
                ..
            } if matches!(s.code, 400 | 403 | 422) && !s.message.contains("exceeded quota") => {
                Some(format!(
                    "the apiserver refused the runner Job: {}",
                    s.message
                ))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn invalid_jobs_are_permanent_and_quota_and_outages_are_not() {
        let create = |code, msg| Error::CreateJob {
            name: "j".into(),
            source: api(code, msg),
        };
        assert!(
            create(422, "spec.template: Invalid value")
                .permanent_reason()
                .is_some()
        );
        assert!(
            create(403, "forbidden by policy")
                .permanent_reason()
                .is_some()
        );
        assert!(
            create(403, "exceeded quota: q")
                .permanent_reason()
                .is_none()
        );
        assert!(create(500, "etcd down").permanent_reason().is_none());
        assert!(create(409, "exists").permanent_reason().is_none());
        assert!(Error::InvalidSpec("x".into()).permanent_reason().is_some());
        assert!(
            Error::ApplyStatus(api(422, "bad"))
                .permanent_reason()
                .is_none()
        );
    }
}
