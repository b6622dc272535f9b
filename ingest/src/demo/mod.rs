//! `ingest demo`: a simulated county, its gateways, the embedded broker and ingest, in one
//! process on embedded defaults.
//!
//! The county's devices run the firmware logic behind real Modbus TCP servers; the
//! gateways are the real gateway agent polling them and publishing over MQTT to the
//! embedded broker; ingest is the real service. Nothing on the path of a reading is a
//! stand-in. End-to-end tests start the same [`Demo`] on port 0.
//!
//! Only with the `demo` cargo feature (on by default): production builds of ingest
//! (`--no-default-features`) link neither the gateway agent nor the simulator. The fault
//! endpoints ([`api`]) reach the service through [`Options::extra_routes`], so the service
//! core knows nothing of them.

pub mod api;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gateway::config::{DeviceConfig, GatewayConfig, MqttConfig, PublishConfig, QueueConfig};
use protocol::DeviceKind;
use protocol::codec::Codec;
use simulator::{County, CountySpec, Plan};
use tokio_util::sync::CancellationToken;

use crate::auth::{Role, TokenConfig};
use crate::config::{BrokerConfig, IngestConfig, Limits};
use crate::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use crate::pipeline::Sink;
use crate::service::{self, Options, Running};

/// Which county `ingest demo --county` simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CountyChoice {
    /// 3 villages, 50 meters, 3 speakers, 100 cows: starts in seconds (the default).
    #[default]
    Small,
    /// The pilot county at full size ([`CountySpec::large`]): 150 villages in 9
    /// townships, 15,000 meters, 400 speakers, 3 waterworks, 2 farms of 1,000 cows.
    Large,
}

impl CountyChoice {
    /// The county's spec.
    pub fn spec(self) -> CountySpec {
        match self {
            CountyChoice::Small => CountySpec::demo(),
            CountyChoice::Large => CountySpec::large(),
        }
    }
}

/// How to start a demo.
pub struct DemoOptions {
    /// HTTP API and dashboard address (port 0 picks one).
    pub http: SocketAddr,
    /// Embedded broker address (port 0 picks one).
    pub mqtt: SocketAddr,
    /// Where data goes; `None` makes a temporary directory that is removed at exit.
    pub data: Option<PathBuf>,
    /// The admin token the API accepts; `None` makes one.
    pub admin_token: Option<String>,
    /// A second operator's token (holder `operator-2`), so that a red or orange broadcast
    /// created with the admin token can be approved by a different person; `None` makes one.
    pub operator_token: Option<String>,
    /// The broadcast configuration (approvals, groups, retry timing); `None`: defaults.
    pub broadcast: Option<crate::broadcast::config::BroadcastConfig>,
    /// The county to simulate.
    pub spec: CountySpec,
    /// Further sinks for durable readings (rules, InfluxDB).
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Rules and alerts (default: on, with the packs built into ingest).
    pub alerts: Option<crate::alerts::AlertsOptions>,
    /// Fixed passwords of the demo's people by name (`admin`, `wang`, `li`, `viewer`), so
    /// tests can sign in; a person not named gets a new random password, printed.
    pub passwords: std::collections::BTreeMap<String, String>,
    /// People's sessions: expiry and lockout (tests shorten them).
    pub sessions: crate::config::SessionSettings,
}

/// One of the demo's people: who, what they may do where, and their password.
#[derive(Debug, Clone)]
pub struct DemoPerson {
    /// Sign-in name.
    pub name: String,
    /// Their role.
    pub role: Role,
    /// Their tenant (`*`: every tenant).
    pub tenant: String,
    /// Their password.
    pub password: String,
}

/// The demo's people: the county's admin, two operators of tenant `county` (one creates a
/// red broadcast, the other approves it) and a viewer.
pub const DEMO_PEOPLE: [(&str, Role, &str); 4] = [
    ("admin", Role::Admin, crate::people::users::ALL_TENANTS),
    ("wang", Role::Operator, "county"),
    ("li", Role::Operator, "county"),
    ("viewer", Role::Viewer, "county"),
];

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            mqtt: SocketAddr::from(([127, 0, 0, 1], 1883)),
            data: None,
            admin_token: None,
            operator_token: None,
            broadcast: None,
            spec: CountySpec::demo(),
            sinks: Vec::new(),
            alerts: Some(crate::alerts::AlertsOptions::default()),
            passwords: Default::default(),
            sessions: Default::default(),
        }
    }
}

