#!/usr/bin/env bash
# bench/swarm_cost.sh [BERTH]: what Swarm discovery costs the manager at 100 services / 1,000
# tasks. On a single-node swarm of tests/swarm/harness.sh: 100 routed services of 10 replicas
# on a /20 overlay, 10 of them running (100 containers) and 90 held pending by a constraint no
# node meets (their 900 tasks have addresses and cost a list as much as running ones). Then:
#  - the time and the dockerd CPU of each list call (20 calls each, curl on the socket);
#  - dockerd's CPU over 60 s with `berth serve` (default intervals: resync 5 s, poll 500 ms)
#    watching the swarm, after its first 35 s (pending tasks are polled for 30 s after a change),
#    and over 60 s without berth.
# BERTH defaults to target/debug/berth. Needs root, Docker, iproute2, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
berth=${1:-target/debug/berth}
harness=tests/swarm/harness.sh
export HARNESS_OWNER=$$
eval "$("$harness" up 1)"
work=$(mktemp -d)
trap 'kill "$berth_pid" 2>/dev/null || true; "$harness" down "$HARNESS_ID"; rm -rf "$work"' EXIT
berth_pid=
sock=${DOCKER_HOST#unix://}
d() { docker -H "$DOCKER_HOST" "$@"; }
dockerd_pid=$(cat "/run/berth-swarm/bh$HARNESS_ID/1/docker.pid")
cpu() { awk '{print $14 + $15}' "/proc/$dockerd_pid/stat"; }   # utime + stime, in ticks
hz=$(getconf CLK_TCK)

d network create -d overlay --subnet 10.251.0.0/20 big >/dev/null
echo "creating 100 services x 10 replicas ..." >&2
for i in $(seq 1 100); do
  constraint=(--constraint node.labels.none==x)
  [ "$i" -le 10 ] && constraint=()
  d service create -d -q --no-resolve-image --init --name "s$i" --network big --replicas 10 \
    "${constraint[@]}" --label "aliyun.routing.port_80=s$i.local" \
    berth-test-busybox:latest sh -c 'exec httpd -f -p 80 -h /www' >/dev/null
done
until [ "$(d ps -q | wc -l)" -ge 100 ]; do sleep 1; done
echo "$(d ps -q | wc -l) containers running" >&2

percall() { # path: median wall time and dockerd CPU per call over 20 calls
  local path=$1 c0 c1 t
  c0=$(cpu)
  t=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' --unix-socket "$sock" "http://v1.41$path"; done | sort -g | sed -n 10p)
  c1=$(cpu)
  printf '%-60s wall %6.1f ms  dockerd CPU %5.1f ms/call\n' "$path" "$(echo "$t * 1000" | bc -l)" \
    "$(echo "($c1 - $c0) * 1000 / $hz / 20" | bc -l)"
}
percall '/services'
percall '/tasks?filters=%7B%22desired-state%22%3A%5B%22running%22%5D%7D'
percall '/nodes'
percall '/tasks?filters=%7B%22desired-state%22%3A%5B%22running%22%5D%2C%22service%22%3A%5B%22s1%22%5D%7D'
echo "items: $(curl -s --unix-socket "$sock" 'http://v1.41/tasks?filters=%7B%22desired-state%22%3A%5B%22running%22%5D%7D' | grep -o '"ServiceID"' | wc -l) tasks" >&2

cat >"$work/berth.yaml" <<YAML
listeners:
  - name: main
    address: "127.0.0.1:0"
discovery:
  swarm:
    enabled: true
    endpoint: $DOCKER_HOST
YAML
# a free port instead of :0 (berth checks that it can bind first)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/127.0.0.1:0/127.0.0.1:$port/" "$work/berth.yaml"
RUST_LOG=warn "$berth" serve --config "$work/berth.yaml" >"$work/berth.log" 2>&1 &
berth_pid=$!
sleep 35
own() { awk '{print $14 + $15}' "/proc/$berth_pid/stat"; }
c0=$(cpu); b0=$(own); sleep 60; c1=$(cpu); b1=$(own)
with=$(echo "($c1 - $c0) * 1000 / $hz / 60" | bc -l)
mine=$(echo "($b1 - $b0) * 1000 / $hz / 60" | bc -l)
kill "$berth_pid"; wait "$berth_pid" 2>/dev/null || true; berth_pid=
sleep 5
c0=$(cpu); sleep 60; c1=$(cpu)
without=$(echo "($c1 - $c0) * 1000 / $hz / 60" | bc -l)
printf 'dockerd CPU with berth watching: %.1f ms/s; without: %.1f ms/s; berth costs the manager %.1f ms/s (%.1f%% of a core)\n' \
  "$with" "$without" "$(echo "$with - $without" | bc -l)" "$(echo "($with - $without) / 10" | bc -l)"
printf "berth's own CPU meanwhile (%s): %.1f ms/s\n" "$berth" "$mine"
