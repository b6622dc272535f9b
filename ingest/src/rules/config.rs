//! Rule packs: the TOML format, its validation, and the compiled [`Rule`]s.
//!
//! A pack is one TOML file of `[[rules]]`. Every rule has an `id` (unique across all
//! loaded packs), a `kind`, a `severity`, a `summary` template and a selector; the other
//! keys are the kind's own (`docs/ALERTS.md` lists them), declared by the kind's spec
//! struct in `kinds/<kind>.rs`. Loading goes through `conf`, so every problem is reported
//! with file, line and reason, and all problems of all files at once. A set of packs
//! loads as a whole or not at all: on reload, an invalid file is refused and the rules
//! already running keep running.
//!
//! Parsing a rule is two steps, so that every error keeps its position: the table is
//! parsed with its spans (`toml::de::DeTable`), `kind` is peeked, then the common keys
//! and the kind's keys are deserialised (both `deny_unknown_fields`) from the same spans.
//! A key no kind takes is an unknown field; a key of another kind "does not apply".
//!
//! Invariants of a compiled [`RuleSet`]:
//! - rule ids are unique; each rule knows the file and line it came from;
//! - every metric named is in the catalogue, every device kind parses;
//! - numbers that must be positive are (windows, hold times, limits).

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use conf::{ConfigError, ConfigErrors, Problems, Source, Spanned};
use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::kinds::KINDS;
pub use super::kinds::{Kind, Rule};
use super::signal::Severity;
pub use super::spec::{BroadcastSpec, Ctx, DeviceMeta, OneOrMany, SelectSpec, Selector};
use super::spec::{fields_of, located};

/// The packs shipped with ingest, built into the binary: `(file name, text)`.
pub const DEFAULT_PACKS: &[(&str, &str)] = &[
    ("drinking-water.toml", include_str!("../../rules/drinking-water.toml")),
    ("dairy.toml", include_str!("../../rules/dairy.toml")),
    ("gateways.toml", include_str!("../../rules/gateways.toml")),
];

/// The keys every rule takes, whatever its kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    id: Spanned<String>,
    kind: Spanned<String>,
    severity: Spanned<String>,
    summary: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    select: SelectSpec,
    broadcast: Option<BroadcastSpec>,
}

/// A pack as written; the rules are taken apart with their spans afterwards.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackSpec {
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    #[allow(dead_code)]
    rules: Vec<IgnoredAny>,
}

/// Every loaded rule, with where they came from.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// The rules, in load order.
    pub rules: Vec<Rule>,
    /// The pack files, for the reload check.
    pub files: Vec<PathBuf>,
}

impl RuleSet {
    /// The packs shipped with ingest.
    pub fn defaults() -> Result<RuleSet, ConfigErrors> {
        let sources: Vec<Source> =
            DEFAULT_PACKS.iter().map(|(name, text)| Source::from_text(format!("ingest/rules/{name}"), *text)).collect();
        RuleSet::from_sources(&sources)
    }

