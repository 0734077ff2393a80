#!/usr/bin/env bash
# End to end for what an operator reads: the node-identity warning of an agent started without its
# pod environment, and 'sockmesh dump' naming services and backends from the running agent's
# /config_dump (ids only, with the reason, when no agent answers). Real binaries, in a network
# namespace, cgroup and pin directory made here and removed on every path. Prints TAP.
# Usage: e2e_operator.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

E2E_NAME=operator
source "$(dirname "$0")/e2e_lib.sh"

e2e_world
"$sockmesh" convert "$fixtures/real/ztunnel-local-config.yaml" "$work/local.xds" || exit 1
start_server --stream "$work/local.xds"

# 1. no pod environment: the agent warns, naming what is missing (NODE_NAME is given)
env -u POD_NAME -u POD_NAMESPACE -u INSTANCE_IP NODE_NAME=local \
  nsenter --net="/run/netns/$netns" "$sockmesh" run --cgroup "$cgroup" --pin-dir "$pin_dir" --enroll-all \
  --admin-address "$admin" --xds-address "127.0.0.1:$port" --xds-plaintext 2>>"$work/agent.log" >>"$work/access.log" &
agent_pid=$!
pids+=("$agent_pid")
check "the agent becomes ready" wait_for 20 ready
check "without POD_NAME, POD_NAMESPACE and INSTANCE_IP the agent warns, naming them" \
  grep -E ' warn +node identity: INSTANCE_IP, POD_NAME, POD_NAMESPACE not set: ' "$work/agent.log"
check "with NODE_NAME set, the warning does not name it" bash -c "! grep -q 'NODE_NAME not set' '$work/agent.log'"

# 2. dump with the agent running: names from its /config_dump
dump_names() {
  in_ns "$sockmesh" dump --pin-dir "$pin_dir" --admin-address "$admin" >"$work/dump.txt" || return 1
  cat "$work/dump.txt"
  grep -q "^names: from http://$admin/config_dump" "$work/dump.txt" &&
    grep -qE '^  #[0-9]+  default/example.com  VIPs 127.10.0.1  ports 80' "$work/dump.txt" &&
    grep -qE '^  #[0-9]+  default/example2.com  VIPs 127.10.0.2' "$work/dump.txt"
}
check_showing "dump names each service namespace/hostname, from the running agent" dump_names
dump_json_names() {
  in_ns "$sockmesh" dump --json --pin-dir "$pin_dir" --admin-address "$admin" | python3 -c '
import json, sys
d = json.load(sys.stdin)
names = sorted((s["namespace"], s["hostname"]) for s in d["services"])
assert names == [("default", "example.com"), ("default", "example2.com")], names
workloads = sorted(b.get("workload") for b in d["backends"])
assert workloads == ["default/local", "default/local-tcp"], workloads
assert d["names"]["source"].endswith("/config_dump"), d["names"]'
}
check "dump --json: services carry namespace and hostname, backends their workload" dump_json_names

# 3. no agent: ids only, and the reason
stop_agent
no_agent() {
  in_ns "$sockmesh" dump --pin-dir "$pin_dir" --admin-address "$admin" >"$work/dump.txt" || return 1
  cat "$work/dump.txt"
  grep -q "^names: not shown, services and backends by id only: $admin: Connection refused" "$work/dump.txt" &&
    grep -qE '^  #[0-9]+  VIPs 127.10.0.1  ports 80' "$work/dump.txt"
}
check_showing "with no agent, dump shows ids and says why names are missing" no_agent
no_agent_json() {
  in_ns "$sockmesh" dump --json --pin-dir "$pin_dir" --admin-address "$admin" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert "Connection refused" in d["names"]["unavailable"], d["names"]
assert all("hostname" not in s for s in d["services"]) and len(d["services"]) == 2'
}
check "with no agent, dump --json says why in names.unavailable" no_agent_json
stop_server

e2e_end
