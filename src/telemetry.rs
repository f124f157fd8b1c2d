//! Logging with tracing: JSON for machines or pretty for people, filtered by
//! `RUST_LOG` (default `info`).
//!
//! Database calls run in `db.*` spans at debug level: off in the logs unless
//! `RUST_LOG` asks for them. Built with the `otel` feature and given
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, recept also exports its spans (requests
//! down to each database call) over OTLP/HTTP, filtered by
//! `RECEPT_OTEL_FILTER` (default `info,recept=debug`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Keeps the span exporter alive; dropping it flushes what is buffered.
#[must_use = "dropping the guard stops span export"]
pub struct Guard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber once; later calls are ignored, so tests
/// that start many servers may all call it.
pub fn init(format: LogFormat) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .compact()
            .with_filter(filter)
            .boxed(),
    };
    #[cfg(feature = "otel")]
    {
        let (spans, provider) = otel::layer();
        let _ = tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .try_init();
        Guard { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = tracing_subscriber::registry().with(logs).try_init();
        Guard {}
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::{EnvFilter, Layer};

    /// The OTLP layer when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub fn layer<S>() -> (
        Option<Box<dyn Layer<S> + Send + Sync>>,
        Option<SdkTracerProvider>,
    )
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            return (None, None);
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("recept: OpenTelemetry export disabled: {e}");
                return (None, None);
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("recept").build())
            .build();
        let filter = EnvFilter::try_from_env("RECEPT_OTEL_FILTER")
            .unwrap_or_else(|_| EnvFilter::new("info,recept=debug"));
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("recept"))
            .with_filter(filter)
            .boxed();
        (Some(layer), Some(provider))
    }
}
