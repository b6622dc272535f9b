//! The simulated world: every district, the farm and the speakers, the devices' register
//! maps as the Modbus servers see them, injected faults and test pins.
//!
//! Design constraints:
//! - One lock around the whole world. A step of the physics and a Modbus request never
//!   interleave, so a gateway never reads half a step (a totaliser from before and a flow
//!   from after).
//! - Time moves in steps of at most [`MAX_STEP_MS`]; a longer advance is cut into equal
//!   steps, so an accelerated test sees the same physics as real time, only coarser.
//! - Register reads go: firmware map, then frozen overlays (stuck collars), then test
//!   pins. A pin wins over everything, so an end-to-end test knows exactly what the
//!   gateway must read.
//! - Every random draw comes from a stream of its own entity; injecting a fault on one
//!   device does not change the draws of another.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio::time::Instant;

use firmware::collar_hub::{BASE, STRIDE};
use firmware::modbus::{self, Exception, RegisterMap, Table};
use firmware::prng::Rng;
use protocol::{DeviceKind, Timestamp};
use tracing::info;

use crate::clock::Clock;
use crate::dairy::{Estrus, Farm, Fever};
use crate::fault::{Fault, SimError};
use crate::plan::{COWS_PER_HUB, Plan};
use crate::speakers::{SpeakerCondition, SpeakerSim};
use crate::spec::SpeakerMix;
use crate::water::{District, DmaVolumes};

/// Longest physics step (ms).
pub(crate) const MAX_STEP_MS: i64 = 30_000;
/// History simulated before the start time, so hourly figures and tanks are settled.
pub(crate) const WARM_UP_MS: i64 = 3_600_000;

/// What a plan device is in the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Meter {
        district: usize,
        household: usize,
    },
    /// The inlet meter of DMA `dma` of supply district `district`.
    Inlet {
        district: usize,
        dma: usize,
    },
    Station {
        district: usize,
    },
    Analyser {
        district: usize,
    },
    Barn,
    Hub {
        hub: usize,
    },
    Speaker {
        index: usize,
    },
}

impl Entity {
    fn what(self) -> &'static str {
        match self {
            Entity::Meter { .. } => "a water meter",
            Entity::Inlet { .. } => "a district inlet meter",
            Entity::Station { .. } => "a pump station",
            Entity::Analyser { .. } => "a water-quality analyser",
            Entity::Barn => "a barn climate sensor",
            Entity::Hub { .. } => "a collar hub",
            Entity::Speaker { .. } => "a speaker",
        }
    }
}

#[derive(Debug, Clone)]
struct Device {
    entity: Entity,
    pins: BTreeMap<(Table, u16), u16>,
    frozen: BTreeMap<(Table, u16), u16>,
}

/// What an id names: a plan device, or a cow behind a collar hub.
#[derive(Debug, Clone, Copy)]
enum Target {
    Device(usize),
    Cow { cow: usize, hub_device: usize },
}

/// The world behind all servers of one county.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) now_ms: i64,
    seed: u64,
    pub(crate) clock: Clock,
    districts: Vec<District>,
    farm: Farm,
    speakers: Vec<SpeakerSim>,
    /// Per speaker index: its gateway id and device id (what it is provisioned with).
    speaker_ids: Vec<(String, String)>,
    devices: Vec<Device>,
    ids: HashMap<String, Target>,
    /// Per gateway (plan order): unit id -> device index.
    buses: Vec<Vec<Option<usize>>>,
    faults: BTreeMap<String, BTreeSet<Fault>>,
    random_outages: bool,
    /// Gateway id -> its bus (plan order).
    gateway_bus: HashMap<String, usize>,
    /// Device index -> its bus.
    device_bus: Vec<usize>,
    /// Buses whose gateway cabinet has no power (`gateway_offline`).
    dark_buses: BTreeSet<usize>,
    /// Rain over the county: see `set_rain`.
    pub(crate) raining: bool,
    /// DMA id -> (supply district, index of the DMA in it).
    dmas: HashMap<String, (usize, usize)>,
}

