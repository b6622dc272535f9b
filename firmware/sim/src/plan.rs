//! The layout of a simulated county: sites, gateways and devices, with ids, Modbus unit
//! ids, polling intervals and coordinates.
//!
//! The plan is a pure function of the [`CountySpec`]; ingest's demo and the end-to-end
//! tests configure gateways from it, so everything a gateway needs to poll a device is
//! here.
//!
//! Layout:
//! - Villages `dongcun` (东村), `xicun` (西村), `nancun` (南村), `beicun` (北村), then
//!   typical Henan names, then `cun-NN`; about 3.5 km around a county centre at
//!   34.70 N, 113.60 E (North China Plain), later villages on a sunflower spiral 3 km apart.
//! - Every ten villages form one water supply district (`district-1`, ...) fed by one
//!   waterworks site (`waterworks`, `waterworks-2`, ...) north of them: its pump station
//!   with the tank (`<site>-pump-1`, unit 1) and the water-quality analyser
//!   (`<site>-quality-1`, unit 2) on gateway `gw-<site>`. The analyser stands at a network
//!   point in the district's last village (its coordinates say so) and is reached through
//!   a cellular RS-485 DTU, so it shares the waterworks gateway's bus.
//! - Each village has gateway `gw-<village>` (tenant `county`) with its speakers
//!   (`<village>-speaker-N`), its inlet meter (`<village>-inlet`) and household meters
//!   (`<village>-meter-NNN`).
//! - Each village is a district metered area ([`DmaPlan`], id = the village's): the bulk
//!   meter `<village>-inlet` at its boundary measures all the water flowing in from the
//!   waterworks, and its household meters bill its customers.
//! - The dairy farm `farm` has gateway `gw-farm` (tenant `dairy`) with the barn sensor
//!   `farm-barn-1` (unit 1) and collar hubs `farm-collar-hub`, `farm-collar-hub-2`, ...
//!   (250 cows each) whose children are the cows `cow-<eartag>`.
//!
//! Scaling: Modbus unit ids go from 1 to 247, so a site with more devices gets more
//! gateways, each with its own server (one RS-485 bus behind one converter):
//! `gw-<site>`, `gw-<site>-2`, ... Speakers come first, so they stay on `gw-<village>`.
//!
//! Polling intervals: everything at least every 10 s so a fresh demo shows all values
//! within a minute. Real NB-IoT meters report once a day; the demo polls them every 10 s.
//! On a bus with many meters the interval grows to 100 ms per unit (DOMAIN.md: slow
//! devices need ~100 ms between requests on half-duplex RS-485), e.g. 25 s for 247 units.

use firmware::prng::Rng;
use protocol::DeviceKind;
use serde::{Deserialize, Serialize};

use crate::spec::CountySpec;

/// Highest Modbus unit id of a device on one bus.
pub const MAX_UNITS_PER_BUS: usize = 247;
/// Villages per supply district.
pub const VILLAGES_PER_DISTRICT: usize = 10;
/// Cows per collar hub.
pub const COWS_PER_HUB: usize = firmware::collar_hub::CAPACITY;

/// Gateway profile model names, one per simulated device model.
pub mod models {
    /// Household water meter.
    pub const WATER_METER: &str = "vt-sim-water-meter";
    /// Pump station with its tank.
    pub const PUMP_STATION: &str = "vt-sim-pump-station";
    /// Water-quality analyser.
    pub const WATER_QUALITY: &str = "vt-sim-water-quality";
    /// Barn climate sensor.
    pub const BARN_CLIMATE: &str = "vt-sim-barn-climate";
    /// Collar hub.
    pub const COLLAR_HUB: &str = "vt-sim-collar-hub";
    /// Village loudspeaker.
    pub const SPEAKER: &str = "vt-sim-speaker";
    /// Bulk (inlet) meter of a district metered area.
    pub const BULK_METER: &str = "vt-sim-bulk-meter";
}

