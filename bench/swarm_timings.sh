#!/usr/bin/env bash
# bench/swarm_timings.sh [RUNS]: runs the Swarm tests (tests/swarm.rs, real swarms of netns
# dockerds) RUNS times (default 5) and prints the median, min and max of every
# `swarm timing: <what> <seconds>` line they print: scale-up to the first routed request,
# scale-down and `service rm` to route removal, rolling restarts (duration, failed requests),
# node loss to out-of-rotation and to route removal. Needs what the tests need (root, Docker,
# iproute2); see tests/common/swarm.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for i in $(seq "$runs"); do
  echo "== run $i/$runs" >&2
  BERTH_REQUIRE_DOCKER=1 cargo test -q --test swarm -- --nocapture 2>&1 |
    grep '^swarm timing:' | tee -a "$lines" >&2
done
printf '%-42s %8s %8s %8s %5s\n' what median min max runs
awk '{ print $3, $4 }' "$lines" | sort -k1,1 -k2,2g | awk '
  function flush() {
    if (n) printf "%-42s %8s %8s %8s %5d\n", key, (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2), v[1], v[n], n
  }
  $1 != key { flush(); key = $1; n = 0 }
  { v[++n] = $2 }
  END { flush() }'
