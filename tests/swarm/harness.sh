#!/usr/bin/env bash
# harness.sh - isolated Docker Swarms for berth's Swarm tests (tests/common/swarm.rs drives it),
# next to the host's live-restore dockerd, which it never touches. Every node is its own dockerd
# in its own network + mount + UTS namespace, wired to a bridge in yet another namespace, so
# nothing is shared with the host's daemon: no iptables chains, no docker0/docker_gwbridge (a
# second dockerd in the host namespace deletes docker0), no ports 2377/7946/4789 on the host, no
# images.
#
#   harness.sh up [N]        start an instance of N nodes (default 1; the first
#                            $HARNESS_MANAGERS are managers). HARNESS_OWNER = the pid whose death
#                            lets gc reclaim it (the test process); HARNESS_INSTANCE=0..9 for
#                            several instances of one owner. Prints the instance's env. ~2 s (1
#                            node), ~3.5 s (3)
#   harness.sh down [ID]     tear down instance ID (default $HARNESS_ID); idempotent; ~1 s
#   harness.sh gc            tear down every instance whose owner process is gone (kill -9,
#                            panic=abort, CI timeout); run by every 'up'
#   harness.sh env ID        the env of a running instance again
#   harness.sh kill-node ID I   node loss: KILL node I's dockerd, containerd, shims, containers
#   harness.sh status
#
# Names carry the owner's pid: instance ID = <pid> or <pid>x<k>, prefix P=bh<ID>: netns P-<i> and
# P-br, bridge br-P, host veth hP, sockets /run/berth-swarm/P/<i>/docker.sock, cgroup parents
# /P-<i>, logs /var/lib/berth-swarm/P/<i>/dockerd.log. Node data roots are tmpfs private to
# each daemon's mount namespace: they vanish with the daemon, even after kill -9. Inside each
# node /run is private too: dockerd also listens on the node's own /var/run/docker.sock, so
# `-v /var/run/docker.sock:...` and stack files reach the node's engine, as in production.
#
# Reaching things: containers on the overlay reach task IPs and network aliases; the root
# namespace gets $HARNESS_HOST_IP on a veth into the nodes' bridge, so a test process reaches
# node i at $HARNESS_NODE_IP_i (published ports: -p, or mode=host).
#
# Knobs: HARNESS_OVERLAY=apps  HARNESS_OVERLAY_SUBNET=10.250.0.0/24  HARNESS_MANAGERS=1
#        HARNESS_IMAGE=berth-test-busybox:latest  HARNESS_STORAGE=overlay2  DOCKER=docker
# Daemons run with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1: no registry pull attempt per task.
# Needs root, iproute2 (ip netns), util-linux (nsenter, unshare), dockerd, busybox-static and
# the kernel's veth, bridge, vxlan and overlayfs.
set -euo pipefail

OVERLAY=${HARNESS_OVERLAY:-apps}
OVERLAY_SUBNET=${HARNESS_OVERLAY_SUBNET:-10.250.0.0/24}
MANAGERS=${HARNESS_MANAGERS:-1}
STORAGE=${HARNESS_STORAGE:-overlay2}
IMAGE=${HARNESS_IMAGE:-berth-test-busybox:latest}
DOCKER=${DOCKER:-docker}
RUN=/run/berth-swarm          # sockets, exec roots, pids (tmpfs: gone after reboot)
LIB=/var/lib/berth-swarm      # data roots, logs (disk)
SELF=$(readlink -f "$0")

