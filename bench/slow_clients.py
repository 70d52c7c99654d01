#!/usr/bin/env python3
"""Slow clients against berth: N connections (default 1,000) each trickling ~1 MiB of request
headers (8 KiB every 50 ms, for 12 s) while a normal client asks every 100 ms. Prints berth's
RSS at rest and at peak, its 431 count and the normal client's worst latency (issue 12).

    bench/slow_clients.py target/release/berth [N]

Loopback only (ports 28080, 28081, 28099). tests/hostile.rs runs the same shape with 300
connections in CI."""
import os, socket, subprocess, sys, tempfile, threading, time, urllib.request

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
HTTP, ADMIN, BACK = 28080, 28099, 28081
cfg = f"""listeners:
  - name: main
    address: "127.0.0.1:{HTTP}"
admin:
  address: "127.0.0.1:{ADMIN}"
services:
  - domains: [row0.test]
    health_check: {{ type: none }}
    backends: [{{address: "127.0.0.1:{BACK}"}}]
"""
d = tempfile.mkdtemp()
open(f"{d}/berth.yaml", "w").write(cfg)
backend = subprocess.Popen([BIN, "whoami", "--listen", f"127.0.0.1:{BACK}", "--name", "b"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
berth = subprocess.Popen(["sh", "-c", f"ulimit -n $(ulimit -Hn); exec {BIN} serve --config {d}/berth.yaml"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.5)
def rss():
    for l in open(f"/proc/{berth.pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) // 1024
def normal():
    t = time.time()
    s = socket.create_connection(("127.0.0.1", HTTP), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: row0.test\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        c = s.recv(65536)
        if not c: break
        data += c
    s.close()
    return time.time() - t, data.split(b" ")[1] if data else b"-"
for _ in range(20): normal()
base = rss()
start = time.time()
sent = [0] * N
def slow(i):
    try:
        s = socket.create_connection(("127.0.0.1", HTTP), timeout=15)
        s.sendall(b"GET / HTTP/1.1\r\nHost: row0.test\r\n")
        line = (f"X-Pad-{i}: " + "x" * 8192 + "\r\n").encode()
        while sent[i] < (1 << 20) and time.time() - start < 12:
            s.sendall(line); sent[i] += len(line); time.sleep(0.05)
    except OSError:
        pass
threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(N)]
for t in threads: t.start()
peak, worst, failed = base, 0.0, 0
while time.time() - start < 12:
    peak = max(peak, rss())
    if time.time() - start > 1:
        try:
            dt, code = normal()
            worst = max(worst, dt)
            failed += code != b"200"
        except OSError:
            failed += 1
    time.sleep(0.1)
for t in threads: t.join(timeout=5)
metrics = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics").read().decode()
refused = [l for l in metrics.splitlines() if l.startswith('berth_requests_unrouted_total{code="431"}')]
print(f"{N} slow clients sent {sum(sent) >> 20} MiB of headers; berth RSS {base} MiB at rest, "
      f"{peak} MiB at peak; normal client worst {worst*1000:.1f} ms, {failed} failed; {refused}")
berth.terminate(); backend.terminate()
