//! Prometheus metrics of the operator: reconciles, failures, job results and per-stage latency.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// The operator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry served at /metrics.
    pub registry: Registry,
    /// Reconciles by result (ok, error).
    pub reconciles: IntCounterVec,
    /// Reconcile failures by error category.
    pub reconcile_errors: IntCounterVec,
    /// Finished jobs by result and reason.
    pub jobs_finished: IntCounterVec,
    /// Seconds from creation to completion by result.
    pub job_duration: HistogramVec,
    /// Seconds per pipeline stage by stage and backend, for succeeded jobs.
    pub stage_duration: HistogramVec,
    /// 1 while this replica holds the leader Lease (or runs without leader election), else 0.
    pub leader: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "clothjob_reconcile_total",
                "Reconciles of ClothJobs by result",
            ),
            &["result"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "clothjob_reconcile_errors_total",
                "Failed reconciles by error category",
            ),
            &["category"],
        )?;
        let jobs_finished = IntCounterVec::new(
            Opts::new(
                "clothjob_jobs_finished_total",
                "ClothJobs that finished, by result and reason",
            ),
            &["result", "reason"],
        )?;
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "clothjob_job_duration_seconds",
                "Seconds from creation to finish",
            )
            .buckets(vec![
                1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
            ]),
            &["result"],
        )?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "clothjob_stage_duration_seconds",
                "Seconds per pipeline stage of succeeded jobs",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            &["stage", "backend"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(jobs_finished.clone()))?;
        registry.register(Box::new(job_duration.clone()))?;
        registry.register(Box::new(stage_duration.clone()))?;
        let leader = IntGauge::new(
            "clothjob_leader",
            "1 while this operator replica is the leader and reconciles, 0 while it stands by",
        )?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_errors,
            jobs_finished,
            job_duration,
            stage_duration,
            leader,
        })
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}
