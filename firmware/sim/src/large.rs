//! The full-size county of the pilot ([`CountyLayout::Large`]): villages strung along
//! valleys, grouped into townships (乡镇), fed by three waterworks, with two dairy farms.
//!
//! Geography (a hill county of western Henan, seat at 34.13 N, 112.08 E): a main river
//! valley runs north-west to south-east through the county seat, a tributary comes in
//! from the north at the seat and another from the south-west further down. Villages sit
//! in clusters along each valley road (a hamlet group every few km, houses on both
//! slopes), never on a grid; each valley is cut into townships of consecutive villages,
//! and each valley is one supply district with its own waterworks (pump station, tank and
//! analyser; the analyser at the district's farthest village). Everything is drawn from
//! the spec's seed: the same seed, the same county.
//!
//! Ids:
//! - townships: sites of kind [`SiteKind::Township`] at their seat, ids `<pinyin>-zhen` or
//!   `<pinyin>-xiang` (`chengguan-zhen`, 城关镇); every site names its township;
//! - villages: surname-and-place names (`zhangzhuang`, 张庄 Zhangzhuang), gateway
//!   `gw-<village>` with the village's speakers first, then its meters;
//! - waterworks `waterworks`, `waterworks-2`, `waterworks-3` (district-1..3), devices as in
//!   the small county (`<site>-pump-1`, `<site>-quality-1`);
//! - farms `farm` and `farm-2` (tenant `dairy`): barn sensor `<farm>-barn-1`, collar hubs
//!   `<farm>-collar-hub`, `<farm>-collar-hub-2`, ... of 250 cows.
//!
//! Reporting (the polling plan's intervals): household meters report as field meters do,
//! every 15 (wired, a concentrator on RS-485), 30 or 60 minutes (NB-IoT), 30/40/30 %,
//! each with its own extra 0-180 s so that after the first round at start-up their
//! reports spread over the hour instead of arriving together. Speakers and pump stations
//! every 5 s, analysers 10 s, barns 30 s, collar hubs 30 s.
//!
//! Sizes: meters per village vary like village sizes do (log-normal, 40-235 households),
//! summing to `meters`; every village has `speakers_per_village` speakers and the largest
//! get one more until `speakers_total`; every village fits one RS-485 bus (247 units), so
//! there is exactly one gateway per village.
//!
//! Known simplification: the world has one dairy model, so the second farm's barn sensor
//! reads the same barn climate as the first's (its cows are its own).

use firmware::prng::Rng;
use protocol::DeviceKind;

use crate::plan::{COWS_PER_HUB, DevicePlan, GatewayPlan, MAX_UNITS_PER_BUS, Plan, SiteKind, SitePlan, eartag, models};
use crate::spec::CountySpec;

/// The county seat (degrees north, east).
pub(crate) const SEAT: (f64, f64) = (34.13, 112.08);
/// km per degree of latitude; of longitude at 34.1 N.
const KM_PER_DEG: (f64, f64) = (111.0, 92.1);
/// Fewest and most meters in one village.
const METERS_PER_VILLAGE: (usize, usize) = (40, 235);

/// One valley: its road as a polyline (km north, km east of the seat), its share of the
/// villages, how many townships it is cut into.
struct Valley {
    road: &'static [(f64, f64)],
    share: f64,
    townships: usize,
}

/// The main valley, the northern tributary, the south-western tributary.
const VALLEYS: [Valley; 3] = [
    Valley {
        road: &[(17.0, -29.0), (9.0, -16.0), (2.5, -6.0), (0.0, 0.0), (-5.0, 12.0), (-12.0, 26.0)],
        share: 0.47,
        townships: 4,
    },
    Valley { road: &[(0.0, 0.0), (7.0, 3.0), (15.0, 4.5), (23.0, 10.0)], share: 0.30, townships: 3 },
    Valley { road: &[(-5.0, 12.0), (-11.0, 8.0), (-18.0, 6.5), (-25.0, 2.0)], share: 0.23, townships: 2 },
];

