"""A county the size of the real one for fixture_server.py (`--county large`): about 150
villages in 8 townships strung along river valleys, 15,000 household meters, 400
speakers, 3 waterworks, 2 dairy farms of 1,000 cows each, and the calls the dashboard
uses at that size (issue 17), in the shapes of docs/API.md ("At county size"):
`GET /api/v1/summary` (counts by state per site and township), townships as sites of
kind `township`, `devices` and `latest` filtered by site, kind and township and paged
(`limit`, `offset`, `cursor`; the answer is then `{"items", "total", "offset", "limit",
"next_cursor"}`), a broadcast to every speaker in progress with a few failures, and (with
--events) `GET /api/v1/stream` (an `alert` event when a fault is injected). Every JSON
answer carries an ETag; `If-None-Match` gets a 304.

The values are made up, for working on the page without ingest; `ingest demo --county
large` is the real thing.
"""

import math
import random

TOWNSHIPS = [("chengguan", "城关镇 Chengguan"), ("hekou", "河口镇 Hekou"), ("dongling", "东岭乡 Dongling"),
             ("xipo", "西坡乡 Xipo"), ("nanwan", "南湾镇 Nanwan"), ("beishan", "北山乡 Beishan"),
             ("liulin", "柳林镇 Liulin"), ("shiqiao", "石桥乡 Shiqiao")]
SYLLABLES = [("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"), ("杨", "Yang"),
             ("赵", "Zhao"), ("黄", "Huang"), ("周", "Zhou"), ("吴", "Wu"), ("徐", "Xu"), ("孙", "Sun"),
             ("马", "Ma"), ("朱", "Zhu"), ("胡", "Hu"), ("郭", "Guo"), ("何", "He"), ("高", "Gao"),
             ("林", "Lin"), ("罗", "Luo")]
PLACES = [("庄", "zhuang"), ("村", "cun"), ("营", "ying"), ("寨", "zhai"), ("沟", "gou"), ("湾", "wan"),
          ("岭", "ling"), ("坡", "po"), ("店", "dian"), ("屯", "tun")]
GIVEN = ["建国", "秀英", "桂兰", "志强", "春梅", "国华", "玉兰", "海燕", "明", "伟", "芳", "军", "丽", "强", "静"]
REASONS = ["speaker did not answer within 3 attempts (gateway timeout)", "amplifier fault (fault bit 0): not ready",
           "gateway gw-{site} offline", "signature check failed: unknown key", "speaker busy with a higher level"]


def rfc(ms):
    from datetime import datetime, timezone
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ms) % 1000:03d}Z"