fn district_of(plan: &Plan, site: &str) -> usize {
    plan.sites
        .iter()
        .find(|s| s.id == site)
        .and_then(|s| s.district.as_deref())
        .and_then(|d| d.strip_prefix("district-"))
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n.saturating_sub(1))
}

/// A stable hash of a device id, for fault draws.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

impl World {
    /// Builds the world of `plan` and simulates the hour before `start_ms`.
    pub(crate) fn new(plan: &Plan, seed: u64, speed: f64, start_ms: i64, mix: &SpeakerMix) -> World {
        let t0 = start_ms - WARM_UP_MS;
        let districts_n = plan.sites.iter().filter_map(|s| s.district.as_ref()).collect::<BTreeSet<_>>().len().max(1);
        let mut households = vec![0usize; districts_n];
        let mut hubs = 0usize;
        let mut speakers = 0usize;
        let mut speaker_ids = Vec::new();
        let mut eartags = Vec::new();
        let mut devices = Vec::new();
        let mut ids = HashMap::new();
        let mut buses = Vec::with_capacity(plan.gateways.len());
        let mut cow_ids = Vec::new();
        let mut gateway_bus = HashMap::new();
        let mut device_bus = Vec::new();
        // Per supply district: its DMAs in order of appearance, and each household's DMA.
        let mut dma_ids: Vec<Vec<String>> = vec![Vec::new(); districts_n];
        let mut dma_of: Vec<Vec<usize>> = vec![Vec::new(); districts_n];
        let dma_index = |district: usize, id: &str, ids: &mut Vec<Vec<String>>| -> usize {
            let list = &mut ids[district];
            list.iter().position(|x| x == id).unwrap_or_else(|| {
                list.push(id.to_owned());
                list.len() - 1
            })
        };
        for g in &plan.gateways {
            gateway_bus.insert(g.id.clone(), buses.len());
            let mut bus = vec![None; 256];
            for d in &g.devices {
                let district = district_of(plan, &d.site).min(districts_n - 1);
                let role = plan.meter_role(&d.id);
                let entity = match d.kind {
                    DeviceKind::WaterMeter if role.is_some_and(|(_, inlet)| inlet) => {
                        let dma = role.map_or(0, |(p, _)| dma_index(district, &p.id, &mut dma_ids));
                        Entity::Inlet { district, dma }
                    }
                    DeviceKind::WaterMeter => {
                        households[district] += 1;
                        dma_of[district]
                            .push(role.map_or(usize::MAX, |(p, _)| dma_index(district, &p.id, &mut dma_ids)));
                        Entity::Meter { district, household: households[district] - 1 }
                    }
                    DeviceKind::PumpStation => Entity::Station { district },
                    DeviceKind::WaterQuality => Entity::Analyser { district },
                    DeviceKind::BarnClimate => Entity::Barn,
                    DeviceKind::CowCollar => {
                        hubs += 1;
                        for c in &d.children {
                            if let Some(tag) = c.strip_prefix("cow-").and_then(|t| t.parse::<u32>().ok()) {
                                eartags.push(tag);
                                cow_ids.push((c.clone(), devices.len()));
                            }
                        }
                        Entity::Hub { hub: hubs - 1 }
                    }
                    _ => {
                        speakers += 1;
                        speaker_ids.push((g.id.clone(), d.id.clone()));
                        Entity::Speaker { index: speakers - 1 }
                    }
                };
                bus[usize::from(d.unit)] = Some(devices.len());
                device_bus.push(buses.len());
                ids.insert(d.id.clone(), Target::Device(devices.len()));
                devices.push(Device { entity, pins: BTreeMap::new(), frozen: BTreeMap::new() });
            }
            buses.push(bus);
        }
        for (cow, (id, hub_device)) in cow_ids.into_iter().enumerate() {
            ids.insert(id, Target::Cow { cow, hub_device });
        }
        let mut world = World {
            now_ms: t0,
            seed,
            clock: Clock::new(speed),
            districts: households.iter().enumerate().map(|(i, &n)| District::new(seed, i, n, t0)).collect(),
            farm: Farm::new(seed, &eartags, COWS_PER_HUB, t0),
            speakers: (0..speakers).map(|i| SpeakerSim::new(seed, i, mix)).collect(),
            speaker_ids,
            devices,
            ids,
            buses,
            faults: BTreeMap::new(),
            random_outages: true,
            gateway_bus,
            device_bus,
            dark_buses: BTreeSet::new(),
            raining: false,
            dmas: dma_ids
                .iter()
                .enumerate()
                .flat_map(|(d, ids)| ids.iter().enumerate().map(move |(i, id)| (id.clone(), (d, i))))
                .collect(),
        };
        for (district, assign) in world.districts.iter_mut().zip(dma_of) {
            district.set_dmas(assign);
        }
        let offline: Vec<String> = world
            .speaker_ids
            .iter()
            .zip(&world.speakers)
            .filter(|(_, s)| s.starts_offline)
            .map(|((_, id), _)| id.clone())
            .collect();
        for id in offline {
            let _ = world.inject(&id, Fault::SpeakerOffline);
        }
        world.advance(WARM_UP_MS);
        world
    }