log() { printf '[harness %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
pfx() { echo "bh$1"; }
sock() { echo "unix://$RUN/$(pfx "$1")/$2/docker.sock"; }
d() { local id=$1 i=$2; shift 2; timeout 120 "$DOCKER" -H "$(sock "$id" "$i")" "$@"; }
# node subnet: one /24 per owner pid (pid_max 32768 -> 10.10.0.0 .. 10.137.255.0), never the overlay's
net_of() { cat "$RUN/$(pfx "$1")/net"; }   # chosen at 'up', see pick_net
pick_net() { # a /24 for the nodes, from a hash of the id, skipping any the host already routes
  local h; h=$(( $(echo "$1" | cksum | cut -d' ' -f1) % 30000 )); local k
  for k in $(seq 0 50); do
    local c=$(( (h + k) % 30000 )) net
    net="10.$((10 + c / 256)).$((c % 256))"
    ip -4 route | grep -q "^$net.0/24" || { echo "$net"; return; }
  done
  die "no free /24 in 10.10-127.x"
}
starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }
owner_alive() { # id: the owner pid lives and is the same process (pid reuse: compare start time)
  local id=$1 st pid; st=$(cat "$RUN/$(pfx "$id")/owner.start" 2>/dev/null || echo)
  pid=$(cat "$RUN/$(pfx "$id")/owner.pid" 2>/dev/null || echo "${id%%x*}")
  # a killed owner can linger as a zombie until its parent reaps it: state Z counts as gone
  [ -d "/proc/$pid" ] && [ -n "$st" ] && [ "$(starttime "$pid")" = "$st" ] &&
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

nsinit() { # runs inside the node's new mount ns (propagation slave: nothing leaks out):
  #  - sysfs of its netns, keeping the host's cgroup mounts; hostname = node name
  #  - a private /run: the node gets its own /var/run/docker.sock (dockerd listens there too), so
  #    containers and stacks that bind /var/run/docker.sock reach THIS node's engine, as in
  #    production, never the host's daemon; only /run/berth-swarm/<P> is carried over
  #  - a private tmpfs as data root: it vanishes with the daemon's last process (no 64 MB raft
  #    WAL files to delete from disk: down is ~2 s faster)
  local n=$1 inst=$2 data=$3; shift 3
  local stage="$LIB/${inst##*/}/stage-$n"
  mkdir -p "$stage" "$stage.cg"
  mount --rbind /sys/fs/cgroup "$stage.cg"
  umount -l /sys
  mount -t sysfs sysfs /sys
  mount --rbind "$stage.cg" /sys/fs/cgroup
  umount -l "$stage.cg"
  mount --rbind "$inst" "$stage"
  mount -t tmpfs -o mode=0755 "run-$n" /run
  mkdir -p "$inst"; mount --rbind "$stage" "$inst"; umount -l "$stage"
  rmdir "$stage" "$stage.cg" 2>/dev/null || true
  mkdir -p "$data"; mount -t tmpfs -o mode=0711 "data-$n" "$data"
  hostname "$n"
  # dockerd also listens on /var/run/docker.sock: only ever inside this private /run, never the
  # host's (that would take the host daemon's socket over): refuse unless /run is our tmpfs
  grep -qE "^[0-9]+ [0-9]+ [^ ]+ / /run .* - tmpfs run-$n " /proc/self/mountinfo || { echo "private /run missing" >&2; exit 1; }
  exec "$@"
}

rootfs() { # a busybox image: /bin/busybox + applet links, /www
  local r=$1 bb; bb=$(command -v busybox) || die "busybox-static is not installed"
  file -L "$bb" 2>/dev/null | grep -q dynamically && die "$bb is dynamic; install busybox-static"
  mkdir -p "$r/bin" "$r/www" "$r/tmp" "$r/etc"
  cp "$bb" "$r/bin/busybox"
  for a in sh httpd wget sleep ip hostname nslookup cat echo date ls ps grep awk sed timeout kill trap mkdir env; do
    ln -sf busybox "$r/bin/$a"; done
  echo default > "$r/www/index.html"; chmod 1777 "$r/tmp"
}

start_node() { # id i: start node i's dockerd in its netns
  local id=$1 i=$2 P; P=$(pfx "$id")
  mkdir -p "$LIB/$P/$i" "$RUN/$P/$i/exec"
  # DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1: the swarm agent uses the local image instead of
  # trying a registry first (no network here; saves the failed pull on every task start)
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid nsenter --net="/run/netns/$P-$i" \
    unshare --mount --uts --propagation slave "$SELF" _nsinit "$P-$i" "$RUN/$P" "$RUN/$P/$i/data" \
    dockerd --data-root "$RUN/$P/$i/data" --exec-root "$RUN/$P/$i/exec" \
      --pidfile "$RUN/$P/$i/docker.pid" -H "$(sock "$id" "$i")" -H unix:///var/run/docker.sock \
      --storage-driver "$STORAGE" --cgroup-parent "/$P-$i" --iptables=true \
      </dev/null >>"$LIB/$P/$i/dockerd.log" 2>&1 &
  echo $! >"$RUN/$P/$i/launcher.pid"
}

wait_node() {
  local id=$1 i=$2 P t=0; P=$(pfx "$id")
  until "$DOCKER" -H "$(sock "$id" "$i")" version >/dev/null 2>&1; do
    t=$((t + 1)); [ $t -lt 240 ] || die "dockerd $P-$i did not come up: $LIB/$P/$i/dockerd.log"
    kill -0 "$(cat "$RUN/$P/$i/launcher.pid")" 2>/dev/null || { tail -5 "$LIB/$P/$i/dockerd.log" >&2; die "dockerd $P-$i died"; }
    sleep 0.1
  done
}

cmd_kill_node() { # id i: node loss. KILL node i's dockerd, containerd, shims and containers
  local id=$1 i=$2 P pid; P=$(pfx "$id")
  for pid in $(cat "$RUN/$P/$i/launcher.pid" 2>/dev/null); do is_dockerd_of "$pid" "$P" && kill -KILL "$pid" || true; done
  for pid in $(ip netns pids "$P-$i") $(cgroup_pids "$P-$i"); do kill -KILL "$pid" 2>/dev/null || true; done
}

cmd_up() {
  local N=${1:-1} owner=${HARNESS_OWNER:?set HARNESS_OWNER to the pid of the process that owns the instance (the test process)}
  # instance id: the owner pid, or <pid>x<k> (HARNESS_INSTANCE=k) for several instances of one process
  local id=$owner; [ -z "${HARNESS_INSTANCE:-}" ] || id="${owner}x${HARNESS_INSTANCE}"
  [[ $id =~ ^[0-9]+(x[0-9])?$ ]] || die "bad instance id $id (HARNESS_INSTANCE must be 0..9)"
  [[ $N =~ ^[1-9]$ ]] || die "N must be 1..9"
  [ "$(id -u)" = 0 ] || die "must run as root"
  cmd_gc
  local P; P=$(pfx "$id")
  [ -e "$RUN/$P" ] && { log "instance $id exists -> down first"; cmd_down "$id"; }
  mkdir -p "$RUN/$P" "$LIB/$P"
  echo "$owner" >"$RUN/$P/owner.pid"; starttime "$owner" >"$RUN/$P/owner.start"; echo "$N" >"$RUN/$P/nodes"
  pick_net "$id" >"$RUN/$P/net"; local NET; NET=$(net_of "$id")
  local t0; t0=$(date +%s%N)

  ip netns add "$P-br"
  ip -n "$P-br" link set lo up
  ip -n "$P-br" link add "br-$P" type bridge
  ip -n "$P-br" link set "br-$P" up
  local i
  for i in $(seq 1 "$N"); do
    ip netns add "$P-$i"
    ip link add "v$P-$i" type veth peer name "e$P-$i"
    ip link set "v$P-$i" netns "$P-br"; ip link set "e$P-$i" netns "$P-$i"
    ip -n "$P-br" link set "v$P-$i" master "br-$P" up
    ip -n "$P-$i" link set lo up
    ip -n "$P-$i" link set "e$P-$i" name eth0
    ip -n "$P-$i" addr add "$NET.$((10 + i))/24" dev eth0
    ip -n "$P-$i" link set eth0 up      # no default route: nothing leaves the bridge
  done
  ip link add "h$P" type veth peer name "vh$P"
  ip link set "vh$P" netns "$P-br"; ip -n "$P-br" link set "vh$P" master "br-$P" up
  ip addr add "$NET.1/24" dev "h$P"; ip link set "h$P" up

  for i in $(seq 1 "$N"); do start_node "$id" "$i"; done
  for i in $(seq 1 "$N"); do wait_node "$id" "$i"; done
  d "$id" 1 swarm init --advertise-addr "$NET.11" --listen-addr "$NET.11:2377" >/dev/null
  local wt mt tok
  wt=$(d "$id" 1 swarm join-token -q worker); mt=$(d "$id" 1 swarm join-token -q manager)
  for i in $(seq 2 "$N"); do
    tok=$wt; [ "$i" -le "$MANAGERS" ] && tok=$mt
    d "$id" "$i" swarm join --token "$tok" --advertise-addr "$NET.$((10 + i))" \
      --listen-addr "$NET.$((10 + i)):2377" "$NET.11:2377" >/dev/null
  done
  rootfs "$LIB/$P/rootfs"
  local pids=()
  for i in $(seq 1 "$N"); do
    tar -C "$LIB/$P/rootfs" -c . | d "$id" "$i" import -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null & pids+=($!)
  done
  wait "${pids[@]}"
  d "$id" 1 network create -d overlay --attachable --subnet "$OVERLAY_SUBNET" "$OVERLAY" >/dev/null
  for i in $(seq 1 "$N"); do d "$id" 1 node update --label-add "node=$i" "$P-$i" >/dev/null; done
  log "instance $id up: $N node(s) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  cmd_env "$id"
}

cmd_env() {
  local id=$1 P N NET i; P=$(pfx "$id"); N=$(cat "$RUN/$P/nodes"); NET=$(net_of "$id")
  echo "export HARNESS_ID=$id HARNESS_NODES=$N HARNESS_OVERLAY=$OVERLAY HARNESS_HOST_IP=$NET.1"
  for i in $(seq 1 "$N"); do echo "export DOCKER_HOST_$i=$(sock "$id" "$i") HARNESS_NODE_IP_$i=$NET.$((10 + i))"; done
  echo "export DOCKER_HOST=$(sock "$id" 1)"
}

cgroup_pids() { # glob: processes in the cgroup parents matching it (v1: one per hierarchy; v2)
  # shellcheck disable=SC2086
  cat /sys/fs/cgroup/*/$1/cgroup.procs /sys/fs/cgroup/*/$1/*/cgroup.procs \
      /sys/fs/cgroup/$1/cgroup.procs /sys/fs/cgroup/$1/*/cgroup.procs 2>/dev/null | sort -u
}

is_dockerd_of() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "dockerd .*$RUN/$2/"; }

