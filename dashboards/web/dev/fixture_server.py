#!/usr/bin/env python3
"""Serves the dashboard with a made-up county behind a fake /api/v1, for working on the
page without running ingest, and for checking it at scale:

    python3 dashboards/web/dev/fixture_server.py --port 8091 --villages 300 --meters 15000

Not served by ingest (files under dev/ are not embedded). The API shapes follow docs/API.md;
the values are plausible, not physics: use `ingest demo` for the real thing.
Options --pump-trip, --chlorine-low and --gateway-down show the alarm states (and the
alerts the rules would raise, with the sick cows' fever alerts, one acknowledged); --hostile
adds a site, a device and an alert whose names are HTML and script, which must show as text.
Acknowledging takes the token `operator` (`viewer` is refused with 403, any other with 401).
`--county large` serves large_county.py's county instead (issue 17: 150 villages in
townships, 15,000 meters, 400 speakers; summary, paged lists, ETags, server-sent events).
"""

import argparse
import hashlib
import json
import math
import random
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from large_county import LargeCounty

WEB = Path(__file__).resolve().parent.parent
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
UNITS = {"flow": "m3/h", "volume_total": "m3", "pressure": "MPa", "tank_level": "m", "free_chlorine": "mg/L",
         "turbidity": "NTU", "ph": "pH", "conductivity": "uS/cm", "water_temperature": "°C", "pump_running": "bool",
         "pump_current": "A", "fault_word": "bits", "body_temperature": "°C", "activity": "steps/h",
         "rumination": "min/h", "milk_yield": "kg", "milk_conductivity": "mS/cm", "barn_temperature": "°C",
         "relative_humidity": "%", "speaker_online": "bool", "speaker_volume": "%", "playback_state": "state",
         "device_online": "bool", "battery_voltage": "V", "valve_open": "bool"}
NAMES = [("dongcun", "东村 Dongcun", 0, 3.5), ("xicun", "西村 Xicun", 0, -3.5), ("nancun", "南村 Nancun", -3.5, 0),
         ("beicun", "北村 Beicun", 3.5, 0)]


def rfc3339(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ms) % 1000:03d}Z"


def at(north_km, east_km):
    return 34.70 + north_km / 111.0, 113.60 + east_km / 91.3