    /// Moves time on by `total_ms` in steps of at most [`MAX_STEP_MS`].
    pub(crate) fn advance(&mut self, total_ms: i64) {
        if total_ms <= 0 {
            return;
        }
        let n = (total_ms + MAX_STEP_MS - 1) / MAX_STEP_MS;
        for i in 0..n {
            let dt = total_ms * (i + 1) / n - total_ms * i / n;
            self.now_ms += dt;
            self.step(dt);
        }
    }

    /// Catches up with the wall clock while serving.
    pub(crate) fn catch_up(&mut self, wall: Instant) {
        if let Some(target) = self.clock.target(wall) {
            self.advance(target - self.now_ms);
        }
    }

    fn step(&mut self, dt_ms: i64) {
        let now = Timestamp(self.now_ms);
        for d in &mut self.districts {
            d.raining = self.raining;
            d.step(now, dt_ms);
        }
        self.farm.raining = self.raining;
        self.farm.step(now, dt_ms);
        for s in &mut self.speakers {
            s.step(now, dt_ms, self.random_outages);
        }
        self.expire_estrus();
    }

    fn expire_estrus(&mut self) {
        let now = self.now_ms;
        for cow in &mut self.farm.cows {
            if cow.estrus.is_some_and(|e| now >= e.end_ms) {
                cow.estrus = None;
                let id = format!("cow-{}", cow.eartag);
                if let Some(set) = self.faults.get_mut(&id) {
                    set.remove(&Fault::Estrus);
                    if set.is_empty() {
                        self.faults.remove(&id);
                    }
                }
                info!(message = "Estrus episode ended.", device = %id);
            }
        }
    }

    pub(crate) fn set_random_outages(&mut self, on: bool) {
        self.random_outages = on;
        if !on {
            // "Every device answers" from now: outages drawn during the warm-up end too.
            for s in &mut self.speakers {
                s.end_outage();
            }
        }
    }

    // --- speakers ---

    /// Installs ingest's command key in every speaker terminal, with its own gateway and
    /// device ids. Returns how many were provisioned.
    pub(crate) fn provision_speakers(&mut self, key: [u8; 32]) -> Result<usize, SimError> {
        for (s, (gateway, device)) in self.speakers.iter_mut().zip(&self.speaker_ids) {
            s.fw.provision(key, gateway, device).map_err(|_| SimError::BadKey)?;
        }
        Ok(self.speakers.len())
    }

    fn speaker_index(&self, id: &str) -> Result<usize, SimError> {
        match self.target(id)? {
            Target::Device(d) => match self.devices[d].entity {
                Entity::Speaker { index } => Ok(index),
                other => Err(SimError::NotASpeaker { device: id.to_owned(), what: other.what() }),
            },
            Target::Cow { .. } => Err(SimError::NotASpeaker { device: id.to_owned(), what: "a cow" }),
        }
    }

