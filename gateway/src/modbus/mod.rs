//! Modbus: the source that reads devices as their profiles say.
//!
//! - [`value`]: tables, types, word orders, and words <-> engineering values.
//! - [`plan`]: covering a device's points with as few requests as possible.
//! - [`Link`]: one connection to a Modbus endpoint: a TCP device, an RS-485 converter with
//!   many devices behind it by unit id, or an RS-485 bus on a serial port (RTU). Requests
//!   on a link go one at a time, as on the bus behind it; on a serial bus the link keeps
//!   the inter-frame silence the baud rate needs (3.5 character times) plus the bus's
//!   turnaround for slow devices.
//! - [`DeviceReader::read`]: one poll of one device: planned reads, decoded into readings,
//!   with quality from the device's status registers where its profile maps them.
//! - [`Job`]: writes (commands, local rules, mailbox deliveries) queued to the task that
//!   owns a link, so they share the bus with polls instead of colliding with them.
//!
//! Errors are named ([`PollError`]): a timeout, a Modbus exception by its name, or a
//! transport failure, so an operator reading a device's last error knows which it was. A
//! request that timed out or broke is retried with doubling backoff (`retries` per
//! device: some meters wake only on the second request); an exception is an answer and is
//! not retried, except "busy" and "acknowledge".

pub mod plan;
pub mod value;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use protocol::{DeviceId, Quality, Reading, Timestamp};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::slave::{Slave, SlaveContext};

use crate::config::{BusConfig, Parity};
use crate::profile::{Point, Profile, QualityMap, Slots};
use plan::{Plan, Read};
use value::Table;

/// Most registers one write may carry (Modbus application protocol, function 16).
pub const MAX_WRITE_REGISTERS: usize = 123;

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

    /// True if trying again may help: no answer, a broken link, or a device that said it
    /// is busy. Other exceptions are answers and are not retried.
    fn retryable(&self) -> bool {
        match self {
            PollError::Exception { code, .. } => matches!(code, 0x05 | 0x06),
            _ => true,
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

/// Where a link goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Modbus TCP.
    Tcp(SocketAddr),
    /// Modbus RTU on a serial RS-485 bus.
    Rtu(BusConfig),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Rtu(b) => write!(f, "rtu://{}@{}", b.port.display(), b.baud),
        }
    }
}

/// How hard to try one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u8,
    /// Wait before the first retry; doubles for each further one.
    pub backoff: Duration,
}

impl Default for Attempts {
    fn default() -> Attempts {
        Attempts { timeout: Duration::from_secs(1), retries: 0, backoff: Duration::from_millis(100) }
    }
}

/// One write or read-back in a [`Job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write words (or bits as 0/1) from `address`.
    Write {
        /// Coil or holding.
        table: Table,
        /// First register or coil.
        address: u16,
        /// What to write (at most [`MAX_WRITE_REGISTERS`]).
        words: Vec<u16>,
    },
    /// Read `count` registers (or bits) back, returning them in the job's result.
    Read {
        /// Which table.
        table: Table,
        /// First register or bit.
        address: u16,
        /// How many.
        count: u16,
    },
}

/// A sequence of operations on one device, carried out by the task that owns its link,
/// between polls. It stops at the first error.
#[derive(Debug)]
pub struct Job {
    /// The device's unit id.
    pub unit: u8,
    /// What to do, in order.
    pub ops: Vec<Op>,
    /// How hard to try each operation.
    pub attempts: Attempts,
    /// A background look (following a command already delivered): waits behind every
    /// other job, so that a broadcast reaches the last speaker of a bus before the first
    /// is looked at again.
    pub background: bool,
    /// The words of every `Read`, in order, or the first error.
    pub reply: oneshot::Sender<Result<Vec<Vec<u16>>, PollError>>,
}

/// One connection to a Modbus endpoint, opened on demand and dropped on any doubt.
pub struct Link {
    endpoint: Endpoint,
    ctx: Option<Context>,
    /// Silence to keep after each exchange before the next request (serial buses).
    gap: Duration,
    last_exchange: Option<Instant>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("endpoint", &self.endpoint).field("connected", &self.ctx.is_some()).finish()
    }
}

