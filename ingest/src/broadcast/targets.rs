//! Targets: how an operator says where a broadcast goes, and which speakers that is.
//!
//! A target is spelled `all`, `village:<site>`, `area:<district>`, `group:<name>` or
//! `speaker:<device>`; a bare id is looked up as a speaker, then a village (site id or
//! name), then an area, then a group. Resolution happens once, when the broadcast is
//! created, against the inventory of that moment: the deliveries are the speakers it named
//! then, and the audit log records them.
//!
//! Invariants:
//! - Every speaker resolved belongs to the broadcast's tenant; naming a speaker, village
//!   or group of another tenant is an error, not a silent skip.
//! - A target that matches nothing is an error naming it, so a typo never sends a flood
//!   warning to nobody.

use std::collections::BTreeMap;

use protocol::DeviceKind;

use super::config::BroadcastConfig;
use super::model::Target;
use crate::inventory::Inventory;

/// Parses one spelled target (the prefix is required for all but `all`).
pub fn parse(text: &str) -> Result<Target, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("all") {
        return Ok(Target::All);
    }
    let (kind, id) = text.split_once(':').ok_or_else(|| format!("target '{text}' has no kind"))?;
    protocol::id::validate(id).map_err(|e| format!("target '{text}': {e}"))?;
    let id = id.to_string();
    match kind {
        "village" => Ok(Target::Village(id)),
        "area" => Ok(Target::Area(id)),
        "group" => Ok(Target::Group(id)),
        "speaker" => Ok(Target::Speaker(id)),
        other => Err(format!("target kind '{other}' is not one of village, area, group, speaker")),
    }
}

/// What a set of targets resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The tenant of every speaker.
    pub tenant: String,
    /// The targets, each spelled out.
    pub targets: Vec<Target>,
    /// Speaker id -> its gateway, sorted by speaker.
    pub speakers: BTreeMap<String, String>,
}