/// What a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    /// A village: household meters and loudspeakers.
    Village,
    /// A waterworks: pump station, tank, analyser.
    Waterworks,
    /// A dairy farm.
    Farm,
    /// A township's seat (乡镇政府): names the township its villages belong to.
    Township,
}

/// The whole layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Every site.
    pub sites: Vec<SitePlan>,
    /// Every gateway, each with the devices on its bus.
    pub gateways: Vec<GatewayPlan>,
    /// District metered areas: which meters are a district's inlets and which its customers.
    #[serde(default)]
    pub districts: Vec<DmaPlan>,
}

/// A district metered area (DMA): a zone fed only through its metered inlets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmaPlan {
    /// District id: the village's.
    pub id: String,
    /// The water-supply district (waterworks) feeding it.
    pub supply_district: Option<String>,
    /// Its inlet (bulk) meters.
    pub inlets: Vec<String>,
    /// Sites whose water meters, inlets excepted, are its customers.
    pub sites: Vec<String>,
}

/// One site on the map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitePlan {
    /// Site id (`dongcun`, `waterworks`, `farm`).
    pub id: String,
    /// Display name, Chinese and pinyin (`东村 Dongcun`).
    pub name: String,
    /// What the site is.
    pub kind: SiteKind,
    /// The village the site is, for villages.
    pub village: Option<String>,
    /// The water supply district the site belongs to or feeds.
    pub district: Option<String>,
    /// The township (乡镇) it is in: the id of the township's own site. None in the small
    /// county.
    #[serde(default)]
    pub township: Option<String>,
    /// Latitude (degrees north).
    pub lat: f64,
    /// Longitude (degrees east).
    pub lon: f64,
}

/// One gateway and the devices on its bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayPlan {
    /// Gateway id (`gw-dongcun`).
    pub id: String,
    /// Tenant: `county` for water and speakers, `dairy` for the farm.
    pub tenant: String,
    /// The site it stands at.
    pub site: String,
    /// The devices it polls, by unit id.
    pub devices: Vec<DevicePlan>,
}

/// One device on a gateway's bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevicePlan {
    /// Device id (`dongcun-meter-001`).
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// Site it belongs to.
    pub site: String,
    /// Gateway profile model (`vt-sim-water-meter`).
    pub model: String,
    /// Modbus unit id on its gateway's server (1..=247).
    pub unit: u8,
    /// How often a gateway should poll it (ms).
    pub interval_ms: u64,
    /// For a collar hub: its animals' device ids (`cow-<eartag>`).
    pub children: Vec<String>,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

impl Plan {
    /// A device and its gateway by device id.
    pub fn device(&self, id: &str) -> Option<(&GatewayPlan, &DevicePlan)> {
        self.gateways.iter().find_map(|g| g.devices.iter().find(|d| d.id == id).map(|d| (g, d)))
    }

    /// A gateway by id.
    pub fn gateway(&self, id: &str) -> Option<&GatewayPlan> {
        self.gateways.iter().find(|g| g.id == id)
    }

    /// The district metered area a water meter belongs to and whether it is the
    /// district's inlet (`true`) or a customer's meter (`false`).
    pub fn meter_role(&self, device: &str) -> Option<(&DmaPlan, bool)> {
        if let Some(d) = self.districts.iter().find(|d| d.inlets.iter().any(|i| i == device)) {
            return Some((d, true));
        }
        let (_, dev) = self.device(device)?;
        if dev.kind != DeviceKind::WaterMeter {
            return None;
        }
        self.districts.iter().find(|d| d.sites.contains(&dev.site)).map(|d| (d, false))
    }

    /// Every device of every gateway.
    pub fn devices(&self) -> impl Iterator<Item = &DevicePlan> {
        self.gateways.iter().flat_map(|g| g.devices.iter())
    }

    /// Builds the layout of `spec` (see the module docs).
    pub fn build(spec: &CountySpec) -> Plan {
        if let crate::spec::CountyLayout::Large { speakers_total, farms } = spec.layout {
            return crate::large::plan(spec, speakers_total, farms);
        }
        Layout::new(spec).plan()
    }
}

