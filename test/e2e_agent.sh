#!/usr/bin/env bash
# End to end with the real binaries: mock istiod -> sockmesh run -> datapath -> connect, in a
# network namespace and cgroup made here and removed on every path. Prints TAP.
# Usage: e2e_agent.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

source "$(dirname "$0")/e2e_lib.sh"

# ---- the world ----
e2e_world
"$sockmesh" convert "$fixtures/real/ztunnel-local-config.yaml" "$work/local.xds" || exit 1
"$sockmesh" convert "$fixtures/real/bookinfo-ztunnel-config-dump.json" "$work/bookinfo.xds" || exit 1
# the example's workloads are 127.0.0.1 and 127.0.0.2; their port 8080 answers with their name
spawn_mesh "$echo_tool" serve 127.0.0.1 8080 local
spawn_mesh "$echo_tool" serve 127.0.0.2 8080 local-tcp

# 1. xDS from the mock istiod, through the agent, into the datapath
start_server --stream "$work/local.xds"
start_agent --xds-address "127.0.0.1:$port" --xds-plaintext
check "the agent becomes ready from the mock istiod" wait_for 20 ready
check "a connect to a VIP reaches a backend (mock istiod -> agent -> datapath)" reaches 127.10.0.1 80 local

metrics_have() {
  local m; m="$(metrics)" || return 1
  for want in 'sockmesh_ready 1' 'sockmesh_xds_connected 1' 'sockmesh_xds_acks_total 2' 'sockmesh_xds_apply_failures_total 0' \
              'sockmesh_resources{type="workload"} 2' \
              'sockmesh_resources{type="service"} 2' 'sockmesh_map_entries{map="services"} 2' \
              'sockmesh_map_capacity{map="endpoints"} 1048576' 'sockmesh_apply_duration_seconds_count 2'; do
    grep -qxF "$want" <<<"$m" || { echo "missing: $want"; return 1; }
  done
  grep -qx 'sockmesh_datapath_total{outcome="redirected"} [1-9][0-9]*' <<<"$m" || { echo "no redirect counted"; return 1; }
}
check "metrics: xDS state, ACKs, resources, map entries and capacity, counters, apply latency" metrics_have

