#!/usr/bin/env bash
# End to end, the CNI hook: the real sockmesh-cni binary run as a container runtime runs it
# (CNI_COMMAND=ADD/DEL/CHECK/VERSION, CNI_NETNS of a network namespace made here, CNI_ARGS with the K8S_
# keys, the network configuration on stdin) against cniserver/ (in cni_agent_stub): stdout is
# prevResult, the server gets the namespace's fd and reads the cookie that a socket inside sees; the
# agent down, slow or refusing lets the pod start (fail open); standalone use is refused. Then chained
# after Debian's real bridge/host-local plugins, which run inside a second throwaway namespace standing
# for the node (so no bridge or address ever appears outside the namespaces made here). Prints TAP.
# Usage: e2e_cni.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

E2E_NAME=cni
source "$(dirname "$0")/e2e_lib.sh"
# Debian's python3 (scripts/install-deps), not a version manager's shim: each shim start costs ~0.5 s here
py=/usr/bin/python3; [[ -x $py ]] || py=python3

cni="$build/cni/sockmesh-cni"
stub="$build/test/cni_agent_stub"
node_ns="$name-node"
sock="$work/run/cni.sock"
events="$work/events"
cni_plugins=/usr/lib/cni
stub_pid=""

cni_cleanup() {
  ip netns del "$node_ns" 2>/dev/null || true
  cleanup
}
trap cni_cleanup EXIT

e2e_world
touch "$events"

# A result as a primary plugin would print it, for the pod's namespace.
prev="{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"eth0\",\"mac\":\"0a:58:0a:16:00:05\",\"sandbox\":\"/run/netns/$netns\"}],\"ips\":[{\"interface\":0,\"address\":\"10.22.0.5/24\",\"gateway\":\"10.22.0.1\"}],\"dns\":{}}"
args="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=9f1c-77aa"

config() { # PREV_RESULT (or ""), extra JSON members (or ""), cniVersion (default 1.0.0)
  local members="\"cniVersion\":\"${3:-1.0.0}\",\"name\":\"podnet\",\"type\":\"sockmesh-cni\",\"socketPath\":\"$sock\",\"logFile\":\"$work/cni.log\""
  [[ -n $1 ]] && members+=",\"prevResult\":$1"
  [[ -n $2 ]] && members+=",$2"
  echo "{$members}"
}
plugin() { # COMMAND CONFIG: stdout in $work/out, stderr in $work/err, the exit status in $status
  CNI_COMMAND="$1" CNI_CONTAINERID=c1 CNI_NETNS="/run/netns/$netns" CNI_IFNAME=eth0 CNI_PATH="$cni_plugins" \
    CNI_ARGS="$args" timeout 10 "$cni" <<<"$2" >"$work/out" 2>"$work/err"
  status=$?
}
start_stub() { # extra stub options
  rm -f "$work/stub.out"
  "$stub" "$sock" "$events" "$@" >"$work/stub.out" 2>"$work/stub.err" & stub_pid=$!; pids+=("$stub_pid")
  wait_for 5 grep -q listening "$work/stub.out"
}
stop_stub() { kill -TERM "$stub_pid" 2>/dev/null; wait "$stub_pid" 2>/dev/null; stub_pid=""; }
inside_cookie() { # the cookie of a socket made inside the namespace NAME
  nsenter --net="/run/netns/$1" "$py" -c 'import socket, struct; s = socket.socket(); print(struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, 71, 8))[0])'
}
same_json() { # FILE JSON: the file holds the same JSON value
  "$py" -c 'import json, sys; a = json.load(open(sys.argv[1])); b = json.loads(sys.argv[2]); sys.exit(a != b)' "$1" "$2" ||
    { echo "got: $(cat "$1")"; echo "expected: $2"; return 1; }
}
last_event_has() { # python expression over e (the last event as a dict)
  tail -n1 "$events" | "$py" -c 'import json, sys; e = json.load(sys.stdin); ok = eval(sys.argv[1]); print(e); sys.exit(not ok)' "$1"
}
events_count() { wc -l <"$events"; }
error_code() { # the CNI error code on stdout
  "$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["code"])' "$work/out"
}

check "the stub agent listens on its socket (its directory made)" start_stub
cookie="$(inside_cookie "$netns")"