/// Resolves the targets an operator gave. `tenant` is the tenant asked for (or implied
/// by the caller's token); without it the speakers found decide, and must agree.
pub fn resolve(
    given: &[String],
    tenant: Option<&str>,
    inventory: &Inventory,
    config: &BroadcastConfig,
) -> Result<Resolved, String> {
    if given.is_empty() {
        return Err("targets: name at least one speaker, village, area, group or \"all\"".into());
    }
    let sites = inventory.sites();
    let site_tenant: BTreeMap<&str, &str> = sites.iter().map(|s| (s.id.as_str(), s.tenant.as_str())).collect();
    let speakers: Vec<_> = inventory.devices().into_iter().filter(|d| d.kind == DeviceKind::Speaker).collect();
    let tenant_of = |site: &str| site_tenant.get(site).copied().unwrap_or("");
    let mut targets = Vec::new();
    for text in given {
        let target = if text.contains(':') || text.eq_ignore_ascii_case("all") {
            parse(text)?
        } else if speakers.iter().any(|d| d.id == *text) {
            Target::Speaker(text.clone())
        } else if let Some(s) =
            sites.iter().find(|s| s.id == *text || s.name == *text || s.village.as_deref() == Some(text))
        {
            Target::Village(s.village.clone().unwrap_or_else(|| s.id.clone()))
        } else if sites.iter().any(|s| s.district.as_deref() == Some(text)) {
            Target::Area(text.clone())
        } else if config.groups.contains_key(text) {
            Target::Group(text.clone())
        } else {
            return Err(format!("target '{text}' is no speaker, village, area or group"));
        };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    let mut chosen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for target in &targets {
        let before = chosen.len();
        let matches = |d: &crate::inventory::Device| -> bool {
            let site = sites.iter().find(|s| s.id == d.site);
            match target {
                Target::All => tenant.is_none_or(|t| tenant_of(&d.site) == t),
                Target::Speaker(id) => d.id == *id,
                Target::Village(v) => site.is_some_and(|s| s.village.as_deref() == Some(v.as_str()) || s.id == *v),
                Target::Area(a) => site.is_some_and(|s| s.district.as_deref() == Some(a.as_str())),
                Target::Group(g) => config.groups.get(g).is_some_and(|g| g.speakers.contains(&d.id)),
            }
        };
        for d in speakers.iter().filter(|d| matches(d)) {
            chosen.insert(d.id.clone(), (d.gateway.clone(), tenant_of(&d.site).to_string()));
        }
        if let Target::Group(g) = target {
            let group = config.groups.get(g).ok_or_else(|| format!("no speaker group '{g}'"))?;
            if let Some(missing) = group.speakers.iter().find(|s| !speakers.iter().any(|d| d.id == **s)) {
                return Err(format!("group '{g}' names '{missing}', which is not a speaker in the inventory"));
            }
        }
        if chosen.len() == before && !matches!(target, Target::All) && !speakers.iter().any(matches) {
            return Err(format!("target '{}' has no speakers", target.spelled()));
        }
    }
    let tenants: std::collections::BTreeSet<&str> = chosen.values().map(|(_, t)| t.as_str()).collect();
    let tenant = match (tenant, tenants.len()) {
        (Some(t), _) => {
            if let Some(other) = tenants.iter().find(|x| **x != t) {
                return Err(format!("the targets include speakers of tenant '{other}', not '{t}'"));
            }
            t.to_string()
        }
        (None, 1) => tenants.iter().next().map(|t| (*t).to_string()).unwrap_or_default(),
        (None, 0) => return Err("the targets have no speakers".into()),
        (None, _) => {
            return Err(format!(
                "the targets span tenants {}; name one with \"tenant\"",
                tenants.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    };
    if chosen.is_empty() {
        return Err(format!("tenant '{tenant}' has no speakers"));
    }
    Ok(Resolved { tenant, targets, speakers: chosen.into_iter().map(|(s, (g, _))| (s, g)).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Device, GatewayInfo, InventoryFile, Site};

    fn inventory() -> Inventory {
        let site = |id: &str, tenant: &str, district: &str| Site {
            id: id.into(),
            name: format!("{id} village"),
            kind: "village".into(),
            tenant: tenant.into(),
            lat: 0.0,
            lon: 0.0,
            village: Some(id.into()),
            district: Some(district.into()),
            township: None,
        };
        let speaker = |id: &str, site: &str| Device {
            id: id.into(),
            kind: DeviceKind::Speaker,
            site: site.into(),
            gateway: format!("gw-{site}"),
            model: "vt-sim-speaker".into(),
            lat: None,
            lon: None,
            public_key: None,
        };
        Inventory::from_file(InventoryFile {
            sites: vec![
                site("dongcun", "county", "district-1"),
                site("xicun", "county", "district-1"),
                site("farm", "dairy", "d9"),
            ],
            gateways: ["dongcun", "xicun", "farm"]
                .iter()
                .map(|s| GatewayInfo {
                    id: format!("gw-{s}"),
                    tenant: "county".into(),
                    site: (*s).into(),
                    public_key: None,
                })
                .collect(),
            devices: vec![
                speaker("dongcun-speaker-1", "dongcun"),
                speaker("xicun-speaker-1", "xicun"),
                speaker("farm-speaker-1", "farm"),
            ],
        })
    }

    #[test]
    fn bare_ids_resolve_to_speakers_villages_and_areas_of_one_tenant() {
        let inv = inventory();
        let c = BroadcastConfig::default();
        let r = resolve(&["dongcun".into()], None, &inv, &c).unwrap();
        assert_eq!(r.targets, [Target::Village("dongcun".into())]);
        assert_eq!(r.speakers.keys().collect::<Vec<_>>(), ["dongcun-speaker-1"]);
        assert_eq!(r.tenant, "county");
        let r = resolve(&["district-1".into(), "xicun-speaker-1".into()], None, &inv, &c).unwrap();
        assert_eq!(r.speakers.len(), 2);
        let r = resolve(&["all".into()], Some("county"), &inv, &c).unwrap();
        assert_eq!(r.speakers.len(), 2, "all means all of the tenant's speakers");
    }

    #[test]
    fn unknown_targets_and_mixed_tenants_are_errors_that_name_them() {
        let inv = inventory();
        let c = BroadcastConfig::default();
        assert!(resolve(&["nowhere".into()], None, &inv, &c).unwrap_err().contains("'nowhere'"));
        assert!(resolve(&["all".into()], None, &inv, &c).unwrap_err().contains("span tenants"));
        assert!(resolve(&["farm-speaker-1".into()], Some("county"), &inv, &c).unwrap_err().contains("'dairy'"));
        assert!(resolve(&[], None, &inv, &c).is_err());
        assert!(resolve(&["planet:x".into()], None, &inv, &c).is_err());
    }
}
