//! Structured logging on stderr, and the `--log-format` flag every binary takes.
//!
//! Invariant: `RUST_LOG` always wins over a binary's default filter, and any format other
//! than `json` gives human-readable text (an unknown value is not an error).

/// The `--log-format` argument, shared by every binary's command line so that they all
/// spell and default it alike. Flatten it into a clap `Parser`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LogArgs {
    /// Log format: "text" for people, "json" for log collectors.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
}

impl LogArgs {
    /// Installs the global subscriber in this format (see [`init_logging`]).
    pub fn init(&self, default_filter: &str) {
        init_logging(&self.log_format, default_filter);
    }
}

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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
        #[command(flatten)]
        log: LogArgs,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        Run,
    }

    #[test]
    fn the_log_format_defaults_to_text_and_is_accepted_after_a_subcommand() {
        let cli = Cli::try_parse_from(["bin", "run"]).unwrap();
        assert_eq!(cli.log.log_format, "text");
        assert!(matches!(cli.command, Command::Run));
        let cli = Cli::try_parse_from(["bin", "run", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log.log_format, "json");
        let cli = Cli::try_parse_from(["bin", "--log-format", "json", "run"]).unwrap();
        assert_eq!(cli.log.log_format, "json");
    }
}
