//! The gateway's downlink: what arrives on `vt/{tenant}/{gateway}/down/#` from whoever can
//! publish there. Delivery acks and remote configurations must carry ingest's signature
//! ([`gateway::trust::Trust`]); commands their own signed envelope
//! ([`gateway::command::Executor::admit`]).
//!
//! The first byte picks the mode (modulo 3):
//! - 0: the rest is a payload from the broker. A delivery ack or configuration that opens
//!   verifies as ingest's envelope on that topic; a command that is not admitted gets a
//!   `refused` ack under the id its envelope claims, with the gateway's reason.
//! - 1: `counter:u64, body`: the body signed by ingest. As a delivery ack it is taken
//!   exactly when it parses as one; as a configuration it is newer than the running one
//!   (version 0) unless its counter is 0, and its text comes back unchanged; that text
//!   through `GatewayConfig::from_source` either fails with located errors or gives a
//!   config that validates. Signed for one channel, it never opens on the other.
//! - 2: a command body signed by ingest, admitted by the gateway's executor at a fixed
//!   clock: admitted exactly when `open`'s checks pass, and never twice.

use std::sync::{Arc, OnceLock};

use conf::Source;
use gateway::command::Executor;
use gateway::config::GatewayConfig;
use gateway::identity::Identity;
use gateway::profile::Library;
use gateway::trust::{Refusal, Trust};
use protocol::Timestamp;
use protocol::auth;
use protocol::command::{self, AckState, Command, ReplayWindow};
use protocol::delivery::DeliveryAck;
use protocol::topic::{Channel, Topic};

use super::keys;
use crate::input::Input;

fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let identity = Identity::from_seed(keys::gateway().to_bytes());
        Trust::new(&identity, keys::ingest().verifying_key(), keys::TENANT, keys::GATEWAY, None)
            .expect("fixed keys are strong")
    })
}

fn library() -> &'static Library {
    static LIBRARY: OnceLock<Library> = OnceLock::new();
    LIBRARY.get_or_init(|| Library::builtin().0)
}

fn executor() -> Executor {
    let clock: daemon::Clock = Arc::new(|| Timestamp(keys::NOW_MS));
    Executor::new(keys::GATEWAY, Some(keys::ingest().verifying_key().to_bytes()), None, clock)
}

fn topic(channel: Channel) -> Topic<'static> {
    Topic::new(keys::TENANT, keys::GATEWAY, channel)
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        0 => payload(input.rest()),
        1 => signed(&mut input),
        _ => command_body(input.rest()),
    }
}

fn payload(p: &[u8]) {
    let trust = trust();
    let vk = keys::ingest().verifying_key();
    if trust.open_delivery(p).is_ok() {
        assert!(auth::open_signed(p, &topic(Channel::Delivery), &vk).is_ok());
    }
    if trust.open_config(p).is_ok() {
        assert!(auth::open_signed(p, &topic(Channel::Config), &vk).is_ok());
    }
    if let Err(ack) = executor().admit(p) {
        assert_eq!(ack.state, AckState::Refused);
        assert_eq!(ack.id, command::peek_id(p).unwrap_or(0));
        assert!(ack.reason.as_deref().is_some_and(|r| r.ends_with("(gateway)")), "{ack:?}");
    }
}

fn signed(input: &mut Input<'_>) {
    let trust = trust();
    let ingest = keys::ingest();
    let counter = input.u64();
    let body = input.rest();

    let delivery = auth::seal_signed(&topic(Channel::Delivery), &ingest, counter, body);
    match (trust.open_delivery(&delivery), DeliveryAck::from_json(body)) {
        (Ok(got), Ok(want)) => assert_eq!(got, want),
        (Err(Refusal::BadBody), Err(_)) => {}
        (got, want) => panic!("delivery ack {got:?}, body parses as {want:?}"),
    }
    assert!(trust.open_config(&delivery).is_err(), "a delivery ack opened as a configuration");

    let config = auth::seal_signed(&topic(Channel::Config), &ingest, counter, body);
    assert!(trust.open_delivery(&config).is_err(), "a configuration opened as a delivery ack");
    match trust.open_config(&config) {
        Ok(None) => assert_eq!(counter, trust.config_version()),
        Ok(Some(c)) => {
            assert_eq!((c.version, c.text.as_slice()), (counter, body));
            let Ok(text) = std::str::from_utf8(body) else { return };
            let src = Source::from_text("down/config", text);
            match GatewayConfig::from_source(&src, library()) {
                Ok(cfg) => assert_eq!(cfg.validate(library()), Ok(()), "a parsed config does not validate"),
                Err(errors) => super::config::check_located(text, &errors),
            }
        }
        Err(e) => panic!("a configuration signed by ingest was refused: {e}"),
    }
}

fn command_body(body: &[u8]) {
    let Ok(cmd) = Command::from_bytes(body) else { return };
    let wire = cmd.sign(&keys::ingest());
    let executor = executor();
    let mut model_window = ReplayWindow::new();
    let want = command::open(
        &wire,
        &keys::ingest().verifying_key(),
        keys::GATEWAY,
        Timestamp(keys::NOW_MS),
        &mut model_window,
    );
    match (executor.admit(&wire), want) {
        (Ok(got), Ok(want)) => {
            assert_eq!(got.to_bytes(), want.to_bytes());
            let again = executor.admit(&wire).expect_err("a command admitted twice");
            assert!(again.reason.as_deref().is_some_and(|r| r.starts_with("replayed")), "{again:?}");
        }
        (Err(ack), Err(e)) => {
            assert_eq!(ack.state, AckState::Refused);
            assert!(ack.reason.as_deref().is_some_and(|r| r.starts_with(e.code())), "{ack:?} for {e}");
        }
        (got, want) => panic!("the gateway admitted {got:?} where open gives {want:?}"),
    }
}