impl Link {
    /// A link to `endpoint`; nothing is connected until the first request.
    pub fn new(endpoint: Endpoint) -> Link {
        let gap = match &endpoint {
            Endpoint::Tcp(_) => Duration::ZERO,
            Endpoint::Rtu(bus) => bus.frame_gap(),
        };
        Link { endpoint, ctx: None, gap, last_exchange: None }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn ctx(&mut self, unit: u8, timeout: Duration) -> Result<&mut Context, PollError> {
        if self.ctx.is_none() {
            let ctx = match &self.endpoint {
                Endpoint::Tcp(addr) => {
                    let connect = tokio_modbus::client::tcp::connect(*addr);
                    tokio::time::timeout(timeout, connect)
                        .await
                        .map_err(|_| PollError::Timeout(timeout.as_millis() as u64))?
                        .map_err(|e| PollError::Transport(format!("connect {addr}: {e}")))?
                }
                Endpoint::Rtu(bus) => tokio_modbus::client::rtu::attach(open_serial(bus)?),
            };
            self.ctx = Some(ctx);
        }
        let ctx = self.ctx.as_mut().ok_or_else(|| PollError::Transport("not connected".into()))?;
        ctx.set_slave(Slave(unit));
        Ok(ctx)
    }

    /// Waits out the inter-frame silence of a serial bus.
    async fn quiet(&mut self) {
        if let Some(t) = self.last_exchange
            && !self.gap.is_zero()
        {
            tokio::time::sleep_until(t + self.gap).await;
        }
    }

    /// Reads registers (bits come back as 0/1 words), retrying as `attempts` says.
    pub async fn read(&mut self, unit: u8, read: Read, attempts: Attempts) -> Result<Vec<u16>, PollError> {
        let mut tries = 0u8;
        loop {
            match self.read_once(unit, read, attempts.timeout).await {
                Err(e) if e.retryable() && tries < attempts.retries => {
                    tokio::time::sleep(attempts.backoff * 2u32.saturating_pow(u32::from(tries))).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn read_once(&mut self, unit: u8, read: Read, timeout: Duration) -> Result<Vec<u16>, PollError> {
        self.quiet().await;
        let ctx = self.ctx(unit, timeout).await?;
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
        let words = self.settle(result, timeout)?;
        if words.len() < usize::from(read.count) {
            return Err(PollError::Protocol(format!("asked for {} registers, got {}", read.count, words.len())));
        }
        Ok(words)
    }

    /// Writes registers or coils, retrying as `attempts` says.
    pub async fn write(
        &mut self,
        unit: u8,
        table: Table,
        address: u16,
        words: &[u16],
        attempts: Attempts,
    ) -> Result<(), PollError> {
        let mut tries = 0u8;
        loop {
            match self.write_once(unit, table, address, words, attempts.timeout).await {
                Err(e) if e.retryable() && tries < attempts.retries => {
                    tokio::time::sleep(attempts.backoff * 2u32.saturating_pow(u32::from(tries))).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn write_once(
        &mut self,
        unit: u8,
        table: Table,
        address: u16,
        words: &[u16],
        timeout: Duration,
    ) -> Result<(), PollError> {
        self.quiet().await;
        let ctx = self.ctx(unit, timeout).await?;
        let fut = async {
            match (table, words) {
                (Table::Coil, [w]) => ctx.write_single_coil(address, *w != 0).await,
                (Table::Coil, ws) => {
                    let bits: Vec<bool> = ws.iter().map(|w| *w != 0).collect();
                    ctx.write_multiple_coils(address, &bits).await
                }
                (Table::Holding, [w]) => ctx.write_single_register(address, *w).await,
                (Table::Holding, ws) => ctx.write_multiple_registers(address, ws).await,
                _ => Ok(Err(ExceptionCode::IllegalFunction)),
            }
        };
        let result = tokio::time::timeout(timeout, fut).await;
        self.settle(result, timeout)
    }

    /// Carries out a job's operations in order.
    pub async fn run_job(&mut self, unit: u8, ops: &[Op], attempts: Attempts) -> Result<Vec<Vec<u16>>, PollError> {
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Write { table, address, words } => self.write(unit, *table, *address, words, attempts).await?,
                Op::Read { table, address, count } => {
                    out.push(self.read(unit, Read { table: *table, start: *address, count: *count }, attempts).await?)
                }
            }
        }
        Ok(out)
    }

    /// Turns a request's outcome into ours, dropping the connection when its state is in
    /// doubt (a late answer to a timed-out request would be taken for the next one's).
    fn settle<T>(
        &mut self,
        result: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
        timeout: Duration,
    ) -> Result<T, PollError> {
        self.last_exchange = Some(Instant::now());
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
                Err(PollError::Timeout(timeout.as_millis() as u64))
            }
        }
    }
}

fn open_serial(bus: &BusConfig) -> Result<tokio_serial::SerialStream, PollError> {
    use tokio_serial::SerialPortBuilderExt as _;
    let parity = match bus.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = if bus.data_bits == 7 { tokio_serial::DataBits::Seven } else { tokio_serial::DataBits::Eight };
    let stop_bits = if bus.stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
    tokio_serial::new(bus.port.to_string_lossy(), bus.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(|e| PollError::Transport(format!("open {}: {e}", bus.port.display())))
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
    /// How hard to try each request.
    pub attempts: Attempts,
    plan: Plan,
    /// For each point with a status register: where that register lands in the responses.
    quality: Vec<Option<plan::Location>>,
}

impl DeviceReader {
    /// Plans the reads of a device: its points and the status registers their quality
    /// comes from, coalesced.
    pub fn new(id: &str, unit: u8, profile: std::sync::Arc<Profile>, attempts: Attempts) -> DeviceReader {
        let mut spans: Vec<_> = profile.points.iter().map(|p| (p.table, p.address, p.width())).collect();
        let n = spans.len();
        let mut quality_span = Vec::with_capacity(n);
        for p in &profile.points {
            quality_span.push(p.quality.as_ref().map(|q| {
                spans.push((q.table, q.address, 1));
                spans.len() - 1
            }));
        }
        let plan = plan::plan(&spans, profile.max_gap);
        let quality = quality_span.iter().map(|i| i.map(|i| plan.locations[i])).collect();
        DeviceReader { id: DeviceId::new(id), unit, profile, attempts, plan, quality }
    }

    /// Requests one poll takes (without slot tables, whose size is read at run time).
    pub fn requests(&self) -> usize {
        self.plan.reads.len()
    }

    /// Polls the device once; every reading carries `ts`.
    pub async fn read(&self, link: &mut Link, ts: impl Fn() -> Timestamp) -> Result<Vec<Reading>, PollError> {
        let mut responses = Vec::with_capacity(self.plan.reads.len());
        for r in &self.plan.reads {
            responses.push(link.read(self.unit, *r, self.attempts).await?);
        }
        let mut out = self.decode(&responses, ts())?;
        if let Some(slots) = &self.profile.slots {
            self.read_slots(link, slots, &ts, &mut out).await?;
        }
        Ok(out)
    }

    /// The readings of one poll from the responses to its planned reads, in plan order:
    /// register words to values through each point's type, word order, scale, offset and
    /// bit, with quality from its status register. A response shorter than its read (which
    /// [`Link::read`] never returns) is a protocol error, not a panic.
    pub fn decode(&self, responses: &[Vec<u16>], now: Timestamp) -> Result<Vec<Reading>, PollError> {
        if responses.len() != self.plan.reads.len()
            || responses.iter().zip(&self.plan.reads).any(|(words, r)| words.len() < usize::from(r.count))
        {
            return Err(PollError::Protocol("responses do not match the planned reads".into()));
        }
        let mut out = Vec::with_capacity(self.profile.points.len());
        for ((point, loc), q) in self.profile.points.iter().zip(&self.plan.locations).zip(&self.quality) {
            let words = &responses[loc.read][usize::from(loc.offset)..];
            let mut r = reading(&self.id, point, words, now);
            if let (Some(map), Some(q)) = (&point.quality, q) {
                r.quality = map.quality(responses[q.read][usize::from(q.offset)]);
            }
            out.push(r);
        }
        Ok(out)
    }

    /// The planned reads of one poll (without slot tables), in the order
    /// [`DeviceReader::decode`] takes their responses.
    pub fn reads(&self) -> &[Read] {
        &self.plan.reads
    }

    async fn read_slots(
        &self,
        link: &mut Link,
        slots: &Slots,
        ts: &impl Fn() -> Timestamp,
        out: &mut Vec<Reading>,
    ) -> Result<(), PollError> {
        let count_read = Read { table: slots.table, start: slots.count_address, count: 1 };
        let count = link.read(self.unit, count_read, self.attempts).await?;
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
            let read = Read { table: slots.table, start, count: n * slots.stride };
            words.extend(link.read(self.unit, read, self.attempts).await?);
            done += n;
        }
        out.extend(decode_slots(slots, &words, ts()));
        Ok(())
    }
}

/// The readings of a slot table's words (whole slots of `slots.stride` registers from slot
/// 0): one device per slot whose id register is not 0, named by the profile's `device`
/// pattern. A trailing partial slot is ignored.
pub fn decode_slots(slots: &Slots, words: &[u16], now: Timestamp) -> Vec<Reading> {
    let mut out = Vec::new();
    if slots.stride == 0 {
        return out;
    }
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
    out
}

fn reading(device: &DeviceId, point: &Point, words: &[u16], ts: Timestamp) -> Reading {
    let raw = value::decode(&words[..usize::from(point.width())], point.ty, point.order);
    let value = value::engineering(raw, point.scale, point.offset, point.bit);
    Reading { device: device.clone(), metric: point.metric.clone(), ts, value, quality: Quality::Good }
}

impl QualityMap {
    /// The quality a status register value stands for; a value the profile does not list
    /// is uncertain (the device said something we cannot interpret).
    pub fn quality(&self, status: u16) -> Quality {
        if self.good.contains(&status) {
            Quality::Good
        } else if self.bad.contains(&status) {
            Quality::Bad
        } else {
            Quality::Uncertain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Library;

    fn meter() -> DeviceReader {
        let (library, _) = Library::builtin();
        let profile = library.get("vt-sim-water-meter").expect("built-in profile");
        DeviceReader::new("dongcun-meter-001", 1, profile, Attempts::default())
    }

    #[test]
    fn a_poll_decodes_from_responses_of_the_planned_sizes_and_refuses_short_ones() {
        let reader = meter();
        let full: Vec<Vec<u16>> = reader.reads().iter().map(|r| vec![1; usize::from(r.count)]).collect();
        let readings = reader.decode(&full, Timestamp(5)).expect("responses of the planned sizes");
        assert_eq!(readings.len(), reader.profile.points.len(), "positive control: one reading per point");
        let mut short = full.clone();
        short[0].pop();
        assert!(matches!(reader.decode(&short, Timestamp(5)), Err(PollError::Protocol(_))));
        assert!(matches!(reader.decode(&full[1..], Timestamp(5)), Err(PollError::Protocol(_))));
    }
}