    /// A speaker's condition.
    pub(crate) fn speaker_condition(&self, id: &str) -> Result<SpeakerCondition, SimError> {
        let i = self.speaker_index(id)?;
        Ok(self.speakers[i].condition)
    }

    /// Sets a speaker's condition.
    pub(crate) fn set_speaker_condition(&mut self, id: &str, condition: SpeakerCondition) -> Result<(), SimError> {
        let i = self.speaker_index(id)?;
        self.speakers[i].condition = condition;
        info!(message = "Speaker condition set.", device = %id, ?condition);
        Ok(())
    }

    /// Every speaker's id and condition, in plan order.
    pub(crate) fn speaker_conditions(&self) -> Vec<(String, SpeakerCondition)> {
        self.speaker_ids.iter().zip(&self.speakers).map(|((_, id), s)| (id.clone(), s.condition)).collect()
    }

    /// Every speaker's id and the public half of its receipt key, in plan order.
    pub(crate) fn speaker_public_keys(&self) -> Vec<(String, [u8; 32])> {
        self.speaker_ids
            .iter()
            .zip(&self.speakers)
            .filter_map(|((_, id), s)| Some((id.clone(), s.fw.public_key()?)))
            .collect()
    }

    /// How late the device answers (ms): a slow speaker's delay, else 0.
    pub(crate) fn answer_delay_ms(&self, dev: usize) -> u32 {
        match self.devices.get(dev).map(|d| d.entity) {
            Some(Entity::Speaker { index }) => self.speakers.get(index).map_or(0, SpeakerSim::answer_delay_ms),
            _ => 0,
        }
    }

    /// True unless the gateway's cabinet lost power (`gateway_offline`); unknown ids are
    /// not powered.
    pub(crate) fn gateway_powered(&self, gateway: &str) -> bool {
        self.gateway_bus.get(gateway).is_some_and(|b| !self.dark_buses.contains(b))
    }

    // --- Modbus side ---

    /// The device answering at `unit` on gateway `bus`, if one is there and reachable.
    pub(crate) fn device_at(&self, bus: usize, unit: u8) -> Option<usize> {
        let dev = (*self.buses.get(bus)?.get(usize::from(unit))?)?;
        self.reachable(dev).then_some(dev)
    }

    fn reachable(&self, dev: usize) -> bool {
        if self.device_bus.get(dev).is_some_and(|b| self.dark_buses.contains(b)) {
            return false;
        }
        match self.devices.get(dev).map(|d| d.entity) {
            Some(Entity::Speaker { index }) => self.speakers.get(index).is_some_and(|s| s.reachable(self.now_ms)),
            Some(_) => true,
            None => false,
        }
    }

    fn map(&self, entity: Entity) -> Option<&dyn RegisterMap> {
        Some(match entity {
            Entity::Meter { district, household } => &self.districts.get(district)?.households.get(household)?.meter,
            Entity::Inlet { district, dma } => &self.districts.get(district)?.dmas.get(dma)?.inlet,
            Entity::Station { district } => &self.districts.get(district)?.station,
            Entity::Analyser { district } => &self.districts.get(district)?.analyser,
            Entity::Barn => &self.farm.barn,
            Entity::Hub { hub } => self.farm.hubs.get(hub)?,
            Entity::Speaker { index } => &self.speakers.get(index)?.fw,
        })
    }

    fn map_mut(&mut self, entity: Entity) -> Option<&mut dyn RegisterMap> {
        Some(match entity {
            Entity::Meter { district, household } => {
                &mut self.districts.get_mut(district)?.households.get_mut(household)?.meter
            }
            Entity::Inlet { district, dma } => &mut self.districts.get_mut(district)?.dmas.get_mut(dma)?.inlet,
            Entity::Station { district } => &mut self.districts.get_mut(district)?.station,
            Entity::Analyser { district } => &mut self.districts.get_mut(district)?.analyser,
            Entity::Barn => &mut self.farm.barn,
            Entity::Hub { hub } => self.farm.hubs.get_mut(hub)?,
            Entity::Speaker { index } => &mut self.speakers.get_mut(index)?.fw,
        })
    }

