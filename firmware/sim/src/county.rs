//! The county handle: builds the world from a spec, serves it over Modbus TCP, and lets
//! demos and tests inject faults, step time and pin registers.
//!
//! `County` is a cheap clone (an `Arc`). Background tasks (one server per gateway and the
//! ticker) hold only weak references and a shutdown receiver, so they end when
//! [`County::shutdown`] is called or the last handle is dropped.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firmware::modbus::Table;
use protocol::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use crate::fault::{Fault, SimError};
use crate::plan::Plan;
use crate::server::{self, BusService};
use crate::speakers::SpeakerCondition;
use crate::spec::CountySpec;
use crate::world::World;

/// Wall time between physics ticks while serving.
pub const TICK: Duration = Duration::from_secs(1);

/// Locks the world, recovering from a panic in another holder (the world stays usable:
/// every step leaves it consistent).
pub(crate) fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A simulated county: world physics feeding the firmware devices, served over Modbus TCP.
#[derive(Clone)]
pub struct County {
    inner: Arc<Inner>,
}

struct Inner {
    spec: CountySpec,
    plan: Plan,
    world: Arc<Mutex<World>>,
    shutdown: watch::Sender<bool>,
    served: tokio::sync::Mutex<Option<Vec<(String, SocketAddr)>>>,
}

impl std::fmt::Debug for County {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("County").field("spec", &self.inner.spec).field("now", &self.now()).finish_non_exhaustive()
    }
}

fn wall_now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

impl County {
    /// A county that starts now (wall clock), with an hour of history already simulated.
    pub fn new(spec: CountySpec) -> County {
        County::with_start(spec, wall_now())
    }

    /// A county that starts at `start` in sim time: for tests that need a known time of
    /// day and reproducible values.
    pub fn with_start(spec: CountySpec, start: Timestamp) -> County {
        if spec.villages < 3 {
            warn!(message = "A county needs at least 3 villages; using 3.", villages = spec.villages);
        }
        let plan = Plan::build(&spec);
        let world = World::new(&plan, spec.seed, spec.speed, start.0, &spec.speaker_mix);
        let (shutdown, _) = watch::channel(false);
        County {
            inner: Arc::new(Inner {
                spec,
                plan,
                world: Arc::new(Mutex::new(world)),
                shutdown,
                served: tokio::sync::Mutex::new(None),
            }),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.inner.world)
    }

    /// The spec the county was built from.
    pub fn spec(&self) -> &CountySpec {
        &self.inner.spec
    }

    /// Sites, gateways and devices: what gateways must be configured with.
    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// Starts one Modbus TCP server per gateway on `127.0.0.1:0` and the ticker that moves
    /// the physics with wall time at the spec's speed. Returns each gateway's id and
    /// address, in plan order. Calling it again returns the same addresses.
    pub async fn serve(&self) -> io::Result<Vec<(String, SocketAddr)>> {
        if *self.inner.shutdown.borrow() {
            return Err(io::Error::other("the simulated county was shut down"));
        }
        let mut served = self.inner.served.lock().await;
        if let Some(addrs) = served.as_ref() {
            return Ok(addrs.clone());
        }
        let mut addrs = Vec::with_capacity(self.inner.plan.gateways.len());
        let mut listeners = Vec::with_capacity(self.inner.plan.gateways.len());
        for g in &self.inner.plan.gateways {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            addrs.push((g.id.clone(), listener.local_addr()?));
            listeners.push(listener);
        }
        for (bus, (listener, (gateway, _))) in listeners.into_iter().zip(&addrs).enumerate() {
            let service = BusService { world: Arc::downgrade(&self.inner.world), bus };
            tokio::spawn(server::run(listener, service, self.inner.shutdown.subscribe(), gateway.clone()));
        }
        {
            let mut w = self.world();
            let now = w.now_ms;
            w.clock.start(Instant::now(), now);
        }
        tokio::spawn(tick(Arc::downgrade(&self.inner.world), self.inner.shutdown.subscribe()));
        info!(message = "Simulated county serving.", gateways = addrs.len(), speed = self.inner.spec.speed);
        *served = Some(addrs.clone());
        Ok(addrs)
    }

    /// Stops the servers and the ticker. Manual stepping keeps working.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Injects `fault` on device `device` (a plan device id or a cow `cow-<eartag>`).
    ///
    /// Injecting a fault that is already in force does nothing. What `stuck_sensor`
    /// freezes depends on the device: a meter's impeller stops (flow 0, totals frozen,
    /// the water still flows); a pump station's level transmitter freezes (and the level
    /// control acts on the frozen value); an analyser's and a barn sensor's probes freeze
    /// (the analyser flags it after 30 min); a cow's collar repeats its temperature,
    /// activity and rumination; a collar hub freezes every cow's.
    pub fn inject(&self, device: &str, fault: Fault) -> Result<(), SimError> {
        self.world().inject(device, fault)
    }

    /// Clears every fault on `device`.
    pub fn clear(&self, device: &str) -> Result<(), SimError> {
        self.world().clear(device)
    }

