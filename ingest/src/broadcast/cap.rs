//! OASIS CAP 1.2 both ways: a CAP XML alert in, a broadcast out as CAP XML.
//!
//! Import ([`parse`]) reads the alert's required elements (identifier, sender, sent,
//! status, msgType, scope) and one `info` block (the first in Chinese, else the first):
//! category, event, urgency, severity, certainty, effective, expires, senderName,
//! headline, description, instruction and every `area`. Export ([`export`]) writes a
//! broadcast as a CAP 1.2 alert that validates against the OASIS schema (tested with the
//! WMO's `capvalidator`), with every time at an explicit `+08:00` offset (CAP forbids `Z`
//! and fractions of a second; China Standard Time is where the speakers are).
//!
//! Mapping (docs/BROADCAST.md has the table):
//! - CAP severity -> level: Extreme -> red (1), Severe -> orange (2), Moderate -> yellow
//!   (3), Minor and Unknown -> blue (4). Level -> severity on export is the inverse.
//! - Targets travel as `geocode` pairs with valueName `VT-TARGET` (`village:dongcun`,
//!   `area:district-1`, `group:x`, `speaker:x`, `all`), so an exported broadcast imports
//!   back to the same targets; foreign alerts are matched by `areaDesc` or given targets.
//! - Our level, repeat count and audio checksum travel as `parameter`s (`VT-LEVEL`,
//!   `VT-REPEAT`, `VT-AUDIO-SHA256`); CAP's own `digest` is SHA-1.
//!
//! Design constraints:
//! - The XML is outside input: at most [`MAX_CAP_BYTES`], [`MAX_DEPTH`] levels and
//!   [`MAX_ELEMENTS`] elements, no DTD (no entity expansion), only the predefined entities
//!   and character references; every error names the element it is about.
//! - A lean pull parser (`quick-xml`) and a small tree, not a CAP type library: we read a
//!   dozen elements and write a few more, and `oasiscap` would pull chrono, url and
//!   xml_serde into ingest for it.

use protocol::Timestamp;
use protocol::command::Level;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::model::{Broadcast, BroadcastState, CapArea, CapInfo, Content, Target, level_name};

/// The CAP 1.2 namespace.
pub const NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// Largest CAP document accepted.
pub const MAX_CAP_BYTES: usize = 256 * 1024;
/// Deepest element nesting accepted (CAP needs 4).
pub const MAX_DEPTH: usize = 16;
/// Most elements accepted.
pub const MAX_ELEMENTS: usize = 10_000;
/// `geocode` valueName that carries a broadcast target.
pub const TARGET_CODE: &str = "VT-TARGET";
/// Offset of exported times: China Standard Time.
const EXPORT_OFFSET_HOURS: i8 = 8;

