//! OTLP export against a real loopback HTTP server that decodes OTLP/HTTP protobuf
//! (`ExportTraceServiceRequest`): spans arrive in the trace of the given `traceparent` and are
//! flushed at shutdown; with no endpoint nothing is built and nothing is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use clothjob_telemetry::{Settings, set_parent, subscriber};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// A collector on loopback: records every decoded request (on a runtime of its own thread).
fn collector() -> anyhow::Result<(String, Received, std::sync::mpsc::Sender<()>)> {
    let received: Received = Arc::default();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let state = received.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addr_tx.send(listener.local_addr()?)?;
            let app = axum::Router::new()
                .route(
                    "/v1/traces",
                    post(|State(r): State<Received>, body: Bytes| async move {
                        match ExportTraceServiceRequest::decode(body) {
                            Ok(req) => {
                                r.lock().map(|mut v| v.push(req)).ok();
                                axum::http::StatusCode::OK
                            }
                            Err(_) => axum::http::StatusCode::BAD_REQUEST,
                        }
                    }),
                )
                .with_state(state);
            let stop = async move {
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await?;
            anyhow::Ok(())
        })
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(10))?;
    Ok((format!("http://{addr}"), received, stop_tx))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn spans_are_exported_in_the_trace_of_the_traceparent_and_flushed_at_shutdown() -> anyhow::Result<()>
{
    let (endpoint, received, stop) = collector()?;
    let settings = Settings {
        service: "clothjob-runner".into(),
        otlp_endpoint: Some(endpoint),
        json: true,
    };
    let (sub, telemetry) = subscriber(&settings, std::io::sink)?;
    assert!(telemetry.exporting());
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    tracing::subscriber::with_default(sub, || {
        let job = tracing::info_span!("job", clothjob = "shirt");
        // As the operator's `#[instrument]`ed reconcile does: parent set once inside the span.
        job.in_scope(|| {
            set_parent(
                &tracing::Span::current(),
                &format!("00-{trace}-{parent}-01"),
            );
            let stage = tracing::info_span!("stage", stage = "encode");
            stage.in_scope(|| tracing::info!("encoded"));
        });
    });
    // No wait for the batch interval: shutdown flushes.
    telemetry.shutdown()?;
    let reqs = received.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    let _ = stop.send(());
    let spans: Vec<_> = reqs
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"job") && names.contains(&"stage"),
        "{names:?}"
    );
    for s in &spans {
        assert_eq!(hex(&s.trace_id), trace, "span {}", s.name);
    }
    let job = spans
        .iter()
        .find(|s| s.name == "job")
        .ok_or_else(|| anyhow::anyhow!("no job"))?;
    let stage = spans
        .iter()
        .find(|s| s.name == "stage")
        .ok_or_else(|| anyhow::anyhow!("no stage"))?;
    assert_eq!(
        hex(&job.parent_span_id),
        parent,
        "job's parent is the traceparent's span"
    );
    assert_eq!(
        stage.parent_span_id, job.span_id,
        "stage is the job's child"
    );
    let service = reqs
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|rs| rs.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .map(|v| format!("{:?}", v.value));
    assert!(
        service
            .as_deref()
            .is_some_and(|s| s.contains("clothjob-runner")),
        "{service:?}"
    );
    Ok(())
}

#[test]
fn with_no_endpoint_no_exporter_is_built_and_nothing_is_sent() -> anyhow::Result<()> {
    let (endpoint, received, stop) = collector()?;
    for none in [None, Some(String::new()), Some("  ".to_string())] {
        let settings = Settings {
            service: "clothjob-operator".into(),
            otlp_endpoint: none,
            json: false,
        };
        assert_eq!(settings.traces_url(), None);
        let (sub, telemetry) = subscriber(&settings, std::io::sink)?;
        assert!(!telemetry.exporting());
        tracing::subscriber::with_default(sub, || {
            let job = tracing::info_span!("job");
            set_parent(
                &job,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
            job.in_scope(|| tracing::info!("hello"));
        });
        telemetry.shutdown()?;
    }
    // The collector was up all along (it answers) and got nothing.
    let settings = Settings {
        service: "probe".into(),
        otlp_endpoint: Some(format!("{endpoint}/v1/traces/")),
        json: false,
    };
    assert_eq!(settings.traces_url(), Some(format!("{endpoint}/v1/traces")));
    assert!(
        received
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .is_empty()
    );
    let _ = stop.send(());
    Ok(())
}