plugin VERSION ""
check "VERSION lists the supported spec versions" \
  "$py" -c 'import json, sys; v = json.load(open(sys.argv[1])); sys.exit(not ("1.0.0" in v["supportedVersions"] and "0.4.0" in v["supportedVersions"]))' "$work/out"

plugin ADD "$(config "$prev" "")"
check "ADD succeeds" test "$status" = 0
check "ADD prints prevResult unchanged" same_json "$work/out" "$prev"
check "ADD: the agent got the pod's uid, namespace and name, and its container id" \
  last_event_has 'e["command"] == "ADD" and e["uid"] == "9f1c-77aa" and e["namespace"] == "shop" and e["name"] == "cart-1" and e["containerId"] == "c1"'
check "ADD: the agent got the netns fd, and its cookie is the one a socket inside sees ($cookie)" \
  last_event_has "e['fd'] and e['cookieError'] == 0 and e['cookie'] == $cookie"
check "ADD: an agent that answers ok leaves no log line" test ! -s "$work/err"

full_args="$args"
args="K8S_POD_UID=a-much-longer-uid;IgnoreUnknown=1;FOO=bar;K8S_POD_UID=short"
plugin ADD "$(config "$prev" "")"
check "CNI_ARGS: unknown keys ignored, a repeated key's last value wins whole, absent keys empty" \
  last_event_has 'e["uid"] == "short" and e["name"] == "" and e["namespace"] == ""'
args="$full_args"

plugin CHECK "$(config "$prev" "")"
check "CHECK succeeds and prints nothing" test "$status" = 0 -a ! -s "$work/out"

plugin ADD "$(config "" "")"
before="$(events_count)"
check "standalone (no prevResult): refused with a non-zero status" test "$status" != 0
check "standalone: the CNI error says invalid network config (code 7) on stdout" test "$(error_code)" = 7
check "standalone: the agent is not told" test "$(events_count)" = "$before"

plugin ADD "$(config "$prev" "" 9.9.9)"
check "an unsupported cniVersion: error code 1" test "$status" != 0 -a "$(error_code)" = 1

plugin ADD "{\"cniVersion\":\"1.0.0\",\"name\":\"podnet\",\"type\":\"sockmesh-cni\",\"socketPath\":17,\"prevResult\":$prev}"
check "a socketPath that is not a string: error code 7" test "$status" != 0 -a "$(error_code)" = 7

plugin DEL "$(config "$prev" "")"
check "DEL succeeds and prints nothing" test "$status" = 0 -a ! -s "$work/out"
check "DEL: the agent is told, with the namespace's cookie" \
  last_event_has "e['command'] == 'DEL' and e['uid'] == '9f1c-77aa' and e['cookie'] == $cookie"

