//! Modbus TCP servers: one per gateway, modelling an RS-485-to-Ethernet converter with
//! the gateway's devices behind it, addressed by unit id.
//!
//! Invariants:
//! - A unit id with no device, an unreachable (offline) device, and a broadcast (unit 0)
//!   get no response at all: the client times out, as on a real RS-485 bus where nobody
//!   answers. Nothing else is ever silent.
//! - Register contents come from the world under its lock (see `world`), so one request
//!   sees one consistent step of the physics.
//! - A slow speaker's answer is held back by its delay after the request was carried out
//!   (outside the world's lock), as a terminal behind a slow link answers late; requests
//!   on one connection are answered in order, so it delays the bus behind it too.
//! - Servers hold only a weak reference to the world: when the last `County` handle is
//!   dropped the world goes away and the shutdown channel closes, which ends the servers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use firmware::modbus::{Exception, Table};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tracing::{debug, warn};

use crate::county::lock;
use crate::world::World;

/// The service behind one gateway's server.
#[derive(Debug, Clone)]
pub(crate) struct BusService {
    pub(crate) world: Weak<Mutex<World>>,
    pub(crate) bus: usize,
}

fn code(e: Exception) -> ExceptionCode {
    ExceptionCode::new(e.code())
}

impl BusService {
    /// Carries out a request; returns the answer and how late to give it (ms).
    fn handle(&self, req: SlaveRequest<'static>) -> (Result<Option<Response>, ExceptionCode>, u32) {
        let Some(world) = self.world.upgrade() else { return (Ok(None), 0) };
        let mut w = lock(&world);
        let Some(dev) = w.device_at(self.bus, req.slave) else { return (Ok(None), 0) };
        let delay_ms = w.answer_delay_ms(dev);
        let len = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        let response = match req.request {
            Request::ReadCoils(a, n) => w.read_bits(dev, Table::Coil, a, n).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, n) => {
                w.read_bits(dev, Table::Discrete, a, n).map(Response::ReadDiscreteInputs)
            }
            Request::ReadInputRegisters(a, n) => {
                w.read_words(dev, Table::Input, a, n).map(Response::ReadInputRegisters)
            }
            Request::ReadHoldingRegisters(a, n) => {
                w.read_words(dev, Table::Holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::WriteSingleCoil(a, v) => w.write_bits(dev, a, &[v]).map(|()| Response::WriteSingleCoil(a, v)),
            Request::WriteMultipleCoils(a, bits) => {
                w.write_bits(dev, a, &bits).map(|()| Response::WriteMultipleCoils(a, len(bits.len())))
            }
            Request::WriteSingleRegister(a, v) => {
                w.write_words(dev, a, &[v]).map(|()| Response::WriteSingleRegister(a, v))
            }
            Request::WriteMultipleRegisters(a, words) => {
                w.write_words(dev, a, &words).map(|()| Response::WriteMultipleRegisters(a, len(words.len())))
            }
            _ => Err(Exception::IllegalFunction),
        };
        (response.map(Some).map_err(code), delay_ms)
    }
}

impl tokio_modbus::server::Service for BusService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let (answer, delay_ms) = self.handle(req);
        Box::pin(async move {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
            }
            answer
        })
    }
}

/// Resolves when shutdown is signalled or every sender is gone.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Serves one gateway's bus until shutdown.
pub(crate) async fn run(
    listener: TcpListener,
    service: BusService,
    mut shutdown: watch::Receiver<bool>,
    gateway: String,
) {
    let server = Server::new(listener);
    let on_connected = |stream, _addr| {
        let service = service.clone();
        async move { Ok(Some((service, stream))) }
    };
    let gw = gateway.clone();
    let on_error =
        move |error: io::Error| debug!(message = "Modbus connection ended with an error.", gateway = %gw, %error);
    tokio::select! {
        result = server.serve(&on_connected, on_error) => {
            if let Err(error) = result {
                warn!(message = "Modbus server stopped.", %gateway, %error);
            }
        }
        () = stopped(&mut shutdown) => debug!(message = "Modbus server shut down.", %gateway),
    }
}
