//! Leader election over a coordination.k8s.io Lease (ADR 0007), with client-go's semantics:
//! of all operator replicas only the holder of the Lease reconciles and records job metrics;
//! a standby takes the Lease once it has seen no renewal for the lease duration (measured on
//! its own clock, so clock skew between nodes does not matter), and a leader that cannot renew
//! within its renew deadline (apiserver down, partitioned, forbidden) stops leading before a
//! standby may take over.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// How the operator takes part in leader election.
#[derive(Clone, Debug)]
pub struct Election {
    /// Name of the Lease.
    pub lease: String,
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This process's identity (its pod name and a random suffix).
    pub identity: String,
    /// How long a standby waits, after it last saw the Lease renewed, before it takes it.
    pub duration: Duration,
    /// How long the leader keeps leading without a successful renewal (shorter than the
    /// duration, so it has stopped before any standby may take over).
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries to take the Lease.
    pub retry_period: Duration,
}

/// Why leader election could not run.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The settings are impossible.
    #[error(
        "leader election: need retry period ({retry:?}) < renew deadline ({renew:?}) < lease duration ({duration:?}), all at least 1 s"
    )]
    Settings {
        /// The lease duration.
        duration: Duration,
        /// The renew deadline.
        renew: Duration,
        /// The retry period.
        retry: Duration,
    },
}

/// How leading ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The process was asked to stop (the Lease was released for the next replica).
    Shutdown,
    /// This replica could not renew within its deadline, or another one holds the Lease now.
    Lost,
}

/// The part of a Lease that tells whether it changed since it was last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<String>,
    resource_version: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref().map(|t| t.0.to_string())),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What a replica does with the Lease it has just read (pure, so it is unit-tested).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// There is no Lease: create it, held by this replica.
    Create,
    /// Write this replica as holder: a renewal (`taken: false`) or a take-over.
    Hold {
        /// Whether the holder changes (acquire time and transitions move on).
        taken: bool,
    },
    /// Another replica holds a Lease that is still valid.
    Wait,
}

fn step(record: Option<&Record>, me: &str, unchanged_for: Duration, duration: Duration) -> Step {
    match record {
        None => Step::Create,
        Some(r) => match r.holder.as_deref() {
            Some(h) if h == me => Step::Hold { taken: false },
            Some(_) if unchanged_for < duration => Step::Wait,
            _ => Step::Hold { taken: true },
        },
    }
}

