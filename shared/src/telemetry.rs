//! The one telemetry setup: JSON log lines (one object per event, fields flattened) that
//! CloudWatch Logs Insights can query; level from `RUST_LOG`, else Lambda's
//! `AWS_LAMBDA_LOG_LEVEL`, else info.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

pub fn init() {
    init_writing_to(std::io::stdout);
}

/// The same lines, written to `writer` (tests read them).
pub fn init_writing_to<W>(writer: W)
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").unwrap_or_else(|_| "info".into()).to_lowercase();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // try_init: a second call (tests, the local stack hosting several functions) is a no-op.
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
}
