//! What the `gateway` and `ingest` binaries do the same way at their edges, so that an
//! operator configures logs and stops both alike: `RUST_LOG` filters, `--log-format json`
//! for a log shipper, and SIGTERM (systemd, docker) or Ctrl-C for a clean stop.

#![forbid(unsafe_code)]

/// Installs the global `tracing` subscriber on stderr: JSON lines when `format` is
/// `"json"`, human-readable text otherwise. `RUST_LOG` overrides `default_filter`, which
/// names the quiet defaults of the binary (e.g. a chatty dependency turned down).
pub fn init_logging(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

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