/// Township names (Chinese, pinyin, 镇 or 乡); the one nearest the seat is 城关镇.
const TOWNSHIPS: [(&str, &str, &str); 9] = [
    ("城关", "Chengguan", "zhen"),
    ("河口", "Hekou", "zhen"),
    ("柳林", "Liulin", "xiang"),
    ("石门", "Shimen", "xiang"),
    ("龙泉", "Longquan", "zhen"),
    ("青山", "Qingshan", "xiang"),
    ("白河", "Baihe", "zhen"),
    ("南岭", "Nanling", "xiang"),
    ("西坪", "Xiping", "xiang"),
];

const SURNAMES: [(&str, &str); 30] = [
    ("张", "zhang"),
    ("王", "wang"),
    ("李", "li"),
    ("赵", "zhao"),
    ("刘", "liu"),
    ("陈", "chen"),
    ("杨", "yang"),
    ("黄", "huang"),
    ("周", "zhou"),
    ("吴", "wu"),
    ("孙", "sun"),
    ("马", "ma"),
    ("朱", "zhu"),
    ("胡", "hu"),
    ("郭", "guo"),
    ("何", "he"),
    ("高", "gao"),
    ("林", "lin"),
    ("罗", "luo"),
    ("郑", "zheng"),
    ("梁", "liang"),
    ("谢", "xie"),
    ("宋", "song"),
    ("唐", "tang"),
    ("许", "xu"),
    ("韩", "han"),
    ("冯", "feng"),
    ("邓", "deng"),
    ("曹", "cao"),
    ("彭", "peng"),
];

const PLACES: [(&str, &str); 15] = [
    ("庄", "zhuang"),
    ("村", "cun"),
    ("营", "ying"),
    ("寨", "zhai"),
    ("沟", "gou"),
    ("河", "he"),
    ("湾", "wan"),
    ("坪", "ping"),
    ("岭", "ling"),
    ("店", "dian"),
    ("洼", "wa"),
    ("岗", "gang"),
    ("坡", "po"),
    ("峪", "yu"),
    ("窑", "yao"),
];

fn at((north, east): (f64, f64)) -> (f64, f64) {
    (SEAT.0 + north / KM_PER_DEG.0, SEAT.1 + east / KM_PER_DEG.1)
}

fn length(road: &[(f64, f64)]) -> f64 {
    road.windows(2).map(|w| (w[1].0 - w[0].0).hypot(w[1].1 - w[0].1)).sum()
}

/// The point `s` km along `road`, and the road's unit direction there.
fn along(road: &[(f64, f64)], s: f64) -> ((f64, f64), (f64, f64)) {
    let mut left = s.max(0.0);
    for w in road.windows(2) {
        let (a, b) = (w[0], w[1]);
        let len = (b.0 - a.0).hypot(b.1 - a.1);
        let dir = ((b.0 - a.0) / len, (b.1 - a.1) / len);
        if left <= len {
            return ((a.0 + dir.0 * left, a.1 + dir.1 * left), dir);
        }
        left -= len;
    }
    let (a, b) = (road[road.len() - 2], road[road.len() - 1]);
    let len = (b.0 - a.0).hypot(b.1 - a.1);
    (b, ((b.0 - a.0) / len, (b.1 - a.1) / len))
}

/// A village before it gets devices.
struct Village {
    id: String,
    name: String,
    valley: usize,
    /// km along its valley's road.
    s: f64,
    /// km north and east of the seat.
    pos: (f64, f64),
    township: usize,
    meters: usize,
    speakers: usize,
}