    /// Every `*.toml` of `dir` (sorted by name), or one file.
    pub fn load(path: &Path) -> Result<RuleSet, ConfigErrors> {
        let files = pack_files(path)?;
        let mut problems = Vec::new();
        let mut sources = Vec::new();
        for f in &files {
            match Source::read(f) {
                Ok(s) => sources.push(s),
                Err(e) => problems.extend(e.0),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let mut set = RuleSet::from_sources(&sources)?;
        set.files = files;
        Ok(set)
    }

    /// Parses and validates packs; rule ids must be unique across all of them.
    pub fn from_sources(sources: &[Source]) -> Result<RuleSet, ConfigErrors> {
        let mut all = Vec::new();
        let mut rules = Vec::new();
        let mut ids: HashSet<String> = HashSet::new();
        for src in sources {
            match parse_pack(src, &mut ids) {
                Ok(r) => rules.extend(r),
                Err(e) => all.extend(e.0),
            }
        }
        if all.is_empty() { Ok(RuleSet { rules, files: Vec::new() }) } else { Err(ConfigErrors(all)) }
    }
}

/// The pack files at `path`: the file itself, or the `*.toml` in the directory.
pub fn pack_files(path: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            reason: format!("cannot read the rule directory: {e}"),
        }])
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn parse_pack(src: &Source, ids: &mut HashSet<String>) -> Result<Vec<Rule>, ConfigErrors> {
    // The pack's own keys and the shape of `rules`, with serde's located messages.
    let _: PackSpec = src.parse()?;
    let root = DeTable::parse(src.text()).map_err(|e| ConfigErrors(vec![located(src, &e)]))?.into_inner();
    let mut problems = Problems::new();
    let mut out = Vec::new();
    let pack = src.name().file_name().map_or_else(|| src.name().display().to_string(), |n| n.to_string_lossy().into());
    let rules = root.into_iter().find(|(k, _)| k.get_ref() == "rules").map(|(_, v)| v);
    let Some(DeValue::Array(rules)) = rules.map(Spanned::into_inner) else { return problems.finish(out) };
    for r in rules.iter() {
        let span = r.span();
        let line = src.error_at(Some(span.clone()), "").line.unwrap_or(0);
        let DeValue::Table(table) = r.get_ref() else {
            problems.push(src.error_at(Some(span), "a rule must be a table"));
            continue;
        };
        if let Some(rule) = parse_rule(src, &mut problems, table, span, &pack, line, ids) {
            out.push(rule);
        }
    }
    problems.finish(out)
}

/// A deserializer of `table`, positioned at the rule's span (its own values keep theirs).
fn table_de<'i>(span: &Range<usize>, table: DeTable<'i>) -> ValueDeserializer<'i> {
    ValueDeserializer::from(Spanned::new(span.clone(), DeValue::Table(table)))
}

fn has(fields: &[&str], key: &str) -> bool {
    fields.contains(&key)
}

/// The keys of [`Head`].
fn head_fields() -> &'static [&'static str] {
    fields_of::<Head>()
}

fn parse_rule(
    src: &Source,
    problems: &mut Problems,
    table: &DeTable<'_>,
    span: Range<usize>,
    pack: &str,
    line: usize,
    ids: &mut HashSet<String>,
) -> Option<Rule> {
    // Split the table: the common keys, and the kind's.
    let (mut head, mut own) = (DeTable::new(), DeTable::new());
    for (k, v) in table {
        if has(head_fields(), k.get_ref()) {
            head.insert(k.clone(), v.clone());
        } else {
            own.insert(k.clone(), v.clone());
        }
    }
    let h = match Head::deserialize(table_de(&span, head)) {
        Ok(h) => h,
        Err(e) => {
            problems.push(located(src, &e));
            return None;
        }
    };
    let mut ctx = Ctx {
        src,
        problems,
        span: span.clone(),
        id: h.id.get_ref().clone(),
        kind: h.kind.get_ref().clone(),
        for_ms: 0,
        clear_for_ms: 0,
    };
    if !ids.insert(h.id.get_ref().clone()) {
        let e = src.error(&h.id, format!("rule id '{}' is used twice", h.id.get_ref()));
        ctx.problems.push(e);
    }
    if let Err(e) = protocol::id::validate(h.id.get_ref()) {
        let e = src.error(&h.id, format!("rule id '{}': {e}", h.id.get_ref()));
        ctx.problems.push(e);
    }
    let severity = match h.severity.get_ref().parse::<Severity>() {
        Ok(sev) => sev,
        Err(e) => {
            ctx.fail_at(&h.severity, e);
            Severity::Warning
        }
    };
    if let Some(b) = &h.broadcast
        && !matches!(b.level.as_str(), "red" | "orange" | "yellow" | "blue")
    {
        ctx.fail(format!("broadcast.level '{}' must be red, orange, yellow or blue", b.level));
    }
    let select = ctx.selector(h.select);
    let name = h.kind.get_ref().as_str();
    let Some(entry) = KINDS.iter().find(|k| k.name == name) else {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        ctx.fail_at(&h.kind, format!("unknown kind '{name}'; expected one of {}", names.join(", ")));
        return None;
    };
    // Keys of another kind do not apply; keys of none are unknown (serde's words).
    let fields = (entry.fields)();
    let mut known = DeTable::new();
    for (k, v) in own {
        let key: &str = k.get_ref();
        if has(fields, key) {
            known.insert(k, v);
        } else if KINDS.iter().any(|other| has((other.fields)(), key)) {
            ctx.fail_at(&k, format!("`{key}` does not apply to a {name} rule"));
        } else {
            let expected: Vec<String> = head_fields().iter().chain(fields).map(|f| format!("`{f}`")).collect();
            let e = src.error(&k, format!("unknown field `{key}`, expected one of {}", expected.join(", ")));
            ctx.problems.push(e);
        }
    }
    let kind = (entry.build)(&mut ctx, table_de(&span, known))?;
    Some(Rule {
        id: h.id.into_inner(),
        pack: pack.to_string(),
        line,
        severity,
        summary: h.summary,
        description: h.description,
        select,
        for_ms: ctx.for_ms,
        clear_for_ms: ctx.clear_for_ms,
        kind,
        broadcast: h.broadcast,
    })
}

