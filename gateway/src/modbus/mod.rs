//! Modbus: the source that reads devices as their profiles say.
//!
//! - [`value`]: tables, types, word orders, and words <-> engineering values.
//! - [`plan`]: covering a device's points with as few requests as possible.
//! - [`Link`]: one connection to a Modbus TCP endpoint (a device, or an RS-485 converter
//!   with many devices behind it by unit id). Requests on a link go one at a time, as on
//!   the bus behind it.
//! - [`read_device`]: one poll of one device: planned reads, decoded into readings.
//!
//! Errors are named ([`PollError`]): a timeout, a Modbus exception by its name, or a
//! transport failure, so an operator reading a device's last error knows which it was.

pub mod plan;
pub mod value;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use protocol::{DeviceId, Quality, Reading, Timestamp};
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::slave::{Slave, SlaveContext};

use crate::profile::{Point, Profile, Slots};
use plan::{Plan, Read};
use value::Table;

/// Why a poll or a write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// No answer within the timeout.
    #[error("timeout after {0} ms")]
    Timeout(u64),
    /// The device answered with a Modbus exception.
    #[error("Modbus exception {name} (0x{code:02x})")]
    Exception {
        /// Exception name, as in the Modbus specification.
        name: &'static str,
        /// Exception code.
        code: u8,
    },
    /// The connection could not be made or broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The answer did not fit the request.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl PollError {
    /// A short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            PollError::Timeout(_) => "timeout",
            PollError::Exception { .. } => "exception",
            PollError::Transport(_) => "transport",
            PollError::Protocol(_) => "protocol",
        }
    }
}

/// Name of a Modbus exception code.
pub fn exception_name(e: ExceptionCode) -> &'static str {
    match e {
        ExceptionCode::IllegalFunction => "IllegalFunction",
        ExceptionCode::IllegalDataAddress => "IllegalDataAddress",
        ExceptionCode::IllegalDataValue => "IllegalDataValue",
        ExceptionCode::ServerDeviceFailure => "ServerDeviceFailure",
        ExceptionCode::Acknowledge => "Acknowledge",
        ExceptionCode::ServerDeviceBusy => "ServerDeviceBusy",
        ExceptionCode::MemoryParityError => "MemoryParityError",
        ExceptionCode::GatewayPathUnavailable => "GatewayPathUnavailable",
        ExceptionCode::GatewayTargetDevice => "GatewayTargetDeviceFailedToRespond",
        ExceptionCode::Custom(_) => "Custom",
    }
}

/// One connection to a Modbus TCP endpoint, opened on demand and dropped on any doubt.
pub struct Link {
    addr: SocketAddr,
    timeout: Duration,
    ctx: Option<Context>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("addr", &self.addr).field("connected", &self.ctx.is_some()).finish()
    }
}

impl Link {
    /// A link to `addr`; nothing is connected until the first request.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Link {
        Link { addr, timeout, ctx: None }
    }

    /// The endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn ctx(&mut self, unit: u8) -> Result<&mut Context, PollError> {
        if self.ctx.is_none() {
            let connect = tokio_modbus::client::tcp::connect(self.addr);
            let ctx = tokio::time::timeout(self.timeout, connect)
                .await
                .map_err(|_| PollError::Timeout(self.timeout.as_millis() as u64))?
                .map_err(|e| PollError::Transport(format!("connect {}: {e}", self.addr)))?;
            self.ctx = Some(ctx);
        }
        let ctx = self.ctx.as_mut().ok_or_else(|| PollError::Transport("not connected".into()))?;
        ctx.set_slave(Slave(unit));
        Ok(ctx)
    }

    /// Reads registers (bits come back as 0/1 words).
    pub async fn read(&mut self, unit: u8, read: Read) -> Result<Vec<u16>, PollError> {
        let timeout = self.timeout;
        let ctx = self.ctx(unit).await?;
        let fut = async {
            match read.table {
                Table::Holding => ctx.read_holding_registers(read.start, read.count).await,
                Table::Input => ctx.read_input_registers(read.start, read.count).await,
                Table::Coil => ctx
                    .read_coils(read.start, read.count)
                    .await
                    .map(|r| r.map(|b| b.into_iter().map(u16::from).collect())),
                Table::Discrete => ctx
                    .read_discrete_inputs(read.start, read.count)
                    .await
                    .map(|r| r.map(|b| b.into_iter().map(u16::from).collect())),
            }
        };
        let result = tokio::time::timeout(timeout, fut).await;
        let words = self.settle(result)?;
        if words.len() < usize::from(read.count) {
            return Err(PollError::Protocol(format!("asked for {} registers, got {}", read.count, words.len())));
        }
        Ok(words)
    }

    /// Writes registers or a coil.
    pub async fn write(&mut self, unit: u8, table: Table, address: u16, words: &[u16]) -> Result<(), PollError> {
        let timeout = self.timeout;
        let ctx = self.ctx(unit).await?;
        let fut = async {
            match (table, words) {
                (Table::Coil, [w]) => ctx.write_single_coil(address, *w != 0).await,
                (Table::Holding, [w]) => ctx.write_single_register(address, *w).await,
                (Table::Holding, ws) => ctx.write_multiple_registers(address, ws).await,
                _ => Ok(Err(ExceptionCode::IllegalFunction)),
            }
        };
        let result = tokio::time::timeout(timeout, fut).await;
        self.settle(result)
    }

    /// Turns a request's outcome into ours, dropping the connection when its state is in
    /// doubt (a late answer to a timed-out request would be taken for the next one's).
    fn settle<T>(
        &mut self,
        result: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, PollError> {
        match result {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(code))) => Err(PollError::Exception { name: exception_name(code), code: u8::from(code) }),
            Ok(Err(e)) => {
                self.ctx = None;
                Err(match e {
                    tokio_modbus::Error::Transport(e) => PollError::Transport(e.to_string()),
                    tokio_modbus::Error::Protocol(e) => PollError::Protocol(e.to_string()),
                })
            }
            Err(_) => {
                self.ctx = None;
                Err(PollError::Timeout(self.timeout.as_millis() as u64))
            }
        }
    }
}