/// Builds the large county's plan (see the module docs).
pub(crate) fn plan(spec: &CountySpec, speakers_total: usize, farms: usize) -> Plan {
    let mut rng = Rng::new(spec.seed, 0x1A26_E000);
    let n = spec.villages.max(VALLEYS.len() * 3);
    let mut villages = place_villages(&mut rng, n);
    let seats = townships(&mut villages);
    size_villages(&mut rng, &mut villages, spec.meters, spec.speakers_per_village, speakers_total);

    let mut sites = Vec::new();
    let mut gateways = Vec::new();
    let township_ids: Vec<String> = seats.iter().map(|t| t.0.clone()).collect();
    for (id, name, pos) in &seats {
        let (lat, lon) = at(*pos);
        sites.push(SitePlan {
            id: id.clone(),
            name: name.clone(),
            kind: SiteKind::Township,
            village: None,
            district: None,
            township: Some(id.clone()),
            lat,
            lon,
        });
    }
    for (d, valley) in VALLEYS.iter().enumerate() {
        waterworks(&mut sites, &mut gateways, d, valley, &villages, &township_ids);
    }
    let mut meter_rng = Rng::new(spec.seed, 0x1A26_E001);
    for v in &villages {
        village(&mut sites, &mut gateways, &mut meter_rng, v, &township_ids, &mut rng);
    }
    let farms = farms.max(1);
    let per_farm = spec.cows.div_ceil(farms);
    for f in 0..farms {
        let cows: Vec<usize> = (f * per_farm..((f + 1) * per_farm).min(spec.cows)).collect();
        farm(&mut sites, &mut gateways, spec.seed, f, &cows, &villages, &township_ids);
    }
    // No district meters yet in the full-size county: its villages have no inlet meters (a gap
    // of the reports round, not a design).
    Plan { sites, gateways, districts: Vec::new() }
}

/// Villages in clusters along the valleys, at least 0.7 km apart.
fn place_villages(rng: &mut Rng, n: usize) -> Vec<Village> {
    let mut out: Vec<Village> = Vec::with_capacity(n);
    let mut names = names(rng, n);
    let mut left = n;
    for (k, valley) in VALLEYS.iter().enumerate() {
        let count = if k + 1 == VALLEYS.len() { left } else { ((n as f64) * valley.share).round() as usize };
        left -= count;
        let len = length(valley.road);
        // Hamlet groups every ~4 km on average, unevenly.
        let clusters: Vec<f64> = (0..(count / 5).max(1)).map(|_| f64::from(rng.range(0.03, 0.97)) * len).collect();
        let mut placed = 0;
        let mut tries = 0;
        while placed < count {
            tries += 1;
            let c = clusters[rng.below(clusters.len() as u32) as usize];
            let spread = if tries > 50 * count { 3.0 } else { 1.2 };
            let s = (c + f64::from(rng.gauss(0.0, spread as f32))).clamp(0.0, len);
            let (p, dir) = along(valley.road, s);
            // Across the valley: mostly within a km of the road, now and then up a side gully.
            let side =
                f64::from(rng.gauss(0.0, 0.7)) + if rng.chance(0.15) { f64::from(rng.range(-2.5, 2.5)) } else { 0.0 };
            let pos = (p.0 - dir.1 * side, p.1 + dir.0 * side);
            if out.iter().any(|v| (v.pos.0 - pos.0).hypot(v.pos.1 - pos.1) < 0.7) {
                continue;
            }
            let (id, name) = names.pop().unwrap_or_else(|| {
                (format!("cun-{}", out.len() + 1), format!("{}村 Cun {}", out.len() + 1, out.len() + 1))
            });
            out.push(Village { id, name, valley: k, s, pos, township: 0, meters: 0, speakers: 0 });
            placed += 1;
        }
    }
    // Along each valley from its head: ids and townships follow the road.
    out.sort_by(|a, b| a.valley.cmp(&b.valley).then(a.s.total_cmp(&b.s)));
    out
}

/// `n` distinct village names, drawn from the seed.
fn names(rng: &mut Rng, n: usize) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::with_capacity(SURNAMES.len() * PLACES.len());
    for (zh, py) in SURNAMES {
        for (pzh, ppy) in PLACES {
            let id = format!("{py}{ppy}");
            let mut pinyin = id.clone();
            pinyin[..1].make_ascii_uppercase();
            all.push((id, format!("{zh}{pzh} {pinyin}")));
        }
    }
    // Fisher-Yates with the county's draws.
    for i in (1..all.len()).rev() {
        let j = rng.below(i as u32 + 1) as usize;
        all.swap(i, j);
    }
    all.truncate(n);
    all
}