cmd_down() {
  local id=${1:-${HARNESS_ID:-}}; [ -n "$id" ] || die "down: which instance?"
  local P; P=$(pfx "$id"); local t0; t0=$(date +%s%N)
  local nss i pid pids=()
  nss=$(ip netns list | awk '{print $1}' | grep -E "^$P-[0-9]+$" | sort -r || true)
  # No 'swarm leave', no graceful stop: the whole cluster is disposable. A TERMed dockerd in a
  # swarm takes 3-6 s (raft shutdown, stopping containers); KILL + sweeping what it leaves is
  # ~0.5 s and is the same path as cleaning up after a killed test.
  for i in $(ls "$RUN/$P" 2>/dev/null | grep -E '^[0-9]+$' || true); do
    for pid in $(cat "$RUN/$P/$i/launcher.pid" "$RUN/$P/$i/docker.pid" 2>/dev/null | sort -u); do
      is_dockerd_of "$pid" "$P" && kill -KILL "$pid" 2>/dev/null && pids+=("$pid") || true
    done
  done
  # what the daemons leave: containerd, shims, docker-proxy (all in the node netns), and the
  # container processes (in their own netns, but in our cgroup parent /bh<pid>-<i>)
  local round
  for round in 1 2 3; do
    for n in $nss; do for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done; done
    for pid in $(cgroup_pids "$P-[0-9]*"); do kill -KILL "$pid" 2>/dev/null || true; done
    sleep 0.1
  done
  sleep 0.2
  for n in $nss; do ip netns del "$n" 2>/dev/null || true; done
  ip netns del "$P-br" 2>/dev/null || true
  ip link del "h$P" 2>/dev/null || true
  local c   # cgroup parents /bh<pid>-<i> (v1: one per hierarchy) and the containers' cgroups in them
  for c in /sys/fs/cgroup/*/"$P"-[0-9]* /sys/fs/cgroup/"$P"-[0-9]*; do
    [ -d "$c" ] && { rmdir "$c"/*/ 2>/dev/null; rmdir "$c" 2>/dev/null; } || true; done
  { grep -E " ($LIB|$RUN)/$P[/ ]" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "${LIB:?}/$P" "${RUN:?}/$P"
  rmdir "$LIB" "$RUN" 2>/dev/null || true
  [ ${#pids[@]} -gt 0 ] || [ -n "$nss" ] && log "instance $id down in $(( ($(date +%s%N) - t0) / 1000000 )) ms" || true
}

cmd_gc() {
  local ids id
  ids=$( { ls "$RUN" 2>/dev/null; ls "$LIB" 2>/dev/null; ip netns list | awk '{print $1}' | sed -n 's/-.*//p'; } |
         sed -n 's/^bh\([0-9][0-9]*\(x[0-9]\)\{0,1\}\)$/\1/p' | sort -u)
  for id in $ids; do owner_alive "$id" || { log "gc: owner $id is gone -> down"; cmd_down "$id"; }; done
}

cmd_status() {
  ip netns list | awk '{print $1}' | grep -E '^bh[0-9]+(x[0-9])?-' || echo "no harness namespaces"
  ls "$RUN" "$LIB" 2>/dev/null || true
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  gc) cmd_gc ;;
  env) shift; cmd_env "${1:-$HARNESS_ID}" ;;
  kill-node) shift; cmd_kill_node "$@" ;;
  status) cmd_status ;;
  _nsinit) shift; nsinit "$@" ;;
  *) sed -n '2,38p' "$SELF"; exit 2 ;;
esac
