#!/usr/bin/env bash
# End to end, local-config mode: sockmesh run --local-config FILE, then the file changed (rewritten in
# place, renamed over, swapped under a ConfigMap-style symlink), broken, and SIGHUP. In a network
# namespace and cgroup made here and removed on every path. Prints TAP.
# Usage: e2e_localconfig.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

E2E_NAME=localconfig
source "$(dirname "$0")/e2e_lib.sh"

e2e_world
spawn_mesh "$echo_tool" serve 127.0.0.1 8080 one
spawn_mesh "$echo_tool" serve 127.0.0.2 8080 two
spawn_mesh "$echo_tool" serve 127.0.0.3 8080 three

# config SERVICE... : each service N (1-3) at VIP 127.10.0.N:80, backed by workload 127.0.0.N:8080 on
# this node (start_agent's NODE_NAME), and one workload on another node that never changes
config() {
  echo "workloads:"
  for n in "$@"; do
    printf -- '- {uid: e2e//Pod/default/w%s, name: w%s, namespace: default, node: local, workloadIps: ["127.0.0.%s"], services: {"default/s%s.example.com": {80: 8080}}}\n' "$n" "$n" "$n" "$n"
  done
  echo '- {uid: e2e//Pod/default/far, name: far, namespace: default, node: elsewhere, workloadIps: ["10.9.9.9"]}'
  echo "services:"
  for n in "$@"; do
    printf -- '- {name: s%s, namespace: default, hostname: s%s.example.com, vips: ["/127.10.0.%s"], ports: {80: 8080}}\n' "$n" "$n" "$n"
  done
}
logged() { grep -qF -- "$1" "$work/agent.log"; }
serves() { # N:NAME...: VIP 127.10.0.N reaches the backend NAME
  for pair in "$@"; do reaches "127.10.0.${pair%%:*}" 80 "${pair#*:}" || return 1; done
}
alive() { kill -0 "$agent_pid"; }
# local_addresses ADDRESS...: sm_local_addrs holds these IPv4 addresses (this node's workloads), and no other
local_addresses() {
  local maps=("$pin_dir"/maps-v*/sm_local_addrs) held
  held="$(bpftool -j map dump pinned "${maps[0]}" | python3 -c '
import json, sys
print(" ".join(sorted(".".join(str(int(b, 16)) for b in e["key"][12:]) for e in json.load(sys.stdin))))')"
  echo "sm_local_addrs: $held"
  [[ $held == "$*" ]]
}

mkdir "$work/etc"
file="$work/etc/config.yaml"
config 1 2 >"$file"
start_agent --local-config "$file"
check "local-config mode becomes ready" wait_for 20 ready
check "the file's services are reachable" serves 1:one 2:two
check_showing "this node's workload addresses are in sm_local_addrs" local_addresses 127.0.0.1 127.0.0.2
check "the agent watches the file's directory" logged "watching $work/etc for changes to config.yaml"

# 1. an editor's save: a new file renamed over the old one; s2 goes, s3 comes
config 1 3 >"$work/etc/.config.yaml.tmp" && mv "$work/etc/.config.yaml.tmp" "$file"
check "renamed over: the new service's VIP is reachable" wait_for 10 reaches 127.10.0.3 80 three
check "renamed over: the removed service's VIP is refused" wait_for 10 refused 127.10.0.2 80
check "renamed over: the kept service still reaches its backend" reaches 127.10.0.1 80 one
reload_logged() { logged "local config $file reloaded" && logged "2 address resources no longer in the file removed"; }
check "the reload is logged, with the removals (service s2 and workload w2)" reload_logged
check_showing "renamed over: sm_local_addrs follows (w2 gone, w3 in)" local_addresses 127.0.0.1 127.0.0.3

# 2. a bad file, written in place: rejected whole with its line, the old state keeps serving
printf 'workloadz:\n- uid: e2e//Pod/default/w1\n' >"$file"
check "a bad file is rejected with file:line and reason" wait_for 10 logged "$file:1: unknown top-level key 'workloadz'"
check "a bad file: the old state keeps serving" serves 1:one 3:three
check "a bad file: still ready" ready
config 1 3 | sed 's/workloadIps: \["127.0.0.3"\]/workloadIps: "127.0.0.3"/' >"$file"
check "a field of the wrong type is rejected with its line" wait_for 10 logged "$file:3: 'workloadIps' must be a list, not '127.0.0.3'"
check "a wrong type: the old state keeps serving" reaches 127.10.0.3 80 three

# 3. SIGHUP re-reads the file and does not end the agent
rejections() { grep -c "the new file is rejected" "$work/agent.log"; }
before="$(rejections)"
kill -HUP "$agent_pid"
rejected_again() { (( $(rejections) > before )); }
check "SIGHUP re-reads the file (the bad one is rejected again)" wait_for 10 rejected_again
check "SIGHUP does not end the agent" alive
check "after SIGHUP the datapath still serves" reaches 127.10.0.1 80 one

