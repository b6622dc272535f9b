//! Fuzz targets for every decoder of village telemetry that takes outside input.
//!
//! Each target is a plain function `fn(&[u8])` in [`targets`]: AFL++ drives them through
//! the `village-fuzz` binary (`cargo afl build --features afl`, see `fuzz/run`), and
//! `tests/corpus.rs` replays every committed input through them in a normal `cargo test`,
//! so the seeds and every crash once found stay regression tests without AFL.
//!
//! Invariants every target keeps:
//! - It panics only when the code under test broke a promise: a panic inside a decoder, or
//!   an assertion of the target (a round trip that does not come back, a refused input
//!   accepted, a limit exceeded). Inputs the decoder rightly refuses are not failures.
//! - It is deterministic: no clock, no randomness, no files written, keys from fixed seeds,
//!   so a crash AFL found replays the same way in `cargo test`.
//! - It asserts what it can beyond "no panic": see each target's module documentation.

pub mod input;
pub mod targets;

/// A fuzz target: its name (the corpus directory and the harness's argument) and entry.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name on the command line and under `fuzz/corpus/`.
    pub name: &'static str,
    /// What it feeds and checks, for `village-fuzz --list` and docs.
    pub about: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
}

/// Every target, in the order `fuzz/run` fuzzes them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "batch",
        about: "protocol::codec: binary and JSON telemetry batches; both codecs round-trip",
        run: targets::batch::run,
    },
    Target {
        name: "command",
        about: "protocol::command: the signed command envelope and its canonical body, checked against a model of open()",
        run: targets::command::run,
    },
    Target {
        name: "auth",
        about: "protocol::auth envelopes (MAC and Ed25519) and speaker receipts: seal/open round trips, tampering refused",
        run: targets::auth::run,
    },
    Target {
        name: "line_protocol",
        about: "ingest::codec::line_protocol: every parsed line writes back and parses to the same line",
        run: targets::line_protocol::run,
    },
    Target {
        name: "cap",
        about: "ingest::broadcast::cap: CAP 1.2 XML alerts within their limits",
        run: targets::cap::run,
    },
    Target {
        name: "modbus",
        about: "gateway Modbus responses to readings through the built-in profiles, register round trips, the speaker's command log",
        run: targets::modbus::run,
    },
    Target {
        name: "downlink",
        about: "gateway downlink: delivery acks, remote configurations and commands, signed and forged",
        run: targets::downlink::run,
    },
    Target {
        name: "speaker",
        about: "firmware speaker terminal: Modbus RTU frames, the mailbox and signed broadcast commands",
        run: targets::speaker::run,
    },
    Target {
        name: "config",
        about: "TOML through conf: device profiles, gateway, ingest and inventory config, alert rules",
        run: targets::config::run,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
