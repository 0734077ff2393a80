#!/usr/bin/env bash
# A start that fails changes nothing, and one datapath has one owner: failed starts on a clean machine
# and beside a running agent, the pin directory's lock for run, replay --datapath and uninstall,
# readiness that follows the links, replay --datapath reconciling, uninstall refusing what is not a
# pin directory. In a network namespace and cgroup made here and removed on every path. Prints TAP.
# Usage: e2e_start.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

E2E_NAME=start source "$(dirname "$0")/e2e_lib.sh"

e2e_world
local_yaml="$fixtures/real/ztunnel-local-config.yaml"
"$sockmesh" convert "$local_yaml" "$work/local.xds" || exit 1
spawn_mesh "$echo_tool" serve 127.0.0.1 8080 local
spawn_mesh "$echo_tool" serve 127.0.0.2 8080 local-tcp
# something already listening on the admin port of the "port in use" case
spawn_ns "$echo_tool" serve 127.0.0.1 15001 taken
cat >"$work/not-a-cert.pem" <<'EOF'
this is not a certificate
EOF
mkdir "$work/a-directory"

run_fails() { # expected message, run options...: fails, says why, within 20 s
  local want="$1"; shift
  NODE_NAME=local POD_NAME=sockmesh-e2e POD_NAMESPACE=istio-system INSTANCE_IP=127.0.0.1 \
    timeout 20 nsenter --net="/run/netns/$netns" "$sockmesh" run --cgroup "$cgroup" --pin-dir "$pin_dir" "$@" \
    >"$work/second.log" 2>&1
  local status=$?
  cat "$work/second.log"
  [[ $want == "cannot serve"* && -n $agent_pid ]] && want="is in use by sockmesh (pid $agent_pid" # the lock comes first
  (( status != 0 && status != 124 )) || { echo "exit status $status"; return 1; }
  grep -qF -- "$want" "$work/second.log" || { echo "missing: $want"; return 1; }
}

nothing_left() { # no pin directory, no program attached to the test cgroup
  [[ ! -e $pin_dir ]] || { echo "left: $pin_dir"; ls -R "$pin_dir"; return 1; }
  local progs; progs="$(bpftool cgroup show "$cgroup" 2>&1)"
  [[ -z $progs ]] || { echo "attached: $progs"; return 1; }
}

# Each failing option, with what its message must say.
L="--local-config $local_yaml"
failing=(
  "admin address '127.0.0.1' is not IP:PORT|$L --admin-address 127.0.0.1"
  "cannot serve the admin endpoint on 127.0.0.1:15001: Address already in use|$L --admin-address 127.0.0.1:15001"
  "--dns-proxy '127.0.0.1' is not IP:PORT|$L --dns-proxy 127.0.0.1 --admin-address 127.0.0.1:15002"
  "--xds-root-cert $work/missing.pem: No such file|--xds-address 127.0.0.1:1 --xds-root-cert $work/missing.pem --admin-address 127.0.0.1:15002"
  "--xds-root-cert $work/not-a-cert.pem is not a PEM certificate|--xds-address 127.0.0.1:1 --xds-root-cert $work/not-a-cert.pem --admin-address 127.0.0.1:15002"
  "$work/missing.yaml|--local-config $work/missing.yaml --admin-address 127.0.0.1:15002"
  "$work/a-directory|--local-config $work/a-directory --admin-address 127.0.0.1:15002"
  "N from 1 to 67108864|$L --map-capacity services=67108865 --admin-address 127.0.0.1:15002"
  "MAP one of frontends, services, endpoints or backends|$L --map-capacity service=10 --admin-address 127.0.0.1:15002"
)

# ---- 1. on a clean machine: a failed start leaves nothing ----
for case in "${failing[@]}"; do
  want="${case%%|*}"; read -ra opts <<<"${case#*|}"
  clean_failure() { run_fails "$want" "${opts[@]}" && nothing_left; }
  check "clean machine: ${opts[*]} is refused and leaves nothing" clean_failure
done
outside_bpffs() {
  run_fails "is not on a BPF filesystem" --local-config "$local_yaml" --admin-address 127.0.0.1:15002 \
    --pin-dir "$work/pins" && [[ ! -e $work/pins ]]
}
check "clean machine: a --pin-dir outside bpffs is refused and not created" outside_bpffs

