//! Real peers for the interop tests: a pymodbus device (TCP, or RTU on one end of a socat
//! pseudo-terminal pair), mosquitto, test certificates made with the openssl CLI, and the
//! gateway binary. Every peer is a child process killed when its handle drops.
//!
//! The generic part (child processes, ports, finding tools and the venv's Python) is the
//! shared `testkit`; what is here knows these particular peers.
//!
//! A missing peer fails the test with what to run (`.ci/setup`): a skipped interop test
//! proves nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{Peer, free_port, python_with, quiet, root, run, tool, wait_listening};

/// The Python with pymodbus: `$VT_PYTHON` or `.venv/bin/python`.
pub(crate) fn python() -> PathBuf {
    python_with("pymodbus")
}

fn device_script() -> PathBuf {
    root().join("tests/interop/peers/modbus_device.py")
}

/// A pymodbus device on Modbus TCP (units 1-3, see peers/modbus_device.py).
pub(crate) async fn modbus_tcp() -> (Peer, SocketAddr) {
    let port = free_port();
    let mut peer = Peer::spawn(
        "pymodbus TCP server",
        Command::new(python()).arg(device_script()).args(["--tcp", &port.to_string()]).stdout(quiet()).stderr(quiet()),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut peer).await;
    (peer, addr)
}

/// A socat pseudo-terminal pair: what one end writes the other reads, as on a serial line.
pub(crate) async fn pty_pair(dir: &Path) -> (Peer, PathBuf, PathBuf) {
    let (a, b) = (dir.join("tty-gateway"), dir.join("tty-device"));
    let peer = Peer::spawn(
        "socat",
        Command::new(tool("socat", "socat"))
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stderr(Stdio::null()),
    );
    for _ in 0..100 {
        if a.exists() && b.exists() {
            return (peer, a, b);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("socat made no pty pair");
}

/// A pymodbus device on Modbus RTU at `tty`, once it says it is serving.
///
/// Importing pymodbus takes seconds on a loaded machine; a fixed sleep made the first
/// request time out now and then. The script prints `serving` after its imports, just
/// before it opens the port, so we wait for that line (and a moment for the open).
pub(crate) async fn modbus_rtu(tty: &Path, baud: u32) -> Peer {
    let mut peer = Peer::spawn(
        "pymodbus RTU server",
        Command::new(python())
            .arg(device_script())
            .args(["--rtu", &tty.to_string_lossy(), "--baud", &baud.to_string()])
            .stdout(Stdio::piped())
            .stderr(quiet()),
    );
    let stdout = peer.child.stdout.take().expect("piped stdout");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let serving = lines.by_ref().map_while(Result::ok).any(|l| l.trim() == "serving");
        let _ = tx.send(serving);
        // Keep draining so the peer never blocks on a full pipe.
        for _ in lines {}
    });
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(true)) => {}
        _ => {
            peer.assert_running();
            panic!("pymodbus RTU server did not say it was serving within 60 s");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    peer
}

/// A CA, a server certificate for 127.0.0.1, and client certificates with the given
/// common names, made with the openssl CLI in `dir` (never committed).
pub(crate) fn make_certs(dir: &Path, clients: &[&str]) {
    let openssl = tool("openssl", "openssl");
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    run(Command::new(&openssl).args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]).args([
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.pem"),
        "-subj",
        "/CN=vt-test-ca",
    ]));
    let sign = |name: &str, ext: Option<&str>| {
        run(Command::new(&openssl).args(["req", "-newkey", "rsa:2048", "-nodes"]).args([
            "-keyout",
            &d(&format!("{name}.key")),
            "-out",
            &d(&format!("{name}.csr")),
            "-subj",
            &format!("/CN={name}"),
        ]));
        let mut cmd = Command::new(&openssl);
        cmd.args(["x509", "-req", "-days", "2", "-CA", &d("ca.pem"), "-CAkey", &d("ca.key"), "-CAcreateserial"])
            .args(["-in", &d(&format!("{name}.csr")), "-out", &d(&format!("{name}.pem"))]);
        if let Some(ext) = ext {
            std::fs::write(dir.join("ext.cnf"), ext).expect("write ext");
            cmd.args(["-extfile", &d("ext.cnf")]);
        }
        run(&mut cmd);
    };
    sign("server", Some("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"));
    // An extension makes the certificate X.509 v3: webpki refuses v1 certificates.
    for c in clients {
        sign(c, Some("extendedKeyUsage=clientAuth\n"));
    }
}

/// A mosquitto broker with a config written to `dir/mosquitto.conf`; restartable on the
/// same ports.
pub(crate) struct Mosquitto {
    peer: Option<Peer>,
    conf: PathBuf,
    pub(crate) port: u16,
}

impl Mosquitto {
    /// Starts mosquitto with `config` (which must listen on `port` among others).
    pub(crate) async fn start(dir: &Path, port: u16, config: &str) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, config).expect("write mosquitto.conf");
        let mut m = Mosquitto { peer: None, conf, port };
        m.restart().await;
        m
    }

    /// A plain loopback broker for anyone (ingest and gateways in outage tests).
    pub(crate) async fn plain(dir: &Path) -> Mosquitto {
        let port = free_port();
        let config = format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n");
        Mosquitto::start(dir, port, &config).await
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut p) = self.peer.take() {
            p.kill();
        }
    }

    pub(crate) async fn restart(&mut self) {
        self.stop();
        let mut peer = Peer::spawn(
            "mosquitto",
            Command::new(tool("mosquitto", "mosquitto")).arg("-c").arg(&self.conf).stderr(quiet()),
        );
        wait_listening(SocketAddr::from(([127, 0, 0, 1], self.port)), &mut peer).await;
        self.peer = Some(peer);
    }
}

/// The gateway binary, built for the host on first use.
pub(crate) fn gateway_binary() -> PathBuf {
    testkit::built_binary("gateway")
}

/// Profiles for the pymodbus device's units beside the built-in library: a test device
/// with a writable set-point and a mailbox (unit 1's free registers), and the counter.
pub(crate) fn library() -> gateway::Library {
    let (mut lib, errors) = gateway::Library::builtin();
    assert!(errors.is_empty(), "{errors:?}");
    for (name, text) in [
        (
            "interop-controller.toml",
            r#"
model = "interop-controller"
kind = "pump_station"
points = [{ metric = "tank_level", table = "holding", address = 12, type = "u16", scale = 0.01, unit = "m" }]
writable = [{ name = "level_setpoint", table = "holding", address = 10, type = "u16", scale = 0.01, unit = "m", min = 0.5, max = 4.0 }]
mailbox = { table = "holding", address = 1000, size = 1000 }
"#,
        ),
        (
            "interop-speaker.toml",
            r#"
model = "interop-speaker"
kind = "speaker"
points = [{ metric = "speaker_volume", table = "holding", address = 12, type = "u16", unit = "%" }]
mailbox = { table = "holding", address = 1000, size = 1000 }
"#,
        ),
        (
            "interop-counter.toml",
            r#"
model = "interop-counter"
kind = "water_meter"
points = [{ metric = "volume_total", table = "holding", address = 0, type = "u16", unit = "m3" }]
"#,
        ),
    ] {
        lib.add(&conf::Source::from_text(name, text)).unwrap_or_else(|e| panic!("{e}"));
    }
    lib
}
