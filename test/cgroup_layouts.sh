#!/usr/bin/env bash
# The kernel tests and an end-to-end script on the cgroup layouts other hosts have, each in a private
# mount namespace (unshare --mount --propagation private: nothing here is seen outside it), where this
# host's /sys/fs/cgroup (hybrid: cgroup2 at /sys/fs/cgroup/unified) is unmounted and replaced by:
#   stock   cgroup2 at /sys/fs/cgroup, as systemd mounts it (test_datapath and e2e_agent.sh run there)
#   none    no cgroup2 at all: the helpers mount a private one and remove it (test_datapath runs there)
# bpffs stays visible at /sys/fs/bpf (mounted again in the namespace if it is not). Prints TAP: one
# point per program and layout, with the program's own output as comments.
# Usage: cgroup_layouts.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

build="$1"
source_dir="$2"

if [[ ${1:-} == --inside ]]; then
  # In the private mount namespace: LAYOUT BUILD_DIR SOURCE_DIR COMMAND...
  layout="$2" build="$3" source_dir="$4"; shift 4
  # shellcheck source=SCRIPTDIR/../scripts/lib/cgroup2.sh
  source "$source_dir/scripts/lib/cgroup2.sh"
  umount -R /sys/fs/cgroup || exit 1
  [[ $layout == stock ]] && { mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup || exit 1; }
  awk '$5 == "/sys/fs/bpf" && / - bpf /' /proc/self/mountinfo | grep -q . || mount -t bpf bpf /sys/fs/bpf || exit 1
  found="$(cgroup2_find)"
  case $layout in
    stock) [[ $found == /sys/fs/cgroup ]] || { echo "cgroup2 found at '$found', not /sys/fs/cgroup"; exit 1; } ;;
    none) [[ -z $found ]] || { echo "cgroup2 still mounted at $found"; exit 1; } ;;
  esac
  private_mounts() { ls -d "${TMPDIR:-/tmp}"/sm-cgroup2-* 2>/dev/null; }
  before="$(private_mounts)"
  "$@"
  status=$?
  # what the helpers mounted for the run, they removed
  left="$(cgroup2_find)"
  if [[ $layout == none && -n $left ]]; then echo "cgroup2 left mounted at $left"; exit 1; fi
  if [[ "$(private_mounts)" != "$before" ]]; then echo "a private cgroup2 mount point was left behind"; exit 1; fi
  exit $status
fi

tests=0
failures=0
run_in_layout() { # name, layout, command...
  local name=$1 layout=$2 out; shift 2
  out="$(unshare --mount --propagation private "$0" --inside "$layout" "$build" "$source_dir" "$@" 2>&1)"
  local status=$?
  sed 's/^/# /' <<<"$out"
  tests=$((tests + 1))
  if ((status == 0)); then echo "ok $tests - $name"; else echo "not ok $tests - $name"; failures=$((failures + 1)); fi
}

export CMOCKA_MESSAGE_OUTPUT=TAP
run_in_layout "cgroup2 at /sys/fs/cgroup: test_datapath" stock "$build/test/test_datapath"
run_in_layout "cgroup2 at /sys/fs/cgroup: e2e_agent.sh" stock "$source_dir/test/e2e_agent.sh" "$build" "$source_dir"
run_in_layout "no cgroup2 mounted (one is mounted for the run): test_datapath" none "$build/test/test_datapath"
echo "1..$tests"
exit $((failures > 0))