# what the server answers to requests the plugin never sends
ask_raw() { "$py" -c 'import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.settimeout(5); s.connect(sys.argv[1])
s.send(sys.argv[2].encode() * int(sys.argv[3])); print(s.recv(4096).decode())' "$sock" "$@"; }
check "an unknown command is answered with an error" sh -c 'echo "$1" | grep -q "unknown command"' _ "$(ask_raw '{"command":"XYZ"}' 1)"
check "a request over the size limit is answered with an error" sh -c 'echo "$1" | grep -q "larger than"' _ "$(ask_raw x 5000)"

stop_stub
start_stub --refuse
plugin ADD "$(config "$prev" "")"
check "an agent that refuses: ADD still succeeds with prevResult (fail open)" same_json "$work/out" "$prev"
check "an agent that refuses: its reason is logged to stderr and the log file" \
  sh -c 'grep -q "refused by the test" "$1" && grep -q "refused by the test" "$2"' _ "$work/err" "$work/cni.log"

# a second server on the same socket is refused; a dead one's file is taken over
check "a second server on a live socket is refused" sh -c '! "$1" "$2" "$3" 2>"$4" && grep -q "another server listens" "$4"' \
  _ "$stub" "$sock" "$events" "$work/stub2.err"
kill -9 "$stub_pid"; wait "$stub_pid" 2>/dev/null
check "the socket file of a killed server is taken over" start_stub
stop_stub
check "a stopped server removes its socket file" test ! -e "$sock"
echo keep >"$sock"
check "a path that is not a socket is refused, and left alone" sh -c '! "$1" "$2" "$3" 2>"$4" && grep -q "not a socket" "$4" && grep -qx keep "$2"' \
  _ "$stub" "$sock" "$events" "$work/stub3.err"
rm -f "$sock"

start=$SECONDS
plugin ADD "$(config "$prev" "")"
check "the agent down: ADD succeeds at once with prevResult" sh -c 'test "$1" = 0 && test $(($3 - $2)) -le 1' _ "$status" "$start" "$SECONDS"
check "the agent down: prevResult unchanged" same_json "$work/out" "$prev"
check "the agent down: logged" grep -q "was not told" "$work/err"
plugin DEL "not json at all"
check "a broken config: DEL still succeeds (and tells no agent)" sh -c 'test "$1" = 0 && grep -q "the agent is not told" "$2"' _ "$status" "$work/err"

# an agent that accepts nothing and never answers: the plugin gives up after about 2 s
"$py" -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.bind(sys.argv[1]); s.listen(8)
print("listening", flush=True); time.sleep(30)' "$sock" >"$work/slow.out" & pids+=($!); slow_pid=$!
wait_for 5 grep -q listening "$work/slow.out"
start_ms=$(date +%s%3N)
plugin ADD "$(config "$prev" "")"
took=$(( $(date +%s%3N) - start_ms ))
check "a silent agent: ADD gives up after about 2 s ($took ms) and succeeds" sh -c 'test "$1" = 0 && test "$2" -ge 1800 -a "$2" -le 3500' _ "$status" "$took"
check "a silent agent: prevResult unchanged" same_json "$work/out" "$prev"
kill -9 "$slow_pid"; wait "$slow_pid" 2>/dev/null; rm -f "$sock"

# chained after the real bridge/host-local, which run in a namespace standing for the node
if [[ -x $cni_plugins/bridge && -x $cni_plugins/host-local ]]; then
  ip netns add "$node_ns"
  start_stub
  bridge_conf="{\"cniVersion\":\"1.0.0\",\"name\":\"podnet\",\"type\":\"bridge\",\"bridge\":\"smbr0\",\"isGateway\":false,\"ipMasq\":false,\"ipam\":{\"type\":\"host-local\",\"subnet\":\"10.99.0.0/24\",\"dataDir\":\"$work/ipam\"}}"
  CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS="/run/netns/$netns" CNI_IFNAME=eth0 CNI_PATH="$cni_plugins" CNI_ARGS="$args" \
    timeout 10 nsenter --net="/run/netns/$node_ns" "$cni_plugins/bridge" <<<"$bridge_conf" >"$work/bridge.out" 2>"$work/bridge.err"
  check "the real bridge plugin sets up the pod's eth0 (in the test's namespaces)" \
    sh -c 'nsenter --net="/run/netns/$1" ip -br addr show eth0 | grep -q "10\.99\.0\."' _ "$netns"
  bridge_result="$(cat "$work/bridge.out")"
  plugin ADD "$(config "$bridge_result" "")"
  check "chained after bridge: ADD succeeds" test "$status" = 0
  check "chained after bridge: stdout is bridge's result unchanged" same_json "$work/out" "$bridge_result"
  check "chained after bridge: the agent got the pod's cookie" last_event_has "e['command'] == 'ADD' and e['cookie'] == $cookie"
  plugin DEL "$(config "$bridge_result" "")"
  CNI_COMMAND=DEL CNI_CONTAINERID=c1 CNI_NETNS="/run/netns/$netns" CNI_IFNAME=eth0 CNI_PATH="$cni_plugins" CNI_ARGS="$args" \
    timeout 10 nsenter --net="/run/netns/$node_ns" "$cni_plugins/bridge" <<<"$bridge_conf" >/dev/null 2>>"$work/bridge.err"
  check "chained: DEL in reverse order succeeds and eth0 is gone" \
    sh -c 'test "$1" = 0 && ! nsenter --net="/run/netns/$2" ip link show eth0 >/dev/null 2>&1' _ "$status" "$netns"
  check "nothing of the bridge plugin outside the test's namespaces" sh -c '! ip link show smbr0 >/dev/null 2>&1'
  stop_stub
else
  echo "# $cni_plugins/bridge or host-local missing (Debian containernetworking-plugins): chained run not done"
  result "chained after the real bridge (containernetworking-plugins installed)" 1
fi

e2e_end