# ---- 2. beside a running agent: a failed second start changes nothing ----
start_agent --local-config "$local_yaml" --dns-proxy 127.0.0.53:53
check "the first agent becomes ready" wait_for 20 ready
# the knobs, capacities and maps (not the traffic counters) and the programs attached to the cgroup
snapshot() {
  "$sockmesh" dump --json --pin-dir "$pin_dir" | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("counters", None); print(json.dumps(d, indent=1, sort_keys=True))' &&
    bpftool cgroup show "$cgroup"
}
snapshot >"$work/before" 2>&1
check "the snapshot holds the knobs and the attached programs" \
  grep -q '"enrollAll": true' "$work/before"
for case in "${failing[@]}"; do
  want="${case%%|*}"; read -ra opts <<<"${case#*|}"
  unchanged_after() {
    run_fails "$want" "${opts[@]}" || return 1
    snapshot >"$work/after" 2>&1
    diff "$work/before" "$work/after" && ready && reaches 127.10.0.1 80 local
  }
  check "running agent: ${opts[*]} is refused; programs, maps and knobs unchanged" unchanged_after
done

# ---- 3. one owner ----
in_use_by_the_agent() { run_fails "is in use by sockmesh (pid $agent_pid" --local-config "$local_yaml" --admin-address 127.0.0.1:15002; }
check "a second run with valid options fails: the pin directory is in use by the agent's pid" in_use_by_the_agent
unchanged() { snapshot >"$work/after" 2>&1; diff "$work/before" "$work/after"; }
check "and changed nothing" unchanged
replay_refused() {
  ! "$sockmesh" replay --datapath --pin-dir "$pin_dir" "$work/local.xds" >"$work/replay.log" 2>&1 &&
    grep -qF "is in use by sockmesh (pid $agent_pid" "$work/replay.log" || { cat "$work/replay.log"; return 1; }
}
check "replay --datapath is refused while the agent runs" replay_refused
uninstall_refused() {
  ! "$sockmesh" uninstall --pin-dir "$pin_dir" >"$work/uninstall.log" 2>&1 &&
    grep -qF "is in use by sockmesh (pid $agent_pid" "$work/uninstall.log" && ready || { cat "$work/uninstall.log"; return 1; }
}
check "uninstall is refused while the agent runs, which stays ready" uninstall_refused

# ---- 4. readiness follows the links ----
unpinned_not_ready() {
  rm "$pin_dir/links/sm_sendmsg4" || return 1
  local out; out="$(in_ns curl -s -w ' %{http_code}' "http://$admin/healthz/ready")"
  echo "$out"
  [[ $out == *"not attached"*"sm_sendmsg4 is gone"*" 503" ]]
}
check "/healthz/ready is 503 naming the link once a pinned link is removed under the agent" unpinned_not_ready
detached_not_ready() {
  bpftool link detach pinned "$pin_dir/links/sm_connect4" || return 1
  local out; out="$(in_ns curl -s -w ' %{http_code}' "http://$admin/healthz/ready")"
  echo "$out"
  [[ $out == *"sm_connect4 is detached"*" 503" ]]
}
check "/healthz/ready is 503 naming the link once it is detached under the agent" detached_not_ready

# ---- 5. kill -9 releases the lock; the next start repairs the links ----
kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null
mv "$work/agent.log" "$work/agent-before-kill.log"
start_agent --local-config "$local_yaml" --admin-address 127.0.0.1:0
restart_after_kill() {
  wait_for 20 grep -Eq 'serving; admin endpoint on 127.0.0.1:[1-9][0-9]*(,|$)' "$work/agent.log" || return 1
  local bound; bound="$(sed -n 's/.*serving; admin endpoint on \([^,]*\).*/\1/p' "$work/agent.log")"
  in_ns curl -sf "http://$bound/healthz/ready"
}
check "after kill -9 the next agent takes the pin directory (admin port 0: the bound port is logged)" restart_after_kill
check "libmicrohttpd writes no raw line outside the log format" sh -c "! grep -v '^[0-9]\{4\}-' '$work/agent.log' | grep ."
stop_agent

