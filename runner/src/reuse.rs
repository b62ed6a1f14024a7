//! Duplicate reuse in the runner: the `reuseKey` of a run (what identical jobs share), the
//! wait for the operator's decision about it, and the copy of an identical job's outputs under
//! this job's own output directory.

use std::time::{Duration, Instant};

use clothjob_api::{ClothJob, OutputStatus, ReuseDecision, ReuseStatus};
use sha2::{Digest, Sha256};

use crate::error::RunError;
use crate::source::{SourceLocation, fetch};
use crate::store::{ObjectStoreOpts, put};
use crate::writer::{Backoff, StatusTarget};

/// How often the runner reads its ClothJob while it waits for the operator's decision.
const POLL: Duration = Duration::from_secs(1);
/// With no decision for its key after this long (an operator that is down or too old to
/// decide), the runner runs the pipeline.
const NO_DECISION: Duration = Duration::from_secs(60);
/// A runner told to wait for an identical job runs the pipeline itself after this long (an
/// operator that stopped deciding must not keep it waiting until its deadline).
const LONGEST_WAIT: Duration = Duration::from_secs(30 * 60);
/// The largest output file copied from an identical job.
const MAX_OUTPUT_BYTES: u64 = 256 * 1024 * 1024;

/// What the runner needs to take part in reuse: its ClothJob, and the settings identical jobs
/// share (without the source, the output location or any credential).
#[derive(Clone)]
pub struct ReuseGate {
    /// The runner's own ClothJob (read for the operator's decision).
    pub target: StatusTarget,
    /// The shared settings, serialised (see [`settings_of`]).
    pub settings: String,
}

impl std::fmt::Debug for ReuseGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReuseGate")
            .field("clothjob", &self.target.name())
            .finish_non_exhaustive()
    }
}

/// The settings of `cj` that decide its outputs besides the source bytes: the whole
/// `spec.pipeline` and the encoding settings of `spec.output` (`maxSide`, `jpegQuality`).
pub fn settings_of(cj: &ClothJob) -> String {
    let value = serde_json::json!({
        "pipeline": cj.spec.pipeline,
        "maxSide": cj.spec.output.max_side,
        "jpegQuality": cj.spec.output.jpeg_quality,
    });
    value.to_string()
}