/// Cuts each valley into townships of consecutive villages; returns each township's id,
/// name and seat (the middle village's point on the road).
fn townships(villages: &mut [Village]) -> Vec<(String, String, (f64, f64))> {
    let mut seats = Vec::new();
    for (k, valley) in VALLEYS.iter().enumerate() {
        let idx: Vec<usize> = (0..villages.len()).filter(|&i| villages[i].valley == k).collect();
        for t in 0..valley.townships {
            let part = &idx[idx.len() * t / valley.townships..idx.len() * (t + 1) / valley.townships];
            let Some(&mid) = part.get(part.len() / 2) else { continue };
            let seat = along(valley.road, villages[mid].s).0;
            for &i in part {
                villages[i].township = seats.len();
            }
            seats.push(seat);
        }
    }
    // The township nearest the county seat is 城关镇; the others take the names in road order.
    let nearest =
        (0..seats.len()).min_by(|&a, &b| seats[a].0.hypot(seats[a].1).total_cmp(&seats[b].0.hypot(seats[b].1)));
    let mut names = TOWNSHIPS.iter().skip(1);
    seats
        .iter()
        .enumerate()
        .map(|(i, &seat)| {
            let (zh, py, rank) = if Some(i) == nearest { TOWNSHIPS[0] } else { *names.next().unwrap_or(&TOWNSHIPS[0]) };
            let suffix = if rank == "zhen" { "镇" } else { "乡" };
            (format!("{}-{rank}", py.to_ascii_lowercase()), format!("{zh}{suffix} {py}"), seat)
        })
        .collect()
}

/// Meters per village (log-normal sizes summing to `meters`) and speakers (`base` each,
/// one more on the largest until `total`).
fn size_villages(rng: &mut Rng, villages: &mut [Village], meters: usize, base: usize, total: usize) {
    let weights: Vec<f64> = villages.iter().map(|_| f64::from(rng.gauss(0.0, 0.45)).exp()).collect();
    let sum: f64 = weights.iter().sum();
    let (lo, hi) = METERS_PER_VILLAGE;
    for (v, w) in villages.iter_mut().zip(&weights) {
        v.meters = ((meters as f64 * w / sum).round() as usize).clamp(lo, hi);
    }
    // Bring the sum to `meters` one meter at a time, within the bounds.
    let mut have: usize = villages.iter().map(|v| v.meters).sum();
    let mut i = 0;
    let mut idle = 0;
    while have != meters && idle <= villages.len() {
        let v = &mut villages[i % villages.len()];
        if have < meters && v.meters < hi {
            v.meters += 1;
            have += 1;
            idle = 0;
        } else if have > meters && v.meters > lo {
            v.meters -= 1;
            have -= 1;
            idle = 0;
        } else {
            idle += 1;
        }
        i += 1;
    }
    let mut by_size: Vec<usize> = (0..villages.len()).collect();
    by_size.sort_by(|&a, &b| villages[b].meters.cmp(&villages[a].meters).then(a.cmp(&b)));
    for v in villages.iter_mut() {
        v.speakers = base;
    }
    let mut extra = total.saturating_sub(base * villages.len());
    for &i in by_size.iter().cycle().take(villages.len() * 4) {
        if extra == 0 {
            break;
        }
        if villages[i].meters + villages[i].speakers < MAX_UNITS_PER_BUS {
            villages[i].speakers += 1;
            extra -= 1;
        }
    }
}

fn device(
    id: String,
    kind: DeviceKind,
    site: &str,
    model: &str,
    interval_ms: u64,
    (lat, lon): (f64, f64),
) -> DevicePlan {
    DevicePlan {
        id,
        kind,
        site: site.to_owned(),
        model: model.to_owned(),
        unit: 0,
        interval_ms,
        children: Vec::new(),
        lat,
        lon,
    }
}

