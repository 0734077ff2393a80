# Where cgroup v2 is, for the scripts (test/cgroup2.h is the C twin); sourced by scripts/demo, bench/run
# and test/e2e_lib.sh. Never a fixed path: a stock systemd host mounts cgroup2 at /sys/fs/cgroup, a
# hybrid one at /sys/fs/cgroup/unified, a container anywhere.
#   cgroup2_find      prints the first cgroup2 mount point in /proc/self/mountinfo (status 1: none)
#   cgroup2_open      sets cgroup2_root to it; with none mounted, mounts one (as the kernel selftests'
#                     setup_cgroup_environment() does) at a fresh ${TMPDIR:-/tmp}/sm-cgroup2-XXXXXX
#   cgroup2_close     unmounts and removes what cgroup2_open mounted (nothing when it found one)
# shellcheck shell=bash

cgroup2_root=""
cgroup2_mounted=""

cgroup2_find() {
  # ID PARENT MAJOR:MINOR ROOT MOUNT-POINT OPTIONS [OPTIONAL-FIELDS...] - FSTYPE SOURCE SUPER-OPTIONS;
  # mountinfo writes a space, tab, newline or backslash in a path as \ooo (printf %b reads \0ooo).
  local point
  point="$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' \
    /proc/self/mountinfo)"
  [[ -n $point ]] || return 1
  printf '%b\n' "${point//\\/\\0}"
}

cgroup2_open() {
  cgroup2_root="$(cgroup2_find)" && return 0
  cgroup2_root="$(mktemp -d "${TMPDIR:-/tmp}/sm-cgroup2-XXXXXX")" || return 1
  if ! mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$cgroup2_root"; then
    rmdir "$cgroup2_root"; cgroup2_root=""; return 1
  fi
  cgroup2_mounted="$cgroup2_root"
}

cgroup2_close() {
  [[ -n $cgroup2_mounted ]] || return 0
  umount -l "$cgroup2_mounted" && rmdir "$cgroup2_mounted" && cgroup2_mounted=""
}
