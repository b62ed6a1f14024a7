//! The operator's entry point: settings, logging, the HTTP endpoints and the controller.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use clothjob_operator::config::OperatorConfig;
use clothjob_operator::leader::{Election, Ended};
use clothjob_operator::metrics::Metrics;
use clothjob_operator::reconcile::{Context, run_controller};
use clothjob_operator::server::{Health, router};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `clothjob-operator smoke-test`: the chart's `helm test` (a tiny ClothJob to completion).
    if std::env::args().nth(1).as_deref() == Some("smoke-test") {
        let _logs = clothjob_operator::server::init_logging(None);
        let cfg = clothjob_operator::smoke::SmokeConfig::parse_from(std::env::args().skip(1));
        let client = kube::Client::try_default().await?;
        if let Err(e) = clothjob_operator::smoke::run(client, &cfg).await {
            eprintln!("smoke test failed: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let config = OperatorConfig::parse();
    let telemetry = clothjob_operator::server::init_logging(config.otlp_endpoint.clone());
    let result = operate(config).await;
    // Flush the last spans, whatever the outcome.
    clothjob_telemetry::shutdown_or_log(telemetry);
    result
}

/// Runs the operator with its settings until shutdown or a lost Lease.
async fn operate(config: OperatorConfig) -> Result<(), Box<dyn std::error::Error>> {
    // A bad policy setting stops the operator at once, before any runner is started with it.
    config.validate()?;
    tracing::info!(
        runner_images = ?config.runner_images(),
        runner_service_accounts = ?config.runner_service_accounts(),
        allowed_networks = ?config.networks(),
        default_active_deadline_seconds = config.default_active_deadline_seconds,
        pending_timeout_seconds = config.pending_timeout_seconds,
        "runner policy"
    );
    let client = kube::Client::try_default().await?;
    let metrics = Metrics::new()?;
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(&config.http_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let health = Health {
        ready: ready.clone(),
        metrics: metrics.clone(),
    };
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        let serve = axum::serve(listener, router(health)).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "http server");
        }
    });

    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let election = config.leader_elect.then(|| Election {
        lease: config.leader_election_lease.clone(),
        namespace: config.leader_election_namespace.clone(),
        identity: identity(),
        duration: Duration::from_secs(config.lease_duration_seconds),
        renew_deadline: Duration::from_secs(config.lease_renew_deadline_seconds),
        retry_period: Duration::from_secs(config.lease_retry_period_seconds),
    });
    let ctx = Arc::new(Context::new(client.clone(), config, metrics.clone()));
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let ended = match election {
        None => {
            metrics.leader.set(1);
            run_controller(ctx, ready, stopped(stop_rx.clone())).await;
            Ended::Shutdown
        }
        Some(election) => {
            // A standby is ready: it serves its endpoints and waits to take over.
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
            let gauge = metrics.leader.clone();
            let ctl_stop = stop_rx.clone();
            election
                .run(
                    client,
                    stopped(stop_rx.clone()),
                    move |leading| gauge.set(i64::from(leading)),
                    move |lost| async move {
                        let stop = stopped(ctl_stop);
                        run_controller(ctx, ready, async move {
                            tokio::select! {
                                _ = stop => {},
                                _ = lost => tracing::error!("lost the leader Lease; stopping"),
                            }
                        })
                        .await;
                    },
                )
                .await?
        }
    };
    let _ = http.await;
    if ended == Ended::Lost {
        // Exit non-zero: the kubelet restarts the process, which rejoins as a standby.
        return Err("lost the leader Lease to another replica".into());
    }
    tracing::info!("stopped");
    Ok(())
}

/// This process's identity in leader election: its pod name (or host name) and pid.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "clothjob-operator".to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nanos:x}", std::process::id())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
