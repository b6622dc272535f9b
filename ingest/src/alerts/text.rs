//! Words for people: rule names, alert summaries, severities, values with their units and
//! times, in Chinese and English, for the API (`summary_zh`, `rule_name_zh`) and the
//! messages notifiers send to chat groups.
//!
//! Invariants:
//! - One function renders both languages from the same structured [`Facts`] (the alert,
//!   its site's name, what its rule's value means and its unit): the languages cannot say
//!   different things, and there is no second logic to keep in step.
//! - The rule's own `summary` (its pack's English template) is left as it is; what is
//!   rendered here is a second, structured summary beside it.
//! - Times are written as people in China write them: Beijing time (Asia/Shanghai, UTC+8
//!   all year), `2026年12月3日 14:05`; units as they are printed there (`℃`, `分钟`).

use std::collections::HashMap;
use std::sync::Arc;

use protocol::Timestamp;

use super::config::Language;
use super::model::{Alert, Entity, Severity};
use crate::inventory::Inventory;
use crate::rules::config::Rule;

/// What the words of a shipped rule are: its name, what its value is, and the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleWords {
    /// Name in English.
    pub en: &'static str,
    /// Name in Chinese.
    pub zh: &'static str,
    /// What the value is, in English (`None`: the value means nothing to people, e.g. a
    /// PLC's fault word).
    pub value_en: Option<&'static str>,
    /// What the value is, in Chinese.
    pub value_zh: Option<&'static str>,
    /// Unit key (see [`unit`]).
    pub unit: &'static str,
}

const fn w(en: &'static str, zh: &'static str) -> RuleWords {
    RuleWords { en, zh, value_en: None, value_zh: None, unit: "" }
}

const fn v(en: &'static str, zh: &'static str, ven: &'static str, vzh: &'static str, unit: &'static str) -> RuleWords {
    RuleWords { en, zh, value_en: Some(ven), value_zh: Some(vzh), unit }
}

