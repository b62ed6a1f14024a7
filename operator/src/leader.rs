//! Leader election over a coordination.k8s.io Lease (kube-lease-manager, ADR 0007): of all
//! operator replicas only the holder of the Lease reconciles and records job metrics; the
//! others wait, ready, to take over once the holder stops renewing.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

/// How the operator takes part in leader election.
#[derive(Clone, Debug)]
pub struct Election {
    /// Name of the Lease.
    pub lease: String,
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This process's identity (its pod name and a random suffix).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal; a replica that stopped renewing
    /// is replaced after this long.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// Why leader election could not run.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The settings are impossible (grace must be shorter than the duration, both non-zero).
    #[error(
        "leader election: grace ({grace:?}) must be shorter than the lease duration ({duration:?}), both at least 1 s"
    )]
    Settings {
        /// The lease duration.
        duration: Duration,
        /// The grace.
        grace: Duration,
    },
    /// Creating or reading the Lease failed.
    #[error("leader election: preparing Lease {namespace}/{lease}: {source}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        lease: String,
        /// What failed.
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// How leading ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The process was asked to stop (the Lease was released for the next replica).
    Shutdown,
    /// Another replica holds the Lease now (this one failed to renew in time).
    Lost,
}

impl Election {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ElectionError> {
        let (d, g) = (self.duration.as_secs(), self.grace.as_secs());
        if d == 0 || g == 0 || g >= d {
            return Err(ElectionError::Settings {
                duration: self.duration,
                grace: self.grace,
            });
        }
        Ok(())
    }

    /// Waits to become the leader, then runs `lead` (given a future that resolves when
    /// leadership is lost) until it returns; `on_change` hears every change of role. Returns
    /// at once with [`Ended::Shutdown`] when `shutdown` resolves first.
    pub async fn run<L, Fut>(
        &self,
        client: Client,
        shutdown: impl Future<Output = ()>,
        on_change: impl Fn(bool),
        lead: L,
    ) -> Result<Ended, ElectionError>
    where
        L: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.validate()?;
        let manager = LeaseManagerBuilder::new(client, &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_field_manager(format!("clothjob-operator-lease-{}", self.identity))
            .with_duration(self.duration.as_secs())
            .with_grace(self.grace.as_secs())
            .build()
            .await
            .map_err(|source| ElectionError::Lease {
                namespace: self.namespace.clone(),
                lease: self.lease.clone(),
                source,
            })?;
        let (mut leading, task) = manager.watch().await;
        tokio::pin!(shutdown);
        tracing::info!(lease = %self.lease, identity = %self.identity, "waiting to become the leader");
        loop {
            if *leading.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = &mut shutdown => {
                    drop(leading);
                    let _ = task.await;
                    return Ok(Ended::Shutdown);
                }
                changed = leading.changed() => {
                    if changed.is_err() {
                        return Ok(Ended::Lost);
                    }
                }
            }
        }
        tracing::info!(identity = %self.identity, "leading");
        on_change(true);
        let mut watch = leading.clone();
        let lost: std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>> =
            Box::pin(async move {
                loop {
                    if watch.changed().await.is_err() || !*watch.borrow_and_update() {
                        return;
                    }
                }
            });
        lead(lost).await;
        let ended = if *leading.borrow() {
            Ended::Shutdown
        } else {
            Ended::Lost
        };
        on_change(false);
        // Closing the channel makes the manager release the Lease (a clean stop hands over at
        // once instead of after the lease duration).
        drop(leading);
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the Lease"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the Lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease task"),
            Err(_) => tracing::warn!("releasing the Lease timed out"),
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election(duration: u64, grace: u64) -> Election {
        Election {
            lease: "l".into(),
            namespace: "n".into(),
            identity: "i".into(),
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
        }
    }

    #[test]
    fn impossible_settings_are_refused_before_the_library_would_panic() {
        assert!(election(10, 3).validate().is_ok());
        assert!(election(3, 3).validate().is_err());
        assert!(election(0, 0).validate().is_err());
        assert!(election(5, 0).validate().is_err());
    }
}