    fn overlay(&self, dev: &Device, table: Table, address: u16) -> Option<u16> {
        dev.pins.get(&(table, address)).or_else(|| dev.frozen.get(&(table, address))).copied()
    }

    /// Reads registers as the device answers them (function codes 3 and 4).
    pub(crate) fn read_words(&self, dev: usize, table: Table, address: u16, count: u16) -> Result<Vec<u16>, Exception> {
        let d = self.devices.get(dev).ok_or(Exception::ServerDeviceFailure)?;
        let map = self.map(d.entity).ok_or(Exception::ServerDeviceFailure)?;
        let mut out = vec![0u16; usize::from(count)];
        modbus::read_registers(map, table, address, &mut out)?;
        for (w, a) in out.iter_mut().zip(address..) {
            if let Some(v) = self.overlay(d, table, a) {
                *w = v;
            }
        }
        Ok(out)
    }

    /// Reads bits as the device answers them (function codes 1 and 2).
    pub(crate) fn read_bits(&self, dev: usize, table: Table, address: u16, count: u16) -> Result<Vec<bool>, Exception> {
        let d = self.devices.get(dev).ok_or(Exception::ServerDeviceFailure)?;
        let map = self.map(d.entity).ok_or(Exception::ServerDeviceFailure)?;
        let mut out = vec![false; usize::from(count)];
        modbus::read_bits(map, table, address, &mut out)?;
        for (b, a) in out.iter_mut().zip(address..) {
            if let Some(v) = self.overlay(d, table, a) {
                *b = v != 0;
            }
        }
        Ok(out)
    }

    /// Writes holding registers (function codes 6 and 16).
    pub(crate) fn write_words(&mut self, dev: usize, address: u16, words: &[u16]) -> Result<(), Exception> {
        let entity = self.devices.get(dev).ok_or(Exception::ServerDeviceFailure)?.entity;
        let map = self.map_mut(entity).ok_or(Exception::ServerDeviceFailure)?;
        modbus::write_registers(map, address, words)
    }

    /// Writes coils (function codes 5 and 15).
    pub(crate) fn write_bits(&mut self, dev: usize, address: u16, bits: &[bool]) -> Result<(), Exception> {
        let entity = self.devices.get(dev).ok_or(Exception::ServerDeviceFailure)?.entity;
        let map = self.map_mut(entity).ok_or(Exception::ServerDeviceFailure)?;
        modbus::write_coils(map, address, bits)
    }

    /// Reads `count` items of `table` of a device by id, bits as 0/1, as a Modbus client would.
    pub(crate) fn read_by_id(&self, id: &str, table: Table, address: u16, count: u16) -> Result<Vec<u16>, SimError> {
        let (dev, address) = self.resolve_address(id, table, address)?;
        if !self.reachable(dev) {
            return Err(SimError::Offline(id.to_owned()));
        }
        let err = |exception| SimError::Modbus { device: id.to_owned(), exception };
        if table.is_bits() {
            Ok(self.read_bits(dev, table, address, count).map_err(err)?.into_iter().map(u16::from).collect())
        } else {
            self.read_words(dev, table, address, count).map_err(err)
        }
    }

    // --- faults ---

    fn target(&self, id: &str) -> Result<Target, SimError> {
        self.ids.get(id).copied().ok_or_else(|| SimError::UnknownDevice(id.to_owned()))
    }

