//! Temporary stub of the simulator API (replaced by the real simulator on merge).
#![allow(missing_docs, unreachable_pub, clippy::todo)]
use std::net::SocketAddr;
use std::sync::Arc;
#[derive(Debug, Clone)]
pub struct CountySpec {
    pub villages: usize,
    pub meters: usize,
    pub cows: usize,
    pub speakers_per_village: usize,
    pub seed: u64,
    pub speed: f64,
}
impl CountySpec {
    pub fn demo() -> CountySpec {
        CountySpec { villages: 3, meters: 50, cows: 100, speakers_per_village: 1, seed: 1, speed: 1.0 }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteKind {
    Village,
    Waterworks,
    Farm,
}
#[derive(Debug, Clone)]
pub struct SitePlan {
    pub id: String,
    pub name: String,
    pub kind: SiteKind,
    pub village: Option<String>,
    pub district: Option<String>,
    pub lat: f64,
    pub lon: f64,
}
#[derive(Debug, Clone)]
pub struct GatewayPlan {
    pub id: String,
    pub tenant: String,
    pub site: String,
    pub devices: Vec<DevicePlan>,
}
#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub id: String,
    pub kind: protocol::DeviceKind,
    pub site: String,
    pub model: String,
    pub unit: u8,
    pub interval_ms: u64,
    pub children: Vec<String>,
    pub lat: f64,
    pub lon: f64,
}
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub sites: Vec<SitePlan>,
    pub gateways: Vec<GatewayPlan>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    PumpTrip,
}
impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pump_trip")
    }
}
impl std::str::FromStr for Fault {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Fault, SimError> {
        Err(SimError::UnknownFault(s.into()))
    }
}
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown device {0}")]
    UnknownDevice(String),
    #[error("unknown fault {0}")]
    UnknownFault(String),
}
#[derive(Clone)]
pub struct County {
    plan: Arc<Plan>,
}
impl County {
    pub fn new(_spec: CountySpec) -> County {
        County { plan: Arc::new(Plan::default()) }
    }
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub async fn serve(&self) -> std::io::Result<Vec<(String, SocketAddr)>> {
        Ok(vec![])
    }
    pub fn shutdown(&self) {}
    pub fn inject(&self, d: &str, _f: Fault) -> Result<(), SimError> {
        Err(SimError::UnknownDevice(d.into()))
    }
    pub fn clear(&self, d: &str) -> Result<(), SimError> {
        Err(SimError::UnknownDevice(d.into()))
    }
    pub fn faults(&self) -> Vec<(String, Fault)> {
        vec![]
    }
}
