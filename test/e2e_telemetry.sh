#!/usr/bin/env bash
# End to end, L4 telemetry (issue 15): the agent in local-config mode, real connections between workloads
# on this node, and what comes out. The istio_tcp_* counters (both reporters) and the access log carry
# exactly the bytes each side sent, with ztunnel's labels, over a plain, an IPv6, a waypoint (TLV) and an
# accelerated connection; a refused connect, a policy denial and a timeout count as failed with their
# flag; a long connection's counters move while it is open; Debian's Prometheus scrapes the agent and
# finds the series, promtool accepts the exposition; 1,000 short-lived workloads come and go and the
# series count returns to its baseline. In a network namespace and cgroup made here and removed on every
# path. Prints TAP.
# Usage: e2e_telemetry.sh BUILD_DIR SOURCE_DIR
# shellcheck disable=SC2317 # most functions here run through check and wait_for
set -uo pipefail

E2E_NAME=telemetry
# shellcheck source=SCRIPTDIR/e2e_lib.sh
source "$(dirname "$0")/e2e_lib.sh"
peer="$source_dir/test/tel_peer.py"
log_file="$work/agent.log" # the agent's stdout (the access log, as ztunnel's) and stderr
agent_stdout="$log_file"

# like wait_for, and when time is up the last attempt's output is shown (check_showing prints it)
settle() { local seconds=$1; shift; wait_for "$seconds" "$@" || { "$@"; return 1; }; }

e2e_world
for a in fd00:15::10 fd00:15::21 fd00:15::31; do in_ns ip -6 addr add "$a/128" dev lo nodad; done
# SYNs to 127.0.0.10:9998 vanish: a connect there times out
in_ns nft -f - <<'NFT'
table inet e2e_telemetry {
  chain out {
    type filter hook output priority 0;
    ip daddr 127.0.0.10 tcp dport 9998 tcp flags & (syn | ack) == syn drop
  }
}
NFT
# The server workload prod/srv (127.0.0.10 and fd00:15::10, port 8080); the waypoint of the service
# prod/shop, given by address and no workload (127.0.7.1:15008), strips the TLV and serves the same way.
spawn_mesh python3 "$peer" serve 127.0.0.10 8080
spawn_mesh python3 "$peer" serve fd00:15::10 8080
spawn_mesh python3 "$peer" serve 127.0.7.1 15008 "$work/tlv.txt"
# free/open (127.0.0.11:8080): a workload no policy guards, where a connection outlives its client's removal
spawn_mesh python3 "$peer" serve 127.0.0.11 8080

# One client workload per case, so that each case has series of its own (name:address). All in the
# namespace frontend, which prod's policy allows; other/bad (on another node) it does not.
clients=(
  c-plain:127.0.1.1 c-v6:fd00:15::21 c-wp:127.0.1.3 c-direct:127.0.1.5 c-refused:127.0.1.6
  c-timeout:127.0.1.7 c-long:127.0.1.8
  c-accel:127.0.1.11 c-v6a:fd00:15::31 c-wpa:127.0.1.13 c-longa:127.0.1.18 c-restart:127.0.1.21
)
addr_of() { local c; for c in "${clients[@]}"; do [[ ${c%%:*} == "$1" ]] && echo "${c#*:}"; done; }

