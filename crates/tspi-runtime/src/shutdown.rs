//! One cancellation token per process, cancelled by SIGINT or SIGTERM. Every loop selects
//! on it and drains its in-flight work before returning.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT/SIGTERM. A second signal exits at once, for the
/// operator whose drain is stuck.
pub fn shutdown_on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested; draining in-flight work");
        t.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    Ok(token)
}
