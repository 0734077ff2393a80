#!/usr/bin/env bash
# End to end, the enroller in `sockmesh run`: the mock Kubernetes API (test/mock_kube_api.py) shows pods
# of node "local", each a network namespace made here with its "pod IP" on its own loopback and a process
# in a child cgroup of the test's named like a kubelet pod slice (so /proc finds it). Only the labelled
# pod's connects to the VIP are translated; relabelling the pod or its namespace flips it; deleting the
# pod unenrolls it; a restarted agent keeps it enrolled and sweeps a cookie no pod owns; the real
# sockmesh-cni enrolls a new pod before the API shows its IP, and its DEL unenrolls it. Prints TAP.
# Usage: e2e_k8s.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

E2E_NAME=k8s
source "$(dirname "$0")/e2e_lib.sh"
py=/usr/bin/python3; [[ -x $py ]] || py=python3
cni="$build/cni/sockmesh-cni"
mock_api="$source_dir/test/mock_kube_api.py"

# pod: name, uid, IP
pod_names=(pa pb pc)
declare -A pod_uid=([pa]=0a0a0a0a-1111-4111-8111-000000000001 [pb]=0b0b0b0b-2222-4222-8222-000000000002
                    [pc]=0c0c0c0c-3333-4333-8333-000000000003)
declare -A pod_ip=([pa]=10.77.0.1 [pb]=10.77.0.2 [pc]=10.77.0.3)
pod_prefix="$name" # check() has a local $name of its own
pod_ns() { echo "$pod_prefix-$1"; }
pod_cg() { echo "$cgroup/kubepods-burstable-pod${pod_uid[$1]//-/_}.slice"; }

k8s_cleanup() {
  [[ -n ${mock_pid:-} ]] && kill -9 "$mock_pid" 2>/dev/null
  for pod in "${pod_names[@]}"; do
    local cg; cg="$(pod_cg "$pod")"
    [[ -f $cg/cgroup.procs ]] && xargs -r kill -9 <"$cg/cgroup.procs" 2>/dev/null
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for pod in "${pod_names[@]}"; do
    for _ in 1 2 3 4 5; do [[ -d "$(pod_cg "$pod")" ]] && rmdir "$(pod_cg "$pod")" 2>/dev/null || break; sleep 0.2; done
    ip netns del "$(pod_ns "$pod")" 2>/dev/null || true
  done
  cleanup
}
trap k8s_cleanup EXIT

