//! Leader election against a real kube-apiserver: a leader cut off from the apiserver (its
//! requests black-holed by a loopback proxy, as during an apiserver restart or a partition)
//! stops leading within its renew deadline and before a standby takes the Lease; a leader
//! that shuts down releases the Lease so the next replica leads at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clothjob_operator::leader::{Election, Ended};
use clothjob_testenv::{ControlPlane, wait_for};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// A loopback TCP proxy to the apiserver that can be cut: while cut, every connection (old
/// and new) stays open but carries nothing, so requests hang like those to a stopped apiserver.
struct Proxy {
    url: String,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: &str) -> Result<Self> {
        let target = upstream
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let mut cut = cut_rx.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    if !*cut.borrow()
                        && let Ok(mut up) = TcpStream::connect(&target).await
                    {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => return,
                            _ = cut.wait_for(|c| *c) => {}
                        }
                    }
                    // Black-holed: hold the connection, answer nothing.
                    let _ = cut.wait_for(|c| !*c).await;
                });
            }
        });
        Ok(Self { url, cut })
    }
}

async fn client_via(cp: &ControlPlane, url: &str) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig_path())?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    config.cluster_url = url.parse()?;
    Ok(kube::Client::try_from(config)?)
}

type Log = Arc<Mutex<Vec<(&'static str, bool, Instant)>>>;

fn first(log: &Log, who: &str, leading: bool) -> Option<Instant> {
    log.lock()
        .unwrap()
        .iter()
        .find(|(w, l, _)| *w == who && *l == leading)
        .map(|e| e.2)
}

/// Runs one replica until `stop` is set; returns how its leading ended.
fn replica(
    name: &'static str,
    lease: &str,
    client: kube::Client,
    log: &Log,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<Ended>> {
    let election = Election {
        lease: lease.to_string(),
        namespace: "default".to_string(),
        identity: format!("{name}-{lease}"),
        duration: Duration::from_secs(6),
        renew_deadline: Duration::from_secs(4),
        retry_period: Duration::from_secs(1),
    };
    let log = log.clone();
    tokio::spawn(async move {
        let mut shutdown = stop.clone();
        let mut lead_stop = stop;
        let on = log.clone();
        let ended = election
            .run(
                client,
                async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                },
                move |leading| on.lock().unwrap().push((name, leading, Instant::now())),
                move |lost| async move {
                    tokio::select! {
                        _ = lost => {},
                        _ = lead_stop.wait_for(|s| *s) => {},
                    }
                },
            )
            .await?;
        Ok(ended)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_stops_before_the_standby_leads_and_a_stopping_one_hands_over_at_once()
-> Result<()> {
    let cp = ControlPlane::shared().await?;
    let lease = format!("leader-test-{}", std::process::id());
    let proxy = Proxy::start(cp.server_url()).await?;
    let log: Log = Arc::default();
    let (stop_a, stop_rx_a) = watch::channel(false);
    let a = replica(
        "a",
        &lease,
        client_via(cp, &proxy.url).await?,
        &log,
        stop_rx_a,
    );
    wait_for(
        "a leading",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { Ok(first(&log, "a", true)) },
    )
    .await?;
    let (stop_b, stop_rx_b) = watch::channel(false);
    let b = replica("b", &lease, cp.client().await?, &log, stop_rx_b);
    // b has read the Lease held by a (its first try is immediate) before a is cut off.
    wait_for(
        "b to see the Lease",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let client = cp.client();
            let lease = lease.clone();
            async move {
                let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
                    kube::Api::namespaced(client.await?, "default");
                let held = api.get(&lease).await?.spec.and_then(|s| s.holder_identity);
                Ok(held.filter(|h| h.starts_with("a-")).map(|_| ()))
            }
        },
    )
    .await?;

    let cut = Instant::now();
    proxy.cut.send_replace(true);
    let ended = tokio::time::timeout(Duration::from_secs(20), a)
        .await
        .context("a did not stop leading")???;
    assert_eq!(ended, Ended::Lost);
    let a_lost = first(&log, "a", false).unwrap();
    wait_for(
        "b leading",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { Ok(first(&log, "b", true)) },
    )
    .await?;
    let b_leads = first(&log, "b", true).unwrap();
    eprintln!(
        "cut at 0 s: a stopped leading after {:.1} s, b leads after {:.1} s",
        (a_lost - cut).as_secs_f64(),
        (b_leads - cut).as_secs_f64()
    );
    assert!(
        a_lost - cut <= Duration::from_secs(4 + 1 + 1),
        "a kept leading past its renew deadline"
    );
    assert!(a_lost < b_leads, "two leaders at once");
    assert!(
        b_leads - cut >= Duration::from_secs(4),
        "b took a Lease that was still valid"
    );
    drop(stop_a);

    // b stops cleanly: it releases the Lease and c leads without waiting out the duration.
    let (_stop_c, stop_rx_c) = watch::channel(false);
    let c = replica("c", &lease, cp.client().await?, &log, stop_rx_c);
    stop_b.send_replace(true);
    let stopped = Instant::now();
    assert_eq!(b.await??, Ended::Shutdown);
    wait_for(
        "c leading",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { Ok(first(&log, "c", true)) },
    )
    .await?;
    let took = first(&log, "c", true).unwrap() - stopped;
    eprintln!("c leads {:.1} s after b stopped", took.as_secs_f64());
    assert!(
        took < Duration::from_secs(6),
        "c waited for the released Lease to expire: {took:?}"
    );
    c.abort();
    Ok(())
}
