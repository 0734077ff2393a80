#!/usr/bin/env bash
# End to end, enrollment without --enroll-all: the agent steers only the connections made in a network
# namespace that `sockmesh enroll --netns` put into sm_enrolled. Two namespaces made here, both with a
# process in the test's cgroup and a backend of their own at the service's target: only the enrolled
# one's connects to the VIP are translated. The cookie the command writes is the one a socket inside
# the namespace sees, and `sockmesh dump` lists it. Prints TAP.
# Usage: e2e_enroll.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

E2E_NAME=enroll
source "$(dirname "$0")/e2e_lib.sh"
# Debian's python3 (scripts/install-deps), not a version manager's shim: each shim start costs ~0.5 s here
py=/usr/bin/python3; [[ -x $py ]] || py=python3

other="$name-b"
enroll_cleanup() {
  ip netns del "$other" 2>/dev/null || true
  cleanup
}
trap enroll_cleanup EXIT

e2e_world
ip netns add "$other" && nsenter --net="/run/netns/$other" ip link set lo up || { echo "1..0 # cannot make a second netns"; exit 1; }
in_other_mesh() { nsenter --net="/run/netns/$other" sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cgroup" "$@"; }
# the backend of each namespace answers with its own name: "one" in the agent's, "bee" in the other
spawn_mesh "$echo_tool" serve 127.0.0.1 8080 one
nsenter --net="/run/netns/$other" "$echo_tool" serve 127.0.0.1 8080 bee & pids+=($!)

enroll_all="" # only the namespaces this test enrolls
start_enrolling_agent() { start_agent --local-config "$fixtures/one-service.yaml"; }
inside_cookie() { # the cookie of a socket made inside the namespace at PATH
  nsenter --net="$1" "$py" -c 'import socket, struct; s = socket.socket(); print(struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, 71, 8))[0])'
}
enrolled_cookies() { in_ns "$sockmesh" dump --json --pin-dir "$pin_dir" --admin-address "$admin" |
  "$py" -c 'import json, sys; print(" ".join(str(c) for c in json.load(sys.stdin)["enrolled"]))'; }
lists() { [[ " $(enrolled_cookies) " == *" $1 "* ]]; }
lists_none() { [[ -z "$(enrolled_cookies)" ]]; }
other_refused() {
  local out; out="$(in_other_mesh "$echo_tool" ask 127.10.0.1 80)"
  grep -q 'connect failed: Connection refused' <<<"$out" || { echo "$out"; return 1; }
}
other_reaches_bee() { in_other_mesh "$echo_tool" ask 127.10.0.1 80 | grep -q "answered by bee"; }

start_enrolling_agent
check "the agent (no --enroll-all) becomes ready" wait_for 20 ready
check "the service's backend answers directly" reaches 127.0.0.1 8080 one
check "nothing enrolled: a connect to the VIP is not translated" refused 127.10.0.1 80
check "nothing enrolled: dump lists no cookie" lists_none

cookie="$(inside_cookie "/run/netns/$netns")"
other_cookie="$(inside_cookie "/run/netns/$other")"
check_showing "sockmesh enroll --netns writes the namespace's cookie ($cookie)" \
  sh -c '"$1" enroll --netns "$2" --pin-dir "$3" | grep -q "(cookie $4)"' _ "$sockmesh" "/run/netns/$netns" "$pin_dir" "$cookie"
check "dump --json lists the cookie a socket inside the namespace sees" lists "$cookie"
check "enrolled: a connect to the VIP is translated to the backend" reaches 127.10.0.1 80 one
check "not enrolled (the other namespace, same cgroup): not translated" other_refused

check "enroll of a path that is no network namespace fails" sh -c '! "$1" enroll --netns /etc/hostname --pin-dir "$2"' _ "$sockmesh" "$pin_dir"
check "... and changes nothing (still only the one cookie)" sh -c 'test "$1" = "$2"' _ "$(enrolled_cookies)" "$cookie"

# the other namespace by /proc/PID/ns/net this time
nsenter --net="/run/netns/$other" sleep 30 & sleeper=$!; pids+=($sleeper)
check "enroll by /proc/PID/ns/net: the other namespace" "$sockmesh" enroll --netns "/proc/$sleeper/ns/net" --pin-dir "$pin_dir"
check "the other namespace enrolled: its connect is translated to its own backend" other_reaches_bee
check "dump lists both cookies" sh -c 'test "$(echo $1 | tr " " "\n" | sort)" = "$(printf "%s\n" $2 $3 | sort)"' _ "$(enrolled_cookies)" "$cookie" "$other_cookie"

stop_agent
check "the agent stopped: the enrolled namespace is still steered (the pinned map)" reaches 127.10.0.1 80 one
start_enrolling_agent
check "a restarted agent becomes ready" wait_for 20 ready
check "a restarted agent keeps both enrolled" sh -c 'test "$(echo $1 | tr " " "\n" | sort)" = "$(printf "%s\n" $2 $3 | sort)"' _ "$(enrolled_cookies)" "$cookie" "$other_cookie"

check "sockmesh unenroll --netns removes the cookie" "$sockmesh" unenroll --netns "/run/netns/$netns" --pin-dir "$pin_dir"
check "unenrolled: a connect to the VIP is not translated any more" refused 127.10.0.1 80
check "unenrolled: dump lists only the other cookie" sh -c 'test "$1" = "$2"' _ "$(enrolled_cookies)" "$other_cookie"
check "the other namespace is still steered" other_reaches_bee
check "unenroll of a namespace not enrolled succeeds (nothing to remove)" "$sockmesh" unenroll --netns "/run/netns/$netns" --pin-dir "$pin_dir"
stop_agent

e2e_end
