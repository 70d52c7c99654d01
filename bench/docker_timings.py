#!/usr/bin/env python3
"""Discovery latency against a real Docker engine: how long from `docker run` to the first
request berth routes to the new container, and from `docker stop` to the last request it routes
to the stopped one. Prints a markdown table of medians over --runs runs.

Usage: bench/docker_timings.py [--berth target/release/berth] [--runs 5]
Needs a running Docker engine and busybox-static (the test image is imported from it).
Load goes only to 127.0.0.1 (berth) and the containers this script starts.
"""
import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

IMAGE = "berth-test-busybox:latest"
HTTPD = "hostname > /www/index.html; exec busybox httpd -f -p 80 -h /www"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_image():
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(f"{root}/bin")
        os.makedirs(f"{root}/www")
        shutil.copy("/bin/busybox", f"{root}/bin/busybox")
        os.symlink("busybox", f"{root}/bin/sh")
        subprocess.run(f"tar -C {root} -c . | docker import - {IMAGE}", shell=True, check=True,
                       capture_output=True)


def get(port, host, timeout=1.0):
    """(status, body) of GET / with Host, or (None, None) on any error."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read().decode().strip()
        conn.close()
        return resp.status, body
    except OSError:
        return None, None


def run_container(name, host):
    return sh("docker", "run", "-d", "--init", "--name", name, "--label", "berth-test=1",
              "--label", f"berth.routing.port_80={host}", IMAGE, "sh", "-c", HTTPD)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    ensure_image()
    http_port, admin_port = free_port(), free_port()
    tmp = tempfile.mkdtemp()
    config = f"{tmp}/berth.yaml"
    with open(config, "w") as f:
        f.write(f"""listeners: [{{name: main, address: "127.0.0.1:{http_port}"}}]
admin: {{address: "127.0.0.1:{admin_port}"}}
discovery: {{docker: {{enabled: true}}}}
""")
    berth = subprocess.Popen([args.berth, "serve", "--config", config],
                             stdout=open(f"{tmp}/berth.log", "w"), stderr=subprocess.STDOUT)
    names = []
    try:
        deadline = time.time() + 20
        while get(admin_port, "admin")[0] is None and time.time() < deadline:
            time.sleep(0.05)
        joins, seen_after_run, stops = [], [], []
        for i in range(args.runs):
            host = f"timing-{os.getpid()}-{i}.test"
            keeper = f"berth-timing-{os.getpid()}-{i}-a"
            mover = f"berth-timing-{os.getpid()}-{i}-b"
            names += [keeper, mover]
            run_container(keeper, host)
            while get(http_port, host)[0] != 200:
                time.sleep(0.01)
            # Start: from `docker run` to the first request the new container answers.
            started = time.monotonic()
            new_id = run_container(mover, host)
            ran = time.monotonic()
            while get(http_port, host)[1] != new_id[:12]:
                time.sleep(0.002)
            first = time.monotonic()
            joins.append(first - started)
            seen_after_run.append(first - ran)
            # Stop: from `docker stop` to the last request routed to the stopping container,
            # with a client loop running; any failed request is reported.
            last = {"at": None, "failed": 0}
            stop_loop = threading.Event()

            def loop():
                while not stop_loop.is_set():
                    status, body = get(http_port, host)
                    if status != 200:
                        last["failed"] += 1
                    elif body == new_id[:12]:
                        last["at"] = time.monotonic()

            t = threading.Thread(target=loop)
            t.start()
            time.sleep(0.3)
            stopping = time.monotonic()
            sh("docker", "stop", mover)
            time.sleep(0.5)
            stop_loop.set()
            t.join()
            stops.append(max(0.0, (last["at"] or stopping) - stopping))
            if last["failed"]:
                print(f"run {i}: {last['failed']} requests failed during docker stop", file=sys.stderr)
            sh("docker", "rm", "-f", keeper, mover, check=False)
        ms = lambda xs: f"{statistics.median(xs) * 1000:.0f} ms (min {min(xs) * 1000:.0f}, max {max(xs) * 1000:.0f})"
        print(f"| measure (median of {args.runs}) | value |")
        print("| --- | --- |")
        print(f"| `docker run` start to first request routed to the new container | {ms(joins)} |")
        print(f"| ... of which after `docker run` returned | {ms(seen_after_run)} |")
        print(f"| `docker stop` start to last request routed to the stopping container | {ms(stops)} |")
    finally:
        berth.terminate()
        berth.wait()
        for name in names:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)


if __name__ == "__main__":
    main()
