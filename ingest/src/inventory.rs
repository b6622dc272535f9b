//! The inventory: which sites, gateways and devices exist, and who owns what.
//!
//! Ingest accepts a reading only from a device it knows, published by the gateway the
//! device belongs to; that is how "unknown device" and "a gateway publishing as another"
//! are told apart from good data. The inventory also carries what the map needs (site
//! coordinates) and what rules and broadcasts select by (kind, site, village, district).
//!
//! It is loaded from a TOML file (`inventory.example.toml`) or built in code (the demo
//! builds it from the simulated county). Devices first seen through the line-protocol
//! endpoint are added at run time with kind `external`. `last_seen` and gateway
//! online state are kept here too.
//!
//! District metered areas (`[[districts]]`, [`MeteredDistrict`]) say which meters measure
//! what flows into a zone (its inlets) and which bill its customers: the water balance
//! reads them (`crate::reports`). A meter is a customer of the district whose `sites` hold
//! it unless it is listed as an inlet somewhere; an inlet is never a household meter.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::RwLock;

use conf::{ConfigErrors, Problems, Source, Spanned};
use protocol::{DeviceKind, Timestamp};
use serde::{Deserialize, Serialize};

/// A place: a village, a waterworks, a farm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Site id.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// What kind of place (village, waterworks, farm, ...).
    pub kind: String,
    /// Tenant that owns it.
    pub tenant: String,
    /// Latitude, WGS 84.
    pub lat: f64,
    /// Longitude, WGS 84.
    pub lon: f64,
    /// The village it belongs to, for broadcast targeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub village: Option<String>,
    /// The water-supply district it is in, for mass balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// The township (乡镇) it is in: the id of the township's own site (kind `township`,
    /// its seat), which gives the township's name and place; the API filters and counts
    /// by it. A township's own site names itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub township: Option<String>,
}

/// A gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayInfo {
    /// Gateway id.
    pub id: String,
    /// Tenant it publishes under.
    pub tenant: String,
    /// Where it is.
    pub site: String,
    /// Its public key, 64 hex digits (`gateway identity` prints it): what every message
    /// it sends must verify with. Enrolling a gateway is adding it; without it, everything
    /// the gateway sends is refused (`bad_signature`). During a rotation the file lists
    /// two, `public_key = ["OLD", "NEW"]`, and both verify; in memory they are kept in
    /// this one string, separated by a space ([`GatewayInfo::public_keys`]).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "one_or_two_keys")]
    pub public_key: Option<String>,
}

impl GatewayInfo {
    /// The public keys listed (none, one, or two during a rotation), as hex.
    pub fn public_keys(&self) -> Vec<&str> {
        self.public_key.as_deref().map(|k| k.split_ascii_whitespace().collect()).unwrap_or_default()
    }
}

/// `public_key = "HEX"` or `public_key = ["HEX", "HEX"]`, kept as one string.
fn one_or_two_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Keys {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Keys>::deserialize(d)? {
        None => None,
        Some(Keys::One(k)) => Some(k),
        Some(Keys::Many(ks)) => Some(ks.join(" ")),
    })
}

/// A device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Device id.
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// Where it is.
    pub site: String,
    /// The gateway that reads it; only that gateway may publish its readings.
    pub gateway: String,
    /// Device model (profile name).
    #[serde(default)]
    pub model: String,
    /// Own coordinates, when it has them (otherwise the site's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// See `lat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// A speaker's own public key, 64 hex digits (the terminal shows it in input 600-615;
    /// `gateway speaker-key` reads it out at installation): what its signed receipts must
    /// verify with. Without it ingest records none of the speaker's states (`delivered`,
    /// `playing`, `played`, ...): only the gateway's own findings. Removing it revokes the
    /// terminal. Other devices have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// A district metered area (DMA): a zone fed only through metered inlets, whose customers'
