// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench/run's floor: sockops, connect4, sock_release and sk_lookup programs that do nothing, attached to a
 * world of their own: the hooks the agent's programs take a connection through (the three cgroup hooks,
 * and the network namespace's listener lookup where authorization guards it). The kernel's accounting
 * then gives what running any program at these hooks costs a connection (the dispatch, the accounting
 * itself, sockops' nine callbacks, a release for each end, one lookup per SYN), against which sockmesh's
 * programs are read. Built for the benchmarks only; never loaded by the agent.
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

SEC("sk_lookup")
int floor_sk_lookup(struct bpf_sk_lookup *ctx)
{
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
