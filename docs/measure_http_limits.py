"""Measures ingest's HTTP limits against a running ingest (docs/RELIABILITY.md).

Usage: python3 docs/measure_http_limits.py HOST PORT PID [CONNECTIONS]
Opens CONNECTIONS idle connections at once and reports how many the server answered 503
and closed at once, how many it kept, how long it kept them, ingest's open descriptors,
and what a partial header and a health request see meanwhile.
"""
import os, socket, sys, time, urllib.request

host, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 2000

def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))

def health():
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/api/v1/health", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:
        return f"error: {e.__class__.__name__}"

print(f"ingest fds before: {fds()}, health: {health()}")
t0 = time.monotonic()
socks = []
for _ in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, port))
    socks.append(s)
print(f"opened {n} connections in {time.monotonic() - t0:.2f} s")
time.sleep(1.0)
refused, kept = 0, []
for s in socks:
    try:
        data = s.recv(4096)
        if data.startswith(b"HTTP/1.1 503") or data == b"":
            refused += 1
            s.close()
        else:
            kept.append(s)
    except BlockingIOError:
        kept.append(s)
    except ConnectionResetError:
        refused += 1
        s.close()
print(f"after 1 s: {refused} answered 503 and closed by ingest, {len(kept)} kept open; ingest fds: {fds()}")
print(f"health while at the cap (a new connection): {health()}")
start = time.monotonic()
closed_at = []
while kept and time.monotonic() - start < 30:
    still = []
    for s in kept:
        try:
            data = s.recv(4096)
            if data == b"":
                closed_at.append(time.monotonic() - t0)
                s.close()
            else:
                still.append(s)
        except BlockingIOError:
            still.append(s)
        except ConnectionResetError:
            closed_at.append(time.monotonic() - t0)
            s.close()
    kept = still
    time.sleep(0.05)
if closed_at:
    print(f"idle connections closed by ingest: {len(closed_at)}, between {min(closed_at):.1f} s and {max(closed_at):.1f} s after opening; still open after 30 s: {len(kept)}")
print(f"ingest fds after: {fds()}, health: {health()}")

# A partial header (slowloris).
s = socket.create_connection((host, port))
s.sendall(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\n")
t = time.monotonic()
s.settimeout(60)
try:
    while s.recv(4096):
        pass
except Exception:
    pass
print(f"a partial header was closed after {time.monotonic() - t:.1f} s")
