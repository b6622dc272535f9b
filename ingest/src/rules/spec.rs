//! What rule kinds compile against, below both the pack loader ([`super::config`]) and the
//! kinds ([`super::kinds`]): selectors as written and compiled, the device a selector is
//! matched against, and the compile context that reports problems at their position.
//! Keeping these here lets `config` depend on `kinds` and never the other way round.

use std::ops::Range;

use conf::{ConfigError, Problems, Source, Spanned};
use protocol::{DeviceKind, Metric, catalogue};
use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Serialize};
use toml::de::ValueDeserializer;

/// One value or a list of them (`kind = "water_meter"` or `kind = ["a", "b"]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A selector as written: which series a rule looks at (`select`, and the selectors a
/// kind takes, such as a mass balance's `inflow`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectSpec {
    kind: Option<OneOrMany>,
    site: Option<OneOrMany>,
    district: Option<OneOrMany>,
    device: Option<OneOrMany>,
    gateway: Option<OneOrMany>,
    tenant: Option<OneOrMany>,
}

/// A proposed broadcast a rule asks for when it fires.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BroadcastSpec {
    /// Warning level: `red`, `orange`, `yellow` or `blue` (Emergency Response Law art. 42).
    pub level: String,
    /// Text for the speakers' TTS; the same placeholders as `summary`.
    pub text: String,
}

/// Which series a rule looks at. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Selector {
    /// Device kinds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<DeviceKind>,
    /// Site ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// Supply districts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub districts: Vec<String>,
    /// Device ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Gateway ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Tenants.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
}

/// What a selector is matched against: a device as the inventory knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceMeta {
    /// Device id.
    pub id: String,
    /// Its kind.
    pub kind: DeviceKind,
    /// Its site.
    pub site: String,
    /// The gateway that reads it (itself for a gateway).
    pub gateway: String,
    /// The tenant of its site.
    pub tenant: String,
    /// The supply district of its site.
    pub district: Option<String>,
    /// The village of its site.
    pub village: Option<String>,
}

impl Selector {
    /// True if `d` is selected.
    pub fn matches(&self, d: &DeviceMeta) -> bool {
        fn any(list: &[String], v: &str) -> bool {
            list.is_empty() || list.iter().any(|x| x == v)
        }
        (self.kinds.is_empty() || self.kinds.contains(&d.kind))
            && any(&self.sites, &d.site)
            && any(&self.devices, &d.id)
            && any(&self.gateways, &d.gateway)
            && any(&self.tenants, &d.tenant)
            && (self.districts.is_empty() || d.district.as_deref().is_some_and(|x| any(&self.districts, x)))
    }
}

/// A toml error as a `conf` error at its position.
pub(super) fn located(src: &Source, e: &toml::de::Error) -> ConfigError {
    src.error_at(e.span(), e.message().trim())
}

/// The field names of a struct that derives `Deserialize` (serde hands them to
/// `deserialize_struct`); what a kind's spec takes, read from the spec itself.
pub(crate) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// Validation context of one rule: errors land at the rule's line unless a field has its
/// own. Kinds compile through it and set the rule's hold times.
pub struct Ctx<'a> {
    pub(super) src: &'a Source,
    pub(super) problems: &'a mut Problems,
    pub(super) span: Range<usize>,
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) for_ms: i64,
    pub(super) clear_for_ms: i64,
}

impl Ctx<'_> {
    /// A problem with the rule, at its line.
    pub fn fail(&mut self, reason: impl Into<String>) {
        let e = self.src.error_at(Some(self.span.clone()), format!("rule '{}': {}", self.id, reason.into()));
        self.problems.push(e);
    }

    /// A problem with one value, at its position.
    pub fn fail_at<T>(&mut self, at: &Spanned<T>, reason: impl Into<String>) {
        let e = self.src.error(at, format!("rule '{}': {}", self.id, reason.into()));
        self.problems.push(e);
    }

    /// Deserialises a kind's spec; a type error is reported at its value.
    pub(crate) fn deserialize<S: DeserializeOwned>(&mut self, de: ValueDeserializer<'_>) -> Option<S> {
        match S::deserialize(de) {
            Ok(s) => Some(s),
            Err(e) => {
                self.problems.push(located(self.src, &e));
                None
            }
        }
    }

    /// The rule's hold times (`for_secs`, `clear_for_secs`), for kinds that take them;
    /// returns the first in milliseconds.
    pub fn hold(&mut self, for_secs: Option<u64>, clear_for_secs: Option<u64>) -> i64 {
        self.for_ms = i64::try_from(for_secs.unwrap_or(0).saturating_mul(1000)).unwrap_or(i64::MAX);
        self.clear_for_ms = i64::try_from(clear_for_secs.unwrap_or(0).saturating_mul(1000)).unwrap_or(i64::MAX);
        self.for_ms
    }

    /// A local time offset from UTC in hours (default China Standard Time, +8).
    pub fn utc_offset(&mut self, v: Option<f64>) -> f64 {
        let tz = v.unwrap_or(8.0);
        if !(-14.0..=14.0).contains(&tz) {
            self.fail(format!("utc_offset_hours {tz} is not a time zone offset"));
        }
        tz
    }

    /// `v` (or `default`), which must be a positive number.
    pub fn positive(&mut self, name: &str, v: Option<f64>, default: f64) -> f64 {
        let v = v.unwrap_or(default);
        if !(v.is_finite() && v > 0.0) {
            self.fail(format!("{name} must be a positive number, not {v}"));
        }
        v
    }

    /// Seconds `v` (or `default`), at least one, in milliseconds.
    pub fn secs(&mut self, name: &str, v: Option<u64>, default: u64) -> i64 {
        let v = v.unwrap_or(default);
        if v == 0 {
            self.fail(format!("{name} must be at least 1"));
        }
        i64::try_from(v.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// `v`, which the kind needs.
    pub fn required<T>(&mut self, name: &str, v: Option<T>) -> Option<T> {
        if v.is_none() {
            let kind = self.kind.clone();
            self.fail(format!("a {kind} rule needs `{name}`"));
        }
        v
    }

    /// The metric named (or `default`), which must be in the catalogue.
    pub fn metric(&mut self, spec: &Option<Spanned<String>>, default: Option<&str>) -> Option<Metric> {
        match (spec, default) {
            (Some(m), _) => match catalogue::by_name(m.get_ref()) {
                Some(def) => Some(Metric::from(def)),
                None => {
                    self.fail_at(m, format!("metric '{}' is not in the catalogue", m.get_ref()));
                    None
                }
            },
            (None, Some(d)) => Some(Metric::new(d)),
            (None, None) => {
                self.fail("needs `metric`");
                None
            }
        }
    }

    /// A selector as written, checked.
    pub fn selector(&mut self, s: SelectSpec) -> Selector {
        let kinds = s
            .kind
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| match k.parse::<DeviceKind>() {
                Ok(k) => Some(k),
                Err(e) => {
                    self.fail(format!("select.kind '{k}': {e}"));
                    None
                }
            })
            .collect();
        let list = |v: Option<OneOrMany>| v.map(OneOrMany::into_vec).unwrap_or_default();
        Selector {
            kinds,
            sites: list(s.site),
            districts: list(s.district),
            devices: list(s.device),
            gateways: list(s.gateway),
            tenants: list(s.tenant),
        }
    }
}