const CENTRE: (f64, f64) = (34.70, 113.60);
/// km per degree of latitude; of longitude at 34.7 N.
const KM_PER_DEG: (f64, f64) = (111.0, 91.3);

const NAMED: &[(&str, &str, &str)] = &[
    ("dongcun", "东村", "Dongcun"),
    ("xicun", "西村", "Xicun"),
    ("nancun", "南村", "Nancun"),
    ("beicun", "北村", "Beicun"),
    ("zhangzhuang", "张庄", "Zhangzhuang"),
    ("lizhuang", "李庄", "Lizhuang"),
    ("wangying", "王营", "Wangying"),
    ("zhaozhai", "赵寨", "Zhaozhai"),
    ("liulou", "刘楼", "Liulou"),
    ("chenzhuang", "陈庄", "Chenzhuang"),
    ("yangqiao", "杨桥", "Yangqiao"),
    ("huangying", "黄营", "Huangying"),
    ("zhoucun", "周村", "Zhoucun"),
    ("wuzhai", "吴寨", "Wuzhai"),
    ("sunlou", "孙楼", "Sunlou"),
    ("majiazhuang", "马家庄", "Majiazhuang"),
];

/// Village `i`: id, display name, offset from the centre in km (north, east).
fn village(i: usize) -> (String, String, (f64, f64)) {
    let (id, name) = match NAMED.get(i) {
        Some((id, zh, py)) => ((*id).to_owned(), format!("{zh} {py}")),
        None => (format!("cun-{:02}", i + 1), format!("{}村 Cun {}", i + 1, i + 1)),
    };
    let offset = match i {
        0 => (0.0, 3.5),
        1 => (0.0, -3.5),
        2 => (-3.5, 0.0),
        3 => (3.5, 0.0),
        _ => {
            // Sunflower spiral from 6 km out: even spacing of about 3 km.
            let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
            let r = 3.0 * ((i - 4) as f64 + 4.0).sqrt();
            let a = (i as f64) * golden;
            (r * a.cos(), r * a.sin())
        }
    };
    (id, name, offset)
}

fn at(offset_km: (f64, f64)) -> (f64, f64) {
    (CENTRE.0 + offset_km.0 / KM_PER_DEG.0, CENTRE.1 + offset_km.1 / KM_PER_DEG.1)
}

struct Layout<'a> {
    spec: &'a CountySpec,
    rng: Rng,
    sites: Vec<SitePlan>,
    gateways: Vec<GatewayPlan>,
}

/// Eartag of cow `i`: unique, increasing, not contiguous (herd numbers skip).
pub(crate) fn eartag(seed: u64, i: usize) -> u32 {
    let jitter = Rng::new(seed, 0xEA27_0000 + i as u64).below(3);
    21_000 + 3 * i as u32 + jitter
}

/// Number of villages a spec really gets.
pub(crate) fn village_count(spec: &CountySpec) -> usize {
    spec.villages.max(3)
}