    /// Injects `fault` on device `id` (see `County::inject`).
    pub(crate) fn inject(&mut self, id: &str, fault: Fault) -> Result<(), SimError> {
        if let Some(&bus) = self.gateway_bus.get(id) {
            if fault != Fault::GatewayOffline {
                return Err(SimError::NotApplicable { device: id.to_owned(), fault, what: "a gateway" });
            }
            self.dark_buses.insert(bus);
            self.faults.entry(id.to_owned()).or_default().insert(fault);
            info!(message = "Fault injected.", device = %id, %fault);
            return Ok(());
        }
        let target = self.target(id)?;
        let what = match target {
            Target::Device(d) => self.devices[d].entity.what(),
            Target::Cow { .. } => "a cow",
        };
        let applicable = match (target, fault) {
            (Target::Cow { .. }, Fault::Fever | Fault::Estrus | Fault::StuckSensor) => true,
            (Target::Cow { .. }, _) => false,
            (Target::Device(d), f) => matches!(
                (self.devices[d].entity, f),
                (Entity::Meter { .. } | Entity::Inlet { .. }, Fault::Leak | Fault::StuckSensor)
                    | (Entity::Station { .. }, Fault::PumpTrip | Fault::Leak | Fault::ChlorineDosingFailure)
                    | (Entity::Station { .. }, Fault::StuckSensor)
                    | (Entity::Analyser { .. }, Fault::ChlorineDosingFailure | Fault::StuckSensor)
                    | (Entity::Barn, Fault::StuckSensor | Fault::HeatWave)
                    | (Entity::Hub { .. }, Fault::StuckSensor)
                    | (Entity::Speaker { .. }, Fault::SpeakerOffline)
            ),
        };
        if !applicable {
            return Err(SimError::NotApplicable { device: id.to_owned(), fault, what });
        }
        if self.faults.get(id).is_some_and(|s| s.contains(&fault)) {
            return Ok(());
        }
        let mut rng = Rng::new(self.seed ^ 0xFA17, fnv1a(id) ^ self.now_ms as u64);
        match target {
            Target::Cow { cow, hub_device } => self.inject_cow(cow, hub_device, fault, &mut rng),
            Target::Device(d) => self.inject_device(d, fault, &mut rng),
        }
        self.faults.entry(id.to_owned()).or_default().insert(fault);
        info!(message = "Fault injected.", device = %id, %fault);
        Ok(())
    }

    fn inject_cow(&mut self, cow: usize, hub_device: usize, fault: Fault, rng: &mut Rng) {
        let now = self.now_ms;
        match fault {
            Fault::Fever => {
                if let Some(c) = self.farm.cows.get_mut(cow) {
                    c.fever = Some(Fever { onset_ms: now, delta_c: rng.range(1.0, 1.5) });
                }
            }
            Fault::Estrus => {
                if let Some(c) = self.farm.cows.get_mut(cow) {
                    let hours = rng.range(8.0, 15.0);
                    c.estrus = Some(Estrus { end_ms: now + (hours * 3_600_000.0) as i64, factor: rng.range(2.8, 3.6) });
                }
            }
            _ => {
                if let Some(slot) = self.farm.cows.get(cow).map(|c| c.slot) {
                    self.freeze_slot(hub_device, slot);
                }
            }
        }
    }

    /// Freezes a collar slot's measured registers (temperature, activity, rumination).
    fn freeze_slot(&mut self, hub_device: usize, slot: usize) {
        for offset in 2..=4 {
            let a = BASE + STRIDE * slot as u16 + offset;
            if let Ok(v) = self.read_words(hub_device, Table::Input, a, 1) {
                self.devices[hub_device].frozen.insert((Table::Input, a), v[0]);
            }
        }
    }

    fn inject_device(&mut self, dev: usize, fault: Fault, rng: &mut Rng) {
        match (self.devices[dev].entity, fault) {
            (Entity::Meter { district, household }, Fault::Leak) => {
                if let Some(h) = self.districts.get_mut(district).and_then(|d| d.households.get_mut(household)) {
                    h.leak_l_per_h = rng.range(10.0, 30.0);
                }
            }
            (Entity::Meter { district, household }, _) => {
                if let Some(h) = self.districts.get_mut(district).and_then(|d| d.households.get_mut(household)) {
                    h.stuck = true;
                }
            }
            (Entity::Inlet { district, dma }, f) => {
                if let Some(x) = self.districts.get_mut(district).and_then(|d| d.dmas.get_mut(dma)) {
                    match f {
                        Fault::Leak => x.burst = true,
                        _ => x.inlet.stuck = true,
                    }
                }
            }
            (Entity::Station { district } | Entity::Analyser { district }, f) => {
                let station = matches!(self.devices[dev].entity, Entity::Station { .. });
                let Some(d) = self.districts.get_mut(district) else { return };
                match f {
                    Fault::PumpTrip => d.faults.trip = true,
                    Fault::Leak => d.faults.burst = true,
                    Fault::ChlorineDosingFailure => d.faults.dosing_failed |= if station { 1 } else { 2 },
                    _ if station => d.faults.level_stuck = Some(d.level_m()),
                    _ => d.faults.analyser_stuck = Some(d.last_quality),
                }
            }
            (Entity::Barn, Fault::HeatWave) => self.farm.faults.heat_wave = true,
            (Entity::Barn, _) => self.farm.faults.barn_stuck = Some(self.farm.last_climate),
            (Entity::Hub { hub }, _) => {
                let slots = self.farm.hubs.get(hub).map_or(0, |h| h.count());
                for slot in 0..slots {
                    self.freeze_slot(dev, slot);
                }
            }
            (Entity::Speaker { index }, _) => {
                if let Some(s) = self.speakers.get_mut(index) {
                    s.offline = true;
                }
            }
        }
    }

