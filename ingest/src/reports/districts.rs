//! Which meters are a district's inlets and which its customers, as the inventory says
//! ([`crate::inventory::MeteredDistrict`]), with what the reports need beside: tenant,
//! gateways, the supply district's pump station.

use std::collections::BTreeSet;

use protocol::DeviceKind;

use crate::auth::Reader;
use crate::inventory::Inventory;

/// One district metered area, resolved against the inventory's devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Dma {
    /// District id.
    pub id: String,
    /// Name for people (the id when the inventory gives none; the village's name in the
    /// simulated county).
    pub name: String,
    /// Tenant (of its first site).
    pub tenant: String,
    /// The water-supply district feeding it.
    pub supply_district: Option<String>,
    /// Inlet meters.
    pub inlets: Vec<String>,
    /// Customer meters, sorted.
    pub customers: Vec<String>,
    /// Gateways reading its inlets and customers.
    pub gateways: BTreeSet<String>,
    /// Device id -> its gateway, for inlets and customers.
    pub gateway_of: std::collections::HashMap<String, String>,
    /// Pump stations of its supply district (their outlet pressure and pump state).
    pub stations: Vec<String>,
}

/// Every district the reader may see, sorted by id; only `only` when given (`None` if it
/// does not exist or is hidden).
pub fn resolve(inventory: &Inventory, reader: &Reader, only: Option<&str>) -> Vec<Dma> {
    let sites: std::collections::HashMap<String, crate::inventory::Site> =
        inventory.sites().into_iter().map(|s| (s.id.clone(), s)).collect();
    let devices = inventory.devices();
    let inlets: BTreeSet<String> = inventory.districts().into_iter().flat_map(|d| d.inlets).collect();
    let mut out = Vec::new();
    for d in inventory.districts() {
        if only.is_some_and(|o| o != d.id) {
            continue;
        }
        let tenant = d.sites.first().and_then(|s| sites.get(s)).map(|s| s.tenant.clone()).unwrap_or_default();
        if !reader.may_see(&tenant) {
            continue;
        }
        let name = if d.name.is_empty() {
            d.sites.first().and_then(|s| sites.get(s)).map_or_else(|| d.id.clone(), |s| s.name.clone())
        } else {
            d.name.clone()
        };
        let customers: Vec<String> = devices
            .iter()
            .filter(|x| x.kind == DeviceKind::WaterMeter && d.sites.contains(&x.site) && !inlets.contains(&x.id))
            .map(|x| x.id.clone())
            .collect();
        let mut gateway_of = std::collections::HashMap::new();
        for x in devices.iter().filter(|x| d.inlets.contains(&x.id) || customers.binary_search(&x.id).is_ok()) {
            gateway_of.insert(x.id.clone(), x.gateway.clone());
        }
        let stations = devices
            .iter()
            .filter(|x| x.kind == DeviceKind::PumpStation)
            .filter(|x| {
                d.supply_district.is_some()
                    && sites.get(&x.site).and_then(|s| s.district.as_ref()) == d.supply_district.as_ref()
            })
            .map(|x| x.id.clone())
            .collect();
        out.push(Dma {
            name,
            tenant,
            supply_district: d.supply_district.clone(),
            inlets: d.inlets.clone(),
            gateways: gateway_of.values().cloned().collect(),
            gateway_of,
            customers,
            stations,
            id: d.id,
        });
    }
    out
}