/// Why a CAP document was refused. Every message names the element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// Larger than [`MAX_CAP_BYTES`].
    #[error("CAP document of {0} bytes exceeds the limit of {MAX_CAP_BYTES}")]
    TooLarge(usize),
    /// Not well-formed XML, or beyond the depth and element limits.
    #[error("CAP XML at byte {position}: {reason}")]
    Xml {
        /// Byte offset where the parser stopped.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The root is not a CAP 1.2 `alert`.
    #[error("not a CAP 1.2 alert: the root is <{root}> in namespace '{namespace}', expected <alert> in '{NAMESPACE}'")]
    NotCap {
        /// The root element's name.
        root: String,
        /// Its namespace.
        namespace: String,
    },
    /// A required element is missing or empty.
    #[error("CAP alert: required element <{0}> is missing or empty")]
    Missing(&'static str),
    /// An element's value is not allowed.
    #[error("CAP alert: <{element}> is '{value}'; expected {expected}")]
    Invalid {
        /// The element.
        element: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

/// A parsed CAP alert: what a broadcast is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The alert's header and its `info` block's classification, as written.
    pub info: CapInfo,
    /// `info/category` (the first).
    pub category: String,
    /// `info/event`.
    pub event: String,
    /// `alert/sent`.
    pub sent: Timestamp,
    /// `info/effective`, if given.
    pub effective: Option<Timestamp>,
    /// `info/expires`, if given.
    pub expires: Option<Timestamp>,
    /// `info/headline`.
    pub headline: Option<String>,
    /// `info/description`.
    pub description: Option<String>,
    /// `info/instruction`.
    pub instruction: Option<String>,
    /// Targets found in `VT-TARGET` geocodes.
    pub targets: Vec<Target>,
    /// Our parameters, when the alert came from us: level, repeat, audio.
    pub level_parameter: Option<Level>,
    /// `VT-REPEAT`.
    pub repeat_parameter: Option<u8>,
    /// An audio `resource` (uri) with its `VT-AUDIO-SHA256` parameter.
    pub audio: Option<(String, String)>,
}

impl Alert {
    /// The warning level: our own parameter if the alert came from us, else by severity.
    pub fn level(&self) -> Level {
        self.level_parameter.unwrap_or_else(|| severity_to_level(&self.info.severity))
    }

    /// Text for the speakers' TTS: headline, instruction, then description, each once,
    /// cut to `max_bytes` on a character boundary (the instruction is what people must
    /// do; a long description is what gets cut).
    pub fn tts_text(&self, max_bytes: usize) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for p in [&self.headline, &self.instruction, &self.description].into_iter().flatten() {
            let p = p.trim();
            if !p.is_empty() && !parts.contains(&p) {
                parts.push(p);
            }
        }
        if parts.is_empty() {
            parts.push(self.event.trim());
        }
        let text = parts.join("\n");
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        cut(&collapsed, max_bytes)
    }
}

/// `text` cut to at most `max_bytes`, ending in `…` when cut.
fn cut(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// CAP severity to our level (docs/BROADCAST.md).
pub fn severity_to_level(severity: &str) -> Level {
    match severity {
        "Extreme" => Level::Red,
        "Severe" => Level::Orange,
        "Moderate" => Level::Yellow,
        _ => Level::Blue,
    }
}

/// Our level to CAP severity.
pub fn level_to_severity(level: Level) -> &'static str {
    match level {
        Level::Red => "Extreme",
        Level::Orange => "Severe",
        Level::Yellow => "Moderate",
        Level::Blue => "Minor",
    }
}

/// CAP `info/category` values.
pub const CATEGORIES: [&str; 12] =
    ["Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra", "CBRNE", "Other"];
const STATUSES: [&str; 5] = ["Actual", "Exercise", "System", "Test", "Draft"];
const MSG_TYPES: [&str; 5] = ["Alert", "Update", "Cancel", "Ack", "Error"];
const SCOPES: [&str; 3] = ["Public", "Restricted", "Private"];
const URGENCIES: [&str; 5] = ["Immediate", "Expected", "Future", "Past", "Unknown"];
const SEVERITIES: [&str; 5] = ["Extreme", "Severe", "Moderate", "Minor", "Unknown"];
const CERTAINTIES: [&str; 6] = ["Observed", "Likely", "Possible", "Unlikely", "Unknown", "Very Likely"];

// ---- a small element tree ----

#[derive(Debug, Default)]
struct El {
    name: String,
    prefix: Option<String>,
    xmlns: Vec<(Option<String>, String)>,
    children: Vec<El>,
    text: String,
}

impl El {
    fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a El> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Trimmed text of a child, if present and not empty.
    fn text(&self, name: &str) -> Option<String> {
        self.child(name).map(|c| c.text.trim().to_string()).filter(|t| !t.is_empty())
    }
}

fn start(e: &quick_xml::events::BytesStart<'_>) -> El {
    let qname = e.name();
    let full: String = qname.as_ref().to_string();
    let (prefix, name) = match full.split_once(':') {
        Some((p, n)) => (Some(p.to_string()), n.to_string()),
        None => (None, full),
    };
    let xmlns = e
        .attributes()
        .flatten()
        .filter_map(|a| {
            let key: String = a.key.as_ref().to_string();
            let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok()?.into_owned();
            match key.as_str() {
                "xmlns" => Some((None, value)),
                k => k.strip_prefix("xmlns:").map(|p| (Some(p.to_string()), value)),
            }
        })
        .collect();
    El { name, prefix, xmlns, ..El::default() }
}

fn tree(xml: &str) -> Result<El, CapError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<El> = Vec::new();
    let mut root: Option<El> = None;
    let mut elements = 0usize;
    loop {
        let position = reader.buffer_position();
        let fail = |reason: String| CapError::Xml { position, reason };
        let event = reader.read_event().map_err(|e| fail(e.to_string()))?;
        match event {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                return Err(fail("content after the root element".into()));
            }
            Event::Start(e) => {
                elements += 1;
                if elements > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                    return Err(fail(format!("more than {MAX_ELEMENTS} elements or {MAX_DEPTH} levels")));
                }
                stack.push(start(&e));
            }
            Event::Empty(e) => {
                elements += 1;
                if elements > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                    return Err(fail(format!("more than {MAX_ELEMENTS} elements or {MAX_DEPTH} levels")));
                }
                let el = start(&e);
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| fail("end tag without a start".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => resolve_predefined_entity(&r)
                        .ok_or_else(|| fail(format!("unknown entity &{};", &*r)))?
                        .to_string(),
                    Err(e) => return Err(fail(e.to_string())),
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err(fail("a DTD is not allowed in a CAP alert".into())),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(CapError::Xml {
            position: reader.buffer_position(),
            reason: "unclosed elements at the end".into(),
        });
    }
    root.ok_or(CapError::Xml { position: 0, reason: "no root element".into() })
}