impl<'a> Layout<'a> {
    fn new(spec: &'a CountySpec) -> Layout<'a> {
        Layout { spec, rng: Rng::new(spec.seed, 0x9A7E), sites: Vec::new(), gateways: Vec::new() }
    }

    fn jitter(&mut self, (lat, lon): (f64, f64), km: f64) -> (f64, f64) {
        let dn = f64::from(self.rng.range(-1.0, 1.0)) * km;
        let de = f64::from(self.rng.range(-1.0, 1.0)) * km;
        (lat + dn / KM_PER_DEG.0, lon + de / KM_PER_DEG.1)
    }

    fn plan(mut self) -> Plan {
        let villages = village_count(self.spec);
        let districts = villages.div_ceil(VILLAGES_PER_DISTRICT);
        for d in 0..districts {
            self.waterworks(d, villages);
        }
        let base = self.spec.meters / villages;
        let extra = self.spec.meters % villages;
        for v in 0..villages {
            self.village(v, base + usize::from(v < extra));
        }
        self.farm();
        let districts = self
            .sites
            .iter()
            .filter(|s| s.kind == SiteKind::Village)
            .filter(|s| {
                let inlet = format!("{}-inlet", s.id);
                self.gateways.iter().filter(|g| g.site == s.id).any(|g| g.devices.iter().any(|d| d.id == inlet))
            })
            .map(|s| DmaPlan {
                id: s.id.clone(),
                supply_district: s.district.clone(),
                inlets: vec![format!("{}-inlet", s.id)],
                sites: vec![s.id.clone()],
            })
            .collect();
        Plan { sites: self.sites, gateways: self.gateways, districts }
    }

    fn waterworks(&mut self, d: usize, villages: usize) {
        let site = if d == 0 { "waterworks".to_owned() } else { format!("waterworks-{}", d + 1) };
        let name =
            if d == 0 { "水厂 Waterworks".to_owned() } else { format!("水厂{} Waterworks {}", d + 1, d + 1) };
        let first = d * VILLAGES_PER_DISTRICT;
        let last = ((d + 1) * VILLAGES_PER_DISTRICT).min(villages) - 1;
        let n = (last - first + 1) as f64;
        let (mut north, mut east) = (0.0, 0.0);
        for v in first..=last {
            let (_, _, o) = village(v);
            north += o.0 / n;
            east += o.1 / n;
        }
        // A water tower on the northern edge of its district.
        let (lat, lon) = at((north + 5.0, east + 1.0));
        let district = format!("district-{}", d + 1);
        self.sites.push(SitePlan {
            id: site.clone(),
            name,
            kind: SiteKind::Waterworks,
            village: None,
            district: Some(district),
            township: None,
            lat,
            lon,
        });
        let (_, _, end) = village(last);
        let (qlat, qlon) = at((end.0 + 0.3, end.1 + 0.2));
        let devices = vec![
            DevicePlan {
                id: format!("{site}-pump-1"),
                kind: DeviceKind::PumpStation,
                site: site.clone(),
                model: models::PUMP_STATION.into(),
                unit: 0,
                interval_ms: 5_000,
                children: Vec::new(),
                lat,
                lon,
            },
            DevicePlan {
                id: format!("{site}-quality-1"),
                kind: DeviceKind::WaterQuality,
                site: site.clone(),
                model: models::WATER_QUALITY.into(),
                unit: 0,
                interval_ms: 10_000,
                children: Vec::new(),
                lat: qlat,
                lon: qlon,
            },
        ];
        self.gateways_for(&site, "county", devices);
    }

    fn village(&mut self, v: usize, meters: usize) {
        let (id, name, offset) = village(v);
        let centre = self.jitter(at(offset), 0.3);
        self.sites.push(SitePlan {
            id: id.clone(),
            name,
            kind: SiteKind::Village,
            village: Some(id.clone()),
            district: Some(format!("district-{}", v / VILLAGES_PER_DISTRICT + 1)),
            township: None,
            lat: centre.0,
            lon: centre.1,
        });
        let mut devices = Vec::with_capacity(meters + self.spec.speakers_per_village);
        for s in 0..self.spec.speakers_per_village {
            let (lat, lon) = self.jitter(centre, 0.25);
            devices.push(DevicePlan {
                id: format!("{id}-speaker-{}", s + 1),
                kind: DeviceKind::Speaker,
                site: id.clone(),
                model: models::SPEAKER.into(),
                unit: 0,
                interval_ms: 5_000,
                children: Vec::new(),
                lat,
                lon,
            });
        }
        // The inlet meter in its chamber on the main from the waterworks, north of the
        // village (a fixed offset: no random draw, so the other devices keep theirs). A
        // village without household meters (a speakers-only county) has no DMA.
        let inlet = (meters > 0).then(|| DevicePlan {
            id: format!("{id}-inlet"),
            kind: DeviceKind::WaterMeter,
            site: id.clone(),
            model: models::BULK_METER.into(),
            unit: 0,
            interval_ms: 10_000,
            children: Vec::new(),
            lat: centre.0 + 0.5 / KM_PER_DEG.0,
            lon: centre.1,
        });
        devices.extend(inlet);
        for m in 0..meters {
            let (lat, lon) = self.jitter(centre, 0.4);
            devices.push(DevicePlan {
                id: format!("{id}-meter-{:03}", m + 1),
                kind: DeviceKind::WaterMeter,
                site: id.clone(),
                model: models::WATER_METER.into(),
                unit: 0,
                interval_ms: 10_000,
                children: Vec::new(),
                lat,
                lon,
            });
        }
        self.gateways_for(&id, "county", devices);
    }

    fn farm(&mut self) {
        let (lat, lon) = at((-1.8, 5.0));
        self.sites.push(SitePlan {
            id: "farm".into(),
            name: "奶牛场 Dairy farm".into(),
            kind: SiteKind::Farm,
            village: None,
            district: None,
            township: None,
            lat,
            lon,
        });
        let mut devices = vec![DevicePlan {
            id: "farm-barn-1".into(),
            kind: DeviceKind::BarnClimate,
            site: "farm".into(),
            model: models::BARN_CLIMATE.into(),
            unit: 0,
            interval_ms: 10_000,
            children: Vec::new(),
            lat,
            lon,
        }];
        let tags: Vec<u32> = (0..self.spec.cows).map(|i| eartag(self.spec.seed, i)).collect();
        for (h, herd) in tags.chunks(COWS_PER_HUB).enumerate() {
            devices.push(DevicePlan {
                id: if h == 0 { "farm-collar-hub".into() } else { format!("farm-collar-hub-{}", h + 1) },
                kind: DeviceKind::CowCollar,
                site: "farm".into(),
                model: models::COLLAR_HUB.into(),
                unit: 0,
                interval_ms: 10_000,
                children: herd.iter().map(|t| format!("cow-{t}")).collect(),
                lat: lat + 0.0005,
                lon: lon + 0.0005 * h as f64,
            });
        }
        self.gateways_for("farm", "dairy", devices);
    }

    /// Splits a site's devices over buses of at most 247 units and numbers them.
    fn gateways_for(&mut self, site: &str, tenant: &str, devices: Vec<DevicePlan>) {
        let mut devices = devices.into_iter().peekable();
        let mut n = 0;
        while devices.peek().is_some() {
            n += 1;
            let mut bus: Vec<DevicePlan> = devices.by_ref().take(MAX_UNITS_PER_BUS).collect();
            let slow_bus_ms = 100 * bus.len() as u64;
            for (i, d) in bus.iter_mut().enumerate() {
                d.unit = (i + 1) as u8;
                if d.kind == DeviceKind::WaterMeter {
                    d.interval_ms = d.interval_ms.max(slow_bus_ms.div_ceil(5_000) * 5_000);
                }
            }
            let id = if n == 1 { format!("gw-{site}") } else { format!("gw-{site}-{n}") };
            self.gateways.push(GatewayPlan { id, tenant: tenant.into(), site: site.into(), devices: bus });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_demo_county_has_the_documented_sites_gateways_and_ids() {
        let plan = Plan::build(&CountySpec::demo());
        let gws: Vec<&str> = plan.gateways.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(gws, ["gw-waterworks", "gw-dongcun", "gw-xicun", "gw-nancun", "gw-farm"]);
        assert_eq!(plan.gateway("gw-farm").map(|g| g.tenant.as_str()), Some("dairy"));
        assert_eq!(plan.gateway("gw-dongcun").map(|g| g.tenant.as_str()), Some("county"));
        let (gw, pump) = plan.device("waterworks-pump-1").unwrap();
        assert_eq!((gw.id.as_str(), pump.unit, pump.kind), ("gw-waterworks", 1, DeviceKind::PumpStation));
        assert!(plan.device("dongcun-meter-001").is_some());
        assert!(plan.device("dongcun-speaker-1").is_some());
        assert!(plan.device("farm-barn-1").is_some());
        let (_, hub) = plan.device("farm-collar-hub").unwrap();
        assert_eq!(hub.children.len(), 100);
        assert!(hub.children.iter().all(|c| c.starts_with("cow-")));
        let households =
            |plan: &Plan| plan.devices().filter(|d| plan.meter_role(&d.id).is_some_and(|(_, inlet)| !inlet)).count();
        assert_eq!(households(&plan), 50);
        assert_eq!(plan.devices().filter(|d| d.kind == DeviceKind::WaterMeter).count(), 53, "50 households, 3 inlets");
        let (dma, inlet) = plan.meter_role("dongcun-inlet").unwrap();
        assert!(inlet && dma.id == "dongcun" && dma.supply_district.as_deref() == Some("district-1"));
        assert_eq!(plan.meter_role("dongcun-meter-001").map(|(d, i)| (d.id.as_str(), i)), Some(("dongcun", false)));
        assert_eq!(plan.gateway("gw-dongcun").unwrap().devices[1].id, "dongcun-inlet", "on the village's bus");
        let dongcun = plan.sites.iter().find(|s| s.id == "dongcun").unwrap();
        assert_eq!(dongcun.name, "东村 Dongcun");
        assert_eq!(dongcun.district.as_deref(), Some("district-1"));
        assert!(plan.devices().all(|d| d.interval_ms <= 10_000));
    }

    #[test]
    fn ids_are_unique_valid_and_units_fit_one_bus() {
        let spec =
            CountySpec { villages: 50, meters: 15_000, cows: 1_200, speakers_per_village: 8, ..CountySpec::demo() };
        let plan = Plan::build(&spec);
        let mut ids = HashSet::new();
        for g in &plan.gateways {
            protocol::id::validate(&g.id).unwrap();
            assert!(g.devices.len() <= MAX_UNITS_PER_BUS);
            let units: HashSet<u8> = g.devices.iter().map(|d| d.unit).collect();
            assert_eq!(units.len(), g.devices.len());
            assert!(units.iter().all(|u| (1..=247).contains(u)));
            for d in &g.devices {
                protocol::id::validate(&d.id).unwrap();
                assert!(ids.insert(d.id.clone()), "duplicate {}", d.id);
                for c in &d.children {
                    assert!(ids.insert(c.clone()), "duplicate {c}");
                }
            }
        }
        let households = plan.devices().filter(|d| plan.meter_role(&d.id).is_some_and(|(_, inlet)| !inlet)).count();
        assert_eq!(households, 15_000);
        assert_eq!(plan.districts.len(), 50);
        assert_eq!(plan.sites.iter().filter(|s| s.kind == SiteKind::Waterworks).count(), 5);
        assert!(plan.gateway("gw-dongcun-2").is_some(), "308 devices need two buses");
        let hubs = plan.devices().filter(|d| d.model == models::COLLAR_HUB).count();
        assert_eq!(hubs, 5);
    }

    #[test]
    fn villages_lie_a_few_km_apart_on_the_north_china_plain() {
        let plan = Plan::build(&CountySpec { villages: 12, ..CountySpec::demo() });
        let v: Vec<&SitePlan> = plan.sites.iter().filter(|s| s.kind == SiteKind::Village).collect();
        for (i, a) in v.iter().enumerate() {
            assert!((34.5..34.9).contains(&a.lat) && (113.4..113.8).contains(&a.lon));
            for b in &v[i + 1..] {
                let km = ((a.lat - b.lat) * KM_PER_DEG.0).hypot((a.lon - b.lon) * KM_PER_DEG.1);
                assert!(km > 1.5, "{} and {} are {km:.1} km apart", a.id, b.id);
            }
        }
    }

    #[test]
    fn fewer_than_three_villages_are_raised_to_three() {
        let plan = Plan::build(&CountySpec { villages: 1, ..CountySpec::demo() });
        assert_eq!(plan.sites.iter().filter(|s| s.kind == SiteKind::Village).count(), 3);
    }
}
