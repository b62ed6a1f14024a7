//! Writes the runner's status fields to the ClothJob with server-side apply, coalescing
//! changes within a stage to at most one write per interval (stage boundaries always go out).

use std::time::{Duration, Instant};

use clothjob_api::{ClothJob, ClothJobStatus, contract};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::progress::Update;

/// When to write: pure policy over time and boundaries.
#[derive(Clone, Debug)]
pub struct Coalescer {
    interval: Duration,
    last: Option<Instant>,
}

impl Coalescer {
    /// At most one non-boundary write per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Whether an update at `now` is written at once; otherwise it waits until the returned
    /// instant (unless a later update replaces it).
    pub fn decide(&self, now: Instant, boundary: bool) -> Result<(), Instant> {
        match self.last {
            _ if boundary => Ok(()),
            None => Ok(()),
            Some(last) if now.duration_since(last) >= self.interval => Ok(()),
            Some(last) => Err(last + self.interval),
        }
    }

    /// Records a write at `now`.
    pub fn wrote(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

/// Applies `status` (runner fields only) with the runner's field manager.
pub async fn apply_status(
    api: &Api<ClothJob>,
    name: &str,
    status: &ClothJobStatus,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({
        "apiVersion": ClothJob::api_version(&()),
        "kind": ClothJob::kind(&()),
        "metadata": { "name": name },
        "status": status,
    });
    let pp = PatchParams::apply(contract::RUNNER_MANAGER).force();
    api.patch_status(name, &pp, &Patch::Apply(&body))
        .await
        .map(|_| ())
}

/// Writes updates until the channel closes; the last state is always written. Returns the
/// number of writes (and the last error of a final write, if any).
pub async fn write_updates(
    api: Api<ClothJob>,
    name: String,
    mut rx: UnboundedReceiver<Update>,
    interval: Duration,
) -> Result<usize, kube::Error> {
    let mut policy = Coalescer::new(interval);
    let mut pending: Option<(Update, Instant)> = None;
    let mut writes = 0;
    loop {
        let next = match &pending {
            Some((_, at)) => {
                let at = tokio::time::Instant::from_std(*at);
                tokio::select! {
                    u = rx.recv() => Some(u),
                    _ = tokio::time::sleep_until(at) => None,
                }
            }
            None => Some(rx.recv().await),
        };
        let update = match next {
            // The deferred update is due.
            None => pending.take().map(|(u, _)| u),
            Some(Some(u)) => match policy.decide(Instant::now(), u.boundary) {
                Ok(()) => {
                    pending = None;
                    Some(u)
                }
                Err(at) => {
                    pending = Some((u, at));
                    None
                }
            },
            // Channel closed: write what is left, then stop.
            Some(None) => {
                if let Some((u, _)) = pending.take() {
                    write_with_retries(&api, &name, &u.state.to_status()).await?;
                    writes += 1;
                }
                return Ok(writes);
            }
        };
        if let Some(u) = update {
            let result = if u.boundary {
                write_with_retries(&api, &name, &u.state.to_status()).await
            } else {
                apply_status(&api, &name, &u.state.to_status()).await
            };
            match result {
                Ok(()) => writes += 1,
                Err(e) => tracing::warn!(error = %e, "writing progress"),
            }
            policy.wrote(Instant::now());
        }
    }
}

async fn write_with_retries(
    api: &Api<ClothJob>,
    name: &str,
    status: &ClothJobStatus,
) -> Result<(), kube::Error> {
    let mut delay = Duration::from_millis(200);
    for _ in 0..4 {
        match apply_status(api, name, status).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "writing status; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    apply_status(api, name, status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_always_go_out_and_others_wait_for_the_interval() {
        let mut c = Coalescer::new(Duration::from_millis(500));
        let t0 = Instant::now();
        assert_eq!(c.decide(t0, false), Ok(()));
        c.wrote(t0);
        assert_eq!(
            c.decide(t0 + Duration::from_millis(100), false),
            Err(t0 + Duration::from_millis(500))
        );
        assert_eq!(c.decide(t0 + Duration::from_millis(100), true), Ok(()));
        assert_eq!(c.decide(t0 + Duration::from_millis(600), false), Ok(()));
    }

    #[test]
    fn a_thousand_fraction_updates_in_one_second_make_at_most_three_writes() {
        let mut c = Coalescer::new(Duration::from_millis(500));
        let t0 = Instant::now();
        let mut writes = 0;
        for i in 0..1000 {
            let now = t0 + Duration::from_millis(i);
            if c.decide(now, false).is_ok() {
                c.wrote(now);
                writes += 1;
            }
        }
        assert!(writes <= 3, "{writes} writes");
        assert!(writes >= 2);
    }
}