/// One replica's view of the Lease: what it last read and when (on its own clock).
struct Elector {
    api: Api<Lease>,
    election: Election,
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// Reads the Lease and writes this replica as holder where it may: `Ok(true)` when it
    /// holds the Lease now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let e = &self.election;
        let current = self.api.get_opt(&e.lease).await?;
        let record = current.as_ref().map(Record::of);
        if let Some(r) = &record
            && self.observed.as_ref().is_none_or(|(seen, _)| seen != r)
        {
            self.observed = Some((r.clone(), now));
        }
        let unchanged_for = self
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, at)| now.saturating_duration_since(*at));
        let held = |spec: &LeaseSpec, taken: bool| -> LeaseSpec {
            let stamp = MicroTime(Timestamp::now());
            LeaseSpec {
                holder_identity: Some(e.identity.clone()),
                lease_duration_seconds: i32::try_from(e.duration.as_secs()).ok(),
                acquire_time: if taken {
                    Some(stamp.clone())
                } else {
                    spec.acquire_time.clone()
                },
                renew_time: Some(stamp),
                lease_transitions: Some(
                    spec.lease_transitions.unwrap_or(0)
                        + i32::from(taken && spec.holder_identity.is_some()),
                ),
                ..spec.clone()
            }
        };
        let written = match (
            step(record.as_ref(), &e.identity, unchanged_for, e.duration),
            current,
        ) {
            (Step::Wait, _) => return Ok(false),
            (Step::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(e.lease.clone()),
                        namespace: Some(e.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(held(&LeaseSpec::default(), true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Step::Hold { taken }, Some(mut lease)) => {
                let spec = lease.spec.take().unwrap_or_default();
                lease.spec = Some(held(&spec, taken));
                if taken {
                    tracing::info!(previous = ?spec.holder_identity, "taking the Lease");
                }
                // metadata.resourceVersion is kept: a concurrent writer makes this a 409.
                self.api
                    .replace(&e.lease, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                self.observed = Some((Record::of(&lease), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Gives the Lease up (holder cleared, duration 1 s) so a standby takes over at once.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.election.lease).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.election.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        self.api
            .replace(&self.election.lease, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// One attempt, bounded in time (a request to a restarting apiserver can hang).
    async fn attempt(&mut self, limit: Duration) -> bool {
        match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
            Ok(Ok(held)) => held,
            Ok(Err(err)) => {
                tracing::warn!(lease = %self.election.lease, error = %err, "leader election: reading or writing the Lease");
                false
            }
            Err(_) => {
                tracing::warn!(lease = %self.election.lease, "leader election: the apiserver did not answer in time");
                false
            }
        }
    }

    /// Renews every retry period until a renewal fails past the deadline or another replica
    /// holds the Lease; returns then.
    async fn keep_renewing(&mut self) {
        let e = self.election.clone();
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(e.retry_period).await;
            let left = e.renew_deadline.saturating_sub(renewed.elapsed());
            if !left.is_zero() && self.attempt(left).await {
                renewed = Instant::now();
                continue;
            }
            let other = self
                .observed
                .as_ref()
                .and_then(|(r, _)| r.holder.clone())
                .filter(|h| *h != e.identity);
            if let Some(holder) = other {
                tracing::error!(%holder, "another replica holds the Lease");
                return;
            }
            if renewed.elapsed() >= e.renew_deadline {
                tracing::error!(deadline = ?e.renew_deadline, "could not renew the Lease in time");
                return;
            }
        }
    }
}

/// A retry period stretched by up to 20% at random, so standbys do not try in lock-step.
fn jittered(period: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    period + period.mul_f64(f64::from(nanos % 1000) / 5000.0)
}

impl Election {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ElectionError> {
        let (d, r, p) = (self.duration, self.renew_deadline, self.retry_period);
        if p < Duration::from_secs(1) || p >= r || r >= d {
            return Err(ElectionError::Settings {
                duration: d,
                renew: r,
                retry: p,
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
        L: FnOnce(Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.validate()?;
        let mut elector = Elector {
            api: Api::namespaced(client, &self.namespace),
            election: self.clone(),
            observed: None,
        };
        tokio::pin!(shutdown);
        tracing::info!(lease = %self.lease, identity = %self.identity, "waiting to become the leader");
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(Ended::Shutdown),
                held = elector.attempt(self.renew_deadline) => if held { break },
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(Ended::Shutdown),
                _ = tokio::time::sleep(jittered(self.retry_period)) => {},
            }
        }
        tracing::info!(identity = %self.identity, "leading");
        on_change(true);
        let (lost_tx, mut lost_rx) = tokio::sync::watch::channel(false);
        let lost: Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(async move {
            let _ = lost_rx.wait_for(|l| *l).await;
        });
        let leading = lead(lost);
        tokio::pin!(leading);
        let ended = tokio::select! {
            () = &mut leading => Ended::Shutdown,
            () = elector.keep_renewing() => {
                let _ = lost_tx.send(true);
                // The controller stops on `lost`; wait for it to wind down.
                leading.await;
                Ended::Lost
            }
        };
        on_change(false);
        if ended == Ended::Shutdown {
            // Releasing hands over at once instead of after the lease duration.
            match tokio::time::timeout(self.renew_deadline, elector.release()).await {
                Ok(Ok(())) => tracing::info!("released the Lease"),
                Ok(Err(e)) => tracing::warn!(error = %e, "releasing the Lease"),
                Err(_) => tracing::warn!("releasing the Lease timed out"),
            }
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election(duration: u64, renew: u64, retry: u64) -> Election {
        Election {
            lease: "l".into(),
            namespace: "n".into(),
            identity: "i".into(),
            duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn impossible_settings_are_refused() {
        assert!(election(10, 7, 2).validate().is_ok());
        assert!(election(10, 10, 2).validate().is_err());
        assert!(election(10, 7, 7).validate().is_err());
        assert!(election(10, 7, 0).validate().is_err());
    }

    fn held_by(h: Option<&str>) -> Record {
        Record {
            holder: h.map(str::to_string),
            renew_time: None,
            resource_version: Some("1".into()),
        }
    }

    #[test]
    fn a_standby_waits_out_a_valid_lease_and_takes_an_expired_or_released_one() {
        let d = Duration::from_secs(10);
        let s = Duration::from_secs;
        assert_eq!(step(None, "me", s(0), d), Step::Create);
        assert_eq!(
            step(Some(&held_by(Some("me"))), "me", s(99), d),
            Step::Hold { taken: false }
        );
        assert_eq!(
            step(Some(&held_by(Some("other"))), "me", s(9), d),
            Step::Wait
        );
        assert_eq!(
            step(Some(&held_by(Some("other"))), "me", s(10), d),
            Step::Hold { taken: true }
        );
        assert_eq!(
            step(Some(&held_by(None)), "me", s(0), d),
            Step::Hold { taken: true }
        );
    }
}