e2e_world
make_pod() { # name: a netns with the pod IP on lo, its cgroup, a backend answering with the pod's name
  local ns cg; ns="$(pod_ns "$1")"; cg="$(pod_cg "$1")"
  ip netns add "$ns" && nsenter --net="/run/netns/$ns" ip link set lo up &&
    nsenter --net="/run/netns/$ns" ip addr add "${pod_ip[$1]}/32" dev lo && mkdir "$cg" || return 1
  nsenter --net="/run/netns/$ns" sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$echo_tool" serve 127.0.0.1 8080 "$1" &
  pids+=($!)
}
in_pod() { local pod="$1"; shift; nsenter --net="/run/netns/$(pod_ns "$pod")" sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$(pod_cg "$pod")" "$@"; }
asks() { in_pod "$1" "$echo_tool" ask 127.10.0.1 80 2>&1 || true; } # refused is a failure of its own
translated() { grep -q "answered by $1" <<<"$(asks "$1")"; }
untranslated() { grep -q 'connect failed: Connection refused' <<<"$(asks "$1")"; }
# the state settles within seconds: wait for it, then say whether it holds
becomes() { wait_for 10 "$@"; }

make_pod pa && make_pod pb || { echo "1..0 # cannot make the pods' namespaces and cgroups"; exit 1; }

# the mock API, driven over a coprocess: one JSON command a line, one answer a line
coproc MOCK { nsenter --net="/run/netns/$netns" "$py" "$mock_api" --node local 2>>"$work/mock.log"; }
mock_pid=$MOCK_PID
IFS= read -r -t 10 first <&"${MOCK[0]}" || { echo "1..0 # the mock API did not start"; exit 1; }
api_port="$("$py" -c 'import json, sys; print(json.loads(sys.argv[1])["port"])' "$first")"
api() { echo "$1" >&"${MOCK[1]}" && IFS= read -r -t 10 _answer <&"${MOCK[0]}"; }
put_ns() { api "{\"op\":\"put\",\"kind\":\"namespaces\",\"obj\":{\"metadata\":{\"name\":\"$1\",\"labels\":$2}}}"; }
put_pod() { # name, labels JSON, with an IP (1) or not (0)
  local status='{"phase":"Pending"}'
  [[ $3 == 1 ]] && status="{\"phase\":\"Running\",\"podIP\":\"${pod_ip[$1]}\",\"podIPs\":[{\"ip\":\"${pod_ip[$1]}\"}]}"
  api "{\"op\":\"put\",\"kind\":\"pods\",\"obj\":{\"metadata\":{\"name\":\"$1\",\"namespace\":\"apps\",\"uid\":\"${pod_uid[$1]}\",\"labels\":$2},\"spec\":{\"nodeName\":\"local\"},\"status\":$status}}"
}
delete_pod() { api "{\"op\":\"delete\",\"kind\":\"pods\",\"name\":\"apps/$1\"}"; }
label='{"istio.io/dataplane-mode":"sockmesh"}'
patched() { # pod, the JSON value of its last sockmesh.io/redirection merge patch
  api '{"op":"requests"}' && "$py" -c '
import json, sys
requests, pod, want = json.loads(sys.argv[1])["requests"], sys.argv[2], json.loads(sys.argv[3])
bodies = [json.loads(r["body"]) for r in requests if r["method"] == "PATCH" and r["path"].endswith("/pods/" + pod)]
sys.exit(not bodies or bodies[-1]["metadata"]["annotations"].get("sockmesh.io/redirection", 0) != want)
' "$_answer" "$1" "$2"
}
never_ambient() { api '{"op":"requests"}' && ! grep -q 'ambient.istio.io' <<<"$_answer"; }

enroll_all="" # the enroller decides
start_k8s_agent() { # with the watcher
  POD_NAMESPACE=sockmesh-system start_agent --local-config "$fixtures/one-service.yaml" \
    --kube-api "http://127.0.0.1:$api_port" --kube-token '' --cni-socket "$work/cni.sock"
}
enrolled_cookies() { in_ns "$sockmesh" dump --json --pin-dir "$pin_dir" --admin-address "$admin" |
  "$py" -c 'import json, sys; print(" ".join(sorted(str(c) for c in json.load(sys.stdin)["enrolled"])))'; }

put_ns apps '{}'
put_pod pa "$label" 1
put_pod pb '{}' 1

no_node_name() { # refused, NODE_NAME named, nothing pinned
  ! env -u NODE_NAME "$sockmesh" run --cgroup "$cgroup" --pin-dir "$pin_dir" --kube-api "http://127.0.0.1:$api_port" \
    --local-config "$fixtures/one-service.yaml" >"$work/refused.log" 2>&1 && grep -q NODE_NAME "$work/refused.log" && ! test -e "$pin_dir"
}
check "without NODE_NAME the watcher is refused before the kernel is touched" no_node_name
start_k8s_agent
check "the agent with the watcher becomes ready" wait_for 20 ready
check "the labelled pod (found in /proc by its IP) is enrolled: its connect is translated" becomes translated pa
check "the unlabelled pod is not: its connect is refused" untranslated pb
check "one enroll line in the log names the pod and the reason" grep -q "enrolled pod apps/pa (cookie [0-9]*): pod label istio.io/dataplane-mode=sockmesh" "$work/agent.log"

check "/metrics: sockmesh_enrolled_pods 1" metric_is "sockmesh_enrolled_pods 1"
check "the enrolled pod is annotated sockmesh.io/redirection=enabled (merge patch)" becomes patched pa '"enabled"'

put_ns apps "$label"
check "labelling the namespace enrolls the other pod" becomes translated pb
check "/metrics: sockmesh_enrolled_pods 2" becomes metric_is "sockmesh_enrolled_pods 2"
put_pod pb '{"istio.io/dataplane-mode":"none"}' 1
check "the pod's own label 'none' opts it out again" becomes untranslated pb
put_pod pb '{}' 1
check "the pod's label removed: its namespace's label enrolls it again" becomes translated pb
check "... and annotates it" becomes patched pb '"enabled"'
put_ns apps '{}'
check "unlabelling the namespace: the other pod is out" becomes untranslated pb
check "... and its annotation is removed (merge patch with null)" becomes patched pb null
check "... and the labelled pod stays in" translated pa
put_pod pa '{}' 1
check "unlabelling the pod unenrolls it" becomes untranslated pa
put_pod pa "$label" 1
check "labelling it again enrolls it" becomes translated pa

# a cookie no pod owns, written by hand: swept by the restarted agent after its lists
stop_agent
check "the agent stopped: the labelled pod is still steered (the pinned map)" translated pa
"$sockmesh" enroll --netns "/run/netns/$(pod_ns pb)" --pin-dir "$pin_dir" >/dev/null
check "a cookie enrolled by hand while the agent is down steers the other pod" translated pb
start_k8s_agent
check "a restarted agent becomes ready" wait_for 20 ready
check "the restarted agent sweeps the cookie no enrolled pod owns" becomes untranslated pb
check "... and keeps the labelled pod enrolled" translated pa
check "sm_enrolled holds that one cookie" sh -c 'test $(echo "$0" | wc -w) = 1' "$(enrolled_cookies)"

# a new pod through the real sockmesh-cni: ADD before the API shows it, then the pod with no IP
ip netns add "$(pod_ns pc)" && nsenter --net="/run/netns/$(pod_ns pc)" ip link set lo up && mkdir "$(pod_cg pc)"
nsenter --net="/run/netns/$(pod_ns pc)" "$echo_tool" serve 127.0.0.1 8080 pc & pids+=($!)
prev='{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"interface":0,"address":"10.77.0.3/24"}],"dns":{}}'
cni_conf="{\"cniVersion\":\"1.0.0\",\"name\":\"podnet\",\"type\":\"sockmesh-cni\",\"socketPath\":\"$work/cni.sock\",\"prevResult\":$prev}"
cni_call() {
  CNI_COMMAND="$1" CNI_CONTAINERID=c3 CNI_NETNS="/run/netns/$(pod_ns pc)" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=apps;K8S_POD_NAME=pc;K8S_POD_UID=${pod_uid[pc]}" \
    timeout 10 "$cni" <<<"$cni_conf" >"$work/cni.out" 2>"$work/cni.err"
}
check "sockmesh-cni ADD for a pod the API does not show yet succeeds" cni_call ADD
check "... and the agent got it, pending" grep -q "CNI ADD apps/pc (uid ${pod_uid[pc]}): cookie [0-9]*, pending" "$work/agent.log"
check "pending: not enrolled before the API shows the pod" untranslated pc
put_pod pc "$label" 0
check "the API shows it labelled, without an IP: enrolled from the CNI cookie" becomes translated pc
check "sockmesh-cni DEL succeeds" cni_call DEL
check "... its connect is no longer translated" becomes untranslated pc
delete_pod pc
delete_pod pa
check "deleting the labelled pod unenrolls it" becomes untranslated pa
no_cookies() { [[ -z "$(enrolled_cookies)" ]]; }
check "nothing is left in sm_enrolled" becomes no_cookies
check "/metrics: sockmesh_enrolled_pods 0" metric_is "sockmesh_enrolled_pods 0"
check "ambient.istio.io/redirection is never patched" never_ambient
stop_agent
e2e_end