workload() { # name namespace node address
  printf -- '- {uid: e2e//Pod/%s/%s-0, name: %s-0, workloadName: %s, canonicalName: %s-app, canonicalRevision: v1, namespace: %s, serviceAccount: %s-sa, node: %s, clusterId: Kubernetes, workloadIps: ["%s"]}\n' \
    "$2" "$1" "$1" "$1" "$1" "$2" "$1" "$3" "$4"
}
burst_addr() { echo "127.2.$(($1 / 200)).$(($1 % 200 + 1))"; }
# config [burst]: the workloads, services and policy; with "burst", 1,000 more clients cb-0 .. cb-999
config() {
  echo "workloads:"
  echo '- {uid: e2e//Pod/prod/srv-0, name: srv-0, workloadName: srv, canonicalName: srv-app, canonicalRevision: v2, namespace: prod, serviceAccount: srv-sa, node: local, clusterId: Kubernetes, locality: {region: r1, zone: z1}, workloadIps: ["127.0.0.10", "fd00:15::10"], services: {"prod/srv.prod.svc.cluster.local": {80: 8080}, "prod/shop.prod.svc.cluster.local": {80: 8080}}}'
  local c i
  for c in "${clients[@]}"; do workload "${c%%:*}" frontend local "${c#*:}"; done
  workload bad other elsewhere 127.0.3.1
  workload open free local 127.0.0.11
  if [[ ${1:-} == burst ]]; then
    for ((i = 0; i < 1000; i++)); do workload "cb-$i" frontend local "$(burst_addr "$i")"; done
  fi
  cat <<'YAML'
services:
- {name: srv, namespace: prod, hostname: srv.prod.svc.cluster.local, vips: ["/127.10.0.10", "/fd00:15:a::10"], ports: {80: 8080}}
- {name: shop, namespace: prod, hostname: shop.prod.svc.cluster.local, vips: ["/127.10.0.20"], ports: {80: 8080}, waypoint: {destination: "/127.0.7.1", port: 15008}}
policies:
- {name: from-frontend, namespace: prod, scope: Namespace, action: Allow, rules: [[[{namespaces: [frontend]}]]]}
YAML
}
file="$work/config.yaml"
write_config() { config "$@" >"$work/config.new" && mv "$work/config.new" "$file"; }
reloads() { grep -c "local config $file reloaded" "$log_file"; }

