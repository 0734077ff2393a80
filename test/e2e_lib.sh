# Shared by the end-to-end scripts: a network namespace, a cgroup and a pin directory made for the run
# and removed on every path, the real binaries, and TAP output. Source it with BUILD_DIR SOURCE_DIR
# as the script's arguments; e2e_world makes the namespace and the cgroup.
# shellcheck shell=bash

build="$1"
source_dir="$2"
sockmesh="$build/agent/sockmesh"
mock="$build/test/mock_xds_server"
echo_tool="$build/test/tcp_echo"
fixtures="$source_dir/test/fixtures"
# Run inside a Kubernetes pod (a CI runner), the agent would start its watcher against that cluster and
# own sm_enrolled; the tests that want the watcher pass --kube-api to a mock.
unset KUBERNETES_SERVICE_HOST KUBERNETES_SERVICE_PORT

# the cgroup2 mount, found in /proc/self/mountinfo (or mounted for the run when there is none)
# shellcheck source=SCRIPTDIR/../scripts/lib/cgroup2.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/cgroup2.sh"
cgroup2_open || { echo "1..0 # cannot find or mount cgroup2"; exit 1; }
name="sockmesh-${E2E_NAME:-e2e}-$$"
netns="$name"
cgroup="$cgroup2_root/$name"
pin_dir="/sys/fs/bpf/$name"
work="$(mktemp -d)"
# The python3 scripts/install-deps installs (Debian's, with python3-yaml) runs the tests' peers. One that
# comes earlier in PATH, such as a version manager's shim, may lack those modules, and a shim can cost
# 0.6 s a start where Debian's takes 0.08 s: the tests start python hundreds of times.
if [[ -x /usr/bin/python3 && $(command -v python3) != /usr/bin/python3 ]]; then
  mkdir -p "$work/bin" && ln -s /usr/bin/python3 "$work/bin/python3" && PATH="$work/bin:$PATH"
fi
admin="127.0.0.1:15000"
pids=()
agent_pid=""
server_pid=""
tests=0
failures=0

in_ns() { nsenter --net="/run/netns/$netns" "$@"; }
spawn_ns() { nsenter --net="/run/netns/$netns" "$@" & pids+=($!); }
spawn_mesh() { nsenter --net="/run/netns/$netns" sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cgroup" "$@" & pids+=($!); }
in_mesh() { in_ns sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cgroup" "$@"; }

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [[ -f "$cgroup/cgroup.procs" ]] && xargs -r kill -9 < "$cgroup/cgroup.procs" 2>/dev/null || true
  wait 2>/dev/null || true
  "$sockmesh" uninstall --pin-dir "$pin_dir" >/dev/null 2>&1 || true
  for _ in 1 2 3 4 5; do [[ -d "$cgroup" ]] && rmdir "$cgroup" 2>/dev/null || break; sleep 0.2; done
  ip netns del "$netns" 2>/dev/null || true
  if [[ -n ${SM_E2E_KEEP:-} ]]; then echo "# kept $work" >&2; else rm -rf "$work"; fi
  local left=""
  for path in "$pin_dir" "$cgroup" "/run/netns/$netns"; do [[ -e $path ]] && left+=" $path"; done
  cgroup2_close || true
  if [[ -n $left ]]; then echo "# left behind:$left" >&2; exit 1; fi
}
trap cleanup EXIT

result() { # name, status (0 ok)
  tests=$((tests + 1))
  if [[ "$2" == 0 ]]; then echo "ok $tests - $1"; else echo "not ok $tests - $1"; failures=$((failures + 1)); fi
}

skip() { # name, why: a point that cannot run here (TAP's SKIP)
  tests=$((tests + 1))
  echo "ok $tests - $1 # SKIP $2"
}

check() { # name, command...
  local name="$1"; shift
  if "$@" >"$work/check.out" 2>&1; then result "$name" 0; else sed 's/^/# /' "$work/check.out"; result "$name" 1; fi
}

check_showing() { # like check, and the command's output becomes TAP comments either way
  local name="$1"; shift
  "$@" >"$work/check.out" 2>&1; local status=$?
  sed 's/^/# /' "$work/check.out"
  result "$name" "$status"
}

wait_for() { # seconds, command...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do (( SECONDS < deadline )) || return 1; sleep 0.1; done
}

start_server() { # stream files..., then server options
  rm -f "$work/port"
  spawn_ns "$mock" --port-file "$work/port" --log "${server_log:-$work/xds.log}" "$@" >/dev/null
  server_pid=$!
  wait_for 10 test -s "$work/port" || return 1
  port="$(cat "$work/port")"
}

# Every namespace steered unless a script enrolls its own (enroll_all=""). POD_NAMESPACE may be set too.
# The agent's stdout (the access log) goes to $work/access.log, or to $agent_stdout when a script sets it.
enroll_all=--enroll-all
start_agent() { # extra options
  NODE_NAME=local POD_NAME=sockmesh-e2e POD_NAMESPACE=${POD_NAMESPACE:-istio-system} INSTANCE_IP=127.0.0.1 \
    spawn_ns "$sockmesh" run --cgroup "$cgroup" --pin-dir "$pin_dir" ${enroll_all:+"$enroll_all"} \
    --admin-address "$admin" "$@" 2>>"$work/agent.log" >>"${agent_stdout:-$work/access.log}"
  agent_pid=$!
}

ready() { in_ns curl -sf "http://$admin/healthz/ready"; }
metrics() { in_ns curl -s "http://$admin/metrics"; }
# A connect to VIP:PORT is answered by a backend whose name starts with NAME.
reaches() {
  local out; out="$(in_mesh "$echo_tool" ask "$1" "$2")"
  grep -q "answered by $3" <<<"$out" || { echo "$out"; return 1; }
}
stop_agent() { kill -TERM "$agent_pid" 2>/dev/null; wait "$agent_pid" 2>/dev/null; agent_pid=""; }
stop_server() { kill -9 "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=""; }
# Nothing listens on a VIP itself: untranslated, a connect to it is refused (any other failure is not that).
refused() {
  local out; out="$(in_mesh "$echo_tool" ask "$1" "$2")"
  grep -q 'connect failed: Connection refused' <<<"$out" || { echo "$out"; return 1; }
}
# the whole line: name, labels and value; grep reads to the end (with -q it may exit first and, under
# pipefail, curl's SIGPIPE would fail the check)
metric_is() { metrics | grep -xF "$1" >/dev/null; }

e2e_world() {
  ip netns add "$netns" && in_ns ip link set lo up && mkdir "$cgroup" || { echo "1..0 # cannot make a netns and cgroup"; exit 1; }
}

e2e_end() { # prints the plan; the exit status says whether all passed
  echo "1..$tests"
  if (( failures )); then sed 's/^/# agent: /' "$work/agent.log" 2>/dev/null | tail -40; fi
  exit $((failures > 0))
}

