//! The gateway as built for the boards it runs on: the aarch64 binary (Debian's cross
//! linker) under qemu-aarch64, polling a simulated pump station over Modbus TCP and
//! publishing through mosquitto to ingest.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ingest::demo::inventory_of;
use ingest::inventory::Inventory;
use simulator::{County, CountySpec};
use testkit::{Peer, eventually, quiet, root, run, tool};

use crate::common::Mosquitto;
use crate::mqtt::ingest_on;

const TARGET: &str = "aarch64-unknown-linux-gnu";

/// Builds the gateway for aarch64 with the `edge` profile it ships with.
fn aarch64_gateway() -> PathBuf {
    tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).current_dir(root()).args([
        "build",
        "-q",
        "-p",
        "gateway",
        "--bin",
        "gateway",
        "--profile",
        "edge",
        "--target",
        TARGET,
    ]));
    let exe = std::env::current_exe().expect("current exe");
    let target_dir = exe.ancestors().nth(3).expect("target/").to_path_buf();
    target_dir.join(TARGET).join("edge").join("gateway")
}

fn qemu(binary: &PathBuf) -> Command {
    let mut cmd = Command::new(tool("qemu-aarch64", "qemu-user"));
    cmd.env("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu").arg(binary);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aarch64_gateway_runs_under_qemu_and_polls_a_simulated_pump_station() {
    let binary = tokio::task::spawn_blocking(aarch64_gateway).await.unwrap();
    let help = qemu(&binary).arg("--help").output().expect("qemu-aarch64 runs the gateway");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Village telemetry gateway") && help.contains("generate-config"), "{help}");

    let dir = tempfile::tempdir().unwrap();
    let county = County::new(CountySpec::demo());
    county.set_random_outages(false);
    let endpoints = county.serve().await.unwrap();
    let plan = county.plan().clone();
    let gw = plan.gateways.iter().find(|g| g.devices.iter().any(|d| d.model == "vt-sim-pump-station")).unwrap();
    let pump = gw.devices.iter().find(|d| d.model == "vt-sim-pump-station").unwrap();
    let addr = endpoints.iter().find(|(id, _)| *id == gw.id).unwrap().1;
    let mosquitto = Mosquitto::plain(dir.path()).await;
    // The gateway's key is made in its queue directory before ingest starts, so the
    // inventory can enrol it; the gateway then trusts ingest's key for what comes down.
    let key = crate::keys::enrol_in(&dir.path().join("queue"));
    let mut file = inventory_of(&plan);
    for g in file.gateways.iter_mut().filter(|g| g.id == gw.id) {
        g.public_key = key.clone();
    }
    let running = ingest_on(&dir.path().join("ingest"), mosquitto.port, None, Inventory::from_file(file)).await;
    let command_key: String = running.state.commands.public_key().iter().map(|b| format!("{b:02x}")).collect();

    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "gateway = \"{}\"\ntenant = \"{}\"\ncommand_key = \"{command_key}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[publish]\ninterval_ms = 500\n\
             [queue]\ndir = \"{}\"\n[[devices]]\nid = \"{}\"\nprofile = \"vt-sim-pump-station\"\ntcp = \"{addr}\"\nunit = {}\ninterval_ms = 500\n",
            gw.id,
            gw.tenant,
            mosquitto.port,
            dir.path().join("queue").display(),
            pump.id,
            pump.unit
        ),
    )
    .unwrap();
    let check = qemu(&binary).arg("check").arg("--config").arg(&config).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let _gateway =
        Peer::spawn("gateway (aarch64, qemu)", qemu(&binary).arg("run").arg("--config").arg(&config).stderr(quiet()));

    let level =
        eventually("the pump station's tank level through the aarch64 gateway", Duration::from_secs(60), || async {
            running
                .state
                .store
                .latest()
                .into_iter()
                .find(|p| p.device == pump.id && p.metric.name() == "tank_level")
                .map(|p| p.point.value)
        })
        .await;
    assert!((0.0..10.0).contains(&level), "{level}");
    running.stop().await;
    county.shutdown();
}
