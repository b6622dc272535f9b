//! Child processes of a test: killed when their handle drops (also when an assertion
//! fails), so no peer outlives the test that started it.

use std::process::{Child, Command, Stdio};

/// A child process, killed (SIGKILL) and reaped on drop.
pub struct Peer {
    /// The process itself, for its pid or piped stdout.
    pub child: Child,
    /// What it is, for failure messages.
    pub name: &'static str,
}

impl Peer {
    /// Starts `cmd` with stdin closed; panics naming `name` if it cannot start.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Peer {
        let child = cmd.stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Peer { child, name }
    }

    /// Kills the process now (SIGKILL, as a crash or power cut would) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process the way a service manager does (SIGTERM, so it can flush) and
    /// waits for it to exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// Panics if the process has already exited: a peer that died says so at once
    /// instead of as a later timeout.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early: {status}", self.name);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to its end and panics with its stderr if it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether `VT_TEST_LOG` asks for the logs of the code under test and of its peers.
fn verbose() -> bool {
    std::env::var_os("VT_TEST_LOG").is_some()
}

/// Where a peer's output goes: shown with `VT_TEST_LOG=1`, otherwise discarded.
pub fn quiet() -> Stdio {
    if verbose() { Stdio::inherit() } else { Stdio::null() }
}

/// Logs of the code under test, with `VT_TEST_LOG=1` (filter with `RUST_LOG`, default
/// `info`); idempotent, so every test may call it.
pub fn logs() {
    if verbose() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}
