//! The stop signals of a service.
//!
//! Invariant: Ctrl-C always stops; SIGTERM does too on Unix when its handler installs.

/// Resolves on Ctrl-C or, on Unix, SIGTERM: the two ways a service is asked to stop.
/// If the SIGTERM handler cannot be installed, Ctrl-C still works.
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
