//! Device profiles: how to read one model of device, as a TOML file per model.
//!
//! A profile maps registers to catalogue metrics (address, table, type, word order, scale,
//! offset, unit), may describe a table of repeating slots that are devices of their own
//! (a collar hub's animals), and lists the registers a command may write with their
//! allowed range. A point may take its quality from a status register (`quality`), and a
//! device with a signed-command mailbox says where it is (`[mailbox]`, docs/GATEWAY.md),
//! and where it reports its own verdict on each command (`log`, docs/BROADCAST.md).
//! The format is documented in `docs/PROFILES.md`; the library ships in
//! `gateway/profiles/` and is built into the binary.
//!
//! Invariants (checked at load, every problem reported with file and line):
//! - every metric is in the catalogue and the profile's `unit` is the catalogue unit, so a
//!   vendor's litres can never reach the store as cubic metres;
//! - types fit their table (`bool` only on coils and discrete inputs, and only there) and
//!   every register of a point lies inside the 16-bit address space;
//! - a device has at most one point per metric;
//! - a bad profile is refused on its own: the other profiles keep loading.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use conf::{ConfigError, ConfigErrors, Problems, Source, Spanned};
use protocol::{DeviceKind, Metric, catalogue};
use serde::Deserialize;

use crate::modbus::value::{Table, ValueType, WordOrder};

/// A validated profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Unique model name that gateway configs refer to.
    pub model: String,
    /// What a device of this model is.
    pub kind: DeviceKind,
    /// For people.
    pub description: String,
    /// The registers read on every poll.
    pub points: Vec<Point>,
    /// Largest gap of unused registers a single read may span to cover two points.
    pub max_gap: u16,
    /// A table of repeating blocks that are devices of their own.
    pub slots: Option<Slots>,
    /// Registers a command may write.
    pub writable: Vec<Writable>,
    /// Where signed commands for the device's own verification (broadcasts) are written.
    pub mailbox: Option<Mailbox>,
}

/// A block of holding registers into which the gateway writes a whole signed command
/// envelope for the device to verify itself: register 0 the length in bytes, then the
/// bytes packed big-endian, two a register (docs/GATEWAY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mailbox {
    /// Always holding (only holding registers can be written in blocks).
    pub table: Table,
    /// First register: the length word.
    pub address: u16,
    /// Registers in the block, the length word included.
    pub size: u16,
    /// Where the device reports its own verdict and progress per command, if it does
    /// (the speaker terminal's command log); the gateway then acks from it instead of
    /// acking `delivered` once the write succeeded.
    pub log: Option<CommandLog>,
}

/// A command log block in the layout of the speaker terminal (`protocol::speaker`,
/// [`protocol::speaker::LOG_REGISTERS`] registers: sequence, last verdict, eight slots),
/// read in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLog {
    /// Input (or holding) registers.
    pub table: Table,
    /// First register: the log sequence, which changes on every report.
    pub address: u16,
}

impl CommandLog {
    /// Registers in the block.
    pub const fn count(&self) -> u16 {
        protocol::speaker::LOG_REGISTERS
    }
}

impl Mailbox {
    /// Largest envelope the mailbox holds, in bytes.
    pub fn capacity(&self) -> usize {
        usize::from(self.size.saturating_sub(1)) * 2
    }
}

/// How a status register's value maps to the quality of a point's readings (OPC UA style:
/// an analyser that reports over-range gives an uncertain value, a reading error a bad one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityMap {
    /// Table of the status register.
    pub table: Table,
    /// Its address.
    pub address: u16,
    /// Values that mean a normal measurement.
    pub good: Vec<u16>,
    /// Values that mean a flagged measurement.
    pub uncertain: Vec<u16>,
    /// Values that mean a measurement error.
    pub bad: Vec<u16>,
}