fn jitter(rng: &mut Rng, (north, east): (f64, f64), km: f64) -> (f64, f64) {
    (north + f64::from(rng.range(-1.0, 1.0)) * km, east + f64::from(rng.range(-1.0, 1.0)) * km)
}

fn waterworks(
    sites: &mut Vec<SitePlan>,
    gateways: &mut Vec<GatewayPlan>,
    d: usize,
    valley: &Valley,
    villages: &[Village],
    townships: &[String],
) {
    let site = if d == 0 { "waterworks".to_owned() } else { format!("waterworks-{}", d + 1) };
    let name = if d == 0 { "水厂 Waterworks".to_owned() } else { format!("水厂{} Waterworks {}", d + 1, d + 1) };
    let served: Vec<&Village> = villages.iter().filter(|v| v.valley == d).collect();
    // Upstream of its district on the valley side: a well field and a tower above the road.
    let (p, dir) = along(valley.road, served.first().map_or(0.0, |v| (v.s - 1.5).max(0.0)));
    let (lat, lon) = at((p.0 - dir.1 * 0.8, p.1 + dir.0 * 0.8));
    let township = served.first().map(|v| townships[v.township].clone());
    sites.push(SitePlan {
        id: site.clone(),
        name,
        kind: SiteKind::Waterworks,
        village: None,
        district: Some(format!("district-{}", d + 1)),
        township,
        lat,
        lon,
    });
    let far = served.last().map_or((0.0, 0.0), |v| (v.pos.0 + 0.2, v.pos.1 + 0.2));
    let devices = vec![
        device(format!("{site}-pump-1"), DeviceKind::PumpStation, &site, models::PUMP_STATION, 5_000, (lat, lon)),
        device(format!("{site}-quality-1"), DeviceKind::WaterQuality, &site, models::WATER_QUALITY, 10_000, at(far)),
    ];
    bus(gateways, &site, "county", devices);
}

/// Meter reporting interval: 15, 30 or 60 minutes (30/40/30 %) plus 0-180 s of its own.
fn meter_interval_ms(rng: &mut Rng) -> u64 {
    let minutes = match rng.below(10) {
        0..=2 => 15,
        3..=6 => 30,
        _ => 60,
    };
    minutes * 60_000 + u64::from(rng.below(181)) * 1_000
}

fn village(
    sites: &mut Vec<SitePlan>,
    gateways: &mut Vec<GatewayPlan>,
    meter_rng: &mut Rng,
    v: &Village,
    townships: &[String],
    rng: &mut Rng,
) {
    let (lat, lon) = at(v.pos);
    sites.push(SitePlan {
        id: v.id.clone(),
        name: v.name.clone(),
        kind: SiteKind::Village,
        village: Some(v.id.clone()),
        district: Some(format!("district-{}", v.valley + 1)),
        township: Some(townships[v.township].clone()),
        lat,
        lon,
    });
    let mut devices = Vec::with_capacity(v.speakers + v.meters);
    for s in 0..v.speakers {
        let p = at(jitter(rng, v.pos, 0.25));
        devices.push(device(
            format!("{}-speaker-{}", v.id, s + 1),
            DeviceKind::Speaker,
            &v.id,
            models::SPEAKER,
            5_000,
            p,
        ));
    }
    for m in 0..v.meters {
        let p = at(jitter(rng, v.pos, 0.35));
        let interval = meter_interval_ms(meter_rng);
        devices.push(device(
            format!("{}-meter-{:03}", v.id, m + 1),
            DeviceKind::WaterMeter,
            &v.id,
            models::WATER_METER,
            interval,
            p,
        ));
    }
    bus(gateways, &v.id, "county", devices);
}