// ---- import ----

fn required(el: &El, name: &'static str, path: &'static str) -> Result<String, CapError> {
    el.text(name).ok_or(CapError::Missing(path))
}

/// A required element whose value must be one of the schema's enumeration.
fn one_of(
    el: &El,
    name: &'static str,
    element: &'static str,
    allowed: &'static [&'static str],
    expected: &'static str,
) -> Result<String, CapError> {
    let value = required(el, name, element)?;
    if allowed.contains(&value.as_str()) { Ok(value) } else { Err(CapError::Invalid { element, value, expected }) }
}

/// Parses a CAP time (`2026-11-23T14:05:00+08:00`; a `Z`, which CAP forbids but feeds
/// send, is read as UTC).
fn cap_time(value: &str, element: &'static str) -> Result<Timestamp, CapError> {
    OffsetDateTime::parse(value.trim(), &Rfc3339)
        .map(|t| Timestamp(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)))
        .map_err(|_| CapError::Invalid {
            element,
            value: value.to_string(),
            expected: "a date and time with offset, like 2026-11-23T14:05:00+08:00",
        })
}

/// Parses a CAP 1.2 alert.
pub fn parse(xml: &str) -> Result<Alert, CapError> {
    if xml.len() > MAX_CAP_BYTES {
        return Err(CapError::TooLarge(xml.len()));
    }
    let root = tree(xml)?;
    let namespace = root.xmlns.iter().find(|(p, _)| *p == root.prefix).map(|(_, ns)| ns.clone()).unwrap_or_default();
    if root.name != "alert" || namespace != NAMESPACE {
        return Err(CapError::NotCap { root: root.name.clone(), namespace });
    }
    let identifier = required(&root, "identifier", "alert/identifier")?;
    let sender = required(&root, "sender", "alert/sender")?;
    let sent_text = required(&root, "sent", "alert/sent")?;
    let sent = cap_time(&sent_text, "alert/sent")?;
    let status = one_of(&root, "status", "alert/status", &STATUSES, "Actual, Exercise, System, Test or Draft")?;
    let msg_type = one_of(&root, "msgType", "alert/msgType", &MSG_TYPES, "Alert, Update, Cancel, Ack or Error")?;
    let scope = one_of(&root, "scope", "alert/scope", &SCOPES, "Public, Restricted or Private")?;
    let references = root.text("references");
    let infos: Vec<&El> = root.all("info").collect();
    let info = infos
        .iter()
        .find(|i| i.text("language").is_some_and(|l| l.to_ascii_lowercase().starts_with("zh")))
        .or_else(|| infos.first())
        .copied();
    let Some(info) = info else {
        // A Cancel may come without info: it names what it cancels in references.
        if msg_type == "Cancel" {
            return Ok(Alert {
                info: CapInfo {
                    identifier,
                    sender,
                    sent: sent_text,
                    status,
                    msg_type,
                    scope,
                    references,
                    ..CapInfo::default()
                },
                category: "Other".into(),
                event: String::new(),
                sent,
                effective: None,
                expires: None,
                headline: None,
                description: None,
                instruction: None,
                targets: Vec::new(),
                level_parameter: None,
                repeat_parameter: None,
                audio: None,
            });
        }
        return Err(CapError::Missing("alert/info"));
    };
    let category = one_of(
        info,
        "category",
        "alert/info/category",
        &CATEGORIES,
        "Geo, Met, Safety, Security, Rescue, Fire, Health, Env, Transport, Infra, CBRNE or Other",
    )?;
    let event = required(info, "event", "alert/info/event")?;
    let urgency =
        one_of(info, "urgency", "alert/info/urgency", &URGENCIES, "Immediate, Expected, Future, Past or Unknown")?;
    let severity =
        one_of(info, "severity", "alert/info/severity", &SEVERITIES, "Extreme, Severe, Moderate, Minor or Unknown")?;
    let certainty = one_of(
        info,
        "certainty",
        "alert/info/certainty",
        &CERTAINTIES,
        "Observed, Likely, Possible, Unlikely or Unknown",
    )?;
    let effective = info.text("effective").map(|t| cap_time(&t, "alert/info/effective")).transpose()?;
    let expires = info.text("expires").map(|t| cap_time(&t, "alert/info/expires")).transpose()?;
    let mut areas = Vec::new();
    let mut targets = Vec::new();
    for a in info.all("area") {
        let desc = required(a, "areaDesc", "alert/info/area/areaDesc")?;
        let geocodes: Vec<(String, String)> =
            a.all("geocode").filter_map(|g| Some((g.text("valueName")?, g.text("value")?))).collect();
        for (name, value) in &geocodes {
            if name == TARGET_CODE {
                let target = super::targets::parse(value).map_err(|_| CapError::Invalid {
                    element: "alert/info/area/geocode/value",
                    value: value.clone(),
                    expected: "a target like village:dongcun, area:district-1, group:x, speaker:x or all",
                })?;
                targets.push(target);
            }
        }
        areas.push(CapArea {
            desc,
            polygons: a.all("polygon").map(|p| p.text.trim().to_string()).collect(),
            circles: a.all("circle").map(|c| c.text.trim().to_string()).collect(),
            geocodes: geocodes.into_iter().filter(|(n, _)| n != TARGET_CODE).collect(),
        });
    }
    let parameters: Vec<(String, String)> =
        info.all("parameter").filter_map(|p| Some((p.text("valueName")?, p.text("value")?))).collect();
    let parameter = |name: &str| parameters.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let audio = info
        .all("resource")
        .find(|r| r.text("mimeType").is_some_and(|m| m.starts_with("audio/")))
        .and_then(|r| Some((r.text("uri")?, parameter("VT-AUDIO-SHA256")?)));
    Ok(Alert {
        info: CapInfo {
            identifier,
            sender,
            sent: sent_text,
            status,
            msg_type,
            scope,
            references,
            language: info.text("language"),
            urgency,
            severity,
            certainty,
            sender_name: info.text("senderName"),
            areas,
        },
        category,
        event,
        sent,
        effective,
        expires,
        headline: info.text("headline"),
        description: info.text("description"),
        instruction: info.text("instruction"),
        targets,
        level_parameter: parameter("VT-LEVEL").and_then(|v| super::model::parse_level(&v)),
        repeat_parameter: parameter("VT-REPEAT").and_then(|v| v.parse().ok()),
        audio,
    })
}

