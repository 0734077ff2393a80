#!/usr/bin/env bash
# End to end, installing sockmesh-cni: `sockmesh run --cni-conf-dir` copies the plugin and puts its
# entry last in the first CNI config, puts it back within a second when "the primary CNI" renames a new
# file over its config or rewrites it in place, leaves both when stopped, and `sockmesh uninstall
# --cni-conf-dir` takes both out. CNI folders made in the test's temporary directory, never the node's.
# Prints TAP.
# Usage: e2e_cniinstall.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

E2E_NAME=cniinst
source "$(dirname "$0")/e2e_lib.sh"
py=/usr/bin/python3; [[ -x $py ]] || py=python3
plugin="$build/cni/sockmesh-cni"
conf="$work/net.d"
bin="$work/bin"
sock=/var/run/sockmesh/cni.sock

e2e_world
mkdir "$conf" "$bin"
cat >"$work/config.yaml" <<'YAML'
workloads:
- {uid: e2e//Pod/default/w1, name: w1, namespace: default, workloadIps: ["127.0.0.1"]}
YAML
primary='{"cniVersion": "1.0.0", "name": "bridge-net", "plugins": [{"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}}, {"type": "portmap", "capabilities": {"portMappings": true}}]}'
printf '%s\n' "$primary" >"$conf/10-bridge.conflist"

# sockmesh-cni's entry is last, once, with the socket, after the primary's plugins untouched
entry_last() {
  "$py" - "$conf/10-bridge.conflist" "$sock" "$primary" <<'PY'
import json, sys
have = json.load(open(sys.argv[1]))["plugins"]
want = json.loads(sys.argv[3])["plugins"]
ours = [p for p in have if p.get("type") == "sockmesh-cni"]
sys.exit(not (len(ours) == 1 and have[-1] == {"type": "sockmesh-cni", "socketPath": sys.argv[2]} and have[:-1] == want))
PY
}
# the entry is back within a second (polled every 20 ms)
back_within_1s() {
  local start=$EPOCHREALTIME
  while ! entry_last; do
    "$py" -c 'import sys; sys.exit(float(sys.argv[2]) - float(sys.argv[1]) < 1)' "$start" "$EPOCHREALTIME" && return 1
    sleep 0.02
  done
}
primary_only() { "$py" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.loads(sys.argv[2]))' "$conf/10-bridge.conflist" "$primary"; }
run_refused() { ! in_ns "$sockmesh" run --cgroup "$cgroup" --pin-dir "$pin_dir" --local-config "$work/config.yaml" "$@" 2>"$work/refusal.out"; }

check "--cni-bin-dir without --cni-conf-dir is refused" run_refused --cni-bin-dir "$bin"
check "a missing --cni-conf-dir is refused before the kernel is touched" \
  run_refused --cni-conf-dir "$work/missing" --cni-bin-dir "$bin" --cni-plugin "$plugin"
check "... naming it" grep -q "CNI directory $work/missing: No such file or directory" "$work/refusal.out"
check "... and nothing was written" sh -c 'test ! -e "$0/sockmesh-cni" && test ! -e "$1"' "$bin" "$pin_dir"
check "... nor the config" primary_only

NODE_NAME=local POD_NAME=sockmesh-e2e POD_NAMESPACE=istio-system INSTANCE_IP=127.0.0.1 \
  spawn_ns "$sockmesh" run --cgroup "$cgroup" --pin-dir "$pin_dir" --admin-address "$admin" \
  --local-config "$work/config.yaml" --cni-conf-dir "$conf" --cni-bin-dir "$bin" --cni-plugin "$plugin" 2>>"$work/agent.log" \
  >>"$work/access.log"
agent_pid=$!
check "the agent with --cni-conf-dir becomes ready" wait_for 20 ready
check "the plugin binary is installed, executable" sh -c 'cmp "$0" "$1/sockmesh-cni" && test -x "$1/sockmesh-cni"' "$plugin" "$bin"
check "... linked statically: it needs no library on the node" sh -c '! ldd "$0" 2>&1 | grep -q "=>"' "$bin/sockmesh-cni"
check "the entry is last in the primary config, the rest untouched" wait_for 5 entry_last

# the primary CNI writes a new file and renames it over its config (what most do)
printf '%s\n' "$primary" >"$conf/.new" && mv "$conf/.new" "$conf/10-bridge.conflist"
check "renamed over by the primary CNI: the entry is back within 1 s" back_within_1s
# ... or rewrites it in place
printf '%s\n' "$primary" >"$conf/10-bridge.conflist"
check "rewritten in place: the entry is back within 1 s" back_within_1s
check "the agent logged putting it back" grep -q "entry put back" "$work/agent.log"
check "no temporary file left in the conf dir" sh -c 'test "$(ls -A "$0" | grep -v "^10-bridge.conflist$")" = ""' "$conf"

stop_agent
check "the agent stopped: the entry stays (the plugin fails open)" entry_last
check "... and the binary too" test -x "$bin/sockmesh-cni"
check_showing "sockmesh uninstall --cni-conf-dir --cni-bin-dir" \
  "$sockmesh" uninstall --pin-dir "$pin_dir" --cni-conf-dir "$conf" --cni-bin-dir "$bin"
check "uninstalled: the primary config is as the primary CNI wrote it" primary_only
check "uninstalled: the binary is gone" test ! -e "$bin/sockmesh-cni"
check "uninstalled: the datapath is unpinned" test ! -e "$pin_dir"

e2e_end