/// One register (or register group) that becomes one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The catalogue metric.
    pub metric: Metric,
    /// Where it lives.
    pub table: Table,
    /// First register (or bit) on the wire, 0-based. For slot points: offset in the slot.
    pub address: u16,
    /// How the raw words are read.
    pub ty: ValueType,
    /// Word and byte order of multi-register values.
    pub order: WordOrder,
    /// `value = raw * scale + offset`.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// Take only this bit of the raw integer (status and fault words).
    pub bit: Option<u8>,
    /// Where the quality of its readings comes from (otherwise always good).
    pub quality: Option<QualityMap>,
}

impl Point {
    /// Registers (or bits) the point spans.
    pub fn width(&self) -> u16 {
        self.ty.registers()
    }
}

/// A slot table: `count` blocks of `stride` registers from `base`, each a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Slots {
    /// Table of the count register and of the slots.
    pub table: Table,
    /// Register holding how many slots are in use.
    pub count_address: u16,
    /// Address of slot 0.
    pub base: u16,
    /// Registers per slot.
    pub stride: u16,
    /// Most slots the device can have.
    pub max: u16,
    /// Type of the slot's id register at offset 0.
    pub id_type: ValueType,
    /// Device id of a slot; `{id}` is replaced by the id register's value.
    pub device: String,
    /// Kind of the slot devices.
    pub kind: DeviceKind,
    /// Points of one slot; `address` is the offset within the slot.
    pub points: Vec<Point>,
}

impl Slots {
    /// The device id of a slot whose id register reads `id`.
    pub fn device_id(&self, id: u64) -> String {
        self.device.replace("{id}", &id.to_string())
    }
}

/// A register that commands may write, and the range they may write.
#[derive(Debug, Clone, PartialEq)]
pub struct Writable {
    /// Name used in commands (`Action::Write { point }`).
    pub name: String,
    /// Coil or holding register.
    pub table: Table,
    /// Address on the wire.
    pub address: u16,
    /// How the value is encoded.
    pub ty: ValueType,
    /// Word order of multi-register values.
    pub order: WordOrder,
    /// `value = raw * scale + offset`; writing inverts it.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// Lowest value a command may write.
    pub min: f64,
    /// Highest value a command may write.
    pub max: f64,
    /// Unit of the value, for people and audit logs.
    pub unit: String,
}