// ---- export ----

/// A CAP time: seconds, explicit `+08:00` offset (`+00:00` for the last hours of year
/// 9999, which `+08:00` cannot spell).
pub fn format_time(ts: Timestamp) -> String {
    let utc = OffsetDateTime::from_unix_timestamp(ts.0.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let export = UtcOffset::from_hms(EXPORT_OFFSET_HOURS, 0, 0).unwrap_or(UtcOffset::UTC);
    let (t, offset) = match utc.checked_to_offset(export) {
        Some(t) => (t, export),
        None => (utc, UtcOffset::UTC),
    };
    let (h, m) = (offset.whole_hours(), offset.minutes_past_hour().abs());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        if h < 0 { '-' } else { '+' },
        h.abs(),
        m
    )
}

struct Xml(String);

impl Xml {
    fn open(&mut self, depth: usize, name: &str) {
        self.0.push_str(&"  ".repeat(depth));
        self.0.push_str(&format!("<{name}>\n"));
    }
    fn close(&mut self, depth: usize, name: &str) {
        self.0.push_str(&"  ".repeat(depth));
        self.0.push_str(&format!("</{name}>\n"));
    }
    fn leaf(&mut self, depth: usize, name: &str, text: &str) {
        self.0.push_str(&"  ".repeat(depth));
        self.0.push_str(&format!("<{name}>{}</{name}>\n", escape(text)));
    }
    fn pair(&mut self, depth: usize, outer: &str, name: &str, value: &str) {
        self.open(depth, outer);
        self.leaf(depth + 1, "valueName", name);
        self.leaf(depth + 1, "value", value);
        self.close(depth, outer);
    }
}

