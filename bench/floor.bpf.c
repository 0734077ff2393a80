// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench/run's floor: sockops, connect4 and sock_release programs that do nothing, attached to a world of
 * their own: the cgroup hooks the agent's programs take a connection through. The kernel's accounting
 * then gives what running any program at these hooks costs a connection (the cgroup dispatch, the
 * accounting itself, sockops' nine callbacks, a release for each end), against which sockmesh's programs
 * are read. Built for the benchmarks only; never loaded by the agent.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("sockops")
int floor_sockops(struct bpf_sock_ops *ops)
{
	return 1;
}

SEC("cgroup/connect4")
int floor_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/sock_release")
int floor_release(struct bpf_sock *sk)
{
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