    /// Clears every fault of device `id`.
    pub(crate) fn clear(&mut self, id: &str) -> Result<(), SimError> {
        if let Some(&bus) = self.gateway_bus.get(id) {
            self.dark_buses.remove(&bus);
            if self.faults.remove(id).is_some() {
                info!(message = "Fault cleared.", device = %id, fault = %Fault::GatewayOffline);
            }
            return Ok(());
        }
        let target = self.target(id)?;
        let Some(faults) = self.faults.remove(id) else { return Ok(()) };
        for fault in faults {
            match target {
                Target::Cow { cow, hub_device } => self.clear_cow(cow, hub_device, fault),
                Target::Device(d) => self.clear_device(d, fault),
            }
            info!(message = "Fault cleared.", device = %id, %fault);
        }
        Ok(())
    }

    fn clear_cow(&mut self, cow: usize, hub_device: usize, fault: Fault) {
        let Some(c) = self.farm.cows.get_mut(cow) else { return };
        match fault {
            Fault::Fever => c.fever = None,
            Fault::Estrus => c.estrus = None,
            _ => {
                let slot = c.slot as u16;
                let range = BASE + STRIDE * slot..BASE + STRIDE * (slot + 1);
                self.devices[hub_device].frozen.retain(|(_, a), _| !range.contains(a));
            }
        }
    }

    fn clear_device(&mut self, dev: usize, fault: Fault) {
        match self.devices[dev].entity {
            Entity::Meter { district, household } => {
                if let Some(h) = self.districts.get_mut(district).and_then(|d| d.households.get_mut(household)) {
                    match fault {
                        Fault::Leak => h.leak_l_per_h = 0.0,
                        _ => h.stuck = false,
                    }
                }
            }
            Entity::Inlet { district, dma } => {
                if let Some(x) = self.districts.get_mut(district).and_then(|d| d.dmas.get_mut(dma)) {
                    match fault {
                        Fault::Leak => x.burst = false,
                        _ => x.inlet.stuck = false,
                    }
                }
            }
            Entity::Station { district } | Entity::Analyser { district } => {
                let station = matches!(self.devices[dev].entity, Entity::Station { .. });
                let Some(d) = self.districts.get_mut(district) else { return };
                match fault {
                    Fault::PumpTrip => {
                        // The technician resets the relay and presses reset on the panel.
                        d.faults.trip = false;
                        d.faults.reset_pending = true;
                    }
                    Fault::Leak => d.faults.burst = false,
                    Fault::ChlorineDosingFailure => {
                        d.faults.dosing_failed &= if station { !1 } else { !2 };
                        // The technician fixes the dosing pump and resets its latched alarm.
                        d.faults.reset_pending = true;
                    }
                    _ if station => d.faults.level_stuck = None,
                    _ => d.faults.analyser_stuck = None,
                }
            }
            Entity::Barn => match fault {
                Fault::HeatWave => self.farm.faults.heat_wave = false,
                _ => self.farm.faults.barn_stuck = None,
            },
            Entity::Hub { .. } => self.devices[dev].frozen.clear(),
            Entity::Speaker { index } => {
                if let Some(s) = self.speakers.get_mut(index) {
                    s.offline = false;
                }
            }
        }
    }

