//! Duplicate reuse: the operator's decision for a ClothJob whose runner reported a
//! `status.reuseKey` (the sha256 of its source bytes, pipeline and output settings): run the
//! pipeline, wait for an identical job that is running, or copy the outputs of one that
//! succeeded within the reuse window. Pure: decided from the ClothJob cache of the namespace
//! and the in-memory claim (see [`decide_reuse`]); the decision is kept in `status.reuse`.

use std::time::Duration;

use clothjob_api::{ClothJob, Phase, ReuseDecision, ReusePolicy, ReuseStatus};
use k8s_openapi::jiff::Timestamp;

use crate::queue::is_finished;

/// How often a runner waiting for an identical job has the decision looked at again (a
/// safety net: the finishing job's status change also wakes the reconciler).
pub const WAIT_RECHECK: Duration = Duration::from_secs(2);

/// The `reuseKey` a ClothJob's runner reported, when it may take part in reuse at all
/// (`spec.reuse` is not `Never`).
pub fn reuse_key(cj: &ClothJob) -> Option<&str> {
    if cj.spec.reuse == ReusePolicy::Never {
        return None;
    }
    cj.status.as_ref()?.reuse_key.as_deref()
}

fn name(cj: &ClothJob) -> &str {
    cj.metadata.name.as_deref().unwrap_or_default()
}

fn decision_for<'a>(cj: &'a ClothJob, key: &str) -> Option<&'a ReuseStatus> {
    cj.status.as_ref()?.reuse.as_ref().filter(|r| r.key == key)
}

/// A succeeded job with that key and outputs, finished within `window` of `now`.
fn reusable(cj: &ClothJob, window: Duration, now: Timestamp) -> Option<i64> {
    let s = cj.status.as_ref()?;
    if s.phase != Some(Phase::Succeeded) || s.outputs.as_ref().is_none_or(Vec::is_empty) {
        return None;
    }
    let done = s.completion_time.as_ref()?.0.as_millisecond();
    let age_ms = now.as_millisecond() - done;
    (age_ms <= i64::try_from(window.as_millis()).unwrap_or(i64::MAX)).then_some(done)
}

/// The ClothJobs among `all` that wait for `finished` to end: same namespace, their
/// `status.reuse` says `Wait` on `finished`'s reuse key. A finished job wakes them so they
/// decide again at once instead of at their next [`WAIT_RECHECK`].
pub fn waiters<'a>(
    finished: &ClothJob,
    all: impl IntoIterator<Item = &'a ClothJob>,
) -> Vec<&'a ClothJob> {
    let Some(key) = reuse_key(finished) else {
        return Vec::new();
    };
    let ns = finished.metadata.namespace.as_deref();
    all.into_iter()
        .filter(|cj| cj.metadata.namespace.as_deref() == ns)
        .filter(|cj| decision_for(cj, key).is_some_and(|r| r.decision == ReuseDecision::Wait))
        .collect()
}