class LargeCounty:
    def __init__(self, args):
        rnd = random.Random(17)
        self.args = args
        self.sites, self.devices, self.townships = [], [], []
        self.faults = {}
        self.version = 1
        lat0, lon0 = 34.70, 113.60
        villages = []
        for t, (tid, tname) in enumerate(TOWNSHIPS):
            # Each township lies along its own valley: a bent line 12-20 km long.
            angle = t * 2 * math.pi / len(TOWNSHIPS) + rnd.uniform(-0.2, 0.2)
            start = 4 + rnd.uniform(0, 3)
            n = 18 + (t % 3)
            pts = []
            for i in range(n):
                along = start + i * 0.9 + rnd.uniform(-0.3, 0.3)
                bend = 2.5 * math.sin(i / 4 + t)
                side = rnd.gauss(0, 0.6)
                north = along * math.cos(angle) - (bend + side) * math.sin(angle)
                east = along * math.sin(angle) + (bend + side) * math.cos(angle)
                pts.append((north, east))
            clat = sum(p[0] for p in pts) / n
            clon = sum(p[1] for p in pts) / n
            self.townships.append(dict(id=tid, name=tname, lat=lat0 + clat / 111.0, lon=lon0 + clon / 91.3))
            for i, (north, east) in enumerate(pts):
                a, b = SYLLABLES[(t * 7 + i * 3) % len(SYLLABLES)], PLACES[(t + i) % len(PLACES)]
                vid = f"{tid}-{i + 1:02d}"
                name = f"{a[0]}{b[0]}{'' if i < 10 else i // 10 + 1} {a[1]}{b[1]}{'' if i < 10 else i // 10 + 1}"
                villages.append(dict(id=vid, name=name, kind="village", tenant="county", lat=lat0 + north / 111.0,
                                     lon=lon0 + east / 91.3, village=vid, district=f"district-{t // 3 + 1}",
                                     township=tid))
        for w in range(3):
            sid = "waterworks" if w == 0 else f"waterworks-{w + 1}"
            t = TOWNSHIPS[w * 3]
            tw = self.townships[w * 3]
            self.sites.append(dict(id=sid, name="水厂 Waterworks" if w == 0 else f"水厂{w + 1} Waterworks {w + 1}",
                                   kind="waterworks", tenant="county", lat=tw["lat"] + 0.03, lon=tw["lon"] - 0.03,
                                   village=None, district=f"district-{w + 1}", township=t[0]))
            self.device(f"gw-{sid}", "gateway", sid)
            self.device(f"{sid}-pump-1", "pump_station", sid)
            self.device(f"{sid}-quality-1", "water_quality", sid)
        self.cows = {}
        for f in range(2):
            fid = "farm" if f == 0 else "farm-2"
            tw = self.townships[2 + 3 * f]
            self.sites.append(dict(id=fid, name="奶牛场 Dairy farm" if f == 0 else "奶牛二场 Dairy farm 2", kind="farm",
                                   tenant="dairy", lat=tw["lat"] - 0.02, lon=tw["lon"] + 0.04, village=None,
                                   district=None, township=tw["id"]))
            self.device(f"gw-{fid}", "gateway", fid)
            self.device(f"{fid}-barn-1", "barn_climate", fid)
            for hub in range(4):
                self.device(f"{fid}-collar-hub{'' if hub == 0 else '-' + str(hub + 1)}", "cow_collar", fid)
            for c in range(1000):
                cid = f"cow-{(f + 1) * 10000 + c * 3 + rnd.randrange(3)}"
                self.cows[cid] = rnd.gauss(38.6, 0.18) + (1.1 if rnd.random() < 0.006 else 0)
                self.device(cid, "cow_collar", fid)
        self.sites.extend(villages)
        # Each township is a site of its own at its seat (kind `township`), as the API has it.
        self.sites.extend(dict(id=t["id"], name=t["name"], kind="township", tenant="county", lat=t["lat"], lon=t["lon"],
                               village=None, district=None, township=None) for t in self.townships)
        speakers_left = 400
        for i, v in enumerate(villages):
            vid = v["id"]
            self.device(f"gw-{vid}", "gateway", vid)
            n_sp = 3 if i < 400 - 2 * len(villages) else 2
            n_sp = min(n_sp, speakers_left)
            speakers_left -= n_sp
            for s in range(n_sp):
                self.device(f"{vid}-speaker-{s + 1}", "speaker", vid)
            for m in range(100):
                g = GIVEN[(i * 100 + m) % len(GIVEN)]
                fam = SYLLABLES[(i + m * 7) % len(SYLLABLES)][0]
                self.device(f"{vid}-meter-{m + 1:03d}", "water_meter", vid, name=f"{fam}{g}家 No. {m + 1}")
        self.by_id = {d["id"]: d for d in self.devices}
        self.site_of = {s["id"]: s for s in self.sites}
        # A few realistic troubles: one village's gateway down, some silent meters, speakers offline.
        self.gateway_down = {villages[37]["id"]}
        self.silent = {d["id"] for d in self.devices if d["kind"] == "water_meter" and rnd.random() < 0.02}
        speakers = [d["id"] for d in self.devices if d["kind"] == "speaker"]
        self.speakers_off = set(rnd.sample(speakers, 9))
        self.broadcast = self.make_broadcast(rnd, speakers)

    def device(self, did, kind, site, name=None):
        d = dict(id=did, kind=kind, site=site, gateway=f"gw-{site}", tenant="dairy" if site.startswith("farm") else "county",
                 model="vt-sim", lat=None, lon=None)
        if name:
            d["name"] = name
        self.devices.append(d)

    def make_broadcast(self, rnd, speakers):
        import time
        now = time.time() * 1000
        deliveries = []
        for s in speakers:
            site = self.by_id[s]["site"]
            if s in self.speakers_off or site in self.gateway_down:
                state, reason = "failed", REASONS[2 if site in self.gateway_down else 0].format(site=site)
            else:
                r = rnd.random()
                state, reason = ("played", None) if r < 0.9 else ("playing", None) if r < 0.95 else ("sent", None)
                if r > 0.995:
                    state, reason = "failed", REASONS[1]
            deliveries.append(dict(speaker=s, gateway=f"gw-{site}", state=state, feedback=4 if state == "failed" else 3,
                                   attempts=3 if state == "failed" else 1, reason=reason, updated_at=rfc(now - 20000)))
        counts = {}
        for d in deliveries:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
        return dict(id=7, tenant="county", level="red", level_number=1, state="active", needs_approval=True,
                    content=dict(text="山洪预警：河道水位上涨，请沿河群众立即向高处转移。"), headline="山洪预警 Flash flood warning",
                    targets=["all"], speakers=len(deliveries), counts=counts, created_at=rfc(now - 120000),
                    released_at=rfc(now - 90000), deliveries=deliveries)

    def online(self, d):
        if d["kind"] == "gateway":
            return d["site"] not in self.gateway_down
        if d["site"] in self.gateway_down:
            return False
        if d["id"] in self.speakers_off:
            return False
        return None if d["id"].startswith("cow-") else True

    def values(self, d, now):
        k, h = d["kind"], now / 3_600_000
        wave = math.sin(h * 2 * math.pi / 24)
        seed = sum(map(ord, d["id"]))
        if k == "pump_station":
            trip = self.faults.get(d["id"]) == "pump_trip"
            return dict(tank_level=1.2 if trip else 2.4 + 0.6 * wave, pressure=0.05 if trip else 0.3,
                        flow=0.0 if trip else 120.4 + 30 * wave, pump_flow=0 if trip else 118.0, pump_current=0 if trip else 18.2,
                        free_chlorine=0.62, fault_word=1 if trip else 0, pump_running=0 if trip else 1, device_online=1)
        if k == "water_quality":
            return dict(free_chlorine=0.41 + 0.05 * wave, turbidity=0.31, ph=7.55, conductivity=620,
                        water_temperature=14.2, fault_word=0, device_online=1)
        if k == "water_meter":
            return dict(flow=max(0, 0.03 * wave + (seed % 7) * 0.01), volume_total=100 + seed % 900,
                        battery_voltage=3.3 if seed % 50 == 0 else 3.6, valve_open=1, fault_word=0)
        if k == "speaker":
            return dict(speaker_online=0 if d["id"] in self.speakers_off else 1, playback_state=0, speaker_volume=65,
                        fault_word=0, device_online=1)
        if k == "barn_climate":
            return dict(barn_temperature=24.5 + 2 * wave, relative_humidity=62, fault_word=0, device_online=1)
        if k == "cow_collar" and d["id"].startswith("cow-"):
            return dict(body_temperature=self.cows[d["id"]] + 0.1 * wave, activity=300 + seed % 200,
                        rumination=32, milk_yield=14.2)
        if k == "cow_collar":
            return dict(device_online=1)
        return {}

    def device_ts(self, d, now):
        """A meter reports every 15-60 min (staggered); everything else every 10 s."""
        seed = sum(map(ord, d["id"]))
        if d["site"] in self.gateway_down:
            return now - 3_600_000 * 3
        if d["id"] in self.silent:
            return now - 3_600_000 * 30
        if d["kind"] == "water_meter":
            period = (15 + seed % 46) * 60_000
            return now - (now + seed * 7919) % period
        return now - 1000 - seed % 9000

    def state(self, d, now):
        if self.online(d) is False:
            return "offline"
        ts = self.device_ts(d, now)
        limit = 2 * 3_600_000 if d["kind"] == "water_meter" else 120_000
        return "stale" if now - ts > limit else "ok"

    def in_filter(self, d, q):
        if q.get("kind") and d["kind"] != q["kind"] and not (q["kind"] == "cow_collar" and d["kind"] == "cow_collar"):
            return False
        if q.get("site") and d["site"] != q["site"]:
            return False
        if q.get("device") and d["id"] != q["device"]:
            return False
        if q.get("township") and self.site_of.get(d["site"], {}).get("township") != q["township"]:
            return False
        if q.get("q"):
            needle = q["q"].lower()
            if needle not in d["id"].lower() and needle not in d.get("name", "").lower():
                return False
        return True

    def devices_view(self, q, now):
        out = []
        for d in self.devices:
            if not self.in_filter(d, q):
                continue
            out.append(dict(d, online=self.online(d), last_seen=rfc(self.device_ts(d, now))))
        return out

    def latest(self, q, now):
        rows = []
        for d in self.devices:
            if d["kind"] == "gateway" or not self.in_filter(d, q):
                continue
            ts = rfc(self.device_ts(d, now))
            for metric, value in self.values(d, now).items():
                if q.get("metric") and metric != q["metric"]:
                    continue
                rows.append(dict(device=d["id"], metric=metric, unit=UNITS.get(metric, ""), ts=ts, value=value,
                                 quality="good", kind=d["kind"], site=d["site"]))
        return rows

    def summary(self, now):
        """Counts by state per site (by device kind) and per township, and the county's."""
        # Rounded to the minute, so an unchanged county answers the same (and a 304).
        now = now - now % 60_000
        sites = {}
        for s in self.sites:
            if s["kind"] == "township":
                continue
            sites[s["id"]] = dict(id=s["id"], township=s.get("township"), kind=s["kind"], state="ok", counts={},
                                  gateways=dict(total=0, online=0), issues=[])
        for d in self.devices:
            s = sites[d["site"]]
            if d["kind"] == "gateway":
                s["gateways"]["total"] += 1
                s["gateways"]["online"] += 1 if self.online(d) else 0
                continue
            kind = "cow" if d["id"].startswith("cow-") else "collar_hub" if d["kind"] == "cow_collar" else d["kind"]
            c = s["counts"].setdefault(kind, dict(total=0, ok=0, stale=0, offline=0, nodata=0))
            c["total"] += 1
            c[self.state(d, now)] += 1
            if kind == "pump_station" and self.faults.get(d["id"]) == "pump_trip":
                s["issues"].append(dict(device=d["id"], what="pump_fault"))
        for s in sites.values():
            if s["gateways"]["total"] and not s["gateways"]["online"]:
                s["state"] = "offline"
            elif s["issues"] or any(c["offline"] for c in s["counts"].values()):
                s["state"] = "attention"
            elif any(c["stale"] > 0.1 * c["total"] for c in s["counts"].values()):
                s["state"] = "attention"
        townships = []
        for t in self.townships:
            states = dict(ok=0, attention=0, stale=0, offline=0, nodata=0)
            members = [s for s in sites.values() if s["township"] == t["id"]]
            for s in members:
                states[s["state"]] += 1
            townships.append(dict(t, sites=len(members), states=states))
        totals = dict(devices=dict(total=len(self.devices)))
        return dict(stale_after_ms=dict(water_meter=7_800_000, default=120_000), totals=totals,
                    sites=list(sites.values()), townships=townships)


UNITS = {"flow": "m3/h", "volume_total": "m3", "pressure": "MPa", "tank_level": "m", "free_chlorine": "mg/L",
         "turbidity": "NTU", "ph": "pH", "conductivity": "uS/cm", "water_temperature": "°C", "pump_running": "bool",
         "pump_current": "A", "pump_flow": "m3/h", "fault_word": "bits", "body_temperature": "°C",
         "activity": "steps/h", "rumination": "min/h", "milk_yield": "kg", "barn_temperature": "°C",
         "relative_humidity": "%", "speaker_online": "bool", "speaker_volume": "%", "playback_state": "state",
         "device_online": "bool", "battery_voltage": "V", "valve_open": "bool"}