/// A running demo.
pub struct Demo {
    /// Ingest.
    pub ingest: Running,
    /// The simulated county.
    pub county: County,
    /// The gateways' configs, as they run.
    pub gateways: Vec<GatewayConfig>,
    /// The admin token (holder `admin`).
    pub admin_token: String,
    /// The second operator's token (holder `operator-2`): approves what the admin creates.
    pub operator_token: String,
    /// The people who can sign in, with their passwords.
    pub people: Vec<DemoPerson>,
    /// Where data goes.
    pub data_dir: PathBuf,
    gateway_stop: CancellationToken,
    /// Per gateway: what stops it alone, and its task.
    gateway_tasks: std::collections::BTreeMap<String, (CancellationToken, tokio::task::JoinHandle<()>)>,
    library: gateway::Library,
    _temp: Option<tempfile::TempDir>,
}

impl Demo {
    /// Starts county, broker, ingest and gateways.
    pub async fn start(opts: DemoOptions) -> anyhow::Result<Demo> {
        let (data_dir, temp) = match opts.data {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new().prefix("vt-demo-").tempdir().context("making a data directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;

        let county = County::new(opts.spec);
        let endpoints = county.serve().await.context("starting the simulated devices")?;
        // The installer's first step: each gateway makes its key beside its queue, and the
        // county enrols the public half in the inventory.
        let mut file = inventory_of(county.plan());
        for g in &mut file.gateways {
            let dir = gateway_queue_dir(&data_dir, &g.id);
            let (identity, _) = gateway::identity::Identity::load_or_create(Some(&dir))
                .with_context(|| format!("making the key of gateway {}", g.id))?;
            g.public_key = Some(identity.public_hex());
        }
        // And each speaker terminal's own key, which it shows in input 600-615 (the
        // simulator's keys come from the county's seed): enrolled on its device entry,
        // so that ingest records its states only on its signed receipts.
        let speaker_keys: std::collections::HashMap<String, [u8; 32]> =
            county.speaker_public_keys().into_iter().collect();
        for d in &mut file.devices {
            if let Some(key) = speaker_keys.get(&d.id) {
                d.public_key = Some(key.iter().map(|b| format!("{b:02x}")).collect());
            }
        }
        let inventory = Inventory::from_file(file);
        inventory.set_districts(districts_of(county.plan()));
        let people = add_people(&data_dir, &opts.passwords)?;
        let admin_token = opts.admin_token.unwrap_or_else(crate::auth::generate_token);
        let operator_token = opts.operator_token.unwrap_or_else(crate::auth::generate_token);
        let config = IngestConfig {
            data_dir: data_dir.clone(),
            broker: BrokerConfig::Embedded { listen: opts.mqtt },
            broker_exposure: Default::default(),
            http: opts.http,
            inventory: None,
            limits: Limits::default(),
            tokens: vec![
                TokenConfig { token: admin_token.clone(), role: Role::Admin, tenants: vec![], name: "admin".into() },
                TokenConfig {
                    token: operator_token.clone(),
                    role: Role::Operator,
                    tenants: vec![],
                    name: "operator-2".into(),
                },
            ],
            store: Default::default(),
            sinks: Vec::new(),
            sessions: opts.sessions,
        };
        let options = Options {
            extra_routes: Some(api::routes(county.clone(), crate::auth::Tokens::new(&config.tokens))),
            sinks: opts.sinks,
            alerts: opts.alerts,
            broadcast: opts.broadcast,
            // The demo's reads are open (docs/API.md); a service's are closed by default.
            public_read: true,
            ..Options::default()
        };
        let ingest = service::start(config, inventory, options).await?;
        // The installer's step: every speaker trusts ingest's command key.
        county.provision_speakers(ingest.state.broadcasts.public_key()).context("provisioning the speakers")?;
        let broker = ingest.mqtt.context("the demo runs the embedded broker")?;

        let (library, errors) = gateway::Library::builtin();
        anyhow::ensure!(errors.is_empty(), "built-in profiles refused: {errors:?}");
        let gateway_stop = CancellationToken::new();
        let mut gateway_tasks = std::collections::BTreeMap::new();
        let mut gateways = Vec::new();
        for mut cfg in gateway_configs(county.plan(), &endpoints, broker) {
            // Each gateway keeps its queue (and command replay window) on disk, as in the
            // field, and trusts ingest's command key.
            cfg.queue.dir = Some(gateway_queue_dir(&data_dir, &cfg.gateway));
            cfg.command_key = Some(ingest.state.commands.public_key());
            let task = spawn_gateway(&cfg, &library, &gateway_stop)?;
            gateway_tasks.insert(cfg.gateway.clone(), task);
            gateways.push(cfg);
        }
        Ok(Demo {
            ingest,
            county,
            gateways,
            admin_token,
            operator_token,
            people,
            data_dir,
            gateway_stop,
            gateway_tasks,
            library,
            _temp: temp,
        })
    }

    /// Restarts one gateway with a changed configuration, as an installer who
    /// re-provisions it in the field would (its queue and replay window stay on disk).
    /// Tests use it for a gateway configured with a key that is not ingest's.
    pub async fn restart_gateway(&mut self, id: &str, change: impl FnOnce(&mut GatewayConfig)) -> anyhow::Result<()> {
        let at = self.gateways.iter().position(|g| g.gateway == id).context("no such gateway")?;
        if let Some((stop, task)) = self.gateway_tasks.remove(id) {
            stop.cancel();
            let _ = task.await;
        }
        change(&mut self.gateways[at]);
        let task = spawn_gateway(&self.gateways[at], &self.library, &self.gateway_stop)?;
        self.gateway_tasks.insert(id.to_string(), task);
        Ok(())
    }

    /// Stops gateways, then ingest, then the county.
    pub async fn stop(mut self) {
        self.gateway_stop.cancel();
        for (_, (_, task)) in std::mem::take(&mut self.gateway_tasks) {
            let _ = task.await;
        }
        self.county.shutdown();
        self.ingest.stop().await;
    }

    /// A few lines saying what runs where.
    pub fn summary(&self) -> String {
        let plan = self.county.plan();
        let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
        for d in plan.gateways.iter().flat_map(|g| &g.devices) {
            *kinds.entry(d.kind.as_str()).or_default() += 1;
            if !d.children.is_empty() {
                *kinds.entry("cows on the collar hub").or_default() += d.children.len();
            }
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let villages = plan.sites.iter().filter(|s| matches!(s.kind, simulator::SiteKind::Village)).count();
        let townships = plan.sites.iter().filter(|s| matches!(s.kind, simulator::SiteKind::Township)).count();
        let villages = if townships > 0 {
            format!("{villages} villages in {townships} townships")
        } else {
            format!("{villages} villages")
        };
        format!(
            "Village telemetry demo: a simulated county\n\
             \x20 county:     {villages}, {} gateways; {}\n\
             \x20 broker:     mqtt://{} (embedded)\n\
             \x20 data:       {}\n\
             \x20 dashboard:  http://{}/\n\
             \x20 API:        http://{}/api/v1/summary, /api/v1/devices, /api/v1/latest, /api/v1/series, /api/v1/stream\n\
             \x20 metrics:    http://{}/metrics\n\
             \x20 admin token: {}\n\
             \x20 operator-2 token: {} (approves red and orange broadcasts the admin creates)\n\
             \x20 people (sign in on the dashboard):\n{}\
             Broadcast: curl -X POST http://{}/api/v1/broadcasts -H 'Authorization: Token <admin>' -H 'content-type: application/json' -d '{{\"level\":\"red\",\"text\":\"山洪预警：请立即撤离到高处。\",\"targets\":[\"all\"],\"expires_at\":\"<RFC 3339>\"}}'\n\
             Faults: curl -X POST http://{}/api/v1/sim/faults -H 'Authorization: Token <admin>' -H 'content-type: application/json' -d '{{\"device\":\"{}\",\"fault\":\"pump_trip\"}}'\n\
             Press Ctrl-C to stop.",
            plan.gateways.len(),
            kinds.join(", "),
            self.ingest.mqtt.map(|a| a.to_string()).unwrap_or_default(),
            self.data_dir.display(),
            self.ingest.http,
            self.ingest.http,
            self.ingest.http,
            self.admin_token,
            self.operator_token,
            self.people
                .iter()
                .map(|p| format!(
                    "    {:<7} {:<9} tenant {:<7} password {}\n",
                    p.name,
                    format!("{:?}", p.role).to_lowercase(),
                    p.tenant,
                    p.password
                ))
                .collect::<String>(),
            self.ingest.http,
            self.ingest.http,
            plan.devices().find(|d| d.kind == DeviceKind::PumpStation).map_or("", |d| d.id.as_str()),
        )
    }
}

/// Makes (or, in a data directory kept from before, resets) the demo's people with the
/// given passwords or new ones.
fn add_people(
    data_dir: &std::path::Path,
    passwords: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Vec<DemoPerson>> {
    let mut people = Vec::new();
    for (name, role, tenant) in DEMO_PEOPLE {
        let password = passwords.get(name).cloned().unwrap_or_else(crate::people::users::generate_password);
        let grants = vec![crate::people::users::Grant { tenant: tenant.to_string(), role }];
        crate::people::add_offline(data_dir, name, &password, grants, true)
            .with_context(|| format!("making the demo's user {name}"))?;
        people.push(DemoPerson { name: name.to_string(), role, tenant: tenant.to_string(), password });
    }
    Ok(people)
}

/// Where a demo gateway keeps its queue, command replay window and key.
pub fn gateway_queue_dir(data_dir: &std::path::Path, gateway: &str) -> PathBuf {
    data_dir.join("gateways").join(gateway).join("queue")
}

/// The key of a demo gateway (made at start beside its queue), for tests that act as it.
pub fn gateway_identity(data_dir: &std::path::Path, gateway: &str) -> anyhow::Result<gateway::identity::Identity> {
    let path = gateway_queue_dir(data_dir, gateway).join(gateway::identity::FILE);
    gateway::identity::Identity::load(&path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The inventory of a simulated county.
pub fn inventory_of(plan: &Plan) -> InventoryFile {
    let tenant_of_site = |site: &str| {
        plan.gateways.iter().find(|g| g.site == site).map(|g| g.tenant.clone()).unwrap_or_else(|| "county".into())
    };
    let sites = plan
        .sites
        .iter()
        .map(|s| Site {
            id: s.id.clone(),
            name: s.name.clone(),
            kind: format!("{:?}", s.kind).to_lowercase(),
            tenant: tenant_of_site(&s.id),
            lat: s.lat,
            lon: s.lon,
            village: s.village.clone(),
            district: s.district.clone(),
            township: s.township.clone(),
        })
        .collect();
    let gateways = plan
        .gateways
        .iter()
        .map(|g| GatewayInfo { id: g.id.clone(), tenant: g.tenant.clone(), site: g.site.clone(), public_key: None })
        .collect();
    let mut devices = Vec::new();
    for g in &plan.gateways {
        for d in &g.devices {
            devices.push(Device {
                id: d.id.clone(),
                kind: d.kind,
                site: d.site.clone(),
                gateway: g.id.clone(),
                model: d.model.clone(),
                lat: Some(d.lat),
                lon: Some(d.lon),
                public_key: None,
            });
            for child in &d.children {
                devices.push(Device {
                    id: child.clone(),
                    kind: DeviceKind::CowCollar,
                    site: d.site.clone(),
                    gateway: g.id.clone(),
                    model: d.model.clone(),
                    lat: Some(d.lat),
                    lon: Some(d.lon),
                    public_key: None,
                });
            }
        }
    }
    InventoryFile { sites, gateways, devices }
}

/// The district metered areas of a simulated county (each village, fed through its inlet
/// meter), with the villages' names.
pub fn districts_of(plan: &Plan) -> Vec<crate::inventory::MeteredDistrict> {
    plan.districts
        .iter()
        .map(|d| crate::inventory::MeteredDistrict {
            id: d.id.clone(),
            name: plan.sites.iter().find(|s| s.id == d.id).map_or_else(|| d.id.clone(), |s| s.name.clone()),
            supply_district: d.supply_district.clone(),
            inlets: d.inlets.clone(),
            sites: d.sites.clone(),
        })
        .collect()
}

/// Starts one gateway agent under `stop`; returns what stops it alone, and its task.
fn spawn_gateway(
    cfg: &GatewayConfig,
    library: &gateway::Library,
    stop: &CancellationToken,
) -> anyhow::Result<(CancellationToken, tokio::task::JoinHandle<()>)> {
    let gw = gateway::Gateway::new(cfg.clone(), library.clone(), daemon::system_clock())
        .map_err(|e| anyhow::anyhow!("gateway {}: {e}", cfg.gateway))?;
    let own = stop.child_token();
    Ok((own.clone(), tokio::spawn(gw.run(own))))
}

/// The gateway configs of a simulated county, pointed at its Modbus servers and a broker.
pub fn gateway_configs(plan: &Plan, endpoints: &[(String, SocketAddr)], broker: SocketAddr) -> Vec<GatewayConfig> {
    plan.gateways
        .iter()
        .map(|g| {
            let endpoint = endpoints.iter().find(|(id, _)| *id == g.id).map(|(_, a)| *a);
            let mut cfg = GatewayConfig::new(
                &g.id,
                &g.tenant,
                MqttConfig {
                    host: broker.ip().to_string(),
                    port: broker.port(),
                    client_id: g.id.clone(),
                    codec: Codec::Binary,
                    keep_alive: Duration::from_secs(30),
                    max_inflight: 32,
                    ..MqttConfig::default()
                },
            );
            cfg.publish = PublishConfig { resend_after: Duration::from_secs(10), ..PublishConfig::default() };
            cfg.queue = QueueConfig { dir: None, max_bytes: 16 * 1024 * 1024 };
            cfg.health_interval = Duration::from_secs(30);
            cfg.devices = g
                .devices
                .iter()
                .filter_map(|d| {
                    let mut dev = DeviceConfig::tcp(&d.id, &d.model, endpoint?, d.unit);
                    dev.site = Some(d.site.clone());
                    dev.interval = Duration::from_millis(d.interval_ms);
                    dev.timeout = Duration::from_millis(500);
                    dev.retries = 0;
                    Some(dev)
                })
                .collect();
            cfg
        })
        .collect()
}
