//! `GET /api/v1/stream`: live updates as server-sent events, so a page refreshes only
//! what changed instead of re-reading every latest value every few seconds.
//!
//! Events:
//! - `hello` first: `{"now", "interval_ms"}`.
//! - `latest`: `{"changed": [LatestView, ...]}`, every value that changed since the
//!   previous event (same shape as `GET /api/v1/latest`), at most every
//!   [`WATCH_INTERVAL`]. The filters (`site`, `kind`, `township`, `device`, `metric`)
//!   narrow it as they narrow `/latest`.
//! - `alert`: `{"event": "firing"|"resolved"|"acknowledged", "alert": Alert}` as the alert
//!   manager publishes them (tenant-scoped; proposals are on the alerts API).
//! - `lagged`: `{"missed": n}` when this client fell behind: read `/summary` and `/latest`
//!   again.
//!
//! Design constraints:
//! - One watcher for every client: a task compares the store's latest values with the
//!   previous look every [`WATCH_INTERVAL`] (a merge of two sorted lists) and fans the
//!   changed rows out over a broadcast channel. It runs only while someone listens, and
//!   ends when ingest stops.
//! - Tenant scope: each changed row carries its tenant; a [`Reader`] gets only its own.
//! - A client subscribes first and then loads (`/summary`, `/latest?since=`), so nothing
//!   falls between the two.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use store::LatestPoint;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::read::LatestView;
use super::{AppState, Reader};
use crate::alerts::AlertEvent;
use crate::time::rfc3339;

/// How often the watcher looks for changed values.
pub(super) const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Change sets a slow client may fall behind before it is told it lagged.
const CHANNEL: usize = 64;

/// A changed latest value with what filters and scopes it.
#[derive(Debug, Clone)]
struct Changed {
    view: LatestView,
    tenant: String,
    township: Option<String>,
}

/// The watcher shared by every stream of one service.
#[derive(Clone)]
pub(super) struct Hub {
    tx: broadcast::Sender<Arc<Vec<Changed>>>,
    running: Arc<AtomicBool>,
}

impl Hub {
    pub(super) fn new() -> Hub {
        let (tx, _) = broadcast::channel(CHANNEL);
        Hub { tx, running: Arc::new(AtomicBool::new(false)) }
    }

    /// A receiver of change sets; starts the watcher if it is not running.
    fn subscribe(&self, state: &AppState) -> broadcast::Receiver<Arc<Vec<Changed>>> {
        let rx = self.tx.subscribe();
        if self.running.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            tokio::spawn(watch(self.clone(), state.clone(), state.broadcasts.stopping()));
        }
        rx
    }
}

/// Compares the store's latest values every [`WATCH_INTERVAL`] and sends what changed,
/// while anyone listens.
async fn watch(hub: Hub, state: AppState, stop: CancellationToken) {
    tracing::debug!(message = "Live update watcher started.");
    let mut previous = state.store.latest();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        if hub.tx.receiver_count() == 0 {
            hub.running.store(false, Ordering::Release);
            // A client may have subscribed between the count and the store: keep going then.
            if hub.tx.receiver_count() == 0
                || hub.running.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err()
            {
                tracing::debug!(message = "Live update watcher stopped: nobody listens.");
                return;
            }
        }
        let store = state.store.clone();
        let Ok(current) = tokio::task::spawn_blocking(move || store.latest()).await else { break };
        let changed = changes(&previous, &current);
        if !changed.is_empty() {
            let _ = hub.tx.send(Arc::new(describe(&state, changed)));
        }
        previous = current;
    }
    hub.running.store(false, Ordering::Release);
}

/// The points of `current` that are new or differ from `previous` (both sorted by device
/// and metric, as the store returns them).
fn changes<'a>(previous: &[LatestPoint], current: &'a [LatestPoint]) -> Vec<&'a LatestPoint> {
    let mut out = Vec::new();
    let mut old = previous.iter().peekable();
    for p in current {
        let key = (p.device.as_str(), p.metric.name());
        while old.next_if(|o| (o.device.as_str(), o.metric.name()) < key).is_some() {}
        match old.next_if(|o| (o.device.as_str(), o.metric.name()) == key) {
            Some(o) if o.point.ts == p.point.ts && o.point.value.to_bits() == p.point.value.to_bits() => {}
            _ => out.push(p),
        }
    }
    out
}

/// Changed points as the API shows them, with their tenant and township.
fn describe(state: &AppState, changed: Vec<&LatestPoint>) -> Vec<Changed> {
    let sites: std::collections::HashMap<String, crate::inventory::Site> =
        state.inventory.sites().into_iter().map(|s| (s.id.clone(), s)).collect();
    let devices: std::collections::HashMap<String, crate::inventory::Device> =
        state.inventory.devices().into_iter().map(|d| (d.id.clone(), d)).collect();
    changed
        .into_iter()
        .map(|l| {
            let d = devices.get(&l.device);
            let site_id = d.map(|d| d.site.clone()).unwrap_or_default();
            let site = sites.get(&site_id);
            Changed {
                tenant: site.map(|s| s.tenant.clone()).unwrap_or_default(),
                township: site.and_then(|s| s.township.clone()),
                view: LatestView {
                    device: l.device.clone(),
                    metric: l.metric.name().to_string(),
                    unit: l.metric.unit(),
                    ts: rfc3339(l.point.ts),
                    value: l.point.value,
                    quality: l.point.quality,
                    kind: d.map_or("external", |d| d.kind.as_str()).to_string(),
                    site: site_id,
                },
            }
        })
        .collect()
}

/// `?site=&kind=&township=&device=&metric=`: which latest values a stream carries.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct StreamFilter {
    site: Option<String>,
    kind: Option<String>,
    township: Option<String>,
    device: Option<String>,
    metric: Option<String>,
}