/// The rules of the shipped packs (`ingest/rules/`). The units are those of the `{value}`
/// in each rule's summary template.
const RULES: &[(&str, RuleWords)] = &[
    ("pump-trip", w("Pump trip", "水泵跳闸")),
    ("pump-dry-run", w("Pump dry run", "水泵干转停机")),
    ("pump-overcurrent", w("Pump overcurrent", "水泵过流停机")),
    ("pump-fail-to-start", w("Pump failed to start", "水泵启动失败")),
    ("pump-fail-to-stop", w("Pump failed to stop", "水泵停机失败")),
    ("pump-long-run", w("Pump running too long", "水泵连续运行超时")),
    ("chlorine-dosing-failure", w("Chlorine dosing failure", "加氯设备故障")),
    ("tank-low-level", w("Tank low level", "水箱低水位")),
    ("pump-runs-without-flow", v("Pump runs without flow", "水泵运行无流量", "flow", "流量", "m3/h")),
    ("flow-without-pump", v("Flow without pump", "水泵停止但有流量", "flow", "流量", "m3/h")),
    ("tank-time-to-empty", v("Tank running dry", "水箱即将放空", "time to empty", "预计放空", "h")),
    ("pressure-low", v("Low supply pressure", "供水压力低", "pressure", "压力", "MPa")),
    ("chlorine-falling-at-plant", v("Chlorine falling at plant", "出厂水余氯骤降", "fall", "降幅", "mg/L")),
    ("chlorine-low-at-plant", v("Chlorine low at plant", "出厂水余氯偏低", "free chlorine", "余氯", "mg/L")),
    ("chlorine-low-at-tap", v("Chlorine low in network", "管网末梢余氯偏低", "free chlorine", "余氯", "mg/L")),
    ("chlorine-high", v("Chlorine high", "余氯超标", "free chlorine", "余氯", "mg/L")),
    ("turbidity-high", v("Turbidity high", "浑浊度超标", "turbidity", "浑浊度", "NTU")),
    ("ph-low", v("pH low", "pH 偏低", "pH", "pH", "")),
    ("ph-high", v("pH high", "pH 偏高", "pH", "pH", "")),
    ("conductivity-high", v("Conductivity high", "电导率偏高", "conductivity", "电导率", "uS/cm")),
    ("analyser-error", w("Analyser error", "水质分析仪故障")),
    ("ph-drift", v("pH drift", "pH 漂移", "hourly mean", "小时均值", "")),
    ("conductivity-drift", v("Conductivity drift", "电导率漂移", "hourly mean", "小时均值", "uS/cm")),
    ("chlorine-drift-in-network", v("Chlorine drifting down", "管网余氯持续下降", "hourly mean", "小时均值", "mg/L")),
    ("turbidity-drift", v("Turbidity drifting up", "浑浊度持续上升", "hourly mean", "小时均值", "NTU")),
    ("analyser-stuck", v("Analyser stuck", "水质分析仪读数不变", "reading", "读数", "mg/L")),
    ("level-transmitter-stuck", v("Level transmitter stuck", "液位计读数不变", "level", "液位", "m")),
    ("meter-stopped", w("Meter stopped", "水表停走")),
    ("household-leak", w("Household leak", "用户端漏水")),
    ("meter-tamper", w("Meter tamper", "水表防拆报警")),
    ("district-loss", v("District water loss", "片区漏损", "loss", "漏损率", "%")),
    ("night-flow-rise", v("Night flow rise", "夜间最小流量上升", "minimum night flow", "夜间最小流量", "m3/h")),
    ("station-silent", v("Station silent", "站点无数据", "silent for", "无数据", "s")),
    ("meter-silent", v("Meter silent", "水表无数据", "silent for", "无数据", "s")),
    ("speaker-silent", v("Loudspeaker silent", "大喇叭无应答", "silent for", "无应答", "s")),
    ("gateway-offline", v("Gateway offline", "网关离线", "silent for", "离线", "s")),
    ("cow-fever", v("Cow fever", "奶牛发热", "above her normal", "高于个体常温", "°C")),
    ("cow-estrus", v("Cow in heat", "奶牛发情", "activity", "活动量", "x")),
    ("cow-rumination-drop", v("Rumination drop", "反刍减少", "rumination", "反刍", "x")),
    ("barn-heat-stress", v("Barn heat stress", "牛舍热应激", "THI", "温湿指数", "")),
    ("barn-heat-stress-severe", v("Severe barn heat stress", "牛舍严重热应激", "THI", "温湿指数", "")),
    ("barn-sensor-stuck", v("Barn sensor stuck", "牛舍传感器读数不变", "reading", "读数", "°C")),
    ("collar-stuck", v("Collar stuck", "项圈读数不变", "reading", "读数", "°C")),
    ("barn-silent", v("Barn sensor silent", "牛舍传感器无数据", "silent for", "无数据", "s")),
    ("collar-silent", v("Collar silent", "项圈无数据", "silent for", "无数据", "s")),
];

/// The words of a shipped rule, if `rule` is one.
pub fn rule_words(rule: &str) -> Option<&'static RuleWords> {
    RULES.iter().find(|(id, _)| *id == rule).map(|(_, w)| w)
}

/// A rule's name for people: the shipped rule's name, or its id.
pub fn rule_name(rule: &str, lang: Language) -> String {
    match (rule_words(rule), lang) {
        (Some(w), Language::Zh) => w.zh.to_string(),
        (Some(w), Language::En) => w.en.to_string(),
        (None, _) => rule.to_string(),
    }
}

/// A severity for people.
pub fn severity(s: Severity, lang: Language) -> &'static str {
    match (s, lang) {
        (Severity::Info, Language::Zh) => "提示",
        (Severity::Warning, Language::Zh) => "警告",
        (Severity::Critical, Language::Zh) => "严重",
        (Severity::Info, Language::En) => "info",
        (Severity::Warning, Language::En) => "warning",
        (Severity::Critical, Language::En) => "critical",
    }
}