/// meters bill what it uses (DOMAIN.md, "Water reports"). In the simulated county every
/// village is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteredDistrict {
    /// District id (the village's id in the simulated county).
    pub id: String,
    /// Name for people.
    #[serde(default)]
    pub name: String,
    /// The water-supply district (waterworks) that feeds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply_district: Option<String>,
    /// Meters that measure the water flowing in (bulk meters at the zone's boundary).
    pub inlets: Vec<String>,
    /// Sites whose water meters (inlets excepted) are the district's customers.
    pub sites: Vec<String>,
}

/// What a water meter is to the water balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterRole {
    /// Measures the water flowing into a district (system input).
    Inlet,
    /// Bills a customer of a district (billed metered consumption).
    Customer,
}

/// The inventory file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    /// Sites.
    #[serde(default)]
    pub sites: Vec<Site>,
    /// Gateways.
    #[serde(default)]
    pub gateways: Vec<GatewayInfo>,
    /// Devices.
    #[serde(default)]
    pub devices: Vec<Device>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    sites: Vec<Spanned<Site>>,
    #[serde(default)]
    gateways: Vec<Spanned<GatewayInfo>>,
    #[serde(default)]
    devices: Vec<Spanned<Device>>,
    #[serde(default)]
    districts: Vec<Spanned<MeteredDistrict>>,
}

/// What the inventory says about a reading's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The device belongs to the publishing gateway (or is the gateway itself).
    Own,
    /// The device exists but belongs to another gateway.
    Foreign,
    /// No such device.
    Unknown,
}

#[derive(Debug, Default)]
struct Inner {
    sites: BTreeMap<String, Site>,
    gateways: BTreeMap<String, GatewayInfo>,
    devices: BTreeMap<String, Device>,
    last_seen: HashMap<String, Timestamp>,
    gateway_online: HashMap<String, bool>,
    districts: BTreeMap<String, MeteredDistrict>,
}

/// The live inventory, shared by the pipeline and the API.
#[derive(Debug, Default)]
pub struct Inventory {
    inner: RwLock<Inner>,
}

impl Inventory {
    /// Loads and validates an inventory file.
    pub fn load(path: &Path) -> Result<Inventory, ConfigErrors> {
        let src = Source::read(path)?;
        Inventory::from_source(&src)
    }