impl StreamFilter {
    fn keeps(&self, reader: &Reader, c: &Changed) -> bool {
        let v = &c.view;
        reader.may_see(&c.tenant)
            && self.site.as_deref().is_none_or(|x| v.site == x)
            && self.kind.as_deref().is_none_or(|x| v.kind == x)
            && self.township.as_deref().is_none_or(|x| c.township.as_deref() == Some(x))
            && self.device.as_deref().is_none_or(|x| v.device == x)
            && self.metric.as_deref().is_none_or(|x| v.metric == x)
    }
}

/// What the stream route reaches: the service, and the watcher.
#[derive(Clone)]
struct StreamState {
    app: AppState,
    hub: Hub,
}

impl FromRef<StreamState> for crate::auth::Access {
    fn from_ref(s: &StreamState) -> crate::auth::Access {
        crate::auth::Access::from_ref(&s.app)
    }
}

/// The stream route at `/stream` (nested under `/api/v1`), with its own watcher.
pub(super) fn routes(app: AppState) -> Router<AppState> {
    Router::new().route("/stream", get(stream)).with_state(StreamState { app, hub: Hub::new() })
}

/// What one client's stream is fed from.
enum Source {
    Latest(Result<Arc<Vec<Changed>>, RecvError>),
    Alert(Box<Result<AlertEvent, RecvError>>),
}

impl Source {
    /// The service is going away: the stream ends.
    fn closed(&self) -> bool {
        match self {
            Source::Latest(r) => matches!(r, Err(RecvError::Closed)),
            Source::Alert(r) => matches!(**r, Err(RecvError::Closed)),
        }
    }
}

async fn stream(
    State(s): State<StreamState>,
    reader: Reader,
    Query(filter): Query<StreamFilter>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let latest = s.hub.subscribe(&s.app);
    let alerts = s.app.alerts.as_ref().map(crate::alerts::Alerts::subscribe);
    let hello = json!({ "now": rfc3339((s.app.clock)()), "interval_ms": WATCH_INTERVAL.as_millis() as u64 });
    let head = stream::iter([Ok(Event::default().event("hello").data(hello.to_string()))]);
    let latest = stream::unfold(latest, |mut rx| async move { Some((Source::Latest(rx.recv().await), rx)) });
    let alerts = match alerts {
        Some(rx) => stream::unfold(rx, |mut rx| async move { Some((Source::Alert(Box::new(rx.recv().await)), rx)) })
            .left_stream(),
        None => stream::pending().right_stream(),
    };
    let events = stream::select(latest, alerts)
        .take_while(|src| std::future::ready(!src.closed()))
        .filter_map(move |src| std::future::ready(event(&reader, &filter, src)));
    let stop = s.app.broadcasts.stopping();
    Sse::new(head.chain(events).take_until(stop.cancelled_owned())).keep_alive(KeepAlive::default())
}

/// The event a source item makes for this client, if any.
fn event(reader: &Reader, filter: &StreamFilter, src: Source) -> Option<Result<Event, Infallible>> {
    let (name, data) = match src {
        Source::Latest(Ok(set)) => {
            let changed: Vec<&LatestView> = set.iter().filter(|c| filter.keeps(reader, c)).map(|c| &c.view).collect();
            if changed.is_empty() {
                return None;
            }
            ("latest", json!({ "changed": changed }))
        }
        Source::Latest(Err(e)) => lagged(e)?,
        Source::Alert(r) => match *r {
            Ok(e) => {
                let alert = match &e {
                    AlertEvent::Firing { alert }
                    | AlertEvent::Resolved { alert }
                    | AlertEvent::Acknowledged { alert } => alert,
                    _ => return None,
                };
                if !reader.may_see(&alert.tenant) {
                    return None;
                }
                ("alert", json!({ "event": e.name(), "alert": crate::alerts::api::view(alert) }))
            }
            Err(e) => lagged(e)?,
        },
    };
    Some(Ok(Event::default().event(name).data(data.to_string())))
}

/// A receive error as an event: `lagged` with how many were missed; none when closed.
fn lagged(e: RecvError) -> Option<(&'static str, serde_json::Value)> {
    match e {
        RecvError::Lagged(n) => Some(("lagged", json!({ "missed": n }))),
        RecvError::Closed => None,
    }
}

#[cfg(test)]
mod tests {
    use super::changes;
    use protocol::{Metric, Quality, Timestamp};
    use store::{LatestPoint, Point};

    fn p(device: &str, metric: &str, ts: i64, value: f64) -> LatestPoint {
        LatestPoint {
            device: device.into(),
            metric: Metric::new(metric),
            point: Point { ts: Timestamp(ts), value, quality: Quality::Good },
        }
    }

    #[test]
    fn only_new_and_changed_values_are_sent() {
        let before = vec![p("a", "flow", 1, 1.0), p("b", "flow", 1, 2.0), p("c", "flow", 1, 3.0)];
        // Nothing changed: nothing to send (and the same list against itself).
        assert!(changes(&before, &before).is_empty());
        // b has a newer value, d is new, a and c are as they were.
        let after =
            vec![p("a", "flow", 1, 1.0), p("b", "flow", 2, 2.5), p("c", "flow", 1, 3.0), p("d", "level", 5, 1.0)];
        let got: Vec<(&str, i64)> =
            changes(&before, &after).iter().map(|l| (l.device.as_str(), l.point.ts.0)).collect();
        assert_eq!(got, [("b", 2), ("d", 5)]);
        // A series that went away is not an update.
        assert!(changes(&after, &before[..1]).is_empty());
    }
}