/// A broadcast level for people (`red` -> `红色预警`).
pub fn level(level: &str, lang: Language) -> String {
    let zh = match level {
        "red" => "红色",
        "orange" => "橙色",
        "yellow" => "黄色",
        "blue" => "蓝色",
        other => return other.to_string(),
    };
    match lang {
        Language::Zh => format!("{zh}预警"),
        Language::En => format!("{level} warning"),
    }
}

/// Beijing time: UTC+8, no daylight saving since 1991.
const BEIJING_SECS: i32 = 8 * 3600;

/// A time as people write it: `2026年12月3日 14:05` (Asia/Shanghai), or in English
/// `3 Dec 2026 14:05 (UTC+8)`.
pub fn time(ts: Timestamp, lang: Language) -> String {
    let offset = time::UtcOffset::from_whole_seconds(BEIJING_SECS).unwrap_or(time::UtcOffset::UTC);
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.0) * 1_000_000) else {
        return ts.0.to_string();
    };
    let t = t.to_offset(offset);
    match lang {
        Language::Zh => {
            format!("{}年{}月{}日 {:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
        }
        Language::En => {
            let month = &format!("{}", t.month())[..3];
            format!("{} {month} {} {:02}:{:02} (UTC+8)", t.day(), t.year(), t.hour(), t.minute())
        }
    }
}

/// A duration as people say it (`15 分钟`, `2.5 hours`), rounded to what matters.
pub fn duration(ms: i64, lang: Language) -> String {
    let secs = ms.max(0) / 1000;
    let (n, zh, en) = if secs < 120 {
        (secs.to_string(), "秒", "s")
    } else if secs < 7200 {
        ((secs / 60).to_string(), "分钟", "min")
    } else {
        (number(secs as f64 / 3600.0, 1), "小时", "h")
    };
    match lang {
        Language::Zh => format!("{n}{zh}"),
        Language::En => format!("{n} {en}"),
    }
}

