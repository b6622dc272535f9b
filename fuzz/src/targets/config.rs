//! TOML configuration through `conf`: device profiles (also the ones a gateway loads from
//! its profile directory), the gateway's config (also what arrives signed on its config
//! topic), ingest's config with its `[alerts]` table, the inventory, and alert rule packs.
//!
//! The first byte picks the file kind (modulo 5), the rest is the text. Checks: a file
//! that is refused says where, as `conf` promises: every error names the file, and its
//! line and column lie inside the text. A profile that loads plans reads that Modbus can
//! make (at most 125 registers or 2000 bits a request, inside the address space) and that
//! cover each point; a gateway config that loads validates again against the same
//! library; an inventory that loads finds each device it lists, owned by its gateway.

use std::path::Path;

use conf::{ConfigErrors, Source};
use gateway::config::GatewayConfig;
use gateway::modbus::plan;
use gateway::modbus::{Attempts, DeviceReader};
use gateway::profile::{Library, Profile};
use ingest::alerts::config::AlertsConfig;
use ingest::config::IngestConfig;
use ingest::inventory::Inventory;
use ingest::rules::config::RuleSet;

/// Where relative paths of an ingest config point: nowhere that exists, so nothing is read.
const BASE: &str = "/nonexistent/village-fuzz";

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let src = Source::from_text("fuzz.toml", text);
    match kind % 5 {
        0 => match Profile::parse(&src) {
            Ok(p) => check_profile(&p),
            Err(e) => check_located(text, &e),
        },
        1 => match GatewayConfig::from_source(&src, library()) {
            Ok(cfg) => assert_eq!(cfg.validate(library()), Ok(()), "a loaded gateway config does not validate"),
            Err(e) => check_located(text, &e),
        },
        2 => {
            if let Err(e) = IngestConfig::from_source(&src, Path::new(BASE)) {
                check_located(text, &e);
            }
            if let Err(e) = AlertsConfig::from_table(&src, Path::new(BASE)) {
                check_located(text, &e);
            }
        }
        3 => match Inventory::from_source(&src) {
            Ok(inv) => {
                for d in inv.devices() {
                    let found = inv.device(&d.id).is_some() || inv.gateway(&d.id).is_some();
                    assert!(found, "device {} listed but not found", d.id);
                    let owned = matches!(inv.ownership(&d.gateway, &d.id), ingest::inventory::Ownership::Own);
                    assert!(owned, "device {} is not its gateway {}'s", d.id, d.gateway);
                }
            }
            Err(e) => check_located(text, &e),
        },
        _ => {
            if let Err(e) = RuleSet::from_sources(std::slice::from_ref(&src)) {
                check_located(text, &e);
            }
        }
    }
}

fn library() -> &'static Library {
    static LIBRARY: std::sync::OnceLock<Library> = std::sync::OnceLock::new();
    LIBRARY.get_or_init(|| Library::builtin().0)
}

/// Every error of a refused file names it and a position inside its text.
pub fn check_located(text: &str, errors: &ConfigErrors) {
    assert!(!errors.0.is_empty(), "a refusal without a reason");
    let lines = text.split('\n').count();
    for e in &errors.0 {
        assert!(!e.reason.is_empty(), "an error without a reason: {e:?}");
        if let Some(line) = e.line {
            assert!((1..=lines).contains(&line), "error at line {line} of a {lines}-line text: {e}");
            let width = text.split('\n').nth(line - 1).map_or(0, |l| l.chars().count());
            assert!(e.column.is_some_and(|c| (1..=width + 1).contains(&c)), "error at a column past its line: {e}");
        }
    }
}

/// The reads a loaded profile plans are ones Modbus can make, and cover its points.
fn check_profile(p: &Profile) {
    let mut spans: Vec<_> = p.points.iter().map(|pt| (pt.table, pt.address, pt.width())).collect();
    spans.extend(p.points.iter().filter_map(|pt| pt.quality.as_ref()).map(|q| (q.table, q.address, 1)));
    let planned = plan::plan(&spans, p.max_gap);
    for r in &planned.reads {
        assert!(r.count >= 1 && r.count <= r.table.max_read(), "a read of {} from {} {}", r.count, r.table, r.start);
        assert!(u32::from(r.start) + u32::from(r.count) <= 65_536, "a read past the address space");
    }
    for (span, loc) in spans.iter().zip(&planned.locations) {
        let r = planned.reads[loc.read];
        assert_eq!(r.table, span.0);
        assert_eq!(u32::from(r.start) + u32::from(loc.offset), u32::from(span.1), "a point planned at another address");
        assert!(loc.offset + span.2 <= r.count, "a point not covered by its read");
    }
    let reader = DeviceReader::new("dev-1", 1, std::sync::Arc::new(p.clone()), Attempts::default());
    assert_eq!(reader.reads(), planned.reads.as_slice());
}