class County:
    def __init__(self, args):
        self.args = args
        rnd = random.Random(1)
        self.sites, self.devices = [], []
        villages = []
        for i in range(args.villages):
            if i < len(NAMES):
                vid, name, n, e = NAMES[i]
            else:
                r, a = 3 * math.sqrt(i), i * 2.39996
                vid, name, n, e = f"cun-{i + 1:02d}", f"{i + 1}村 Cun {i + 1}", r * math.cos(a), r * math.sin(a)
            villages.append((vid, name, n, e, f"district-{i // 10 + 1}"))
        for d in range(math.ceil(args.villages / 10)):
            group = villages[d * 10:(d + 1) * 10]
            n = sum(v[2] for v in group) / len(group) + 5
            e = sum(v[3] for v in group) / len(group) + 1
            sid = "waterworks" if d == 0 else f"waterworks-{d + 1}"
            lat, lon = at(n, e)
            self.sites.append(dict(id=sid, name="水厂 Waterworks" if d == 0 else f"水厂{d + 1} Waterworks {d + 1}",
                                   kind="waterworks", tenant="county", lat=lat, lon=lon, district=f"district-{d + 1}"))
            self.gateway(sid)
            self.device(f"{sid}-pump-1", "pump_station", sid)
            self.device(f"{sid}-quality-1", "water_quality", sid)
        per = args.meters // max(1, args.villages)
        for vid, name, n, e, district in villages:
            lat, lon = at(n + rnd.uniform(-0.3, 0.3), e + rnd.uniform(-0.3, 0.3))
            self.sites.append(dict(id=vid, name=name, kind="village", tenant="county", lat=lat, lon=lon,
                                   village=vid, district=district))
            self.gateway(vid)
            self.device(f"{vid}-speaker-1", "speaker", vid)
            for m in range(per):
                self.device(f"{vid}-meter-{m + 1:03d}", "water_meter", vid)
        lat, lon = at(-1.8, 5.0)
        self.sites.append(dict(id="farm", name="奶牛场 Dairy farm", kind="farm", tenant="dairy", lat=lat, lon=lon))
        self.gateway("farm")
        self.device("farm-barn-1", "barn_climate", "farm")
        self.device("farm-collar-hub", "cow_collar", "farm")
        self.cows = [f"cow-{21000 + 3 * i + rnd.randrange(3)}" for i in range(args.cows)]
        for c in self.cows:
            self.device(c, "cow_collar", "farm")
        if args.hostile:
            evil = '<img src=x onerror="document.title=\'pwned\'">'
            self.sites.append(dict(id="x<b>", name=f"坏 {evil}", kind="village", tenant="county", lat=34.72,
                                   lon=113.62, village="x", district="district-1"))
            self.device(f"meter-{evil}", "water_meter", "x<b>")
            self.device(f"ext-{evil}", "external", "")
        self.sick = set(rnd.sample(self.cows, 3))
        self.latest_json, self.latest_at = b"[]", 0
        self.base = {c: rnd.gauss(38.6, 0.15) for c in self.cows}
        self.alerts = self.make_alerts(time.time() * 1000)

    def make_alerts(self, now):
        """Open alerts as GET /api/v1/alerts?state=active gives them (docs/ALERTS.md)."""
        out = []

        def alert(rule, severity, device, site, summary, ago_ms, state="firing", gateway=None, ack=None):
            entity = dict(type="gateway", id=gateway) if gateway and not device else dict(type="device", id=device)
            out.append(dict(id=len(out) + 1, rule=rule, severity=severity, state=state, device=device, site=site,
                            gateway=gateway or f"gw-{site}", district=None, entity=entity, tenant="county",
                            started_at=rfc3339(now - ago_ms), fired_at=rfc3339(now - ago_ms), resolved_at=None,
                            summary=summary, value=1.0, fingerprint=f"{rule}/{entity['type']}/{entity['id']}",
                            silenced_by=None, ack=ack, flaps=0, updated_at=rfc3339(now - ago_ms)))

        if self.args.pump_trip:
            alert("pump-trip", "critical", "waterworks-pump-1", "waterworks",
                  "Pump at waterworks tripped (motor protection): the pump is stopped until reset", 95_000)
        if self.args.gateway_down:
            alert("gateway-offline", "critical", None, "xicun",
                  "Gateway gw-xicun at xicun is offline: nothing from its devices for 300 s", 420_000, gateway="gw-xicun")
        if self.args.chlorine_low:
            alert("chlorine-low", "critical", "waterworks-quality-1", "waterworks",
                  "Free chlorine at waterworks 0.02 mg/L, below 0.05 mg/L (GB 5749-2022)", 600_000)
        for i, cow in enumerate(sorted(self.sick)):
            ack = dict(by="li.wei", at=rfc3339(now - 60_000), note="vet called") if i == 0 else None
            alert("cow-fever", "critical", cow, "farm",
                  f"{cow}: body temperature 1.2 °C above her own 10-day normal", 3_600_000 * (i + 1),
                  state="acknowledged" if ack else "firing", ack=ack)
        alert("barn-heat-stress", "warning", "farm-barn-1", "farm", "Heat stress in the barn: THI 74", 2_000_000,
              state="pending")
        if self.args.hostile:
            evil = '<img src=x onerror="document.title=\'pwned\'">'
            alert(f"rule-{evil}", "info", f"meter-{evil}", "x<b>", f"summary {evil}", 10_000)
        return out

    def gateway(self, site):
        self.device(f"gw-{site}", "gateway", site)

    def device(self, did, kind, site):
        self.devices.append(dict(id=did, kind=kind, site=site, gateway=f"gw-{site}", tenant="county",
                                 model="vt-sim", lat=None, lon=None))

    def values(self, d, now):
        """The metrics of device `d` at `now` (ms)."""
        k, h = d["kind"], now / 3_600_000
        wave = math.sin(h * 2 * math.pi / 24)
        seed = sum(map(ord, d["id"]))
        if k == "pump_station":
            trip = self.args.pump_trip
            return dict(tank_level=1.2 if trip else 2.4 + 0.6 * wave, pressure=0.05 if trip else 0.3,
                        flow=0.0 if trip else 12.4 + 3 * wave, volume_total=81234.5, pump_current=0 if trip else 18.2,
                        free_chlorine=0.62, fault_word=1 if trip else 0, pump_running=0 if trip else 1,
                        device_online=1)
        if k == "water_quality":
            return dict(free_chlorine=0.02 if self.args.chlorine_low else 0.41 + 0.05 * wave, turbidity=0.31,
                        ph=7.55, conductivity=620, water_temperature=14.2, fault_word=0, device_online=1)
        if k == "water_meter":
            return dict(flow=max(0, 0.03 * wave + (seed % 7) * 0.01), volume_total=100 + seed % 900,
                        battery_voltage=3.3 if seed % 50 == 0 else 3.6, valve_open=1, fault_word=0, device_online=1)
        if k == "external":
            return {"cpu_<i>usage</i>": 12.5}
        if k == "speaker":
            return dict(speaker_online=1, playback_state=0, speaker_volume=65, fault_word=0, device_online=1)
        if k == "barn_climate":
            return dict(barn_temperature=24.5 + 2 * wave, relative_humidity=62, fault_word=0, device_online=1)
        if k == "cow_collar" and d["id"].startswith("cow-"):
            fever = 1.2 if d["id"] in self.sick else 0
            return dict(body_temperature=self.base[d["id"]] + fever + 0.1 * wave, activity=300 + seed % 200,
                        rumination=25 if fever else 32, milk_yield=14.2, milk_conductivity=5.4)
        if k == "cow_collar":
            return dict(device_online=1)
        return {}

    def online(self, d):
        if d["kind"] == "gateway":
            return not (self.args.gateway_down and d["site"] == "xicun")
        return None if d["id"].startswith("cow-") else True

    def latest(self, now):
        rows = []
        for d in self.devices:
            if d["kind"] == "gateway":
                continue
            ts = rfc3339(now - 1000 - sum(map(ord, d["id"])) % 9000)
            for metric, value in self.values(d, now).items():
                rows.append(dict(device=d["id"], metric=metric, unit=UNITS.get(metric, ""), ts=ts, value=value,
                                 quality="good", kind=d["kind"], site=d["site"]))
        return rows