/// A number with at most `places` decimals and no trailing zeros.
fn number(v: f64, places: usize) -> String {
    let s = format!("{v:.places$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// A value with its unit as printed in each language; seconds become minutes or hours
/// once they are many.
pub fn quantity(value: f64, unit: &str, lang: Language) -> String {
    if unit == "s" {
        return duration((value * 1000.0) as i64, lang);
    }
    let n = number(value, 3);
    let (text, space) = match (unit, lang) {
        ("", _) => ("", false),
        ("°C", Language::Zh) => ("℃", false),
        ("%", _) => ("%", false),
        ("h", Language::Zh) => ("小时", false),
        ("x", Language::Zh) => ("倍", false),
        ("x", Language::En) => ("x usual", true),
        ("m3/h", _) => ("m³/h", true),
        ("uS/cm", _) => ("μS/cm", true),
        (u, _) => (u, true),
    };
    match (text, space) {
        ("", _) => n,
        (t, true) => format!("{n} {t}"),
        (t, false) => format!("{n}{t}"),
    }
}

/// What the words of alerts are built from: names of sites and units of rules that are
/// not shipped ones (from their metric), taken once for many alerts.
#[derive(Debug, Clone, Default)]
pub struct Texts {
    sites: HashMap<String, String>,
    units: HashMap<String, &'static str>,
}

impl Texts {
    /// From the inventory (site names) and the running rules (units of rules that are not
    /// shipped ones, from the metric of the kinds whose value is that metric's).
    pub fn new(inventory: &Inventory, rules: &[Arc<Rule>]) -> Texts {
        let sites = inventory.sites().into_iter().map(|s| (s.id, s.name)).collect();
        let mut units = HashMap::new();
        for r in rules {
            if rule_words(&r.id).is_some() {
                continue;
            }
            let Ok(json) = serde_json::to_value(&**r) else { continue };
            let kind = json.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            if matches!(kind, "threshold" | "flatline" | "drift" | "rate_of_change")
                && let Some(metric) = json.get("metric").and_then(|m| m.as_str())
            {
                units.insert(r.id.clone(), protocol::Metric::new(metric).unit());
            }
        }
        Texts { sites, units }
    }

    /// The facts of one alert.
    pub fn facts<'a>(&'a self, alert: &'a Alert) -> Facts<'a> {
        let site_name = alert.site.as_ref().and_then(|s| self.sites.get(s)).map(String::as_str);
        let words = rule_words(&alert.rule);
        let unit = words.map(|w| w.unit).or_else(|| self.units.get(&alert.rule).copied()).unwrap_or("");
        Facts { alert, site_name, words, unit }
    }
}

/// The structured facts of an alert that every text about it is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The alert.
    pub alert: &'a Alert,
    /// Its site's display name (`东村 Dongcun`), if the site is known.
    pub site_name: Option<&'a str>,
    /// Its rule's words, if it is a shipped rule.
    pub words: Option<&'static RuleWords>,
    /// The unit of its value.
    pub unit: &'static str,
}

/// The part of a bilingual name (`东村 Dongcun`) in one language: the words with Chinese
/// characters, or the others; the whole name when one part is missing.
pub fn name_in(name: &str, lang: Language) -> String {
    let cjk = |w: &&str| w.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    let parts: Vec<&str> = match lang {
        Language::Zh => name.split_whitespace().filter(cjk).collect(),
        Language::En => name.split_whitespace().filter(|w| !cjk(w)).collect(),
    };
    if parts.is_empty() { name.to_string() } else { parts.join(" ") }
}

impl Facts<'_> {
    /// The rule's name.
    pub fn rule_name(&self, lang: Language) -> String {
        rule_name(&self.alert.rule, lang)
    }

    /// Where: the site's name in `lang` (or its id), then the device, gateway or district.
    pub fn place(&self, lang: Language) -> String {
        let a = self.alert;
        let site = self.site_name.map(|n| name_in(n, lang)).or_else(|| a.site.clone());
        let what = match (&a.entity, lang) {
            (Entity::Device(d), _) => d.clone(),
            (Entity::Gateway(g), Language::Zh) => format!("网关 {g}"),
            (Entity::Gateway(g), Language::En) => format!("gateway {g}"),
            (Entity::District(d), Language::Zh) => format!("{d} 片区"),
            (Entity::District(d), Language::En) => format!("district {d}"),
        };
        match site {
            Some(s) => format!("{s} {what}"),
            None => what,
        }
    }

    /// The value with what it is and its unit (`余氯 0.21 mg/L`), if it means something.
    pub fn value(&self, lang: Language) -> Option<String> {
        let v = self.alert.value?;
        let label = match (self.words, lang) {
            (Some(w), Language::Zh) => w.value_zh?,
            (Some(w), Language::En) => w.value_en?,
            (None, Language::Zh) => "数值",
            (None, Language::En) => "value",
        };
        Some(format!("{label} {}", quantity(v, self.unit, lang)))
    }

    /// One sentence: where, what, and the value.
    pub fn summary(&self, lang: Language) -> String {
        let (colon, comma) = match lang {
            Language::Zh => ("：", "，"),
            Language::En => (": ", ", "),
        };
        let mut s = format!("{}{colon}{}", self.place(lang), self.rule_name(lang));
        if let Some(v) = self.value(lang) {
            s.push_str(comma);
            s.push_str(&v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::model::AlertState;

    fn alert(rule: &str, value: Option<f64>) -> Alert {
        Alert {
            id: 7,
            fingerprint: format!("{rule}/device/waterworks-quality-1"),
            rule: rule.into(),
            severity: Severity::Critical,
            state: AlertState::Firing,
            entity: Entity::Device("waterworks-quality-1".into()),
            tenant: "county".into(),
            device: Some("waterworks-quality-1".into()),
            site: Some("waterworks".into()),
            gateway: None,
            district: None,
            started_at: Timestamp(0),
            fired_at: None,
            resolved_at: None,
            value,
            summary: String::new(),
            ack: None,
            silenced_by: None,
            flaps: 0,
            clearing_since: None,
            updated_at: Timestamp(0),
        }
    }

    fn texts() -> Texts {
        let mut t = Texts::default();
        t.sites.insert("waterworks".into(), "水厂 Waterworks".into());
        t
    }

    #[test]
    fn one_function_says_the_same_facts_in_both_languages() {
        let t = texts();
        let a = alert("chlorine-low-at-plant", Some(0.21));
        let f = t.facts(&a);
        assert_eq!(f.summary(Language::Zh), "水厂 waterworks-quality-1：出厂水余氯偏低，余氯 0.21 mg/L");
        assert_eq!(
            f.summary(Language::En),
            "Waterworks waterworks-quality-1: Chlorine low at plant, free chlorine 0.21 mg/L"
        );
        // A fault word means nothing to people: no value.
        let a = alert("pump-trip", Some(4.0));
        assert_eq!(t.facts(&a).summary(Language::Zh), "水厂 waterworks-quality-1：水泵跳闸");
        // A rule that is not shipped: its id, and the value plainly.
        let a = alert("my-rule", Some(1.5));
        assert_eq!(t.facts(&a).summary(Language::Zh), "水厂 waterworks-quality-1：my-rule，数值 1.5");
    }

    #[test]
    fn units_and_durations_are_written_as_people_write_them() {
        assert_eq!(quantity(39.9, "°C", Language::Zh), "39.9℃");
        assert_eq!(quantity(39.9, "°C", Language::En), "39.9 °C");
        assert_eq!(quantity(900.0, "s", Language::Zh), "15分钟");
        assert_eq!(quantity(45.0, "s", Language::En), "45 s");
        assert_eq!(quantity(9000.0, "s", Language::Zh), "2.5小时");
        assert_eq!(quantity(26.51, "%", Language::Zh), "26.51%");
        assert_eq!(quantity(1.25, "m3/h", Language::Zh), "1.25 m³/h");
        assert_eq!(quantity(2.1, "x", Language::Zh), "2.1倍");
    }

    #[test]
    fn times_are_beijing_time_written_the_chinese_way() {
        // 2026-12-03T06:05:00Z is 14:05 in Beijing; 2026-12-02T16:30:00Z is past midnight there.
        assert_eq!(time(Timestamp(1_796_277_900_000), Language::Zh), "2026年12月3日 14:05");
        assert_eq!(time(Timestamp(1_796_277_900_000), Language::En), "3 Dec 2026 14:05 (UTC+8)");
        assert_eq!(time(Timestamp(1_796_229_000_000), Language::Zh), "2026年12月3日 00:30");
    }

    #[test]
    fn bilingual_site_names_split_by_language() {
        assert_eq!(name_in("东村 Dongcun", Language::Zh), "东村");
        assert_eq!(name_in("水厂2 Waterworks 2", Language::En), "Waterworks 2");
        assert_eq!(name_in("works", Language::Zh), "works");
    }

    #[test]
    fn every_shipped_rule_has_words() {
        for pack in [
            include_str!("../../rules/drinking-water.toml"),
            include_str!("../../rules/dairy.toml"),
            include_str!("../../rules/gateways.toml"),
        ] {
            for line in pack.lines().filter(|l| l.starts_with("id = ")) {
                let id = line.trim_start_matches("id = ").trim_matches('"');
                assert!(rule_words(id).is_some(), "rule '{id}' has no Chinese name");
            }
        }
    }
}