/// The reuse key: sha256 over a version tag, the runner's version (a new runner may make
/// other bytes), the source's sha256 and the shared settings; hex.
pub fn reuse_key(source_sha256: &str, settings: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        "clothjob-reuse/1",
        env!("CARGO_PKG_VERSION"),
        source_sha256,
        settings,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// What the operator's decision tells the runner to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Run the pipeline (the operator said so, or said nothing in time).
    Run(&'static str),
    /// Copy these outputs of an identical job.
    Reuse(ReuseStatus),
}

/// The verdict for one read of the ClothJob `status.reuse` (`None`: keep waiting), after
/// `waited` without a decision and `waiting` since the operator said Wait.
pub fn verdict(
    decision: Option<&ReuseStatus>,
    key: &str,
    no_decision_for: Duration,
    waiting_for: Duration,
) -> Option<Verdict> {
    match decision.filter(|d| d.key == key) {
        Some(d) if d.decision == ReuseDecision::Run => Some(Verdict::Run("the operator said run")),
        Some(d) if d.decision == ReuseDecision::Reuse => Some(Verdict::Reuse(d.clone())),
        Some(_) if waiting_for >= LONGEST_WAIT => {
            Some(Verdict::Run("waited the longest time for an identical job"))
        }
        Some(_) => None,
        None if no_decision_for >= NO_DECISION => {
            Some(Verdict::Run("no reuse decision from the operator in time"))
        }
        None => None,
    }
}

impl ReuseGate {
    /// Polls the ClothJob until the operator decided about `key`. A read that fails for good
    /// (the apiserver away for minutes, the ClothJob gone) is the run's error.
    pub async fn await_verdict(&self, key: &str) -> Result<Verdict, RunError> {
        let started = Instant::now();
        let mut wait_started: Option<Instant> = None;
        loop {
            let cj = self.target.read(Backoff::MUST_LAND).await?;
            let decision = cj.status.as_ref().and_then(|s| s.reuse.as_ref());
            let is_wait =
                decision.is_some_and(|d| d.key == key && d.decision == ReuseDecision::Wait);
            if is_wait && wait_started.is_none() {
                tracing::info!(job = ?decision.and_then(|d| d.job.clone()), "waiting for an identical job");
                wait_started = Some(Instant::now());
            }
            let waiting_for = wait_started.map_or(Duration::ZERO, |w| w.elapsed());
            let no_decision_for = if wait_started.is_some() {
                Duration::ZERO
            } else {
                started.elapsed()
            };
            if let Some(v) = verdict(decision, key, no_decision_for, waiting_for) {
                return Ok(v);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Copies each output of an identical job into `dir` under the same file name, checking
/// its sha256; the copies' statuses (their own URIs) in the same order.
pub async fn copy_outputs(
    outputs: &[OutputStatus],
    dir: &str,
    timeout: Duration,
    opts: &ObjectStoreOpts,
) -> Result<Vec<OutputStatus>, RunError> {
    let dir = dir.trim_end_matches('/');
    let copies = outputs.iter().map(|o| async move {
        let file = o
            .uri
            .rsplit('/')
            .next()
            .filter(|f| !f.is_empty() && *f != "." && *f != "..")
            .ok_or_else(|| RunError::Worker(format!("output {} names no file", o.uri)))?;
        let bytes = fetch(
            &SourceLocation::Uri(o.uri.clone()),
            MAX_OUTPUT_BYTES,
            timeout,
        )
        .await?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != o.sha256 {
            return Err(RunError::Worker(format!(
                "{} has sha256 {sha}, its job recorded {}",
                o.uri, o.sha256
            )));
        }
        let uri = format!("{dir}/{file}");
        put(&uri, bytes.to_vec(), opts).await?;
        Ok(OutputStatus { uri, ..o.clone() })
    });
    futures::future::try_join_all(copies).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const K: &str = "kkkk";

    fn decision(d: ReuseDecision, key: &str) -> ReuseStatus {
        ReuseStatus {
            key: key.into(),
            decision: d,
            job: Some("a".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_key_changes_with_the_source_and_every_setting() {
        let yaml = "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {name: a}\nspec:\n  source: {url: 'http://127.0.0.1/a.jpg'}\n  output: {uri: 'file:///out'}\n";
        let a: ClothJob = serde_yaml::from_str(yaml).unwrap();
        let mut b = a.clone();
        b.spec.output.uri = "s3://elsewhere/x".into();
        b.spec.source.url = Some("http://127.0.0.1/b.jpg".into());
        assert_eq!(
            reuse_key("s", &settings_of(&a)),
            reuse_key("s", &settings_of(&b)),
            "the output location and the source's address are not part of it"
        );
        let mut c = a.clone();
        c.spec.output.jpeg_quality = 70;
        let mut d = a.clone();
        d.spec.pipeline.expansion.enabled = !d.spec.pipeline.expansion.enabled;
        let keys: std::collections::BTreeSet<String> = [
            reuse_key("s", &settings_of(&a)),
            reuse_key("t", &settings_of(&a)),
            reuse_key("s", &settings_of(&c)),
            reuse_key("s", &settings_of(&d)),
        ]
        .into_iter()
        .collect();
        assert_eq!(keys.len(), 4);
        assert_eq!(reuse_key("s", "x").len(), 64);
    }

    #[test]
    fn the_verdict_follows_the_decision_for_this_key() {
        let z = Duration::ZERO;
        assert_eq!(verdict(None, K, z, z), None);
        let run = decision(ReuseDecision::Run, K);
        assert!(matches!(
            verdict(Some(&run), K, z, z),
            Some(Verdict::Run(_))
        ));
        let reuse = decision(ReuseDecision::Reuse, K);
        assert_eq!(
            verdict(Some(&reuse), K, z, z),
            Some(Verdict::Reuse(reuse.clone()))
        );
        let wait = decision(ReuseDecision::Wait, K);
        assert_eq!(verdict(Some(&wait), K, z, Duration::from_secs(60)), None);
        let other_key = decision(ReuseDecision::Reuse, "old");
        assert_eq!(
            verdict(Some(&other_key), K, z, z),
            None,
            "about another key"
        );
    }

    #[test]
    fn silence_and_endless_waits_end_in_a_run() {
        let z = Duration::ZERO;
        assert!(matches!(
            verdict(None, K, NO_DECISION, z),
            Some(Verdict::Run(_))
        ));
        let wait = decision(ReuseDecision::Wait, K);
        assert!(matches!(
            verdict(Some(&wait), K, z, LONGEST_WAIT),
            Some(Verdict::Run(_))
        ));
    }
}