fn farm(
    sites: &mut Vec<SitePlan>,
    gateways: &mut Vec<GatewayPlan>,
    seed: u64,
    f: usize,
    cows: &[usize],
    villages: &[Village],
    townships: &[String],
) {
    let site = if f == 0 { "farm".to_owned() } else { format!("farm-{}", f + 1) };
    let name =
        if f == 0 { "奶牛场 Dairy farm".to_owned() } else { format!("奶牛场{} Dairy farm {}", f + 1, f + 1) };
    // On the valley floor near a village of the lower main valley, then of the northern one.
    let near = villages.iter().filter(|v| v.valley == f % VALLEYS.len()).nth(if f == 0 { 40 } else { 15 });
    let near = near.or(villages.first());
    let pos = near.map_or((0.0, 0.0), |v| (v.pos.0 + 1.1, v.pos.1 - 0.9));
    let (lat, lon) = at(pos);
    sites.push(SitePlan {
        id: site.clone(),
        name,
        kind: SiteKind::Farm,
        village: None,
        district: None,
        township: near.map(|v| townships[v.township].clone()),
        lat,
        lon,
    });
    let mut devices = vec![device(
        format!("{site}-barn-1"),
        DeviceKind::BarnClimate,
        &site,
        models::BARN_CLIMATE,
        30_000,
        (lat, lon),
    )];
    let tags: Vec<u32> = cows.iter().map(|&i| eartag(seed, i)).collect();
    for (h, herd) in tags.chunks(COWS_PER_HUB).enumerate() {
        let mut hub = device(
            if h == 0 { format!("{site}-collar-hub") } else { format!("{site}-collar-hub-{}", h + 1) },
            DeviceKind::CowCollar,
            &site,
            models::COLLAR_HUB,
            30_000,
            (lat + 0.0005, lon + 0.0005 * h as f64),
        );
        hub.children = herd.iter().map(|t| format!("cow-{t}")).collect();
        devices.push(hub);
    }
    bus(gateways, &site, "dairy", devices);
}