    /// Every fault in force, by device id.
    pub(crate) fn faults(&self) -> Vec<(String, Fault)> {
        self.faults.iter().flat_map(|(id, set)| set.iter().map(move |f| (id.clone(), *f))).collect()
    }

    // --- district metered areas ---

    /// The true volumes of DMA `id` (a village id) since the world began.
    pub(crate) fn dma_volumes(&self, id: &str) -> Option<DmaVolumes> {
        let &(d, i) = self.dmas.get(id)?;
        Some(self.districts.get(d)?.dmas.get(i)?.truth)
    }

    /// Replaces household meter `id` by a new one whose totaliser reads `total_l`.
    pub(crate) fn replace_meter(&mut self, id: &str, total_l: u32) -> Result<(), SimError> {
        match self.target(id)? {
            Target::Device(dev) => match self.devices[dev].entity {
                Entity::Meter { district, household } => {
                    if let Some(h) = self.districts.get_mut(district).and_then(|d| d.households.get_mut(household)) {
                        h.meter = firmware::water_meter::WaterMeter::new(total_l);
                    }
                    info!(message = "Water meter replaced.", device = %id, total_l);
                    Ok(())
                }
                other => Err(SimError::NotAMeter { device: id.to_owned(), what: other.what() }),
            },
            Target::Cow { .. } => Err(SimError::NotAMeter { device: id.to_owned(), what: "a cow" }),
        }
    }

    // --- pins ---

    /// The device and wire address an id and address stand for; for a cow, `address` is
    /// the offset within her slot of the input table.
    fn resolve_address(&self, id: &str, table: Table, address: u16) -> Result<(usize, u16), SimError> {
        match self.target(id)? {
            Target::Device(d) => Ok((d, address)),
            Target::Cow { cow, hub_device } => {
                let slot = self.farm.cows.get(cow).map_or(0, |c| c.slot) as u16;
                if table != Table::Input || address >= STRIDE {
                    return Err(SimError::Unmapped { device: id.to_owned(), table, address: u32::from(address) });
                }
                Ok((hub_device, BASE + STRIDE * slot + address))
            }
        }
    }

    /// Pins registers of a device (see `County::pin_register`).
    pub(crate) fn pin(&mut self, id: &str, table: Table, address: u16, words: &[u16]) -> Result<(), SimError> {
        if words.is_empty() {
            return Err(SimError::EmptyPin(id.to_owned()));
        }
        let (dev, wire) = self.resolve_address(id, table, address)?;
        let entity = self.devices[dev].entity;
        let map = self.map(entity).ok_or_else(|| SimError::UnknownDevice(id.to_owned()))?;
        for i in 0..words.len() {
            let a = u32::from(wire) + i as u32;
            let mapped = u16::try_from(a).ok().is_some_and(|a| {
                if table.is_bits() { map.bit(table, a).is_some() } else { map.register(table, a).is_some() }
            });
            if !mapped {
                return Err(SimError::Unmapped {
                    device: id.to_owned(),
                    table,
                    address: u32::from(address) + i as u32,
                });
            }
        }
        for (&w, a) in words.iter().zip(wire..) {
            self.devices[dev].pins.insert((table, a), w);
        }
        info!(message = "Registers pinned.", device = %id, %table, address, count = words.len());
        Ok(())
    }

    /// Removes a device's pins (for a cow, those of her slot).
    pub(crate) fn unpin(&mut self, id: &str) -> Result<(), SimError> {
        match self.target(id)? {
            Target::Device(d) => self.devices[d].pins.clear(),
            Target::Cow { cow, hub_device } => {
                let slot = self.farm.cows.get(cow).map_or(0, |c| c.slot) as u16;
                let range = BASE + STRIDE * slot..BASE + STRIDE * (slot + 1);
                self.devices[hub_device].pins.retain(|(_, a), _| !range.contains(a));
            }
        }
        Ok(())
    }
}
