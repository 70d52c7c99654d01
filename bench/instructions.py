#!/usr/bin/env python3
"""Instructions per proxied request, counted by valgrind (callgrind): berth against the floor,
without the noise that time measurements have on a shared machine.

CPU time per request (bench/run.sh) moves by 10-20% between runs on this VM; an instruction
count does not move at all for the same binary and load, so it resolves a change of a few
hundred instructions in a ~80,000-instruction request. It is not time: callgrind counts each
iteration of `rep movs`/`rep stos` (large memcpy/memset) as one instruction, and cache misses
and system calls are not in it. It answers "how much work does berth add", bench/run.sh "how
long does it take".

Targets, each proxying a scenario (`small`: 13-byte answers from an nginx backend; `16k`:
16 KiB ones; keep-alive, wrk -c10) under callgrind; counters are zeroed after a warm-up and
dumped after the measured run, so start-up is not counted:
  floor                the bare Pingora proxy (examples/pingora_floor.rs)
  floor+timeouts       the floor with berth's default peer timeouts (Pingora times each read)
  floor+pingora        and X-Forwarded-For/-Proto/-Host set with Pingora's insert_header:
                       what Pingora costs for the features berth needs from it
  berth                berth as bench/run.sh runs it (health checks, metrics)
  berth-sticky         the same with a sticky cookie
plus each --bin NAME=PATH (another berth binary, same config as `berth`).

Writes a markdown table (instructions per request, x floor, x floor+pingora) and, per target,
where its instructions go (exclusive counts per function, per request) against floor+pingora
for berth's targets and against the floor for the others, to target/bench-instructions/. Needs valgrind, nginx and wrk. Load goes only to 127.0.0.1.

Usage: bench/instructions.py [--scenario small,16k] [--seconds 10] [--bin base=/tmp/berth-old]
                             [--no-build]
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOST = "bench.local"
BASE_PORT = int(os.environ.get("BENCH_PORT_BASE", "18000")) + 400
BACKENDS = (BASE_PORT + 1, BASE_PORT + 2)
PROXY_PORT = BASE_PORT + 10
ADMIN_PORT = BASE_PORT + 11
SCENARIOS = {"small": "/", "16k": "/16k.bin"}


def render(template, out, **values):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    with open(out, "w") as f:
        f.write(text)


def get(url, host=HOST):
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=1) as resp:
            return resp.status
    except Exception:
        return None


def wait_ok(url, proc, what, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if get(url) == 200:
            return
        if proc.poll() is not None:
            sys.exit(f"{what} exited ({proc.returncode}) before answering {url}")
        time.sleep(0.1)
    sys.exit(f"{what} did not answer 200 on {url}")


def wrk(seconds, path, connections=10):
    """Runs wrk against the proxy; returns (requests, non-2xx responses, socket errors)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-H", f"Host: {HOST}",
         f"http://127.0.0.1:{PROXY_PORT}{path}"],
        check=True, capture_output=True, text=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return requests, int(bad.group(1)) if bad else 0, errors.group(0) if errors else ""


def measure(name, command, tmp, seconds, path):
    """Instructions per request of COMMAND (a proxy on PROXY_PORT) under callgrind, and the
    callgrind dump of the measured run."""
    out = os.path.join(tmp, f"callgrind.{name}")
    log = open(os.path.join(tmp, f"{name}.log"), "w")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
    try:
        wait_ok(f"http://127.0.0.1:{PROXY_PORT}/", proc, name)
        wrk(2, path)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       capture_output=True)
        requests, bad, errors = wrk(seconds, path)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                       capture_output=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    if bad or errors:
        sys.exit(f"{name}: {bad} non-2xx answers {errors}; see {tmp}/{name}.log")
    dumps = sorted(f for f in os.listdir(tmp) if f.startswith(f"callgrind.{name}."))
    dump = os.path.join(tmp, dumps[0])
    with open(dump) as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("summary:"))
    return total / requests, requests, dump


