//! What every test suite of the workspace shares: waiting with a deadline ([`wait`]),
//! ports and listeners ([`net`]), child processes killed on drop ([`process`]), and finding
//! the real peers that `.ci/setup` installs ([`peers`]), and with the `browser` feature a
//! real Chromium to click and type in (`browser`).
//!
//! Dev-only and generic: it depends on no crate of this workspace, so that any crate's own
//! tests (the simulator's included) can use it without a dependency cycle, and the
//! workspace tests (`village-tests`) use the same helpers rather than near-copies.
//!
//! Helpers panic on failure with a message that says what was awaited or what to install:
//! they run inside tests, where a loud stop is the point.

#[cfg(feature = "browser")]
pub mod browser;
pub mod net;
pub mod peers;
pub mod process;
pub mod wait;

pub use net::{free_port, wait_listening};
pub use peers::{built_binary, python_with, root, target_binary, tool};
pub use process::{Peer, logs, quiet, run};
pub use wait::{eventually, within};