# ---- 6. replay --datapath reconciles what is pinned ----
"$sockmesh" convert "$fixtures/third-service.yaml" "$work/other.xds"
spawn_mesh "$echo_tool" serve 127.0.0.3 8080 third
replay_reconciles() {
  "$sockmesh" replay --datapath --pin-dir "$pin_dir" "$work/other.xds" || return 1
  reaches 127.10.0.3 80 third && refused 127.10.0.1 80
}
check "replay --datapath over another config: its VIP reaches its backend, the old VIP is gone" replay_reconciles

# ---- 7. replay of a YAML file, uninstall of what is not a pin directory ----
replay_yaml() {
  local out; out="$("$sockmesh" replay "$local_yaml" 2>&1)"; local status=$?
  echo "$out"
  (( status != 0 )) && grep -q 'sockmesh convert' <<<"$out" && ! grep -q NACK <<<"$out"
}
check "replay of a YAML file says to convert it, with no NACK" replay_yaml
uninstall_outside_bpffs() {
  mkdir -p "$work/plain/links" && echo keep >"$work/plain/links/file" && echo keep >"$work/plain/file"
  ! "$sockmesh" uninstall --pin-dir "$work/plain" && [[ -f $work/plain/file && -f $work/plain/links/file ]]
}
check "uninstall refuses a directory outside bpffs and deletes nothing" uninstall_outside_bpffs
check "uninstall refuses --pin-dir ''" sh -c "! '$sockmesh' uninstall --pin-dir '' 2>&1"
foreign="/sys/fs/bpf/sockmesh-start-foreign-$$"
uninstall_foreign() {
  mkdir "$foreign" && bpftool map create "$foreign/other" type array key 4 value 4 entries 1 name other || return 1
  ! "$sockmesh" uninstall --pin-dir "$foreign" && [[ -e $foreign/other ]]
}
check "uninstall refuses a bpffs directory that holds other pins, and keeps them" uninstall_foreign
rm -f "$foreign/other"; rmdir "$foreign" 2>/dev/null
check "uninstall of the real pin directory works" "$sockmesh" uninstall --pin-dir "$pin_dir"

# ---- 8. a restart near a map's capacity takes what a fresh start takes ----
services_yaml() { # first last: one service with one VIP each
  echo "services:"
  for i in $(seq "$1" "$2"); do
    printf -- '- {name: s%s, namespace: default, hostname: s%s.default.svc, vips: ["/127.10.2.%s"], ports: {80: 8080}}\n' "$i" "$i" "$i"
  done
}
services_yaml 0 4 >"$work/five.yaml"
services_yaml 2 6 >"$work/shifted.yaml"
rejected_with() { # config: an agent on it over xDS, once ready prints how many services it NACKed
  mv "$work/agent.log" "$work/agent-$RANDOM.log" 2>/dev/null
  "$sockmesh" convert "$1" "$work/config.xds" >/dev/null || { echo "convert failed"; return 1; }
  start_server --stream "$work/config.xds" || { echo "no server"; return 1; }
  start_agent --xds-address "127.0.0.1:$port" --xds-plaintext --map-capacity services=3
  wait_for 20 ready || { echo "not ready"; stop_server; return 1; }
  stop_agent
  stop_server
  local nack; nack="$(grep -o 'NACK [^ ]*Address[^:]*: [0-9]* rejected' "$work/agent.log")"
  echo "${nack##*: }" | grep -o '^[0-9]*' || echo 0
}
restart_takes_what_fresh_takes() {
  local fresh restarted
  fresh="$(rejected_with "$work/shifted.yaml")" || return 1
  "$sockmesh" uninstall --pin-dir "$pin_dir" || return 1
  rejected_with "$work/five.yaml" >/dev/null || return 1
  restarted="$(rejected_with "$work/shifted.yaml")" || return 1
  echo "services rejected: $fresh on a fresh datapath, $restarted after a restart from another config"
  [[ $fresh == 2 && $restarted == 2 ]]
}
check_showing "services=3: a restart from another config rejects what a fresh start does" restart_takes_what_fresh_takes

e2e_end