    /// Parses and validates inventory text: ids valid and unique, every reference resolves.
    pub fn from_source(src: &Source) -> Result<Inventory, ConfigErrors> {
        let spec: Spec = src.parse()?;
        let mut problems = Problems::new();
        let mut file = InventoryFile::default();
        let mut check_id = |id: &str, what: &str, at: conf::ConfigError| {
            if let Err(e) = protocol::id::validate(id) {
                problems.push(conf::ConfigError { reason: format!("{what} '{id}': {e}"), ..at });
            }
        };
        for s in &spec.sites {
            check_id(&s.get_ref().id, "site", src.error(s, ""));
        }
        for g in &spec.gateways {
            check_id(&g.get_ref().id, "gateway", src.error(g, ""));
        }
        for d in &spec.devices {
            check_id(&d.get_ref().id, "device", src.error(d, ""));
        }
        for d in &spec.districts {
            check_id(&d.get_ref().id, "district", src.error(d, ""));
        }
        for g in &spec.gateways {
            let keys = g.get_ref().public_keys();
            if keys.len() > crate::keyring::MAX_KEYS {
                problems.push(src.error(
                    g,
                    format!(
                        "gateway '{}': public_key lists {} keys; at most {} (the old and the new during a rotation)",
                        g.get_ref().id,
                        keys.len(),
                        crate::keyring::MAX_KEYS
                    ),
                ));
            }
            for key in keys {
                if let Err(reason) = crate::keyring::parse_public_key(key) {
                    problems.push(src.error(g, format!("gateway '{}': public_key: {reason}", g.get_ref().id)));
                }
            }
        }
        for d in &spec.devices {
            if let Some(key) = &d.get_ref().public_key
                && let Err(reason) = crate::keyring::parse_public_key(key)
            {
                problems.push(src.error(d, format!("device '{}': public_key: {reason}", d.get_ref().id)));
            }
        }
        let site_ids: Vec<&str> = spec.sites.iter().map(|s| s.get_ref().id.as_str()).collect();
        let gw_ids: Vec<&str> = spec.gateways.iter().map(|g| g.get_ref().id.as_str()).collect();
        for g in &spec.gateways {
            if !site_ids.contains(&g.get_ref().site.as_str()) {
                problems.push(src.error(g, format!("gateway '{}': no site '{}'", g.get_ref().id, g.get_ref().site)));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for d in &spec.devices {
            let dev = d.get_ref();
            if !site_ids.contains(&dev.site.as_str()) {
                problems.push(src.error(d, format!("device '{}': no site '{}'", dev.id, dev.site)));
            }
            if !gw_ids.contains(&dev.gateway.as_str()) {
                problems.push(src.error(d, format!("device '{}': no gateway '{}'", dev.id, dev.gateway)));
            }
            if !seen.insert(dev.id.clone()) {
                problems.push(src.error(d, format!("device '{}' is listed twice", dev.id)));
            }
        }
        let dev_ids: std::collections::HashSet<&str> = spec.devices.iter().map(|d| d.get_ref().id.as_str()).collect();
        let mut inlet_of: HashMap<&str, &str> = HashMap::new();
        for d in &spec.districts {
            let dist = d.get_ref();
            for inlet in &dist.inlets {
                if !dev_ids.contains(inlet.as_str()) {
                    problems.push(src.error(d, format!("district '{}': no device '{inlet}' (inlets)", dist.id)));
                }
                if let Some(other) = inlet_of.insert(inlet, &dist.id) {
                    problems.push(
                        src.error(d, format!("district '{}': '{inlet}' is already an inlet of '{other}'", dist.id)),
                    );
                }
            }
            for site in &dist.sites {
                if !site_ids.contains(&site.as_str()) {
                    problems.push(src.error(d, format!("district '{}': no site '{site}'", dist.id)));
                }
            }
        }
        let districts: Vec<MeteredDistrict> = spec.districts.into_iter().map(Spanned::into_inner).collect();
        file.sites = spec.sites.into_iter().map(Spanned::into_inner).collect();
        file.gateways = spec.gateways.into_iter().map(Spanned::into_inner).collect();
        file.devices = spec.devices.into_iter().map(Spanned::into_inner).collect();
        let inv = Inventory::from_file(file);
        inv.set_districts(districts);
        problems.finish(inv)
    }

    /// An inventory from data built in code.
    pub fn from_file(file: InventoryFile) -> Inventory {
        let inv = Inventory::default();
        {
            let mut i = inv.write();
            i.sites = file.sites.into_iter().map(|s| (s.id.clone(), s)).collect();
            i.gateways = file.gateways.into_iter().map(|g| (g.id.clone(), g)).collect();
            i.devices = file.devices.into_iter().map(|d| (d.id.clone(), d)).collect();
        }
        inv
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the district metered areas (the demo sets the simulated county's).
    pub fn set_districts(&self, districts: Vec<MeteredDistrict>) {
        self.write().districts = districts.into_iter().map(|d| (d.id.clone(), d)).collect();
    }

    /// Every district metered area, by id.
    pub fn districts(&self) -> Vec<MeteredDistrict> {
        self.read().districts.values().cloned().collect()
    }

    /// The district and role of a water meter: an inlet of the district listing it, else a
    /// customer of the district whose sites hold it; `None` for other devices and for
    /// meters in no district.
    pub fn meter_role(&self, device: &str) -> Option<(String, MeterRole)> {
        let i = self.read();
        if let Some(d) = i.districts.values().find(|d| d.inlets.iter().any(|x| x == device)) {
            return Some((d.id.clone(), MeterRole::Inlet));
        }
        let dev = i.devices.get(device).filter(|d| d.kind == DeviceKind::WaterMeter)?;
        i.districts.values().find(|d| d.sites.contains(&dev.site)).map(|d| (d.id.clone(), MeterRole::Customer))
    }

    /// The gateway, if known.
    pub fn gateway(&self, id: &str) -> Option<GatewayInfo> {
        self.read().gateways.get(id).cloned()
    }

    /// Sets the public keys the inventory shows for `gateway` (enrolment through the API);
    /// false if there is no such gateway.
    pub fn set_public_keys(&self, gateway: &str, keys: &[String]) -> bool {
        match self.write().gateways.get_mut(gateway) {
            Some(g) => {
                g.public_key = (!keys.is_empty()).then(|| keys.join(" "));
                true
            }
            None => false,
        }
    }

    /// Whether `device` may be published by `gateway`.
    pub fn ownership(&self, gateway: &str, device: &str) -> Ownership {
        let i = self.read();
        match i.devices.get(device) {
            Some(d) if d.gateway == gateway => Ownership::Own,
            Some(_) => Ownership::Foreign,
            None if device == gateway && i.gateways.contains_key(gateway) => Ownership::Own,
            None => Ownership::Unknown,
        }
    }

    /// The device, if known.
    pub fn device(&self, id: &str) -> Option<Device> {
        self.read().devices.get(id).cloned()
    }

    /// The public key a speaker's receipts must verify with: its enrolled `public_key`,
    /// if it has one that parses (the file's is checked at load).
    pub fn speaker_key(&self, id: &str) -> Option<ed25519_dalek::VerifyingKey> {
        let i = self.read();
        let key = i.devices.get(id)?.public_key.as_deref()?;
        crate::keyring::parse_public_key(key).ok()
    }

    /// Every device (gateways included, as kind `gateway`), sorted by id.
    pub fn devices(&self) -> Vec<Device> {
        let i = self.read();
        let mut out: Vec<Device> = i.devices.values().cloned().collect();
        out.extend(i.gateways.values().filter(|g| !i.devices.contains_key(&g.id)).map(|g| Device {
            id: g.id.clone(),
            kind: DeviceKind::Gateway,
            site: g.site.clone(),
            gateway: g.id.clone(),
            model: String::new(),
            lat: None,
            lon: None,
            public_key: None,
        }));
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Every site.
    pub fn sites(&self) -> Vec<Site> {
        self.read().sites.values().cloned().collect()
    }

    /// Every gateway.
    pub fn gateways(&self) -> Vec<GatewayInfo> {
        self.read().gateways.values().cloned().collect()
    }

    /// The tenant of a device (through its gateway or site).
    pub fn tenant_of(&self, device: &str) -> Option<String> {
        let i = self.read();
        let d = i.devices.get(device);
        let site = d.map(|d| d.site.as_str()).or_else(|| i.gateways.get(device).map(|g| g.site.as_str()))?;
        i.sites.get(site).map(|s| s.tenant.clone())
    }

    /// Adds a device first seen through line protocol (kind `external`), if it is new.
    /// Returns true if it was added.
    pub fn register_external(&self, id: &str, tenant: &str) -> bool {
        let mut i = self.write();
        if i.devices.contains_key(id) {
            return false;
        }
        let site = format!("external-{tenant}");
        i.sites.entry(site.clone()).or_insert_with(|| Site {
            id: site.clone(),
            name: format!("External writers of {tenant}"),
            kind: "external".into(),
            tenant: tenant.into(),
            lat: 0.0,
            lon: 0.0,
            village: None,
            district: None,
            township: None,
        });
        i.devices.insert(
            id.to_string(),
            Device {
                id: id.to_string(),
                kind: DeviceKind::External,
                site,
                gateway: String::new(),
                model: String::new(),
                lat: None,
                lon: None,
                public_key: None,
            },
        );
        true
    }

    /// Notes that data of `device` taken at `ts` arrived.
    pub fn seen(&self, device: &str, ts: Timestamp) {
        let mut i = self.write();
        let e = i.last_seen.entry(device.to_string()).or_insert(ts);
        if ts > *e {
            *e = ts;
        }
    }

    /// Notes many devices at once (one lock for a whole batch).
    pub fn seen_many<'a>(&self, items: impl IntoIterator<Item = (&'a str, Timestamp)>) {
        let mut i = self.write();
        for (device, ts) in items {
            match i.last_seen.get_mut(device) {
                Some(e) if *e >= ts => {}
                Some(e) => *e = ts,
                None => {
                    i.last_seen.insert(device.to_string(), ts);
                }
            }
        }
    }

    /// When data of `device` was last taken.
    pub fn last_seen(&self, device: &str) -> Option<Timestamp> {
        self.read().last_seen.get(device).copied()
    }

    /// Records a gateway's own report of being online or offline (retained status).
    pub fn set_gateway_online(&self, gateway: &str, online: bool) {
        self.write().gateway_online.insert(gateway.to_string(), online);
    }

    /// The gateway's last reported state, if it reported one.
    pub fn gateway_online(&self, gateway: &str) -> Option<bool> {
        self.read().gateway_online.get(gateway).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[[sites]]
id = "dongcun"
name = "东村"
kind = "village"
tenant = "county"
lat = 34.7
lon = 113.6

[[gateways]]
id = "gw-dongcun"
tenant = "county"
site = "dongcun"

[[gateways]]
id = "gw-xicun"
tenant = "county"
site = "dongcun"

[[devices]]
id = "dongcun-meter-001"
kind = "water_meter"
site = "dongcun"
gateway = "gw-dongcun"
"#;

    #[test]
    fn ownership_tells_own_foreign_and_unknown_devices_apart() {
        let inv = Inventory::from_source(&Source::from_text("inv.toml", TEXT)).unwrap();
        assert_eq!(inv.ownership("gw-dongcun", "dongcun-meter-001"), Ownership::Own);
        assert_eq!(inv.ownership("gw-xicun", "dongcun-meter-001"), Ownership::Foreign);
        assert_eq!(inv.ownership("gw-dongcun", "nobody"), Ownership::Unknown);
        assert_eq!(inv.ownership("gw-dongcun", "gw-dongcun"), Ownership::Own, "a gateway reports on itself");
        assert_eq!(inv.tenant_of("dongcun-meter-001").as_deref(), Some("county"));
    }

    #[test]
    fn dangling_references_are_reported_with_their_line() {
        let text = TEXT.replace("gateway = \"gw-dongcun\"", "gateway = \"gw-nowhere\"");
        let e = Inventory::from_source(&Source::from_text("inv.toml", text)).unwrap_err().to_string();
        assert!(e.contains("inv.toml:20:1: device 'dongcun-meter-001': no gateway 'gw-nowhere'"), "{e}");
    }

    #[test]
    fn the_example_inventory_loads() {
        let text = include_str!("../inventory.example.toml");
        let inv = Inventory::from_source(&Source::from_text("inventory.example.toml", text))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inv.ownership("gw-waterworks", "waterworks-pump-1"), Ownership::Own);
        assert!(inv.gateway("gw-dongcun").and_then(|g| g.public_key).is_some(), "an enrolled gateway");
        assert!(inv.speaker_key("dongcun-speaker-1").is_some(), "an enrolled speaker");
    }

    #[test]
    fn a_bad_public_key_is_reported_with_its_line() {
        let text = include_str!("../inventory.example.toml");
        let bad = text.replace("d75a980182b10ab7", "zz5a980182b10ab7");
        let e = Inventory::from_source(&Source::from_text("inv.toml", bad)).unwrap_err().to_string();
        assert!(e.contains("gateway 'gw-dongcun': public_key: not hexadecimal"), "{e}");
    }

    #[test]
    fn a_speakers_key_is_read_from_its_device_entry_and_a_bad_one_is_reported_with_its_line() {
        let key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        let text = format!("{TEXT}public_key = \"{key}\"\n");
        let inv = Inventory::from_source(&Source::from_text("inv.toml", text)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inv.speaker_key("dongcun-meter-001").map(|k| k.to_bytes()[0]), Some(0xd7));
        assert!(
            Inventory::from_source(&Source::from_text("inv.toml", TEXT))
                .unwrap()
                .speaker_key("dongcun-meter-001")
                .is_none()
        );
        let bad = format!("{TEXT}public_key = \"zz{}\"\n", &key[2..]);
        let e = Inventory::from_source(&Source::from_text("inv.toml", bad)).unwrap_err().to_string();
        assert!(e.contains("device 'dongcun-meter-001': public_key: not hexadecimal"), "{e}");
    }

    #[test]
    fn a_district_names_its_inlets_and_its_customers_sites_and_dangling_names_are_reported() {
        let inlet = "\n[[devices]]\nid = \"dongcun-inlet\"\nkind = \"water_meter\"\nsite = \"dongcun\"\ngateway = \"gw-dongcun\"\n";
        let district = "\n[[districts]]\nid = \"dongcun\"\ninlets = [\"dongcun-inlet\"]\nsites = [\"dongcun\"]\n";
        let text = format!("{TEXT}{inlet}{district}");
        let inv = Inventory::from_source(&Source::from_text("inv.toml", text)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inv.meter_role("dongcun-inlet"), Some(("dongcun".into(), MeterRole::Inlet)));
        assert_eq!(inv.meter_role("dongcun-meter-001"), Some(("dongcun".into(), MeterRole::Customer)));
        assert_eq!(inv.meter_role("gw-dongcun"), None);
        let bad = format!("{TEXT}{district}").replace("sites = [\"dongcun\"]", "sites = [\"nowhere\"]");
        let e = Inventory::from_source(&Source::from_text("inv.toml", bad)).unwrap_err().to_string();
        assert!(e.contains("district 'dongcun': no device 'dongcun-inlet' (inlets)"), "{e}");
        assert!(e.contains("district 'dongcun': no site 'nowhere'"), "{e}");
    }

    #[test]
    fn external_devices_are_registered_once() {
        let inv = Inventory::default();
        assert!(inv.register_external("telegraf-host-1", "county"));
        assert!(!inv.register_external("telegraf-host-1", "county"));
        assert_eq!(inv.device("telegraf-host-1").map(|d| d.kind), Some(DeviceKind::External));
        assert_eq!(inv.tenant_of("telegraf-host-1").as_deref(), Some("county"));
    }

    #[test]
    fn a_gateway_lists_one_key_or_two_during_a_rotation_and_no_more() {
        let k = |n: u8| {
            ed25519_dalek::SigningKey::from_bytes(&[n; 32])
                .verifying_key()
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let with =
            |value: &str| TEXT.replace("id = \"gw-xicun\"\n", &format!("id = \"gw-xicun\"\npublic_key = {value}\n"));
        let two = with(&format!("[\"{}\", \"{}\"]", k(1), k(2)));
        let inv = Inventory::from_source(&Source::from_text("inv.toml", two)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inv.gateway("gw-xicun").unwrap().public_keys(), vec![k(1), k(2)]);
        let one = with(&format!("\"{}\"", k(1)));
        let inv = Inventory::from_source(&Source::from_text("inv.toml", one)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inv.gateway("gw-xicun").unwrap().public_keys(), vec![k(1)]);
        let three = with(&format!("[\"{}\", \"{}\", \"{}\"]", k(1), k(2), k(3)));
        let e = Inventory::from_source(&Source::from_text("inv.toml", three)).unwrap_err().to_string();
        assert!(e.contains("gateway 'gw-xicun': public_key lists 3 keys; at most 2"), "{e}");
        assert!(inv.set_public_keys("gw-xicun", &[k(2)]));
        assert_eq!(inv.gateway("gw-xicun").unwrap().public_keys(), vec![k(2)]);
        assert!(!inv.set_public_keys("gw-nowhere", &[k(2)]));
    }
}