    /// Faults in force, sorted by device id.
    pub fn faults(&self) -> Vec<(String, Fault)> {
        self.world().faults()
    }

    /// Steps the world by `dt` of sim time now (in steps of at most 30 s), without Modbus
    /// or wall time: days of a county run in seconds. It holds the world's lock while it
    /// runs, so servers answer requests that arrive meanwhile once it returns.
    pub fn advance(&self, dt: Duration) {
        let ms = i64::try_from(dt.as_millis()).unwrap_or(i64::MAX);
        let mut w = self.world();
        w.advance(ms);
        w.clock.shift(ms);
    }

    /// Sim time the world has been computed up to.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.world().now_ms)
    }

    /// Overrides registers of `device` from `address` with `words` regardless of physics,
    /// until [`County::unpin`]. For bit tables a non-zero word is 1. For a cow,
    /// `address` is the offset within her slot of the hub's input table (2 is body
    /// temperature). Every address must be on the device's map.
    pub fn pin_register(&self, device: &str, table: Table, address: u16, words: &[u16]) -> Result<(), SimError> {
        self.world().pin(device, table, address, words)
    }

    /// Removes every pin of `device` (for a cow, those of her slot).
    pub fn unpin(&self, device: &str) -> Result<(), SimError> {
        self.world().unpin(device)
    }

    /// Reads `count` registers (or bits, as 0/1) of a device exactly as a Modbus client
    /// would get them, without a socket. For a cow, `address` is the offset in her slot.
    pub fn read(&self, device: &str, table: Table, address: u16, count: u16) -> Result<Vec<u16>, SimError> {
        self.world().read_by_id(device, table, address, count)
    }

    /// False while the gateway's cabinet has no power (`gateway_offline` injected on its
    /// id): a harness playing that gateway publishes nothing, and its last will says
    /// offline. Unknown ids are not powered.
    pub fn gateway_powered(&self, gateway: &str) -> bool {
        self.world().gateway_powered(gateway)
    }

    /// Rain over the whole county from now on (`true`) or not: households water no gardens
    /// and wash less outdoors (demand x0.85), barn air is cooler and damper (-3 °C, RH
    /// +20 points up to 98%), and the source water a little more turbid (+0.1 NTU, still
    /// well under GB 5749's 1 NTU). A rainy day is normal operation: no rule should call it
    /// a fault.
    pub fn set_rain(&self, raining: bool) {
        self.world().raining = raining;
    }

    /// Whether it rains.
    pub fn raining(&self) -> bool {
        self.world().raining
    }

    /// Installs ingest's command public key in every speaker terminal (with its own gateway
    /// and device ids), as an installer does; until then speakers refuse every command.
    /// Returns how many speakers were provisioned.
    pub fn provision_speakers(&self, command_key: [u8; 32]) -> Result<usize, SimError> {
        self.world().provision_speakers(command_key)
    }

    /// A speaker's condition (healthy, slow, amplifier fault).
    pub fn speaker_condition(&self, device: &str) -> Result<SpeakerCondition, SimError> {
        self.world().speaker_condition(device)
    }

    /// Sets a speaker's condition: make it slow, break its amplifier, or repair it.
    pub fn set_speaker_condition(&self, device: &str, condition: SpeakerCondition) -> Result<(), SimError> {
        self.world().set_speaker_condition(device, condition)
    }

    /// Every speaker's id and condition, in plan order.
    pub fn speaker_conditions(&self) -> Vec<(String, SpeakerCondition)> {
        self.world().speaker_conditions()
    }

    /// Every speaker's id and the public key it signs its receipts with (what it shows in
    /// input 600-615), in plan order: what the county enrols in ingest's inventory.
    pub fn speaker_public_keys(&self) -> Vec<(String, [u8; 32])> {
        self.world().speaker_public_keys()
    }

    /// The true volumes of district metered area `district` (a village id) since the
    /// county began: what a water-balance report is checked against. `None` for an unknown
    /// district.
    pub fn dma_volumes(&self, district: &str) -> Option<crate::water::DmaVolumes> {
        self.world().dma_volumes(district)
    }

    /// Replaces household meter `device` by a new one whose totaliser reads `total_l`
    /// litres (0 for a new meter; near 2³² for one about to roll over), as a fitter would.
    pub fn replace_meter(&self, device: &str, total_l: u32) -> Result<(), SimError> {
        self.world().replace_meter(device, total_l)
    }

    /// Turns the speakers' random link outages on (the default) or off, for tests that
    /// need every device to answer; turning them off also ends the outages in progress.
    pub fn set_random_outages(&self, on: bool) {
        self.world().set_random_outages(on);
    }
}

/// A `County` is shared between tasks and threads (demo, servers, tests).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<County>();
};

/// Moves the physics with wall time until shutdown.
async fn tick(world: std::sync::Weak<Mutex<World>>, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = server::stopped(&mut shutdown) => break,
        }
        let Some(world) = world.upgrade() else { break };
        lock(&world).catch_up(Instant::now());
    }
}