/// A device prepared for polling: its profile and the planned reads.
#[derive(Debug, Clone)]
pub struct DeviceReader {
    /// The device id (for slot tables: the hub's id).
    pub id: DeviceId,
    /// Unit id on its link.
    pub unit: u8,
    /// The profile.
    pub profile: std::sync::Arc<Profile>,
    plan: Plan,
}

impl DeviceReader {
    /// Plans the reads of a device.
    pub fn new(id: &str, unit: u8, profile: std::sync::Arc<Profile>) -> DeviceReader {
        let spans: Vec<_> = profile.points.iter().map(|p| (p.table, p.address, p.width())).collect();
        let plan = plan::plan(&spans, profile.max_gap);
        DeviceReader { id: DeviceId::new(id), unit, profile, plan }
    }

    /// Requests one poll takes (without slot tables, whose size is read at run time).
    pub fn requests(&self) -> usize {
        self.plan.reads.len()
    }

    /// Polls the device once; every reading carries `ts`.
    pub async fn read(&self, link: &mut Link, ts: impl Fn() -> Timestamp) -> Result<Vec<Reading>, PollError> {
        let mut responses = Vec::with_capacity(self.plan.reads.len());
        for r in &self.plan.reads {
            responses.push(link.read(self.unit, *r).await?);
        }
        let now = ts();
        let mut out = Vec::with_capacity(self.profile.points.len());
        for (point, loc) in self.profile.points.iter().zip(&self.plan.locations) {
            let words = &responses[loc.read][usize::from(loc.offset)..];
            out.push(reading(&self.id, point, words, now));
        }
        if let Some(slots) = &self.profile.slots {
            self.read_slots(link, slots, &ts, &mut out).await?;
        }
        Ok(out)
    }

    async fn read_slots(
        &self,
        link: &mut Link,
        slots: &Slots,
        ts: &impl Fn() -> Timestamp,
        out: &mut Vec<Reading>,
    ) -> Result<(), PollError> {
        let count = link.read(self.unit, Read { table: slots.table, start: slots.count_address, count: 1 }).await?;
        let count = count.first().copied().unwrap_or(0).min(slots.max);
        if count == 0 || slots.stride == 0 {
            return Ok(());
        }
        // Whole slots per request, as many as fit in one read.
        let per_read = (slots.table.max_read() / slots.stride).max(1);
        let mut words: Vec<u16> = Vec::with_capacity(usize::from(count) * usize::from(slots.stride));
        let mut done = 0u16;
        while done < count {
            let n = per_read.min(count - done);
            let start = slots.base + done * slots.stride;
            words.extend(link.read(self.unit, Read { table: slots.table, start, count: n * slots.stride }).await?);
            done += n;
        }
        let now = ts();
        for slot in words.chunks_exact(usize::from(slots.stride)) {
            let id = match value::decode(slot, slots.id_type, value::WordOrder::Abcd) {
                value::Raw::Int(i) if i > 0 => u64::try_from(i).unwrap_or(0),
                _ => continue, // an empty slot
            };
            let device = DeviceId::from(slots.device_id(id));
            for point in &slots.points {
                out.push(reading(&device, point, &slot[usize::from(point.address)..], now));
            }
        }
        Ok(())
    }
}

fn reading(device: &DeviceId, point: &Point, words: &[u16], ts: Timestamp) -> Reading {
    let raw = value::decode(&words[..usize::from(point.width())], point.ty, point.order);
    let value = value::engineering(raw, point.scale, point.offset, point.bit);
    Reading { device: device.clone(), metric: point.metric.clone(), ts, value, quality: Quality::Good }
}
