#!/usr/bin/env bash
# End to end, L4 authorization: the agent in local-config mode guards its own network namespace
# (--enroll-all), and real TCP connections from chosen source addresses meet the policies of the file:
# denied ones fail at once and never reach the server, a policy change closes what it now denies, a
# restart keeps enforcing, a policy beyond a limit is NACKed by name, sockmesh explain tells why.
# In a network namespace and cgroup made here and removed on every path. Prints TAP.
# Usage: e2e_authz.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

E2E_NAME=authz
source "$(dirname "$0")/e2e_lib.sh"
peer="$source_dir/test/authz_peer.py"

e2e_world
# The server workload (prod/srv) on this node at 127.0.0.10; clients: frontend/web at .20, other/bad at
# .30, nobody's address .40, the node's own address .50 (exempt). All on lo, in this namespace.
spawn_mesh python3 "$peer" serve 127.0.0.10 8080
spawn_mesh python3 "$peer" serve 127.0.0.11 8080
spawn_mesh python3 "$peer" serve ::1 8080

workloads() { # srv lists the selector policy prod/deny-bad when SELECT is set
  cat <<YAML
workloads:
- {uid: e2e//Pod/prod/srv, name: srv, namespace: prod, serviceAccount: srv, node: local, workloadIps: ["127.0.0.10", "::1"]${SELECT:+, authorizationPolicies: [prod/deny-bad]}}
- {uid: e2e//Pod/frontend/web, name: web, namespace: frontend, serviceAccount: web, node: local, workloadIps: ["127.0.0.20"]}
- {uid: e2e//Pod/other/bad, name: bad, namespace: other, serviceAccount: bad, node: elsewhere, workloadIps: ["127.0.0.30"]}${NEWPOD:+
- {uid: e2e//Pod/frontend/web2, name: web2, namespace: frontend, serviceAccount: web, node: elsewhere, workloadIps: ["127.0.0.40"]\}}${NEWSA:+
- {uid: e2e//Pod/frontend/api, name: api, namespace: frontend, serviceAccount: api, node: elsewhere, workloadIps: ["127.0.0.41"]\}}${LOCAL2:+
- {uid: e2e//Pod/prod/srv2, name: srv2, namespace: prod, serviceAccount: srv, node: local, workloadIps: ["127.0.0.11"]\}}
services: []
YAML
}
# Only frontend may reach prod; and prod/deny-web denies frontend/web's principal when its argument is "deny".
policies() {
  echo "policies:"
  echo "- {name: from-frontend, namespace: prod, scope: Namespace, action: Allow, rules: [[[{namespaces: [frontend]}]]]}"
  if [[ ${1:-} == deny ]]; then
    echo "- {name: deny-web, namespace: prod, scope: Namespace, action: Deny, rules: [[[{principals: [cluster.local/ns/frontend/sa/web]}]]]}"
  fi
  if [[ ${1:-} == open ]]; then
    echo "- {name: everyone, namespace: prod, scope: Namespace, action: Allow, rules: [[]]}"
    echo "- {name: deny-bad, namespace: prod, scope: WorkloadSelector, action: Deny, rules: [[[{namespaces: [other]}]]]}"
  fi
}
file="$work/config.yaml"
write_config() { { workloads; policies "$@"; } >"$work/config.new" && mv "$work/config.new" "$file"; }
logged() { grep -qF -- "$1" "$work/agent.log" "$work/access.log" 2>/dev/null; } # the agent's log, and the access log
outcome() { in_mesh python3 "$peer" connect "$1" "$2" "${3:-8080}"; }
answered() { outcome "$@" | grep -q '^answered'; }
# refused at once: a reset to the SYN, in well under a second (never a timeout)
refused_fast() {
  local out; out="$(outcome "$@")"; echo "$out"
  [[ $out =~ ^refused\ ([0-9]+)$ ]] && (( BASH_REMATCH[1] < 500 ))
}

write_config
start_agent --local-config "$file" --node-addresses 127.0.0.50
check "the agent becomes ready" wait_for 20 ready
check "an allowed namespace (frontend/web) reaches prod/srv" answered 127.0.0.20 127.0.0.10
check_showing "another namespace (other/bad) is refused at once" refused_fast 127.0.0.30 127.0.0.10
check_showing "an address of no workload (no identity) is refused at once" refused_fast 127.0.0.40 127.0.0.10
check "the node itself (--node-addresses) is never checked" answered 127.0.0.50 127.0.0.10
check_showing "IPv6: a denied source is refused too" refused_fast ::1 ::1
denied_count() { metrics | awk '/^sockmesh_datapath_total\{outcome="authz_denied"\}/ {print $2}'; }
check "denials are counted" test "$(denied_count)" -ge 3
check "a denial is logged like ztunnel's access log" \
  wait_for 5 logged 'error="connection closed due to policy rejection: allow policies exist, but none allowed"'
policy_allowed() { metrics | grep 'sockmesh_authz_policy_connections_total{policy="prod/from-frontend",outcome="allowed"} [1-9]' >/dev/null; }
check "per-policy counters: prod/from-frontend allowed" policy_allowed

# Pod churn elsewhere: a workload of another node with an identity the tables in force have evaluated
# (frontend's web account) is written as new identities alone, under the generation in force.
generation() { metrics | awk '/^sockmesh_authz_generation / {print $2}'; }
generation_before="$(generation)"
NEWPOD=1 write_config
check "a new workload of another node with a known identity gets in" wait_for 10 answered 127.0.0.40 127.0.0.10
check "its identity is written alone, under the generation in force" \
  wait_for 5 logged "generation $generation_before in force with new identities"
check "the generation in force did not change" test "$(generation)" = "$generation_before"
check "an identity that denies nothing more needs no reaping" wait_for 5 logged "they deny nothing that was allowed"
in_mesh python3 "$peer" hold 127.0.0.40 127.0.0.10 8080 20 >"$work/hold-web2.out" 2>&1 &
pids+=("$!")
check "a long connection from it is established" wait_for 5 grep -q held "$work/hold-web2.out"
write_config
check_showing "that workload gone, its address is refused again" wait_for 10 refused_fast 127.0.0.40 127.0.0.10
check_showing "... and its established connection is closed" \
  sh -c "sleep 1; cat $work/hold-web2.out; grep -Eq 'closed after' $work/hold-web2.out"
# A new service account (frontend's api) in a source class the tables have (frontend's, let in): its
# identity, and that class's sources entry, are written alone under the generation in force.
identity_updates() { metrics | awk '/^sockmesh_authz_identity_updates_total / {print $2}'; }
identity_updates_before="$(identity_updates)"
NEWSA=1 write_config
check "a new workload of another node with a new service account of a known class gets in" \
  wait_for 10 answered 127.0.0.41 127.0.0.10
check "... under the generation in force" test "$(generation)" = "$generation_before"
check "... counted as an update of identities alone" test "$(identity_updates)" -gt "$identity_updates_before"
# A workload of this node under the policies srv has (prod's): its address takes srv's destination set,
# written under the generation in force.
LOCAL2=1 NEWSA=1 write_config
check_showing "a new workload of this node is guarded at once" wait_for 10 refused_fast 127.0.0.30 127.0.0.11
check "... an allowed namespace reaches it" answered 127.0.0.20 127.0.0.11
check "... under the generation in force" test "$(generation)" = "$generation_before"
check "its address is logged as given its set" wait_for 5 logged "1 local addresses given their sets"
destination_updates() { metrics | awk '/^sockmesh_authz_destination_updates_total / {print $2}'; }
check "the update is counted" test "$(destination_updates)" -ge 1
admin_lints() { metrics >"$work/admin.txt" && promtool check metrics <"$work/admin.txt"; }
if command -v promtool >/dev/null; then
  check_showing "promtool check metrics accepts the admin endpoint's exposition" admin_lints
else
  skip "promtool check metrics accepts the admin endpoint's exposition" "promtool is not installed (scripts/install-deps)"
fi

# explain, from the live maps and the model
explained() { in_ns "$sockmesh" explain --admin-address "$admin" "$@"; }
check_showing "explain names the verdict and why" \
  sh -c "$(declare -f explained in_ns); netns=$netns sockmesh=$sockmesh admin=$admin; explained --from 127.0.0.30 --to 127.0.0.10:8080 | grep -q 'verdict: deny: allow policies exist, but none allowed'"
explain_json() { explained --from 127.0.0.20 --to 127.0.0.10:8080 --json; }
check "explain --json: allowed by prod/from-frontend, kernel agrees" \
  sh -c "$(declare -f explain_json explained in_ns); netns=$netns sockmesh=$sockmesh admin=$admin; explain_json | python3 -c '
import json,sys; a=json.load(sys.stdin)[\"lands_on\"][0][\"authorization\"]
assert a[\"verdict\"]==\"allow\" and a[\"policy\"]==\"prod/from-frontend\" and a[\"kernel\"][\"agrees_with_model\"], a'"

# A policy change closes the established connections it now denies, within a second.
in_mesh python3 "$peer" hold 127.0.0.20 127.0.0.10 8080 20 >"$work/hold.out" 2>&1 &
hold_pid=$!
pids+=("$hold_pid")
check "a long connection from frontend/web is established" wait_for 5 grep -q held "$work/hold.out"
write_config deny
check "the change applies" wait_for 10 logged "prod/deny-web"
check_showing "the established connection is closed within a second of the change" \
  sh -c "sleep 2; cat $work/hold.out; grep -Eq 'closed after' $work/hold.out"
check_showing "frontend/web is now explicitly denied" refused_fast 127.0.0.20 127.0.0.10
check "the close is logged" wait_for 5 logged 'error="connection closed due to policy change: explicitly denied by: prod/deny-web"'

# Restart under a deny policy: while the agent is down, and while it starts again, nothing gets through.
touch_stop="$work/probe.stop"
in_mesh python3 "$peer" probe 127.0.0.30 127.0.0.10 8080 "$touch_stop" >"$work/probe.out" 2>&1 &
probe_pid=$!
pids+=("$probe_pid")
stop_agent
check_showing "agent down: the pinned datapath still refuses other/bad" refused_fast 127.0.0.30 127.0.0.10
check "agent down: frontend/web still denied by prod/deny-web" refused_fast 127.0.0.20 127.0.0.10
start_agent --local-config "$file" --node-addresses 127.0.0.50
check "restarted: ready" wait_for 20 ready
touch "$touch_stop"; wait "$probe_pid"
check_showing "no connection from other/bad got through across the restart" grep -q '^answered 0 refused [1-9]' "$work/probe.out"

# Opening up again: an ALLOW for everyone, without the DENY (deny-bad selects no workload yet)
write_config open
check "the open policy applies" wait_for 10 answered 127.0.0.30 127.0.0.10

# A workload change alone (srv now lists the selector policy prod/deny-bad) closes what it now denies.
in_mesh python3 "$peer" hold 127.0.0.30 127.0.0.10 8080 20 >"$work/hold2.out" 2>&1 &
pids+=("$!")
check "a long connection from other/bad is established" wait_for 5 grep -q held "$work/hold2.out"
SELECT=1 write_config open
check_showing "the workload change closes it within a second" \
  sh -c "sleep 2; cat $work/hold2.out; grep -Eq 'closed after' $work/hold2.out"
check "the close names the selector policy" wait_for 5 logged 'policy change: explicitly denied by: prod/deny-bad'

# A policy beyond a limit is NACKed by name over xDS, and nothing of it applies.
stop_agent
big="$work/big.yaml"
{ workloads; echo "policies:"; printf -- "- {name: too-big, namespace: prod, scope: Namespace, action: Deny, rules: ["
  for i in $(seq 1 1025); do printf '[[{destinationPorts: [%d]}]],' "$((i + 7055))"; done # the last: 8080
  echo "]}"
  echo "- {name: small, namespace: prod, scope: Namespace, action: Deny, rules: [[[{namespaces: [other]}]]]}"
} >"$big"
"$sockmesh" convert "$big" "$work/big.stream" >"$work/convert.log" 2>&1
start_server --stream "$work/big.stream"
start_agent --xds-address "127.0.0.1:$port" --xds-plaintext --node-addresses 127.0.0.50
check "xDS: ready" wait_for 20 ready
check_showing "the policy over the limit is NACKed by name with the reason" \
  wait_for 10 grep -q 'prod/too-big.*1025 rules' "$work/xds.log" "$work/agent.log"
check "the other policy of the response applies" wait_for 10 refused_fast 127.0.0.30 127.0.0.10
check "nothing of the rejected policy applies (its last rule denies port 8080: frontend still reaches it)" \
  answered 127.0.0.20 127.0.0.10

echo "1..$tests"
exit $((failures > 0))