dump_shows() { "$sockmesh" dump --pin-dir "$pin_dir" | grep -q 'VIPs 127.10.0.1  ports 80' && "$sockmesh" dump --json --pin-dir "$pin_dir" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["maps"]["services"]["entries"] == 2'; }
check "sockmesh dump reads the pinned maps" dump_shows

# 2. kill -9 under a connect loop: five kills and restarts, not one failed connect
kill_loop() {
  rm -f "$work/stop"
  in_mesh "$echo_tool" loop 127.10.0.1 80 "$work/stop" >"$work/loop.out" 2>&1 &
  local loop=$!
  for _ in 1 2 3 4 5; do
    sleep 0.4
    kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null
    sleep 0.2
    start_agent --xds-address "127.0.0.1:$port" --xds-plaintext
    wait_for 20 ready || { echo "not ready after a restart"; touch "$work/stop"; return 1; }
  done
  sleep 0.5
  touch "$work/stop"; wait "$loop"
  cat "$work/loop.out"
  read -r _ total _ failed < <(grep connects "$work/loop.out")
  (( total >= 1000 && failed == 0 ))
}
check "kill -9 of the agent five times under a connect loop: >= 1,000 connects, zero failures" kill_loop
sed 's/^/# kill loop: /' "$work/loop.out"
check "a restarted agent adopts the pinned maps" grep -q 'adopted the pinned maps: 2 services' "$work/agent.log"

# 3. the control plane goes away, and comes back with one more service
"$sockmesh" convert "$fixtures/third-service.yaml" "$work/extra.xds" && cat "$work/local.xds" "$work/extra.xds" >"$work/more.xds"
spawn_mesh "$echo_tool" serve 127.0.0.3 8080 third
down_and_back() {
  rm -f "$work/stop"
  in_mesh "$echo_tool" loop 127.10.0.1 80 "$work/stop" >"$work/loop.out" 2>&1 &
  local loop=$!
  kill -9 "$server_pid"; wait "$server_pid" 2>/dev/null
  # the stream's end reaches the agent's xDS thread within moments; on a loaded CI machine (the whole suite
  # beside it) that once took over the fixed 1.5 s this waited, so it waits for it, up to 10 s
  wait_for 10 sh -c "nsenter --net=/run/netns/$netns curl -s http://$admin/metrics | grep -q 'sockmesh_xds_connected 0'" ||
    { echo "still connected?"; touch "$work/stop"; return 1; }
  start_server --stream "$work/more.xds" --listen "127.0.0.1:$port" || { touch "$work/stop"; return 1; }
  wait_for 30 sh -c "nsenter --net=/run/netns/$netns curl -s http://$admin/metrics | grep -q 'sockmesh_xds_connected 1'" || { echo "did not reconnect"; touch "$work/stop"; return 1; }
  touch "$work/stop"; wait "$loop"
  cat "$work/loop.out"
  grep -qxE 'connects [1-9][0-9]* failures 0' "$work/loop.out"
}
check "istiod down for a while: traffic continues, the agent reconnects" down_and_back
third_reachable() { in_mesh "$echo_tool" ask 127.10.0.3 80 | grep -q 'answered by third'; }
caught_up() { # up to 40 s: the agent's backoff reaches 15 s while istiod is down
  wait_for 40 third_reachable && return 0
  kill -0 "$server_pid" 2>/dev/null && echo "the mock istiod runs" || echo "the mock istiod is gone"
  tail -5 "$work/xds.log"
  return 1
}
check "after the reconnect the agent caught up: the new service's VIP works" caught_up

# 4. SIGTERM: exits 0, the datapath keeps serving
sigterm() {
  kill -TERM "$agent_pid"; wait "$agent_pid"; local status=$?
  (( status == 0 )) && reaches 127.10.0.1 80 local
}
check "SIGTERM: the agent exits 0 and the datapath keeps serving" sigterm

# 4b. SIGUSR1 (what the agent sends itself when a map write cannot be undone): exits 1, the datapath keeps
# serving, and the next start adopts the maps
restart_to_adopt() {
  start_agent --xds-address "127.0.0.1:$port" --xds-plaintext
  wait_for 20 ready || return 1
  local adopted; adopted="$(grep -c 'adopted the pinned maps' "$work/agent.log")"
  kill -USR1 "$agent_pid"; wait "$agent_pid"; local status=$?
  (( status == 1 )) && reaches 127.10.0.1 80 local || { echo "exit status $status"; return 1; }
  start_agent --xds-address "127.0.0.1:$port" --xds-plaintext
  wait_for 20 ready && reaches 127.10.0.1 80 local || return 1
  (( $(grep -c 'adopted the pinned maps' "$work/agent.log") > adopted )) && stop_agent
}
check "SIGUSR1: the agent exits 1, the datapath keeps serving, the next start adopts it" restart_to_adopt
stop_server

# 5. readiness before any config: 503 with a reason
not_ready_first() {
  start_server --stream "$work/local.xds" --silent
  start_agent --xds-address "127.0.0.1:$port" --xds-plaintext
  wait_for 10 in_ns curl -s "http://$admin/healthz/ready" || return 1
  local code; code="$(in_ns curl -s -o "$work/ready.txt" -w '%{http_code}' "http://$admin/healthz/ready")"
  cat "$work/ready.txt"
  [[ "$code" == 503 ]] && grep -q 'waiting for the first response' "$work/ready.txt"
}
check "/healthz/ready is 503 with a reason until config arrives" not_ready_first
stop_agent
stop_server

# 6. local-config mode
start_agent --local-config "$fixtures/real/ztunnel-local-config.yaml"
check "local-config mode becomes ready" wait_for 20 ready
check "local-config mode: a connect to the example's VIP reaches its workloads" reaches 127.10.0.1 80 local
check "with telemetry on, no slot release is attached (its sockets' close frees their slots)" \
  test ! -e "$pin_dir/links/sm_sock_release"
stop_agent

# 7. the bookinfo dump, converted and served: our /config_dump shows every field of the original's
start_server --stream "$work/bookinfo.xds"
start_agent --xds-address "127.0.0.1:$port" --xds-plaintext
wait_for 20 ready
bookinfo_matches() {
  in_ns curl -s "http://$admin/config_dump" >"$work/dump.json"
  python3 - "$work/dump.json" "$fixtures/real/bookinfo-ztunnel-config-dump.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
original = json.load(open(sys.argv[2]))
def covers(a, e, where):
    if isinstance(e, dict):
        assert isinstance(a, dict), where
        for k, v in e.items():
            assert k in a, f"{where}.{k} missing"
            covers(a[k], v, f"{where}.{k}")
    elif isinstance(e, list):
        assert isinstance(a, list) and len(a) == len(e), where
        for i, (x, y) in enumerate(zip(a, e)):
            covers(x, y, f"{where}[{i}]")
    else:
        assert a == e, f"{where}: {a!r} != {e!r}"
for part in ("workloads", "services"):
    assert len(ours[part]) == len(original[part]), f"{part}: {len(ours[part])} != {len(original[part])}"
    covers(ours[part], original[part], part)
PY
}
check "the bookinfo dump served over xDS: /config_dump matches the original's workloads and services" bookinfo_matches
stop_agent

# 8. replay and uninstall
replay_acks_all() { local acks; acks="$("$sockmesh" replay "$fixtures/wire/stream.xds" | grep -c ': ACK')" && [[ $acks == 3 ]]; }
check "sockmesh replay prints each response's answer" replay_acks_all
uninstalled() { "$sockmesh" uninstall --pin-dir "$pin_dir" && refused 127.10.0.1 80; }
check "sockmesh uninstall detaches: the VIP is no longer translated" uninstalled

# 8. --no-telemetry: translated sockets keep their original destination in a slot, freed at their release
# (Linux 6.2's bpf_rdonly_cast; before, the probe leaves the release out and socket storage serves)
release_attached() {
  start_agent --local-config "$fixtures/real/ztunnel-local-config.yaml" --no-telemetry
  wait_for 20 ready || return 1
  [[ -e "$pin_dir/links/sm_sock_release" ]] || { echo "no pinned link sm_sock_release"; return 1; }
  local out; out="$(in_mesh "$echo_tool" ask 127.10.0.1 80)"
  echo "$out"
  grep -q 'answered by local' <<<"$out" && grep -q 'getpeername says 127.10.0.1:80' <<<"$out"
}
if [[ "$(printf '%s\n' 6.2 "$(uname -r | cut -d- -f1)" | sort -V | head -1)" == 6.2 ]]; then
  check_showing "--no-telemetry: the slot release is attached, and getpeername still names the VIP" release_attached
else
  skip "--no-telemetry: the slot release is attached" "Linux $(uname -r) lacks bpf_rdonly_cast (6.2)"
fi
stop_agent
"$sockmesh" uninstall --pin-dir "$pin_dir" >/dev/null

wrong_cgroup_pins_nothing() {
  ! "$sockmesh" run --cgroup "$work" --pin-dir "$pin_dir-wrong" --local-config "$fixtures/real/ztunnel-local-config.yaml" \
    2>"$work/wrong.log" && grep -q 'is not on a cgroup v2 hierarchy' "$work/wrong.log" && [[ ! -e $pin_dir-wrong ]]
}
check "a --cgroup that is not a cgroup v2 directory is refused before anything is pinned" wrong_cgroup_pins_nothing

e2e_end
