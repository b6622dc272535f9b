"""Measures the line-protocol growth limits against a running `ingest demo` (docs/RELIABILITY.md).

Usage: python3 docs/measure_line_protocol_limits.py HOST PORT PID ADMIN_TOKEN
"""
import gzip, json, os, sys, time, urllib.request
host, port, pid, token = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base = f"http://{host}:{port}"
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) // 1024
def post(body, gz=False):
    req = urllib.request.Request(f"{base}/api/v2/write?org=county&precision=ms", data=body, method="POST")
    req.add_header("Authorization", f"Token {token}")
    if gz: req.add_header("Content-Encoding", "gzip")
    try:
        with urllib.request.urlopen(req, timeout=120) as r: return r.status, ""
    except urllib.error.HTTPError as e: return e.code, e.read().decode()[:160]
def devices_bytes():
    with urllib.request.urlopen(f"{base}/api/v1/devices", timeout=60) as r: return len(r.read())
now = int(time.time() * 1000)
print(f"RSS before: {rss()} MiB, /api/v1/devices {devices_bytes()} bytes")
statuses = {}
t0 = time.monotonic()
for b in range(100):
    body = "".join(f"tank,device=lp-{b}-{i} level=1 {now}\n" for i in range(1000)).encode()
    s, msg = post(body)
    statuses[s] = statuses.get(s, 0) + 1
print(f"100 requests of 1,000 new device tags each (100k devices asked for) in {time.monotonic()-t0:.1f} s: statuses {statuses}; last: {msg}")
print(f"RSS after: {rss()} MiB, /api/v1/devices {devices_bytes()} bytes")
lines = b"m,host=lp-0-0 v=1\n" * 1_700_000
gz = gzip.compress(lines, 9)
s, msg = post(gz, gz=True)
print(f"gzip body of {len(gz)//1024} KiB ({len(lines)//1048576} MiB, 1.7 M values): {s} {msg}; RSS {rss()} MiB")
t0 = time.monotonic()
s, msg = post(gzip.compress(b"m,host=lp-0-0 v=1\n" * 100_000, 9), gz=True)
print(f"positive control, 100,000 values of a known device in one gzip body: {s} in {time.monotonic()-t0:.1f} s; RSS {rss()} MiB")