/// Our CAP identifier of a broadcast (unique per sender; no spaces, commas, `<` or `&`).
pub fn identifier(b: &Broadcast) -> String {
    format!("vt-{}-{}", b.tenant, b.id)
}

/// Our CAP sender for a tenant.
pub fn sender(tenant: &str) -> String {
    format!("village-telemetry@{tenant}")
}

/// A broadcast as a CAP 1.2 alert. A cancelled broadcast exports as `msgType` Cancel
/// referencing the alert it cancels; an imported one references its source alert.
pub fn export(b: &Broadcast, state: BroadcastState, cancelled_at: Option<Timestamp>) -> String {
    let mut x = Xml(String::with_capacity(2048));
    x.0.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.0.push_str(&format!("<alert xmlns=\"{NAMESPACE}\">\n"));
    let cancelled = state == BroadcastState::Cancelled;
    let cancel_id = format!("{}-cancel", identifier(b));
    let own_id = identifier(b);
    x.leaf(1, "identifier", if cancelled { &cancel_id } else { &own_id });
    x.leaf(1, "sender", &sender(&b.tenant));
    let sent = if cancelled { cancelled_at.unwrap_or(b.created_at) } else { b.created_at };
    x.leaf(1, "sent", &format_time(sent));
    let status = b.cap.as_ref().map_or("Actual", |c| if c.status == "Draft" { "Actual" } else { c.status.as_str() });
    x.leaf(1, "status", status);
    x.leaf(
        1,
        "msgType",
        if cancelled {
            "Cancel"
        } else {
            b.cap.as_ref().map_or("Alert", |c| if c.msg_type == "Update" { "Update" } else { "Alert" })
        },
    );
    x.leaf(1, "source", "village telemetry emergency broadcast");
    x.leaf(1, "scope", b.cap.as_ref().map_or("Public", |c| if c.scope == "Public" { "Public" } else { "Restricted" }));
    if b.cap.as_ref().is_some_and(|c| c.scope != "Public") {
        x.leaf(1, "restriction", "speakers of the issuing county only");
    }
    let reference = if cancelled {
        Some(format!("{},{},{}", sender(&b.tenant), identifier(b), format_time(b.created_at)))
    } else {
        b.cap.as_ref().map(|c| format!("{},{},{}", c.sender, c.identifier, c.sent))
    };
    if let Some(r) = reference.filter(|r| !r.contains(' ')) {
        x.leaf(1, "references", &r);
    }
    x.open(1, "info");
    let text = match &b.content {
        Content::Tts { text } => text.as_str(),
        Content::Audio { .. } => b.description.as_deref().unwrap_or(""),
    };
    let chinese = text.chars().any(|c| u32::from(c) >= 0x2E80) || b.event.chars().any(|c| u32::from(c) >= 0x2E80);
    let language = b
        .cap
        .as_ref()
        .and_then(|c| c.language.clone())
        .unwrap_or_else(|| if chinese { "zh-CN".into() } else { "en-US".into() });
    x.leaf(2, "language", &language);
    let category = if CATEGORIES.contains(&b.category.as_str()) { b.category.as_str() } else { "Other" };
    x.leaf(2, "category", category);
    x.leaf(2, "event", &b.event);
    let imported = b.cap.as_ref();
    let urgency = imported.map(|c| c.urgency.clone()).unwrap_or_else(|| {
        if b.start_at.is_some_and(|s| s > b.created_at) { "Expected".into() } else { "Immediate".into() }
    });
    x.leaf(2, "urgency", &urgency);
    x.leaf(2, "severity", imported.map_or(level_to_severity(b.level), |c| c.severity.as_str()));
    let certainty =
        imported.map_or("Likely", |c| if c.certainty == "Very Likely" { "Likely" } else { c.certainty.as_str() });
    x.leaf(2, "certainty", certainty);
    if let Some(start) = b.start_at {
        x.leaf(2, "effective", &format_time(start));
    }
    x.leaf(2, "expires", &format_time(b.expires_at));
    if let Some(name) = imported.and_then(|c| c.sender_name.clone()) {
        x.leaf(2, "senderName", &name);
    }
    if let Some(h) = &b.headline {
        x.leaf(2, "headline", h);
    }
    let description = b.description.clone().or_else(|| b.content.text().map(str::to_string));
    if let Some(d) = description {
        x.leaf(2, "description", &d);
    }
    if let Some(i) = &b.instruction {
        x.leaf(2, "instruction", i);
    }
    x.pair(2, "parameter", "VT-LEVEL", level_name(b.level));
    x.pair(2, "parameter", "GYT-LEVEL", &(b.level as u8).to_string());
    x.pair(2, "parameter", "VT-REPEAT", &b.repeat.to_string());
    if let Content::Audio { url, sha256 } = &b.content {
        x.pair(2, "parameter", "VT-AUDIO-SHA256", &protocol::command::sha256_hex(sha256));
        x.open(2, "resource");
        x.leaf(3, "resourceDesc", "broadcast audio");
        x.leaf(3, "mimeType", mime_of(url));
        x.leaf(3, "uri", url);
        x.close(2, "resource");
    }
    let areas = imported.map(|c| c.areas.clone()).unwrap_or_default();
    let targets: Vec<String> = b.targets.iter().map(Target::spelled).collect();
    if areas.is_empty() {
        x.open(2, "area");
        x.leaf(3, "areaDesc", &targets.join(", "));
        for t in &targets {
            x.pair(3, "geocode", TARGET_CODE, t);
        }
        x.close(2, "area");
    }
    for (i, a) in areas.iter().enumerate() {
        x.open(2, "area");
        x.leaf(3, "areaDesc", &a.desc);
        for p in &a.polygons {
            x.leaf(3, "polygon", p);
        }
        for c in &a.circles {
            x.leaf(3, "circle", c);
        }
        for (n, v) in &a.geocodes {
            x.pair(3, "geocode", n, v);
        }
        if i == 0 {
            for t in &targets {
                x.pair(3, "geocode", TARGET_CODE, t);
            }
        }
        x.close(2, "area");
    }
    x.close(1, "info");
    x.0.push_str("</alert>\n");
    x.0
}

