//! Loopback ports: a free one to hand a peer, and waiting until a peer listens on it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::process::Peer;

/// A TCP port on 127.0.0.1 that was free a moment ago, for a peer that cannot bind port 0
/// and report back (mosquitto, pymodbus, VictoriaMetrics, a restarted ingest).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Waits until something accepts TCP connections on `addr`; panics if `peer` exits first
/// or nothing listens within a minute (Python peers import slowly on a loaded machine).
pub async fn wait_listening(addr: SocketAddr, peer: &mut Peer) {
    for _ in 0..1200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        peer.assert_running();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} does not listen on {addr}", peer.name);
}
