//! CAP 1.2 alerts (`ingest::broadcast::cap::parse`): XML from a county's warning system
//! or an operator's upload, turned into an emergency broadcast.
//!
//! Checks, for every input: a document over `MAX_CAP_BYTES` is refused as too large before
//! it is parsed. For an alert that parses: its text is never more than the document held
//! (entities and character references only shrink), so memory is bounded by the limit;
//! the TTS text is cut to the byte budget asked for; the level is the alert's own
//! parameter or follows the severity; every target spells back to itself; and the
//! `sent` time formats as a CAP time that reads back to the same second.

use ingest::broadcast::cap::{self, CapError, MAX_CAP_BYTES};
use ingest::broadcast::targets;

/// Parses `data` as a CAP document and checks the alert.
pub fn run(data: &[u8]) {
    let Ok(xml) = std::str::from_utf8(data) else { return };
    let alert = match cap::parse(xml) {
        Ok(alert) => alert,
        Err(CapError::TooLarge(n)) => {
            assert!(n == xml.len() && n > MAX_CAP_BYTES);
            return;
        }
        Err(_) => {
            assert!(xml.len() <= MAX_CAP_BYTES);
            return;
        }
    };
    let texts = [&alert.category, &alert.event, &alert.info.identifier, &alert.info.sender, &alert.info.severity];
    let optional = [&alert.headline, &alert.description, &alert.instruction, &alert.info.references];
    let total: usize = texts.iter().map(|t| t.len()).sum::<usize>()
        + optional.iter().filter_map(|t| t.as_ref()).map(String::len).sum::<usize>();
    assert!(total <= xml.len(), "the alert's text ({total} bytes) outgrew its document ({} bytes)", xml.len());

    for max in [3, 7, 64, 500, 4096] {
        let tts = alert.tts_text(max);
        assert!(tts.len() <= max, "TTS text of {} bytes for a budget of {max}", tts.len());
    }
    if alert.level_parameter.is_none() {
        assert_eq!(alert.level(), cap::severity_to_level(&alert.info.severity));
    }
    for t in &alert.targets {
        assert_eq!(targets::parse(&t.spelled()).as_ref(), Ok(t), "target {t:?} does not spell back");
    }
    let formatted = cap::format_time(alert.sent);
    let seconds = alert.sent.0.div_euclid(1000) * 1000;
    let minimal = format!(
        "<alert xmlns=\"{}\"><identifier>i</identifier><sender>s</sender><sent>{formatted}</sent>\
         <status>Actual</status><msgType>Cancel</msgType><scope>Public</scope></alert>",
        cap::NAMESPACE
    );
    match cap::parse(&minimal) {
        Ok(again) => assert_eq!(again.sent.0, seconds, "sent {formatted} does not read back"),
        // Times beyond what CAP's four-digit years can spell are not written back.
        Err(e) => assert!(!(-62_135_596_800_000..253_402_300_800_000).contains(&seconds), "{formatted}: {e}"),
    }
}