class Handler(BaseHTTPRequestHandler):
    county = None
    large = None
    events = False

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        etag = '"%s"' % hashlib.sha1(data).hexdigest()[:16]
        if status == 200 and self.headers.get("if-none-match") == etag:
            self.send_response(304)
            self.send_header("etag", etag)
            self.send_header("cache-control", "no-cache")
            self.end_headers()
            return
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("cache-control", "no-cache")
        # The policy ingest sends (ingest/src/api/dashboard.rs), so the page is tried under it.
        self.send_header("content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                         "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                         "frame-ancestors 'none'")
        self.send_header("etag", etag)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def page(self, rows, q):
        """A paged answer when the request names `limit`, else the bare array."""
        if "limit" not in q:
            return self.send(200, rows)
        limit, offset = max(1, int(q["limit"])), int(q.get("offset", 0))
        items = rows[offset:offset + limit]
        # Offsets stand in for the API's cursors here (the page passes next_cursor back as `cursor`).
        if "cursor" in q:
            offset = int(q["cursor"])
            items = rows[offset:offset + limit]
        nxt = str(offset + limit) if offset + limit < len(rows) else None
        return self.send(200, dict(items=items, total=len(rows), offset=offset, limit=limit, next_cursor=nxt))

    def large_get(self, path, q, now):
        """The large county's calls; False when `path` is not one of them."""
        c = self.large
        if path == "/api/v1/sites":
            return self.send(200, c.sites)
        if path == "/api/v1/summary":
            return self.send(200, c.summary(now))
        if path == "/api/v1/devices":
            return self.page(c.devices_view(q, now), q)
        if path == "/api/v1/latest":
            return self.page(c.latest(q, now), q)
        if path == "/api/v1/alerts":
            return self.send(200, c.alerts)
        if path == "/api/v1/broadcasts":
            b = {k: v for k, v in c.broadcast.items() if k != "deliveries"}
            return self.send(200, [b])
        if path == "/api/v1/broadcasts/7":
            return self.send(200, c.broadcast)
        if path == "/api/v1/stream" and self.events:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.end_headers()
            seen = c.version
            try:
                self.wfile.write(b": hello\n\n")
                self.wfile.flush()
                while True:
                    time.sleep(0.5)
                    if c.version != seen:
                        seen = c.version
                        alert = c.alerts[-1] if c.alerts else None
                        self.wfile.write(f"event: alert\ndata: {json.dumps(dict(event='firing', alert=alert))}\n\n".encode())
                    else:
                        self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
            except OSError:
                return True
        return False

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        now = time.time() * 1000
        c = self.county
        if self.large is not None and url.path.startswith("/api/") and self.large_get(url.path, q, now) is not False:
            return None
        if url.path == "/":
            return self.send(200, (WEB / "index.html").read_bytes(), TYPES[".html"])
        if url.path.startswith("/dashboard/"):
            f = (WEB / url.path[len("/dashboard/"):]).resolve()
            if WEB in f.parents and f.is_file():
                return self.send(200, f.read_bytes(), TYPES.get(f.suffix, "application/octet-stream"))
            return self.send(404, {"error": "no such file"})
        if url.path == "/api/v1/sites":
            return self.send(200, c.sites)
        if url.path == "/api/v1/devices":
            return self.send(200, [dict(d, online=c.online(d), last_seen=rfc3339(now - 3000)) for d in c.devices])
        if url.path == "/api/v1/latest":
            # Built at most every 4 s: a county's worth of rows is slow to make in Python.
            if now - c.latest_at > 4000:
                c.latest_json, c.latest_at = json.dumps(c.latest(now)).encode(), now
            return self.send(200, c.latest_json)
        if url.path == "/api/v1/alerts":
            return self.send(200, [a for a in c.alerts if a["state"] in ("pending", "firing", "acknowledged")])
        if url.path == "/api/v1/series":
            to = float(q.get("to", now))
            frm = float(q.get("from", to - 86_400_000))
            d = next((d for d in c.devices if d["id"] == q.get("device")), None)
            if d is None:
                return self.send(404, {"error": f"no device '{q.get('device')}'"})
            metric = q.get("metric", "")
            points, ts = [], frm - frm % 10_000 + 10_000
            while ts < to:
                v = c.values(d, ts).get(metric)
                if v is not None and not (3_600_000 * 0.3 < to - ts < 3_600_000 * 0.35):  # a gap to draw
                    points.append(dict(ts=rfc3339(ts), value=v + 0.02 * math.sin(ts / 97_000), quality="good"))
                ts += 10_000
            return self.send(200, dict(device=d["id"], metric=metric, unit=UNITS.get(metric, ""), from_=rfc3339(frm),
                                       to=rfc3339(to), points=points, truncated=False))
        return self.send(404, {"error": "not found"})


    def do_POST(self):
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if self.large is not None and url.path == "/api/v1/sim/faults":
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            lc = self.large
            if body.get("device") not in lc.by_id:
                return self.send(404, {"error": "no such device"})
            lc.faults[body["device"]] = body.get("fault")
            lc.version += 1
            now = time.time() * 1000
            site = lc.by_id[body["device"]]["site"]
            lc.alerts.append(dict(id=len(lc.alerts) + 100, rule="pump-trip", severity="critical", state="firing",
                                  device=body["device"], site=site, gateway=f"gw-{site}", district=None,
                                  entity=dict(type="device", id=body["device"]), tenant="county",
                                  started_at=rfc3339(now), fired_at=rfc3339(now), resolved_at=None,
                                  summary=f"Pump at {site} tripped (motor protection)", value=1.0,
                                  fingerprint=f"pump-trip/device/{body['device']}", silenced_by=None, ack=None,
                                  flaps=0, updated_at=rfc3339(now)))
            return self.send(201, {"device": body["device"], "fault": body.get("fault")})
        if len(parts) != 5 or parts[:3] != ["api", "v1", "alerts"] or parts[4] != "ack":
            return self.send(404, {"error": "not found"})
        token = self.headers.get("authorization", "").removeprefix("Token ").removeprefix("Bearer ")
        if token == "viewer":
            return self.send(403, {"error": "this token has role viewer; operator is needed"})
        if token != "operator":
            return self.send(401, {"error": "unknown token"})
        alert = next((a for a in self.county.alerts if str(a["id"]) == parts[3]), None)
        if alert is None:
            return self.send(404, {"error": f"no alert {parts[3]}"})
        if alert["state"] not in ("firing", "acknowledged"):
            return self.send(422, {"error": f"alert {parts[3]} is {alert['state']}, not firing yet"})
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        alert.update(state="acknowledged", ack=dict(by="operator", at=rfc3339(time.time() * 1000),
                                                     note=body.get("note", "")))
        return self.send(200, alert)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8091)
    p.add_argument("--villages", type=int, default=3)
    p.add_argument("--meters", type=int, default=50)
    p.add_argument("--cows", type=int, default=100)
    p.add_argument("--pump-trip", action="store_true")
    p.add_argument("--chlorine-low", action="store_true")
    p.add_argument("--gateway-down", action="store_true")
    p.add_argument("--hostile", action="store_true")
    p.add_argument("--county", choices=["small", "large"], default="small")
    p.add_argument("--events", action="store_true",
                   help="serve GET /api/v1/stream (a never-ending stream: Chromium's --virtual-time-budget then never ends)")
    args = p.parse_args()
    Handler.county = County(args)
    Handler.events = args.events
    if args.county == "large":
        Handler.large = LargeCounty(args)
        Handler.large.alerts = []
        print(f"large county: {len(Handler.large.devices)} devices", flush=True)
    print(f"http://127.0.0.1:{args.port}/  ({len(Handler.county.devices)} devices)", flush=True)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