# 4. written in place again, good: applied (s2 back, s3 gone)
config 1 2 >"$file"
check "rewritten in place: the returning service is reachable" wait_for 10 reaches 127.10.0.2 80 two
check "rewritten in place: the dropped service is refused" wait_for 10 refused 127.10.0.3 80
check_showing "rewritten in place: sm_local_addrs follows" local_addresses 127.0.0.1 127.0.0.2

# 5. memory runs short reading a change: its address space capped at what the agent maps now (prlimit),
# the agent logs it and keeps serving; once the cap is lifted, the read is tried again with no further
# change or SIGHUP, and the change is applied
vm_kib="$(awk '/^VmSize:/ { print $2 }' "/proc/$agent_pid/status")"
reloads() { grep -c "local config $file reloaded" "$work/agent.log"; }
before="$(reloads)"
check "memory short: the agent's address space capped (soft limit)" prlimit --pid "$agent_pid" --as="$((vm_kib * 1024)):"
padded_config() { # config 1 3 and 3,000 more workloads: a read that needs megabytes
  config 1 3 | sed '/^services:/,$d'
  for i in $(seq 0 2999); do
    printf -- '- {uid: e2e//Pod/default/pad%s, name: pad%s, namespace: default, workloadIps: ["127.20.%s.%s"]}\n' \
      "$i" "$i" "$((i / 200))" "$((i % 200 + 1))"
  done
  config 1 3 | sed -n '/^services:/,$p'
}
padded_config >"$file"
check "memory short: the read is logged as out of memory, to be tried again" \
  wait_for 10 logged "local config $file: out of memory reading it; the config applied before keeps serving, and the file is read again after a back-off"
check "memory short: the agent keeps serving" reaches 127.10.0.1 80 one
check "memory short: the change is not applied yet" refused 127.10.0.3 80
check "memory back: the cap lifted" prlimit --pid "$agent_pid" --as=unlimited:
applied_again() { (( $(reloads) > before )); }
check "memory back: the read is tried again and the change applied, no SIGHUP" wait_for 40 applied_again
check "memory back: the new service's VIP is reachable" wait_for 10 reaches 127.10.0.3 80 three
check_showing "memory back: sm_local_addrs follows" local_addresses 127.0.0.1 127.0.0.3
check "memory back: the agent still runs" alive
stop_agent

# 6. a ConfigMap-style mount: config.yaml -> ..data/config.yaml, ..data -> ..v1, swapped to ..v2
cm="$work/configmap"
mkdir -p "$cm/..v1" "$cm/..v2"
config 1 >"$cm/..v1/config.yaml"
config 1 3 >"$cm/..v2/config.yaml"
ln -s ..v1 "$cm/..data" && ln -s ..data/config.yaml "$cm/config.yaml"
start_agent --local-config "$cm/config.yaml"
check "ConfigMap mount: ready" wait_for 20 ready
check "ConfigMap mount: its one service is reachable" reaches 127.10.0.1 80 one
check_showing "restarted on the pinned maps: sm_local_addrs holds this config's, not the last agent's" \
  local_addresses 127.0.0.1
ln -s ..v2 "$cm/..data_tmp" && mv -T "$cm/..data_tmp" "$cm/..data"
check "ConfigMap symlink swap: the new service's VIP is reachable" wait_for 10 reaches 127.10.0.3 80 three
stop_agent

# 6. refusals before anything runs
xds_flag_refused() {
  "$sockmesh" run --cgroup "$cgroup" --pin-dir "$pin_dir-no" --local-config "$file" --xds-address 127.0.0.1:1 2>"$work/refused.log"
  (( $? == 2 )) && grep -q -- '--xds-address is for xDS' "$work/refused.log" && [[ ! -e $pin_dir-no ]]
}
check "--xds-address with --local-config is refused (exit 2)" xds_flag_refused
record_refused() {
  "$sockmesh" run --cgroup "$cgroup" --pin-dir "$pin_dir-no" --local-config "$file" --record "$work/r.xds" 2>"$work/refused.log"
  (( $? == 2 )) && grep -q -- '--record is for xDS' "$work/refused.log" && [[ ! -e $work/r.xds ]]
}
check "--record with --local-config is refused (exit 2)" record_refused
directory_named() {
  NODE_NAME=local in_ns "$sockmesh" run --cgroup "$cgroup" --pin-dir "$pin_dir" --admin-address "$admin" --local-config "$work/etc" 2>"$work/dir.log"
  (( $? != 0 )) && grep -q "$work/etc: is a directory" "$work/dir.log"
}
check "a directory as --local-config says it is one" directory_named

e2e_end