/// The decision for `me` (an unfinished ClothJob whose runner reported a reuse key) among
/// `others` (the ClothJobs of the cache; `me` may be among them, and other namespaces are
/// ignored), given `claimant`: the ClothJob this process last let run this key. `None` when
/// `me` takes no part in reuse (no key yet, `spec.reuse: Never`, finished).
///
/// A decision to run or to reuse is kept once made for the same key (a runner acts on it at
/// once). Otherwise: the latest identical job that succeeded within `window` is reused (one
/// that ran the pipeline itself is preferred); else an identical unfinished job told to run
/// (or the claimant, which may not show that decision in the cache yet) is waited for; else
/// `me` runs, and becomes the claimant.
pub fn decide_reuse<'a>(
    me: &ClothJob,
    others: impl IntoIterator<Item = &'a ClothJob>,
    claimant: Option<&str>,
    window: Duration,
    now: Timestamp,
) -> Option<ReuseStatus> {
    let key = reuse_key(me)?;
    if is_finished(me) {
        return None;
    }
    if let Some(d) = decision_for(me, key)
        && d.decision != ReuseDecision::Wait
    {
        return Some(d.clone());
    }
    let ns = me.metadata.namespace.as_deref();
    let mine = name(me);
    let same: Vec<&ClothJob> = others
        .into_iter()
        .filter(|o| {
            o.metadata.namespace.as_deref() == ns && name(o) != mine && reuse_key(o) == Some(key)
        })
        .collect();
    let source = same
        .iter()
        .filter_map(|o| {
            let done = reusable(o, window, now)?;
            let copied = o.status.as_ref().is_some_and(|s| s.reused_from.is_some());
            Some((!copied, done, name(o), *o))
        })
        .max_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    if let Some((_, _, from, o)) = source {
        let s = o.status.clone().unwrap_or_default();
        return Some(ReuseStatus {
            key: key.to_string(),
            decision: ReuseDecision::Reuse,
            job: Some(from.to_string()),
            outputs: s.outputs,
            regions: s.regions,
        });
    }
    let running = same
        .iter()
        .filter(|o| !is_finished(o))
        .filter(|o| decision_for(o, key).is_some_and(|d| d.decision == ReuseDecision::Run))
        .map(|o| name(o))
        .min()
        .or_else(|| {
            claimant.filter(|c| *c != mine && same.iter().any(|o| name(o) == *c && !is_finished(o)))
        });
    Some(match running {
        Some(other) => ReuseStatus {
            key: key.to_string(),
            decision: ReuseDecision::Wait,
            job: Some(other.to_string()),
            ..Default::default()
        },
        None => ReuseStatus {
            key: key.to_string(),
            decision: ReuseDecision::Run,
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> Timestamp {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    /// A ClothJob from a YAML fixture.
    fn cj(yaml: &str) -> ClothJob {
        serde_yaml::from_str(yaml).unwrap()
    }

    const BASE: &str = "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nspec:\n  source: {url: 'http://127.0.0.1/a.jpg'}\n  output: {uri: 'file:///out'}\n";

    fn job(name: &str, ns: &str, status: &str) -> ClothJob {
        cj(&format!(
            "{BASE}metadata: {{name: {name}, namespace: {ns}}}\nstatus:\n{status}"
        ))
    }

    const KEY: &str = "  reuseKey: kkkk\n";
    const SUCCEEDED: &str = "  reuseKey: kkkk\n  phase: Succeeded\n  completionTime: '2026-12-03T11:00:00Z'\n  conditions: [{type: Complete, status: 'True', reason: Succeeded, message: '', lastTransitionTime: '2026-12-03T11:00:00Z'}]\n  outputs: [{name: catalog, uri: 'file:///out/a/catalog.jpg', mediaType: image/jpeg, width: 1, height: 1, bytes: 1, sha256: abc}]\n";

    #[test]
    fn a_finished_job_wakes_the_jobs_of_its_namespace_waiting_on_its_key() {
        let wait = |name: &str, ns: &str, key: &str| {
            job(
                name,
                ns,
                &format!("  reuseKey: {key}\n  reuse: {{key: {key}, decision: Wait, job: a}}\n"),
            )
        };
        let done = job("a", "ns", SUCCEEDED);
        let w1 = wait("w1", "ns", "kkkk");
        let other_ns = wait("w2", "elsewhere", "kkkk");
        let other_key = wait("w3", "ns", "zzzz");
        let runs = job(
            "r",
            "ns",
            "  reuseKey: kkkk\n  reuse: {key: kkkk, decision: Run}\n",
        );
        let all = [&done, &w1, &other_ns, &other_key, &runs];
        let woken: Vec<&str> = waiters(&done, all).into_iter().map(name).collect();
        assert_eq!(woken, ["w1"]);
        let mut never = done.clone();
        never.spec.reuse = ReusePolicy::Never;
        assert!(waiters(&never, all).is_empty());
    }

    #[test]
    fn no_key_or_never_takes_no_part() {
        let me = job("me", "ns", "  phase: Running\n");
        assert_eq!(decide_reuse(&me, [], None, DAY, now()), None);
        let mut never = job("me", "ns", KEY);
        never.spec.reuse = ReusePolicy::Never;
        let done = job("a", "ns", SUCCEEDED);
        assert_eq!(decide_reuse(&never, [&done], None, DAY, now()), None);
    }

    #[test]
    fn the_first_of_its_key_runs() {
        let me = job("me", "ns", KEY);
        let d = decide_reuse(&me, [&me], None, DAY, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Run);
        assert_eq!(d.key, "kkkk");
    }

    #[test]
    fn a_succeeded_identical_job_is_reused_with_its_outputs() {
        let me = job("me", "ns", KEY);
        let done = job("a", "ns", SUCCEEDED);
        let d = decide_reuse(&me, [&done, &me], None, DAY, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Reuse);
        assert_eq!(d.job.as_deref(), Some("a"));
        assert_eq!(d.outputs.unwrap()[0].uri, "file:///out/a/catalog.jpg");
    }

    #[test]
    fn outside_the_window_or_namespace_or_key_it_runs() {
        let me = job("me", "ns", KEY);
        let done = job("a", "ns", SUCCEEDED);
        let short = Duration::from_secs(1800);
        let d = decide_reuse(&me, [&done], None, short, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Run, "an hour old, window 30 min");
        let elsewhere = job("a", "other", SUCCEEDED);
        let d = decide_reuse(&me, [&elsewhere], None, DAY, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Run);
        let other_key = job("a", "ns", &SUCCEEDED.replace("kkkk", "zzzz"));
        let d = decide_reuse(&me, [&other_key], None, DAY, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Run);
        let mut never = job("a", "ns", SUCCEEDED);
        never.spec.reuse = ReusePolicy::Never;
        let d = decide_reuse(&me, [&never], None, DAY, now()).unwrap();
        assert_eq!(
            d.decision,
            ReuseDecision::Run,
            "a Never job is not reused either"
        );
    }

    #[test]
    fn a_job_that_ran_the_pipeline_is_preferred_over_a_copy() {
        let me = job("me", "ns", KEY);
        let original = job("a", "ns", SUCCEEDED);
        let copy = job(
            "b",
            "ns",
            &(SUCCEEDED.replace("11:00:00", "11:30:00") + "  reusedFrom: a\n"),
        );
        let d = decide_reuse(&me, [&copy, &original], None, DAY, now()).unwrap();
        assert_eq!(d.job.as_deref(), Some("a"));
    }

    #[test]
    fn an_identical_running_job_is_waited_for_and_its_failure_frees_the_key() {
        let me = job("me", "ns", KEY);
        let running = job(
            "a",
            "ns",
            "  reuseKey: kkkk\n  phase: Running\n  reuse: {key: kkkk, decision: Run}\n",
        );
        let d = decide_reuse(&me, [&running], None, DAY, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Wait);
        assert_eq!(d.job.as_deref(), Some("a"));
        let failed = job(
            "a",
            "ns",
            "  reuseKey: kkkk\n  phase: Failed\n  reuse: {key: kkkk, decision: Run}\n  conditions: [{type: Failed, status: 'True', reason: X, message: '', lastTransitionTime: '2026-12-03T11:00:00Z'}]\n",
        );
        let waiting = job(
            "me",
            "ns",
            "  reuseKey: kkkk\n  reuse: {key: kkkk, decision: Wait, job: a}\n",
        );
        let d = decide_reuse(&waiting, [&failed], Some("a"), DAY, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Run);
    }

    #[test]
    fn the_claimant_is_waited_for_before_its_decision_reaches_the_cache() {
        let me = job("me", "ns", KEY);
        let claimant = job("a", "ns", KEY);
        let d = decide_reuse(&me, [&claimant, &me], Some("a"), DAY, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Wait);
        let d = decide_reuse(&claimant, [&claimant, &me], Some("a"), DAY, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Run, "the claimant itself runs");
    }

    #[test]
    fn a_run_or_reuse_decision_is_kept_and_a_wait_is_looked_at_again() {
        let running = job(
            "me",
            "ns",
            "  reuseKey: kkkk\n  reuse: {key: kkkk, decision: Run}\n",
        );
        let done = job("a", "ns", SUCCEEDED);
        let d = decide_reuse(&running, [&done], None, DAY, now()).unwrap();
        assert_eq!(
            d.decision,
            ReuseDecision::Run,
            "a runner that was told to run runs"
        );
        let waiting = job(
            "me",
            "ns",
            "  reuseKey: kkkk\n  reuse: {key: kkkk, decision: Wait, job: a}\n",
        );
        let d = decide_reuse(&waiting, [&done], None, DAY, now()).unwrap();
        assert_eq!(d.decision, ReuseDecision::Reuse);
        let stale = job(
            "me",
            "ns",
            "  reuseKey: kkkk\n  reuse: {key: old, decision: Run}\n",
        );
        let d = decide_reuse(&stale, [&done], None, DAY, now()).unwrap();
        assert_eq!(
            d.decision,
            ReuseDecision::Reuse,
            "a decision about another key is not kept"
        );
    }

    #[test]
    fn a_finished_job_takes_no_part() {
        let me = job("me", "ns", SUCCEEDED);
        assert_eq!(decide_reuse(&me, [], None, DAY, now()), None);
    }
}
