//! Logging and optional trace export shared by the operator and the runner: logs on stderr
//! (human-readable on a terminal, one JSON object per line elsewhere, each line with its spans
//! and their fields), and, only when an OTLP endpoint is configured, the spans exported over
//! OTLP/HTTP protobuf so that one ClothJob is one trace (the runner's spans are children of
//! the `TRACEPARENT` the operator passes). With no endpoint no exporter is built.

use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The environment variable naming the OTLP endpoint (the OpenTelemetry standard one); the
/// operator passes its own endpoint to the runner under this name.
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The path of the traces signal under an OTLP/HTTP base endpoint.
const TRACES_PATH: &str = "/v1/traces";

/// How long one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Failures of setting up or shutting down telemetry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OTLP exporter could not be built (a malformed endpoint, no HTTP client).
    #[error("building the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The traces endpoint that was tried.
        endpoint: String,
        /// Why it failed.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber was already installed.
    #[error("installing the log subscriber: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
    /// Flushing the spans at shutdown failed (the collector unreachable, a time-out).
    #[error("flushing spans at shutdown: {0}")]
    Shutdown(#[from] opentelemetry_sdk::error::OTelSdkError),
}

/// How to log and whether to export.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The `service.name` of exported spans (`clothjob-operator`, `clothjob-runner`).
    pub service: String,
    /// OTLP/HTTP base endpoint (e.g. `http://otel-collector:4318`); spans go to
    /// `<endpoint>/v1/traces` (an endpoint already ending in `/v1/traces` is used as is).
    /// `None` or empty: nothing is exported and no exporter is built.
    pub otlp_endpoint: Option<String>,
    /// One JSON object per line; when false, human-readable lines.
    pub json: bool,
}

impl Settings {
    /// Settings for `service`: JSON unless stderr is a terminal, and the endpoint given (a
    /// flag's value, which clap may have read from [`ENV_OTLP_ENDPOINT`]).
    pub fn new(service: &str, otlp_endpoint: Option<String>) -> Self {
        use std::io::IsTerminal as _;
        Self {
            service: service.to_string(),
            otlp_endpoint,
            json: !std::io::stderr().is_terminal(),
        }
    }

    /// The traces URL, when export is on.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?.trim();
        if base.is_empty() {
            return None;
        }
        let base = base.trim_end_matches('/');
        Some(if base.ends_with(TRACES_PATH) {
            base.to_string()
        } else {
            format!("{base}{TRACES_PATH}")
        })
    }
}

/// The endpoint from the environment ([`ENV_OTLP_ENDPOINT`]), when set and not empty.
pub fn endpoint_from_env() -> Option<String> {
    std::env::var(ENV_OTLP_ENDPOINT)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// The exporter half of telemetry: holds the tracer provider when export is on. Call
/// [`Telemetry::shutdown`] before the process exits so the last spans are sent.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether an exporter was built (an endpoint was configured).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes the spans still buffered and stops the exporter (nothing when not exporting).
    pub fn shutdown(self) -> Result<(), Error> {
        match self.provider {
            Some(p) => Ok(p.shutdown()?),
            None => Ok(()),
        }
    }
}

/// Builds the subscriber (filter from `RUST_LOG`, default `info`; logs on `writer`; the OTLP
/// layer when an endpoint is set) without installing it, for tests and for [`init`].
pub fn subscriber<W>(
    settings: &Settings,
    writer: W,
) -> Result<(impl tracing::Subscriber + Send + Sync + 'static, Telemetry), Error>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if settings.json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed()
    } else {
        fmt.boxed()
    };
    let provider = match settings.traces_url() {
        None => None,
        Some(url) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|source| Error::Exporter {
                    endpoint: url,
                    source,
                })?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.service.clone())
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(settings.service.clone()))
            // No OTel context activation on entry: a span's parent can still be set from
            // inside it (the operator's `#[instrument]`ed reconcile), until a child is made.
            .with_context_activation(false)
            .boxed()
    });
    // The OTLP layer sees every span (the filter applies to the log lines and spans alike).
    let subscriber = Registry::default().with(fmt).with(otel).with(filter);
    Ok((subscriber, Telemetry { provider }))
}

/// Installs logging (and export when an endpoint is set) for the whole process.
pub fn init(settings: &Settings) -> Result<Telemetry, Error> {
    let (subscriber, telemetry) = subscriber(settings, std::io::stderr)?;
    subscriber.try_init()?;
    Ok(telemetry)
}

/// Makes `span` a child of the W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`), so
/// its exported spans join that trace. Call it before the span has a child (entering it is
/// fine). A malformed
/// value, or no export layer, leaves the span as it is.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let carrier: std::collections::HashMap<String, String> =
        [("traceparent".to_string(), traceparent.trim().to_string())].into();
    let cx = TraceContextPropagator::new().extract(&carrier);
    // Without the OTLP layer there is nothing to parent: not an error.
    let _ = span.set_parent(cx);
}

/// [`init`], falling back to logs without export (and an error logged) when the exporter
/// cannot be built, so a bad endpoint never stops the process.
pub fn init_or_log(settings: &Settings) -> Telemetry {
    match init(settings) {
        Ok(t) => t,
        Err(e @ Error::Exporter { .. }) => {
            let logs_only = Settings {
                otlp_endpoint: None,
                ..settings.clone()
            };
            let t = init(&logs_only).unwrap_or(Telemetry { provider: None });
            tracing::error!(error = %e, "OTLP trace export is off");
            t
        }
        Err(_) => Telemetry { provider: None },
    }
}

/// [`Telemetry::shutdown`], logging a failure to flush instead of returning it.
pub fn shutdown_or_log(telemetry: Telemetry) {
    if let Err(e) = telemetry.shutdown() {
        tracing::warn!(error = %e, "spans not flushed");
    }
}