fn mime_of(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".wav") {
        "audio/wav"
    } else if lower.ends_with(".ogg") || lower.ends_with(".opus") {
        "audio/ogg"
    } else {
        "audio/mpeg"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>43b080713727</identifier>
  <sender>hsas@dhs.gov</sender>
  <sent>2003-04-02T14:39:01-05:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Security</category>
    <event>Homeland Security Advisory System Update</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <expires>2003-04-03T14:39:01-05:00</expires>
    <headline>Flood &amp; landslide &lt;warning&gt; &#x5C71;</headline>
    <description><![CDATA[Move <now>]]></description>
    <area><areaDesc>U.S. nationwide</areaDesc></area>
  </info>
</alert>"#;

    #[test]
    fn an_alert_parses_with_entities_and_cdata_and_maps_severe_to_orange() {
        let a = parse(SAMPLE).unwrap();
        assert_eq!(a.info.identifier, "43b080713727");
        assert_eq!(a.level(), Level::Orange);
        assert_eq!(a.headline.as_deref(), Some("Flood & landslide <warning> 山"));
        assert_eq!(a.description.as_deref(), Some("Move <now>"));
        assert_eq!(a.expires, Some(Timestamp(1_049_398_741_000)));
        assert_eq!(a.info.areas[0].desc, "U.S. nationwide");
    }

    #[test]
    fn missing_and_invalid_elements_are_named() {
        let no_urgency = SAMPLE.replace("<urgency>Immediate</urgency>", "");
        assert_eq!(parse(&no_urgency), Err(CapError::Missing("alert/info/urgency")));
        let bad = SAMPLE.replace("<severity>Severe</severity>", "<severity>Awful</severity>");
        assert!(parse(&bad).unwrap_err().to_string().contains("<alert/info/severity> is 'Awful'"));
        let wrong_ns = SAMPLE.replace("cap:1.2", "cap:1.1");
        assert!(matches!(parse(&wrong_ns), Err(CapError::NotCap { .. })));
        assert!(matches!(parse("<alert"), Err(CapError::Xml { .. })));
        assert!(matches!(parse(&"x".repeat(MAX_CAP_BYTES + 1)), Err(CapError::TooLarge(_))));
        let dtd = format!("<!DOCTYPE alert [<!ENTITY x \"y\">]>{SAMPLE}")
            .replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "");
        assert!(parse(&dtd).unwrap_err().to_string().contains("DTD"));
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        assert!(parse(&deep).unwrap_err().to_string().contains("levels"));
        let bad_time = SAMPLE.replace("2003-04-02T14:39:01-05:00", "yesterday");
        assert!(parse(&bad_time).unwrap_err().to_string().contains("alert/sent"));
    }

    #[test]
    fn exported_times_carry_an_explicit_offset_and_no_fraction() {
        assert_eq!(format_time(Timestamp(1_763_903_738_123)), "2025-11-23T21:15:38+08:00");
    }

    #[test]
    fn a_time_late_in_year_9999_formats_instead_of_panicking() {
        // Found by the `cap` fuzz target (fuzz/regressions/cap): an alert sent at
        // 9999-12-31T20:00:00Z imports, and moving it to +08:00 panicked.
        let xml = SAMPLE.replace("2003-04-02T14:39:01-05:00", "9999-12-31T20:00:00Z");
        let sent = parse(&xml).unwrap().sent;
        assert_eq!(format_time(sent), "9999-12-31T20:00:00+00:00");
        assert_eq!(format_time(Timestamp(sent.0 - 3_600_000 * 5)), "9999-12-31T23:00:00+08:00", "positive control");
    }

    #[test]
    fn tts_text_puts_the_instruction_before_a_long_description_and_cuts_it() {
        let mut a = parse(SAMPLE).unwrap();
        a.instruction = Some("Go to high ground.".into());
        a.description = Some("d".repeat(5000));
        let t = a.tts_text(100);
        assert!(t.starts_with("Flood & landslide <warning> 山 Go to high ground."), "{t}");
        assert!(t.len() <= 100 && t.ends_with('…'));
    }
}