/// Numbers a site's devices on buses of at most 247 units (`gw-<site>`, `gw-<site>-2`).
fn bus(gateways: &mut Vec<GatewayPlan>, site: &str, tenant: &str, devices: Vec<DevicePlan>) {
    for (n, chunk) in devices.chunks(MAX_UNITS_PER_BUS).enumerate() {
        let mut bus = chunk.to_vec();
        for (i, d) in bus.iter_mut().enumerate() {
            d.unit = (i + 1) as u8;
        }
        let id = if n == 0 { format!("gw-{site}") } else { format!("gw-{site}-{}", n + 1) };
        gateways.push(GatewayPlan { id, tenant: tenant.into(), site: site.into(), devices: bus });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    fn large() -> Plan {
        Plan::build(&CountySpec::large())
    }

    #[test]
    fn the_large_county_has_the_pilots_sizes() {
        let plan = large();
        let count = |k: DeviceKind| plan.devices().filter(|d| d.kind == k).count();
        assert_eq!(count(DeviceKind::WaterMeter), 15_000);
        assert_eq!(count(DeviceKind::Speaker), 400);
        assert_eq!(count(DeviceKind::PumpStation), 3);
        assert_eq!(count(DeviceKind::WaterQuality), 3);
        let sites = |k: SiteKind| plan.sites.iter().filter(|s| s.kind == k).count();
        assert_eq!(sites(SiteKind::Village), 150);
        assert_eq!(sites(SiteKind::Waterworks), 3);
        assert_eq!(sites(SiteKind::Farm), 2);
        assert_eq!(sites(SiteKind::Township), 9);
        // One gateway per village, speakers on it.
        let village_gws =
            plan.gateways.iter().filter(|g| g.devices.iter().any(|d| d.kind == DeviceKind::Speaker)).count();
        assert_eq!(village_gws, 150);
        assert_eq!(plan.gateways.len(), 150 + 3 + 2);
        let cows: Vec<usize> = ["farm", "farm-2"]
            .iter()
            .map(|f| plan.devices().filter(|d| d.site == *f).map(|d| d.children.len()).sum())
            .collect();
        assert_eq!(cows, [1_000, 1_000]);
    }

    #[test]
    fn ids_are_unique_valid_and_every_site_names_its_township() {
        let plan = large();
        let mut ids = HashSet::new();
        for s in &plan.sites {
            protocol::id::validate(&s.id).unwrap();
            assert!(ids.insert(s.id.clone()), "duplicate site {}", s.id);
            let t = s.township.as_deref().unwrap_or_else(|| panic!("{} has no township", s.id));
            assert!(plan.sites.iter().any(|x| x.id == t && x.kind == SiteKind::Township), "{t}");
        }
        let mut devices = HashSet::new();
        for g in &plan.gateways {
            protocol::id::validate(&g.id).unwrap();
            assert!(g.devices.len() <= MAX_UNITS_PER_BUS);
            for (i, d) in g.devices.iter().enumerate() {
                assert_eq!(usize::from(d.unit), i + 1);
                protocol::id::validate(&d.id).unwrap();
                assert!(devices.insert(d.id.clone()), "duplicate {}", d.id);
                for c in &d.children {
                    assert!(devices.insert(c.clone()), "duplicate {c}");
                }
            }
        }
    }

    #[test]
    fn meters_report_every_15_to_63_minutes_spread_over_the_hour() {
        let plan = large();
        let intervals: Vec<u64> =
            plan.devices().filter(|d| d.kind == DeviceKind::WaterMeter).map(|d| d.interval_ms).collect();
        assert!(intervals.iter().all(|i| (900_000..=3_780_000).contains(i)));
        let mut by_base: BTreeMap<u64, usize> = BTreeMap::new();
        for i in &intervals {
            *by_base.entry(i / 900_000).or_default() += 1;
        }
        // 15, 30 and 60 minutes all in use, none more than half.
        assert_eq!(by_base.keys().copied().collect::<Vec<_>>(), [1, 2, 4]);
        assert!(by_base.values().all(|&n| n > 3_000 && n < 7_500), "{by_base:?}");
        // Distinct intervals: reports drift apart after the first round.
        assert!(intervals.iter().collect::<HashSet<_>>().len() > 300);
    }

    #[test]
    fn villages_cluster_along_valleys_not_on_a_grid() {
        let plan = large();
        let v: Vec<(f64, f64)> = plan
            .sites
            .iter()
            .filter(|s| s.kind == SiteKind::Village)
            .map(|s| ((s.lat - SEAT.0) * KM_PER_DEG.0, (s.lon - SEAT.1) * KM_PER_DEG.1))
            .collect();
        // Every village within 5 km of one of the valley roads...
        for p in &v {
            let near = VALLEYS.iter().any(|valley| {
                let len = length(valley.road);
                (0..=(len * 10.0) as usize).any(|k| {
                    let (q, _) = along(valley.road, k as f64 / 10.0);
                    (q.0 - p.0).hypot(q.1 - p.1) < 5.0
                })
            });
            assert!(near, "{p:?} is off every valley");
        }
        // ...at least 0.7 km from each other, and clustered: nearest neighbours are much
        // closer than on an even spread of the same villages over the county's box.
        let nearest: Vec<f64> = v
            .iter()
            .enumerate()
            .map(|(i, a)| {
                v.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, b)| (a.0 - b.0).hypot(a.1 - b.1))
                    .fold(f64::MAX, f64::min)
            })
            .collect();
        assert!(nearest.iter().all(|d| *d >= 0.7));
        let mean = nearest.iter().sum::<f64>() / nearest.len() as f64;
        let (n0, n1) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
        let (e0, e1) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        let even = 0.5 * ((n1 - n0) * (e1 - e0) / v.len() as f64).sqrt();
        assert!(mean < even, "mean nearest neighbour {mean:.2} km, even spread {even:.2} km");
    }

    #[test]
    fn the_same_seed_gives_the_same_county_and_another_seed_another() {
        assert_eq!(large(), large());
        let other = Plan::build(&CountySpec { seed: 7, ..CountySpec::large() });
        assert_ne!(large().sites, other.sites);
    }
}