# ---- readers and peers ----
url="" # the metrics address of the running agent
expect() { in_ns python3 "$peer" expect "$url" "$@"; }
expect_not() { ! expect "$@" >/dev/null; }
series_count() { in_ns python3 "$peer" count "$url" "$@"; }
logged_once() { python3 "$peer" log "$log_file" "$@"; }
prom_query() { in_ns python3 "$peer" query http://127.0.0.1:9090 "$@"; }
talk() { # client dst port N M: one exchange from the client's address
  local out; out="$(in_mesh python3 "$peer" talk "$(addr_of "$1")" "${@:2}")"; echo "$out"
  [[ $out == "done sent $4 received $5" ]]
}
fails_with() { # outcome source-address dst port [syncnt]: the connect fails that way
  local out; out="$(in_mesh python3 "$peer" talk "$2" "$3" "$4" 100 100 ${5:+"$5"})"; echo "$out"
  [[ $out == "$1" ]]
}

# The labels ztunnel gives a connection of CLIENT (frontend) to prod/srv; vip_labels when it asked for
# srv's VIP.
src_labels() {
  echo "source_workload=$1 source_canonical_service=$1-app source_canonical_revision=v1 source_app=$1-app" \
    "source_version=v1 source_workload_namespace=frontend source_cluster=Kubernetes" \
    "source_principal=spiffe://cluster.local/ns/frontend/sa/$1-sa"
}
srv_labels="destination_workload=srv destination_canonical_service=srv-app destination_canonical_revision=v2
  destination_app=srv-app destination_version=v2 destination_workload_namespace=prod destination_cluster=Kubernetes
  destination_principal=spiffe://cluster.local/ns/prod/sa/srv-sa"
vip_labels="destination_service=srv.prod.svc.cluster.local destination_service_name=srv destination_service_namespace=prod"
shop_labels="destination_service=shop.prod.svc.cluster.local destination_service_name=shop destination_service_namespace=prod"
no_service="destination_service=unknown destination_service_name=unknown destination_service_namespace=unknown"
ok_labels="request_protocol=tcp response_flags=- connection_security_policy=none"

# counted REPORTER CLIENT N M LABELS...: one connection, opened and closed, N request and M response bytes
counted() {
  local reporter=$1 client=$2 n=$3 m=$4 labels; shift 4
  read -ra labels <<<"reporter=$reporter $(src_labels "$client")"
  labels+=("$@")
  expect istio_tcp_connections_opened_total 1 "${labels[@]}" &&
    expect istio_tcp_connections_closed_total 1 "${labels[@]}" &&
    expect istio_tcp_received_bytes_total "$n" "${labels[@]}" &&
    expect istio_tcp_sent_bytes_total "$m" "${labels[@]}" &&
    expect_not istio_tcp_connections_failed_total ">0" "${labels[@]}"
}

# exact_case TITLE CLIENT DST PORT N M REPORTERS LABELS...: CLIENT sends N bytes to DST:PORT, the server
# M back; the source reporter (and with REPORTERS "both" the destination, srv) counts exactly that.
exact_case() {
  local title=$1 client=$2 dst=$3 port=$4 n=$5 m=$6 reporters=$7; shift 7
  local service; service="$(printf '%s\n' "$@" | sed -n 's/^destination_service=//p')"
  check_showing "$title: $client sends $n bytes, the server answers $m" talk "$client" "$dst" "$port" "$n" "$m"
  # shellcheck disable=SC2086
  check_showing "$title: reporter=source counts exactly $n request and $m response bytes, ztunnel's labels" \
    settle 10 counted source "$client" "$n" "$m" "$@" $ok_labels
  local fields=("src.workload=$client-0" src.namespace=frontend direction=outbound "bytes_sent=$n" "bytes_recv=$m" "duration=*")
  [[ $service == unknown ]] || fields+=("dst.service=$service")
  check_showing "$title: the outbound log line has bytes_sent=$n bytes_recv=$m${service:+ dst.service=$service}" \
    settle 3 logged_once "${fields[@]}"
  if [[ $reporters != both ]]; then
    # shellcheck disable=SC2317
    only_source() {
      local n; n="$(series_count __name__=istio_tcp_received_bytes_total "source_workload=$client")"
      echo "$n series of received bytes (the source's)"
      ! grep -o "src.workload.*$client-0.*inbound.*bytes_recv[^ ,]*" "$log_file" && ((n == 1))
    }
    check_showing "$title: only the source reports it (the waypoint is no workload: its end would count the TLV)" \
      only_source
    return 0
  fi
  # shellcheck disable=SC2086
  check_showing "$title: reporter=destination counts exactly $n and $m too" \
    settle 3 counted destination "$client" "$n" "$m" $srv_labels $ok_labels
  check_showing "$title: the inbound log line (srv's view) has bytes_sent=$m bytes_recv=$n" \
    settle 3 logged_once "src.workload=$client-0" direction=inbound "bytes_sent=$m" "bytes_recv=$n" \
    dst.workload=srv-0 dst.namespace=prod
}

# long_case TITLE CLIENT: a connection to srv's VIP sends for 4.5 s and then stays open; its counters
# move while it sends and show every byte within 5 s while it is still open.
long_case() {
  local title=$1 client=$2 n=200000 m=30000 stop="$work/$2.stop" long_pid
  local labels
  read -ra labels <<<"reporter=source $(src_labels "$client")"
  in_mesh python3 "$peer" long "$(addr_of "$client")" 127.10.0.10 80 "$n" "$m" "$stop" >"$work/$client.out" 2>&1 &
  long_pid=$!
  pids+=("$long_pid")
  check "$title: the connection is open and sending" wait_for 5 grep -q sending "$work/$client.out"
  check_showing "$title: its request bytes are counted while it sends (within 5 s)" \
    settle 5 expect istio_tcp_received_bytes_total ">0" "${labels[@]}"
  check "$title: the exchange ends, the connection stays open" wait_for 20 grep -q exchanged "$work/$client.out"
  # the flush (sm_conn_flush, every 2.5 s in each enrolled namespace) reports an idle connection's last burst
  all_while_open() {
    expect istio_tcp_received_bytes_total "$n" "${labels[@]}" && expect istio_tcp_sent_bytes_total "$m" "${labels[@]}" &&
      expect_not istio_tcp_connections_closed_total ">0" "${labels[@]}"
  }
  check_showing "$title: exactly $n and $m within 5 s, while it is open (not closed)" settle 5 all_while_open
  touch "$stop"
  wait "$long_pid"
  # shellcheck disable=SC2086
  check_showing "$title: closed once, the totals unchanged" \
    settle 10 counted source "$client" "$n" "$m" $vip_labels $srv_labels $ok_labels
}

# serving PHASE PORT PATH: the agent is ready and its metrics address serves PATH; else the phase ends
serving() {
  local before=$failures
  url="http://127.0.0.1:$2$3"
  check "$1: the agent becomes ready" wait_for 20 ready
  check "$1: the metrics address serves $3 (port $2)" wait_for 10 in_ns curl -sf -o /dev/null "$url"
  ((failures == before))
}

# ==== 1. telemetry, no acceleration: plain TCP; the plain k=v log; the default metrics address ====
phase_plain() {
  serving "plain" 15020 /stats/prometheus || return
  check "... and /metrics" in_ns curl -sf -o /dev/null "http://127.0.0.1:15020/metrics"

  # shellcheck disable=SC2086
  exact_case "plain" c-plain 127.10.0.10 80 1000 20000 both $vip_labels $srv_labels
  # shellcheck disable=SC2086
  exact_case "IPv6" c-v6 fd00:15:a::10 80 3000 40000 both $vip_labels $srv_labels
  # shellcheck disable=SC2086
  exact_case "to a pod address (no service)" c-direct 127.0.0.10 8080 2000 100 both $no_service $srv_labels
  # shellcheck disable=SC2086
  exact_case "waypoint (TLV)" c-wp 127.10.0.20 80 5000 7000 source $shop_labels
  check_showing "waypoint: the waypoint got the TLV naming the VIP, then the application's bytes" \
    grep -x "127.10.0.20 80" "$work/tlv.txt"

  failures_of_a_kind
  # first the namespace at rest, so that the long connection after it proves a skipped namespace is walked
  # again once a connection starts there
  check_showing "with nothing followed open, the flush leaves the namespace alone (skipped, not walked)" \
    wait_for 15 flush_rests
  long_case "long" c-long
  consumers
}

# flush_rests: over 3.2 s (at least one flush round), the flush skipped the namespace and walked none
admin_value() { metrics | awk -v name="$1" '$1 == name { print $2 }'; }
flush_rests() {
  local walked skipped
  walked="$(admin_value sockmesh_telemetry_flushes_total)" skipped="$(admin_value sockmesh_telemetry_flushes_skipped_total)"
  sleep 3.2
  echo "walks $walked -> $(admin_value sockmesh_telemetry_flushes_total), skips $skipped -> $(admin_value sockmesh_telemetry_flushes_skipped_total)"
  [[ -n "$walked" && "$(admin_value sockmesh_telemetry_flushes_total)" == "$walked" ]] &&
    (($(admin_value sockmesh_telemetry_flushes_skipped_total) > skipped))
}

# failures: a connect refused, one that times out (both response_flags=CONNECT), a policy denial (DENY)
fail_labels() { echo "reporter=source $(src_labels "$1") $srv_labels"; }
failed_once() { # flag labels...: opened once (under "-", as ztunnel counts it before the end is known),
  local flag=$1; shift # closed and failed once under the flag; no bytes
  expect istio_tcp_connections_opened_total 1 "$@" response_flags=- &&
    expect istio_tcp_connections_closed_total 1 "$@" "response_flags=$flag" &&
    expect istio_tcp_connections_failed_total 1 "$@" "response_flags=$flag" || return 1
  local f m
  for f in - "$flag"; do
    for m in received sent; do expect_not "istio_tcp_${m}_bytes_total" ">0" "$@" "response_flags=$f" || return 1; done
  done
}
denied() { local out; out="$(fails_with refused 127.0.3.1 127.0.0.10 8080)" || [[ $out == reset ]]; echo "$out"; }
deny_labels="reporter=destination source_workload=bad source_workload_namespace=other
  source_principal=spiffe://cluster.local/ns/other/sa/bad-sa $srv_labels"
failures_of_a_kind() {
  check_showing "refused: nothing listens on srv's port 9999" fails_with refused 127.0.1.6 127.0.0.10 9999
  # shellcheck disable=SC2046
  check_showing "refused: opened, closed and failed once with response_flags=CONNECT, no bytes" \
    settle 10 failed_once CONNECT $(fail_labels c-refused)
  check_showing "refused: the outbound log line has an error" \
    settle 3 logged_once src.workload=c-refused-0 direction=outbound bytes_sent=0 bytes_recv=0 "error=*"

  local started=$SECONDS
  check_showing "timeout: a SYN never answered (TCP_SYNCNT=1)" fails_with timeout 127.0.1.7 127.0.0.10 9998 1
  echo "# the connect timed out after $((SECONDS - started)) s"
  # shellcheck disable=SC2046
  check_showing "timeout: opened, closed and failed once with response_flags=CONNECT" \
    settle 10 failed_once CONNECT $(fail_labels c-timeout)
  check_showing "timeout: the outbound log line has an error" \
    settle 3 logged_once src.workload=c-timeout-0 direction=outbound "error=*"

  check_showing "denied: other/bad is refused by prod's policy" denied
  # shellcheck disable=SC2086
  check_showing "denied: reporter=destination counts it opened, closed and failed with response_flags=DENY" \
    settle 10 failed_once DENY $deny_labels
  check_showing "denied: one inbound log line, naming the policy rejection" \
    settle 3 logged_once "src.addr=127.0.3.1:*" direction=inbound "error=connection closed due to policy rejection*"
}

admin_kept() {
  metrics >"$work/admin.txt"
  grep -E '^sockmesh_telemetry_events_dropped_total(\{[^}]*\})? ' "$work/admin.txt"
  grep -q '^sockmesh_datapath_total' "$work/admin.txt" &&
    grep -Eq '^sockmesh_telemetry_events_dropped_total(\{[^}]*\})? 0$' "$work/admin.txt"
}
# the exposition: ztunnel's label order everywhere; promtool; Prometheus scrapes and queries it
consumers() {
  check_showing "every istio_tcp_* series has ztunnel's labels in ztunnel's order; counters with HELP" \
    in_ns python3 "$peer" labels "$url"
  check_showing "the admin endpoint keeps sockmesh_*, with no telemetry event dropped" admin_kept
  in_ns curl -sf "$url" >"$work/exposition.txt"
  if command -v promtool >/dev/null; then
    check_showing "promtool check metrics accepts the exposition" \
      sh -c "[ -s '$work/exposition.txt' ] && promtool check metrics <'$work/exposition.txt'"
  else
    skip "promtool check metrics accepts the exposition" "promtool is not installed (scripts/install-deps)"
  fi
  if ! command -v prometheus >/dev/null; then
    skip "Prometheus scrapes the agent and queries the series" "prometheus is not installed (scripts/install-deps)"
    return
  fi
  cat >"$work/prometheus.yml" <<'YAML'
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
- job_name: sockmesh
  metrics_path: /stats/prometheus
  static_configs: [{targets: ["127.0.0.1:15020"]}]
YAML
  spawn_ns prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
    --web.listen-address=127.0.0.1:9090 >"$work/prometheus.log" 2>&1
  local prom_pid=$!
  check "Prometheus starts in the test's namespace" wait_for 30 in_ns curl -sf -o /dev/null http://127.0.0.1:9090/-/ready
  # shellcheck disable=SC2046,SC2086
  check_showing "Prometheus' query API returns istio_tcp_connections_opened_total with ztunnel's labels" \
    settle 20 prom_query 'istio_tcp_connections_opened_total{source_workload="c-plain"}' job=sockmesh \
    reporter=source $(src_labels c-plain) $vip_labels $srv_labels $ok_labels
  # shellcheck disable=SC2086
  check_showing "... and the destination reporter's request bytes" \
    prom_query 'istio_tcp_received_bytes_total{reporter="destination",source_workload="c-plain"} == 1000' $srv_labels
  kill "$prom_pid" 2>/dev/null
  wait "$prom_pid" 2>/dev/null
}

# ==== 2. same-node acceleration on (the default); LOG_FORMAT=json; --metrics-address ====
accelerated_count() { metrics | awk '/^sockmesh_datapath_total\{outcome="accelerated"\}/ {print $2}'; }
went_through_sockhash() { local now; now="$(accelerated_count)"; echo "before ${before:-0} after $now"; ((now > ${before:-0})); }
phase_accelerated() {
  serving "accelerated, --metrics-address" 15021 /metrics || return
  before="$(accelerated_count)"
  # shellcheck disable=SC2086
  exact_case "accelerated" c-accel 127.10.0.10 80 70000 300000 both $vip_labels $srv_labels
  check_showing "accelerated: the bytes really went through the sockhash" went_through_sockhash
  check_showing "accelerated: the outbound JSON log line says accelerated" \
    logged_once src.workload=c-accel-0 direction=outbound accelerated=true
  # shellcheck disable=SC2086
  exact_case "accelerated IPv6" c-v6a fd00:15:a::10 80 9000 11000 both $vip_labels $srv_labels
  # shellcheck disable=SC2086
  exact_case "accelerated waypoint (TLV)" c-wpa 127.10.0.20 80 6000 8000 source $shop_labels
  check_showing "accelerated waypoint: the log line says waypoint" \
    logged_once src.workload=c-wpa-0 direction=outbound waypoint=true
  long_case "accelerated long" c-longa
}

# A connection that ends while the agent is down: the pinned ring buffer keeps its events for the next
# agent, which counts it whole (docs/telemetry.md, "What an agent restart loses").
hold_across_restart() {
  in_mesh python3 "$peer" long 127.0.1.21 127.10.0.10 80 50000 6000 "$work/c-restart.stop" >"$work/c-restart.out" 2>&1 &
  restart_pid=$!
  pids+=("$restart_pid")
  check "restart: c-restart's connection is open before the agent stops" wait_for 20 grep -q exchanged "$work/c-restart.out"
}
end_while_down() {
  touch "$work/c-restart.stop"
  wait "$restart_pid"
}
counted_after_restart() {
  [[ -n ${restart_pid:-} ]] || return 0
  local before=$failures
  # shellcheck disable=SC2086
  check_showing "restart: the connection that ended while the agent was down is counted whole" \
    settle 10 counted source c-restart 50000 6000 $vip_labels $srv_labels $ok_labels
  # shellcheck disable=SC2086
  check_showing "restart: ... by both reporters" settle 3 counted destination c-restart 50000 6000 $srv_labels $ok_labels
  ((failures == before)) || in_ns curl -s "$url" | grep ' 50000$' | sed 's/^/# the series with 50000: /'
}

# ==== 3. cardinality: 1,000 short-lived workloads come and go; --access-log off ====
more_reloads() { (($(reloads) > reloaded)); }
all_counted() { # both reporters closed 1,000 connections of cb-*
  local r n
  for r in source destination; do
    n="$(series_count __name__=istio_tcp_connections_closed_total reporter="$r" 'source_workload=cb-*')"
    echo "reporter=$r: $n"; ((n == 1000)) || return 1
  done
}
no_access_log() { ! tail -n +"$((log_lines_before + 1))" "$log_file" | grep 'connection complete'; }
only_held_left() { # every series of cb-* left is one of cb-0's open connection to free/open
  local all held
  all="$(series_count 'source_workload=cb-*')" held="$(series_count source_workload=cb-0 destination_workload=open)"
  echo "cb-*: $all series, cb-0 to free/open: $held"; ((all == held && held > 0))
}
held_stays() { sleep 5; local n; n="$(series_count source_workload=cb-0)"; echo "cb-0: $n series"; ((n > 0)); }
back_to_baseline() { local n; n="$(series_count)"; echo "$n series (baseline $baseline)"; ((n == baseline)); }
phase_cardinality() {
  serving "cardinality, --access-log off" 15020 /metrics || return
  counted_after_restart
  check_showing "a connection before the burst" talk c-plain 127.10.0.10 80 100 100
  # shellcheck disable=SC2086
  check_showing "... is counted" settle 10 counted source c-plain 100 100 $vip_labels $srv_labels $ok_labels
  baseline="$(series_count)"
  echo "# baseline: $baseline istio_tcp_* series"
  reloaded=$(reloads)
  write_config burst
  check "1,000 client workloads added to the file are applied" wait_for 30 more_reloads
  local i started=$SECONDS
  for ((i = 0; i < 1000; i++)); do burst_addr "$i"; done >"$work/burst.txt"
  check_showing "each of the 1,000 connects once (to srv, 100 bytes each way)" \
    in_mesh python3 "$peer" burst "$work/burst.txt" 127.0.0.10 8080 100 100
  local burst_seconds=$((SECONDS - started))
  check_showing "... within 60 s" sh -c "echo '$burst_seconds s'; [ $burst_seconds -lt 60 ]"
  check_showing "both reporters count the 1,000 workloads' connections" settle 30 all_counted
  echo "# with the 1,000 workloads: $(series_count) istio_tcp_* series"
  check_showing "--access-log off: no access log line" no_access_log
  # cb-0 keeps a connection to free/open (no policy closes it) while the workloads go: the series of
  # that connection stay until it closes
  in_mesh python3 "$peer" long "$(burst_addr 0)" 127.0.0.11 8080 1000 100 "$work/cb-0.stop" >"$work/cb-0.out" 2>&1 &
  local held=$!
  pids+=("$held")
  check "cb-0 holds a connection open" wait_for 20 grep -q exchanged "$work/cb-0.out"

  reloaded=$(reloads)
  write_config
  check "the 1,000 workloads removed from the file are applied" wait_for 30 more_reloads
  started=$SECONDS
  check_showing "every series of theirs goes but those of cb-0's open connection" settle 30 only_held_left
  echo "# gone in $((SECONDS - started)) s"
  check_showing "cb-0's series stay while its connection is open (5 s more)" held_stays
  touch "$work/cb-0.stop"
  wait "$held"
  started=$SECONDS
  check_showing "the istio_tcp_* series return to the baseline once its connection is closed" settle 30 back_to_baseline
  echo "# back to the baseline in $((SECONDS - started)) s"
  # shellcheck disable=SC2086
  check_showing "the earlier workload's series are still there" \
    counted source c-plain 100 100 $vip_labels $srv_labels $ok_labels
}

# TEL_PHASES: which phases run (default all: "plain accelerated cardinality"), to debug one of them
phases=" ${TEL_PHASES:-plain accelerated cardinality} "
write_config
if [[ $phases == *" plain "* ]]; then
  start_agent --local-config "$file" --node-addresses 127.0.0.50 --no-accelerate >>"$log_file"
  phase_plain
  stop_agent
fi
if [[ $phases == *" accelerated "* ]]; then
  LOG_FORMAT=json start_agent --local-config "$file" --node-addresses 127.0.0.50 --metrics-address 127.0.0.1:15021 \
    >>"$log_file"
  phase_accelerated
  hold_across_restart
  stop_agent
  end_while_down
fi
if [[ $phases == *" cardinality "* ]]; then
  log_lines_before=$(wc -l <"$log_file" 2>/dev/null || echo 0)
  start_agent --local-config "$file" --node-addresses 127.0.0.50 --access-log off >>"$log_file"
  phase_cardinality
fi

e2e_end