/// Counts of rules per kind, for logs.
pub fn census(rules: &[Rule]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in rules {
        *m.entry(r.kind.name()).or_default() += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::DeviceKind;

    fn load(text: &str) -> Result<RuleSet, ConfigErrors> {
        RuleSet::from_sources(&[Source::from_text("p.toml", text)])
    }

    #[test]
    fn the_default_packs_load() {
        let set = RuleSet::defaults().unwrap_or_else(|e| panic!("{e}"));
        assert!(set.rules.len() >= 20, "{} rules", set.rules.len());
        let kinds = census(&set.rules);
        for k in [
            "threshold",
            "rate_of_change",
            "staleness",
            "gateway_offline",
            "flatline",
            "drift",
            "mass_balance",
            "night_flow",
            "pump_flow",
            "tank_empty",
            "animal_baseline",
            "thi",
        ] {
            assert!(kinds.contains_key(k), "no {k} rule in the default packs");
        }
    }

    #[test]
    fn every_problem_is_reported_with_file_line_and_reason() {
        let text = r#"
[[rules]]
id = "a"
kind = "threshold"
severity = "critical"
summary = "x"
metric = "free_chlorine"

[[rules]]
id = "b"
kind = "treshold"
severity = "critical"
summary = "x"

[[rules]]
id = "c"
kind = "staleness"
severity = "loud"
summary = "x"
above = 3.0
"#;
        let errs = load(text).unwrap_err();
        let text = errs.to_string();
        assert!(
            text.contains("p.toml:2:1: rule 'a': a threshold rule needs exactly one of `above` and `below`"),
            "{text}"
        );
        assert!(text.contains("p.toml:11:8: rule 'b': unknown kind 'treshold'"), "{text}");
        assert!(text.contains("p.toml:18:12: rule 'c':"), "{text}");
        assert!(text.contains("`above` does not apply to a staleness rule"), "{text}");
    }

    #[test]
    fn a_misspelt_key_and_a_duplicate_id_are_refused() {
        let e = load("[[rules]]\nid = \"a\"\nkind = \"thi\"\nseverity = \"info\"\nsummary = \"x\"\nabove_ = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:6:1: unknown field `above_`"), "{e}");
        let one = "[[rules]]\nid = \"a\"\nkind = \"thi\"\nseverity = \"info\"\nsummary = \"x\"\n";
        let e = load(&format!("{one}{one}")).unwrap_err().to_string();
        assert!(e.contains("rule id 'a' is used twice"), "{e}");
    }

    #[test]
    fn selectors_match_on_every_field_they_name() {
        let d = DeviceMeta {
            id: "m1".into(),
            kind: DeviceKind::WaterMeter,
            site: "dongcun".into(),
            gateway: "gw".into(),
            tenant: "county".into(),
            district: Some("district-1".into()),
            village: Some("dongcun".into()),
        };
        let mut s = Selector { kinds: vec![DeviceKind::WaterMeter], ..Selector::default() };
        assert!(s.matches(&d));
        s.districts = vec!["district-2".into()];
        assert!(!s.matches(&d));
        s.districts = vec!["district-1".into()];
        s.tenants = vec!["dairy".into()];
        assert!(!s.matches(&d));
    }
}