// ---- the file format, as parsed ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileSpec {
    model: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    max_gap: u16,
    #[serde(default)]
    points: Vec<Spanned<PointSpec>>,
    slots: Option<Spanned<SlotsSpec>>,
    #[serde(default)]
    writable: Vec<Spanned<WritableSpec>>,
    mailbox: Option<Spanned<MailboxSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxSpec {
    #[serde(default)]
    table: Table,
    address: u32,
    size: u32,
    log: Option<LogSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSpec {
    #[serde(default = "input_table")]
    table: Table,
    address: u32,
}

fn input_table() -> Table {
    Table::Input
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QualitySpec {
    #[serde(default)]
    table: Table,
    address: u32,
    #[serde(default)]
    good: Vec<u16>,
    #[serde(default)]
    uncertain: Vec<u16>,
    #[serde(default)]
    bad: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointSpec {
    metric: String,
    #[serde(default)]
    table: Table,
    address: Option<u32>,
    #[serde(rename = "type")]
    ty: ValueType,
    #[serde(default)]
    order: WordOrder,
    #[serde(default = "one")]
    scale: f64,
    #[serde(default)]
    offset: OffsetOrAddress,
    unit: Option<String>,
    bit: Option<u8>,
    quality: Option<QualitySpec>,
}

/// In a slot point `offset` is the register offset within the slot (an integer); in a
/// plain point it is the value offset (a float). Both spellings are natural in their
/// place, so the parser takes either and validation decides what it means.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(untagged)]
enum OffsetOrAddress {
    #[default]
    None,
    Int(i64),
    Float(f64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotsSpec {
    #[serde(default)]
    table: Table,
    count_address: u16,
    base: u16,
    stride: u16,
    max: u16,
    #[serde(default = "u32_type")]
    id_type: ValueType,
    device: String,
    kind: String,
    #[serde(default)]
    points: Vec<Spanned<PointSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WritableSpec {
    name: String,
    #[serde(default)]
    table: Table,
    address: u32,
    #[serde(rename = "type")]
    ty: ValueType,
    #[serde(default)]
    order: WordOrder,
    #[serde(default = "one")]
    scale: f64,
    #[serde(default)]
    offset: f64,
    #[serde(default)]
    unit: Option<String>,
    min: f64,
    max: f64,
}

fn one() -> f64 {
    1.0
}

fn u32_type() -> ValueType {
    ValueType::U32
}

impl Profile {
    /// Parses and validates a profile; every problem comes back at once.
    pub fn parse(src: &Source) -> Result<Profile, ConfigErrors> {
        let spec: ProfileSpec = src.parse()?;
        let mut problems = Problems::new();
        let kind = parse_kind(src, &spec.kind, &mut problems);
        if spec.model.get_ref().trim().is_empty() {
            problems.push(src.error(&spec.model, "model must not be empty"));
        }
        let points = points(src, &spec.points, PointPlace::Device, &mut problems);
        let slots = spec.slots.as_ref().map(|s| slots(src, s, &mut problems));
        let writable = spec.writable.iter().map(|w| writable(src, w, &mut problems)).collect::<Vec<_>>();
        let mut names: Vec<&str> = Vec::new();
        for (w, spec) in writable.iter().zip(&spec.writable) {
            if names.contains(&w.name.as_str()) {
                problems.push(src.error(spec, format!("writable '{}' is listed twice", w.name)));
            }
            names.push(&w.name);
        }
        let mailbox = spec.mailbox.as_ref().and_then(|m| mailbox(src, m, &mut problems));
        if spec.points.is_empty() && spec.slots.is_none() {
            problems.push(src.error_at(None, "profile has no points and no slots: nothing to read"));
        }
        problems.finish(Profile {
            model: spec.model.into_inner(),
            kind: kind.unwrap_or(DeviceKind::External),
            description: spec.description,
            points,
            max_gap: spec.max_gap,
            slots,
            writable,
            mailbox,
        })
    }

    /// The writable register called `name`.
    pub fn writable(&self, name: &str) -> Option<&Writable> {
        self.writable.iter().find(|w| w.name == name)
    }
}

fn parse_kind(src: &Source, kind: &Spanned<String>, problems: &mut Problems) -> Option<DeviceKind> {
    match kind.get_ref().parse::<DeviceKind>() {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(src.error(kind, format!("'{}': {e}", kind.get_ref())));
            None
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum PointPlace {
    Device,
    Slot { stride: u16, table: Table },
}

fn points(src: &Source, specs: &[Spanned<PointSpec>], place: PointPlace, problems: &mut Problems) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    for spanned in specs {
        let Some(p) = point(src, spanned, place, problems) else { continue };
        if out.iter().any(|q| q.metric == p.metric) {
            problems.push(
                src.error(spanned, format!("metric '{}' is read twice; a device has one point per metric", p.metric)),
            );
            continue;
        }
        out.push(p);
    }
    out
}

fn point(src: &Source, spanned: &Spanned<PointSpec>, place: PointPlace, problems: &mut Problems) -> Option<Point> {
    let spec = spanned.get_ref();
    let at = |reason: String| src.error(spanned, format!("point '{}': {reason}", spec.metric));
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut fail = |e: ConfigError| errors.push(e);

    let Some(def) = catalogue::by_name(&spec.metric) else {
        problems.push(src.error(
            spanned,
            format!("metric '{}' is not in the catalogue (see protocol/src/catalogue.rs)", spec.metric),
        ));
        return None;
    };
    match &spec.unit {
        Some(unit) if unit != def.unit => {
            fail(at(format!("unit '{unit}' is not the catalogue unit '{}'; convert with scale and offset", def.unit)))
        }
        None => fail(at(format!("unit missing; the catalogue unit of {} is '{}'", def.name, def.unit))),
        _ => {}
    }
    // `offset` means "register offset in the slot" for slot points, "value offset" otherwise.
    let (address, value_offset) = match place {
        PointPlace::Device => {
            let value_offset = match spec.offset {
                OffsetOrAddress::None => 0.0,
                OffsetOrAddress::Int(i) => i as f64,
                OffsetOrAddress::Float(f) => f,
            };
            match spec.address {
                Some(a) => (a, value_offset),
                None => {
                    fail(at("needs `address` (0-based register address on the wire)".into()));
                    (0, value_offset)
                }
            }
        }
        PointPlace::Slot { .. } => match spec.offset {
            OffsetOrAddress::Int(i) if i >= 0 && spec.address.is_none() => (u32::try_from(i).unwrap_or(u32::MAX), 0.0),
            _ => {
                fail(at(
                    "a slot point needs an integer `offset` (register offset within the slot) and no `address`".into()
                ));
                (0, 0.0)
            }
        },
    };
    // Slot points live in the slot table; a table of their own would be a contradiction.
    let table = match place {
        PointPlace::Slot { table, .. } => {
            if spec.table != Table::default() && spec.table != table {
                fail(at(format!("slot points are read from the slot table ({table}), not {}", spec.table)));
            }
            table
        }
        PointPlace::Device => spec.table,
    };
    if !spec.ty.fits(table) {
        fail(at(format!("type {} cannot be read from the {table} table", spec.ty)));
    }
    // u64: an address near u32::MAX must be refused, not overflow.
    let width = u32::from(spec.ty.registers());
    if u64::from(address) + u64::from(width) > 65_536 {
        fail(at(format!("address {address} plus {width} registers runs past 65535")));
    }
    if let PointPlace::Slot { stride, .. } = place
        && u64::from(address) + u64::from(width) > u64::from(stride)
    {
        fail(at(format!("offset {address} plus {width} registers does not fit the slot stride {stride}")));
    }
    if !(spec.scale.is_finite() && spec.scale != 0.0 && value_offset.is_finite()) {
        fail(at("scale must be finite and non-zero, offset finite".into()));
    }
    if let Some(bit) = spec.bit
        && (!spec.ty.is_integer() || u32::from(bit) >= spec.ty.bits())
    {
        fail(at(format!("bit {bit} does not exist in a {}", spec.ty)));
    }
    let quality = spec.quality.as_ref().map(|q| {
        if matches!(place, PointPlace::Slot { .. }) {
            fail(at("slot points cannot take quality from a status register".into()));
        }
        if q.table.is_bits() || q.address > 65_535 {
            fail(at(format!("quality register {} {} must be a word register within 0..65535", q.table, q.address)));
        }
        if q.good.is_empty() {
            fail(at("quality needs at least one `good` value".into()));
        }
        let mut all: Vec<u16> = q.good.iter().chain(&q.uncertain).chain(&q.bad).copied().collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            fail(at("a status value is listed under two qualities".into()));
        }
        QualityMap {
            table: q.table,
            address: u16::try_from(q.address).unwrap_or(u16::MAX),
            good: q.good.clone(),
            uncertain: q.uncertain.clone(),
            bad: q.bad.clone(),
        }
    });
    if !errors.is_empty() {
        errors.into_iter().for_each(|e| problems.push(e));
        return None;
    }
    Some(Point {
        metric: Metric::from(def),
        table,
        address: u16::try_from(address).unwrap_or(u16::MAX),
        ty: spec.ty,
        order: spec.order,
        scale: spec.scale,
        offset: value_offset,
        bit: spec.bit,
        quality,
    })
}

fn mailbox(src: &Source, spanned: &Spanned<MailboxSpec>, problems: &mut Problems) -> Option<Mailbox> {
    let m = spanned.get_ref();
    let mut ok = true;
    if m.table != Table::Holding {
        problems.push(src.error(spanned, format!("mailbox: must be holding registers, not {}", m.table)));
        ok = false;
    }
    if m.size < 2 || u64::from(m.address) + u64::from(m.size) > 65_536 {
        problems.push(src.error(
            spanned,
            format!("mailbox: {} registers from {} must be at least 2 and end by 65535", m.size, m.address),
        ));
        ok = false;
    }
    let count = u32::from(protocol::speaker::LOG_REGISTERS);
    let log = m.log.as_ref().and_then(|l| {
        let mut fine = true;
        if !matches!(l.table, Table::Input | Table::Holding) {
            problems
                .push(src.error(spanned, format!("mailbox: log must be input or holding registers, not {}", l.table)));
            fine = false;
        }
        if u64::from(l.address) + u64::from(count) > 65_536 {
            problems.push(
                src.error(
                    spanned,
                    format!("mailbox: the log's {count} registers from {} must end by 65535", l.address),
                ),
            );
            fine = false;
        }
        ok &= fine;
        fine.then(|| CommandLog { table: l.table, address: u16::try_from(l.address).unwrap_or(u16::MAX) })
    });
    ok.then(|| Mailbox {
        table: m.table,
        address: u16::try_from(m.address).unwrap_or(u16::MAX),
        size: u16::try_from(m.size).unwrap_or(u16::MAX),
        log,
    })
}

fn slots(src: &Source, spanned: &Spanned<SlotsSpec>, problems: &mut Problems) -> Slots {
    let s = spanned.get_ref();
    let kind = match s.kind.parse::<DeviceKind>() {
        Ok(k) => k,
        Err(e) => {
            problems.push(src.error(spanned, format!("slots: kind '{}': {e}", s.kind)));
            DeviceKind::External
        }
    };
    if s.stride == 0 {
        problems.push(src.error(spanned, "slots: stride must be at least 1"));
    }
    if !s.device.contains("{id}") {
        problems.push(src.error(spanned, "slots: device must contain {id}, or every slot would be the same device"));
    }
    let end = u32::from(s.base) + u32::from(s.stride) * u32::from(s.max);
    if end > 65_536 {
        problems
            .push(src.error(spanned, format!("slots: {} slots of {} from {} run past 65535", s.max, s.stride, s.base)));
    }
    if !s.id_type.is_integer() || !s.id_type.fits(s.table) {
        problems.push(src.error(spanned, format!("slots: id_type {} must be an integer register type", s.id_type)));
    }
    let points = points(src, &s.points, PointPlace::Slot { stride: s.stride.max(1), table: s.table }, problems);
    Slots {
        table: s.table,
        count_address: s.count_address,
        base: s.base,
        stride: s.stride,
        max: s.max,
        id_type: s.id_type,
        device: s.device.clone(),
        kind,
        points,
    }
}

fn writable(src: &Source, spanned: &Spanned<WritableSpec>, problems: &mut Problems) -> Writable {
    let w = spanned.get_ref();
    let mut fail = |reason: String| problems.push(src.error(spanned, format!("writable '{}': {reason}", w.name)));
    if !matches!(w.table, Table::Coil | Table::Holding) {
        fail(format!("the {} table cannot be written", w.table));
    }
    if !w.ty.fits(w.table) {
        fail(format!("type {} cannot be written to the {} table", w.ty, w.table));
    }
    if !(w.min.is_finite() && w.max.is_finite() && w.min <= w.max) {
        fail(format!("min {} and max {} must be finite with min <= max", w.min, w.max));
    }
    if !(w.scale.is_finite() && w.scale != 0.0 && w.offset.is_finite()) {
        fail("scale must be finite and non-zero, offset finite".into());
    }
    if u64::from(w.address) + u64::from(w.ty.registers()) > 65_536 {
        fail(format!("address {} runs past 65535", w.address));
    }
    Writable {
        unit: w.unit.clone().unwrap_or_default(),
        name: w.name.clone(),
        table: w.table,
        address: u16::try_from(w.address).unwrap_or(u16::MAX),
        ty: w.ty,
        order: w.order,
        scale: w.scale,
        offset: w.offset,
        min: w.min,
        max: w.max,
    }
}

/// Every profile the gateway can use, by model.
#[derive(Debug, Clone, Default)]
pub struct Library {
    profiles: HashMap<String, Arc<Profile>>,
}

/// The profiles shipped in `gateway/profiles/`, built into the binary.
static BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_profiles.rs"));

impl Library {
    /// The built-in library. A broken built-in profile is a bug, caught by a test; here it
    /// is skipped with its errors returned, like any other bad profile.
    pub fn builtin() -> (Library, Vec<ConfigErrors>) {
        let mut lib = Library::default();
        let errors = BUILTIN
            .iter()
            .filter_map(|(name, text)| lib.add(&Source::from_text(format!("gateway/profiles/{name}"), *text)).err())
            .collect();
        (lib, errors)
    }

    /// Adds every `*.toml` in `dir`. Bad profiles are refused with their errors; the rest load.
    pub fn load_dir(&mut self, dir: &Path) -> Vec<ConfigErrors> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                return vec![ConfigErrors(vec![ConfigError {
                    file: dir.to_path_buf(),
                    line: None,
                    column: None,
                    reason: format!("cannot read profile directory: {e}"),
                }])];
            }
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        files.iter().filter_map(|f| Source::read(f).and_then(|src| self.add(&src)).err()).collect()
    }

    /// Adds one profile; a later profile of the same model replaces the earlier one.
    pub fn add(&mut self, src: &Source) -> Result<Arc<Profile>, ConfigErrors> {
        let profile = Arc::new(Profile::parse(src)?);
        self.profiles.insert(profile.model.clone(), profile.clone());
        Ok(profile)
    }

    /// The profile of a model.
    pub fn get(&self, model: &str) -> Option<Arc<Profile>> {
        self.profiles.get(model).cloned()
    }

    /// Every model, sorted.
    pub fn models(&self) -> Vec<&str> {
        let mut m: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
        m.sort_unstable();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile, ConfigErrors> {
        Profile::parse(&Source::from_text("p.toml", text))
    }

    const METER: &str = r#"
model = "m1"
kind = "water_meter"

[[points]]
metric = "volume_total"
table = "input"
address = 0
type = "u32"
order = "CDAB"
scale = 0.001
unit = "m3"

[[points]]
metric = "fault_word"
table = "input"
address = 2
type = "u16"
unit = "bits"
"#;

    #[test]
    fn a_good_profile_loads_with_its_defaults() {
        let p = parse(METER).unwrap();
        assert_eq!(p.kind, DeviceKind::WaterMeter);
        assert_eq!(p.points.len(), 2);
        assert_eq!(p.points[0].order, WordOrder::Cdab);
        assert_eq!(p.points[1].scale, 1.0);
        assert_eq!(p.points[1].order, WordOrder::Abcd);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = r#"
model = "m1"
kind = "water_meter"

[[points]]
metric = "volume_total"
address = 0
type = "u32"
scale = 0.001
unit = "L"

[[points]]
metric = "not_a_metric"
address = 2
type = "u16"
unit = "x"

[[points]]
metric = "pump_running"
table = "holding"
address = 3
type = "bool"
unit = "bool"
"#;
        let errs = parse(text).unwrap_err().0;
        let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(5), Some(12), Some(18)], "{errs:#?}");
        assert!(errs[0].reason.contains("unit 'L' is not the catalogue unit 'm3'"), "{}", errs[0].reason);
        assert!(errs[1].reason.contains("not in the catalogue"));
        assert!(errs[2].reason.contains("cannot be read from the holding table"));
    }

    #[test]
    fn unknown_fields_and_bad_orders_are_refused_at_their_line() {
        let e = parse("model = \"m\"\nkind = \"speaker\"\nadress = 4\n").unwrap_err();
        assert!(e.to_string().starts_with("p.toml:3:1: unknown field `adress`"), "{e}");
        let e = parse(&METER.replace("CDAB", "ACBD")).unwrap_err();
        assert!(e.to_string().contains("p.toml:10:"), "{e}");
        assert!(e.to_string().contains("ACBD"), "{e}");
    }

    #[test]
    fn slot_tables_describe_one_device_per_slot() {
        let text = r#"
model = "hub"
kind = "cow_collar"
[slots]
table = "input"
count_address = 99
base = 100
stride = 8
max = 250
device = "cow-{id}"
kind = "cow_collar"
[[slots.points]]
metric = "body_temperature"
offset = 2
type = "i16"
scale = 0.01
unit = "°C"
"#;
        let p = parse(text).unwrap();
        let s = p.slots.unwrap();
        assert_eq!(s.points[0].address, 2);
        assert_eq!(s.device_id(1042), "cow-1042");
        assert_eq!(s.points[0].table, Table::Input, "slot points are read from the slot table");
        let e = parse(&text.replace("offset = 2", "offset = 8")).unwrap_err();
        assert!(e.to_string().contains("does not fit the slot stride 8"), "{e}");
        // 2^32 + 2 once wrapped to offset 2 and loaded.
        let e = parse(&text.replace("offset = 2", "offset = 4294967298")).unwrap_err();
        assert!(e.to_string().contains("does not fit the slot stride 8"), "{e}");
    }

    #[test]
    fn writable_ranges_must_make_sense() {
        let text = format!(
            "{METER}\n[[writable]]\nname = \"valve\"\ntable = \"input\"\naddress = 1\ntype = \"u16\"\nmin = 1\nmax = 0\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("the input table cannot be written"), "{e}");
        assert!(e.contains("min 1 and max 0"), "{e}");
    }

    #[test]
    fn a_bad_profile_in_a_directory_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.toml"), METER).unwrap();
        std::fs::write(dir.path().join("bad.toml"), "model = 3").unwrap();
        let mut lib = Library::default();
        let errors = lib.load_dir(dir.path());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("bad.toml:1:9"), "{}", errors[0]);
        assert!(lib.get("m1").is_some());
    }

    #[test]
    fn quality_maps_and_mailboxes_are_checked_at_their_line() {
        let good = format!("{METER}\n[mailbox]\naddress = 1000\nsize = 10\n");
        let p = parse(&good).unwrap();
        assert_eq!(p.mailbox.unwrap().capacity(), 18);
        let text = METER.replace(
            "unit = \"bits\"",
            "unit = \"bits\"\nquality = { table = \"input\", address = 9, good = [1], bad = [1] }",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("p.toml:14:") && e.contains("listed under two qualities"), "{e}");
        let e = parse(&format!("{METER}\n[mailbox]\ntable = \"input\"\naddress = 1\nsize = 1\n")).unwrap_err();
        assert!(e.to_string().contains("mailbox: must be holding registers"), "{e}");
        let with_log = format!("{METER}\n[mailbox]\naddress = 1000\nsize = 1000\nlog = {{ address = 100 }}\n");
        let log = parse(&with_log).unwrap().mailbox.unwrap().log.unwrap();
        assert_eq!((log.table, log.address, log.count()), (Table::Input, 100, 106));
        let e = parse(&format!(
            "{METER}\n[mailbox]\naddress = 1000\nsize = 10\nlog = {{ table = \"coil\", address = 65500 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("log must be input or holding") && e.contains("must end by 65535"), "{e}");
    }

    #[test]
    fn addresses_near_the_top_of_u32_are_refused_not_overflowed() {
        // Found by the `config` fuzz target (fuzz/regressions/config): `address + width`
        // in u32 overflowed (a panic in a debug build, a wrapped check in release).
        assert!(parse(METER).is_ok(), "positive control");
        let huge = "4294967295";
        let point = METER.replace("address = 2", &format!("address = {huge}"));
        assert!(parse(&point).unwrap_err().to_string().contains("runs past 65535"));
        let mailbox = format!("{METER}\n[mailbox]\naddress = {huge}\nsize = 2\n");
        assert!(parse(&mailbox).unwrap_err().to_string().contains("and end by 65535"));
        let log = format!("{METER}\n[mailbox]\naddress = 1000\nsize = 10\nlog = {{ address = {huge} }}\n");
        assert!(parse(&log).unwrap_err().to_string().contains("must end by 65535"));
        let writable =
            format!("{METER}\n[[writable]]\nname = \"w\"\naddress = {huge}\ntype = \"u32\"\nmin = 0.0\nmax = 1.0\n");
        assert!(parse(&writable).unwrap_err().to_string().contains("runs past 65535"));
    }

    #[test]
    fn every_builtin_profile_loads() {
        let (lib, errors) = Library::builtin();
        assert!(errors.is_empty(), "{}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"));
        assert_eq!(lib.models().len(), BUILTIN.len());
    }
}