def per_function(dump, requests, total):
    """Exclusive instructions per request of each function in a callgrind dump. The thread
    entry points, which callgrind_annotate lists with the whole program's cost, are left out."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", dump],
        check=True, capture_output=True, text=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        where = re.sub(r" \[[^]]*\]$", "", m.group(2))
        function = where.split(":", 1)[1] if ":" in where else where
        cost = int(m.group(1).replace(",", "")) / requests
        if cost < 0.99 * total:
            costs[function] = costs.get(function, 0) + cost
    return costs


def difference(target, costs, reference, reference_costs, rows=40):
    lines = [f"# {target} against {reference}: exclusive instructions per request, by function",
             f"{'target':>9} {'ref':>9} {'diff':>9}  function"]
    names = sorted(set(costs) | set(reference_costs),
                   key=lambda k: -abs(costs.get(k, 0) - reference_costs.get(k, 0)))
    for name in names[:rows]:
        a, b = costs.get(name, 0), reference_costs.get(name, 0)
        lines.append(f"{a:9.0f} {b:9.0f} {a - b:+9.0f}  {name[:160]}")
    return "\n".join(lines) + "\n"


def measure_scenario(scenario, targets, tmp, args):
    """Measures every target in one scenario; returns its table rows and writes its
    per-function differences."""
    results = {}
    for name, command in targets:
        per_request, requests, dump = measure(f"{scenario}.{name}", command, tmp, args.seconds,
                                              SCENARIOS[scenario])
        results[name] = (per_request, requests, dump)
        print(f"{scenario} {name}: {per_request:,.0f} instructions per request "
              f"({requests} requests)", flush=True)
    floor_ir = results["floor"][0]
    pingora_ir = results["floor+pingora"][0]
    costs = {name: per_function(dump, requests, per_request)
             for name, (per_request, requests, dump) in results.items()}
    rows = []
    for name, (per_request, _, _) in results.items():
        rows.append(f"| {scenario} | {name} | {per_request:,.0f} | {per_request / floor_ir:.3f} "
                    f"| {per_request / pingora_ir:.3f} |")
        # berth against the floor with the same Pingora features: berth's own work.
        reference = "floor+pingora" if name.startswith("berth") else "floor"
        if name != reference:
            with open(os.path.join(args.out, f"diff-{scenario}-{name}.txt"), "w") as f:
                f.write(difference(name, costs[name], reference, costs[reference]))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="small,16k",
                        help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--seconds", type=int, default=10, help="measured wrk run per target")
    parser.add_argument("--bin", action="append", default=[], metavar="NAME=PATH",
                        help="another berth binary, measured as target berth-NAME")
    parser.add_argument("--no-build", action="store_true",
                        help="use target/release/berth and the floor example as they are")
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "bench-instructions"))
    args = parser.parse_args()
    scenarios = args.scenario.split(",")
    if unknown := [s for s in scenarios if s not in SCENARIOS]:
        sys.exit(f"unknown scenario {unknown}; known: {', '.join(SCENARIOS)}")
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate", "nginx", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install valgrind nginx wrk)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--release", "--example", "pingora_floor"],
                       cwd=ROOT, check=True)
    berth = os.path.join(ROOT, "target", "release", "berth")
    floor = os.path.join(ROOT, "target", "release", "examples", "pingora_floor")
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="berth-instructions.")
    # nginx's workers (nobody) read the backend's files from it.
    os.chmod(tmp, 0o755)
    backends = []
    try:
        os.makedirs(os.path.join(tmp, "www"))
        with open(os.path.join(tmp, "www", "16k.bin"), "wb") as f:
            f.write(b"a" * 16384)
        for n, port in enumerate(BACKENDS, 1):
            os.makedirs(os.path.join(tmp, f"b{n}-tmp"))
            conf = os.path.join(tmp, f"b{n}.conf")
            render("nginx-backend.conf.tmpl", conf, DIR=tmp, NAME=f"b{n}", PORT=port)
            proc = subprocess.Popen(["nginx", "-p", tmp, "-c", conf], stderr=subprocess.DEVNULL)
            backends.append(proc)
            wait_ok(f"http://127.0.0.1:{port}/", proc, f"backend {n}")
        route = [f"--route={HOST}=127.0.0.1:{BACKENDS[0]},127.0.0.1:{BACKENDS[1]}"]
        floor_cmd = [floor, f"--listen=127.0.0.1:{PROXY_PORT}", *route, "--pool=1024"]

        def berth_cmd(name, sticky, binary=berth):
            cfg = os.path.join(tmp, f"{name}.yaml")
            render("berth.yaml.tmpl", cfg, PORT=PROXY_PORT, ADMIN=ADMIN_PORT, METRICS="true",
                   POOL=1024, ACCESS_LOG="false", STICKY="sticky_cookie: SRV" if sticky else "",
                   B1=BACKENDS[0], B2=BACKENDS[1], H2C="false", TLS="", SERVICE_TLS="",
                   ALGORITHM="round_robin")
            return [binary, "serve", "--config", cfg]

        targets = [
            ("floor", floor_cmd),
            ("floor+timeouts", [*floor_cmd, "--peer-timeouts"]),
            ("floor+pingora", [*floor_cmd, "--peer-timeouts", "--forwarded-headers"]),
            ("berth", berth_cmd("berth", False)),
            ("berth-sticky", berth_cmd("berth-sticky", True)),
        ]
        for spec in args.bin:
            name, _, path = spec.partition("=")
            targets.append((f"berth-{name}", berth_cmd(f"berth-{name}", False, path)))
        table = ["| scenario | target | instructions / request | x floor | x floor+pingora |",
                 "| --- | --- | ---: | ---: | ---: |"]
        for scenario in scenarios:
            table += measure_scenario(scenario, targets, tmp, args)
        text = "\n".join(table) + "\n"
        with open(os.path.join(args.out, "instructions.md"), "w") as f:
            f.write(text)
        print(text + f"\nper-function differences: {args.out}/diff-*.txt")
    finally:
        for proc in backends:
            proc.terminate()
            proc.wait()
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
