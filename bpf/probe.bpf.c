// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The kernel-feature probe. Each program uses, from its hook, the helpers and maps the datapath needs
 * there: every helper sockmesh.bpf.c's program of the same section calls (test/test_probe_covers.c
 * checks it). datapath/ loads it (never attaches it) before the real programs, so a kernel that lacks a
 * piece fails here by program name, which maps to a clear "needs Linux X" message instead of a verifier
 * dump from the middle of the datapath.
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} probe_storage SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} probe_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, __u64);
} probe_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, __u64);
} probe_sockhash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_ringbuf SEC(".maps");

/* weak: a kernel without it (before 6.5) still loads everything but the reaper, which is then not loaded */
extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;
/* weak: before 6.2 a slot is freed only by telemetry's close (datapath.c's probe_kernel) */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

static __always_inline __u64 *probe_lookup(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&probe_array, &key);
}

static __always_inline int probe_sock_addr(struct bpf_sock_addr *ctx)
{
	__u64 *stored = bpf_sk_storage_get(&probe_storage, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	__u64 *value = probe_lookup();

	if (stored)
		*stored = bpf_get_netns_cookie(ctx) ^ bpf_get_prandom_u32();
	if (value) {
		struct tcp_sock *tp = ctx->sk ? bpf_skc_to_tcp_sock(ctx->sk) : NULL;

		*value += 1;
		/* the original-destination slot: found by cookie (read through the socket's BTF, or given),
		 * claimed with a compare-and-swap, timed */
		if (tp)
			*value += tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
		__sync_val_compare_and_swap(value, bpf_get_socket_cookie(ctx), bpf_ktime_get_coarse_ns());
	}
	return 1;
}

SEC("cgroup/connect4")
int probe_connect4(struct bpf_sock_addr *ctx)
{
	return probe_sock_addr(ctx);
}

SEC("cgroup/connect6")
int probe_connect6(struct bpf_sock_addr *ctx)
{
	return probe_sock_addr(ctx);
}

SEC("cgroup/sendmsg4")
int probe_sendmsg4(struct bpf_sock_addr *ctx)
{
	return probe_sock_addr(ctx);
}

SEC("cgroup/sendmsg6")
int probe_sendmsg6(struct bpf_sock_addr *ctx)
{
	return probe_sock_addr(ctx);
}

SEC("cgroup/getpeername4")
int probe_getpeername4(struct bpf_sock_addr *ctx)
{
	return probe_sock_addr(ctx);
}

SEC("cgroup/getpeername6")
int probe_getpeername6(struct bpf_sock_addr *ctx)
{
	return probe_sock_addr(ctx);
}

SEC("cgroup/recvmsg4")
int probe_recvmsg4(struct bpf_sock_addr *ctx)
{
	return probe_sock_addr(ctx);
}

SEC("cgroup/recvmsg6")
int probe_recvmsg6(struct bpf_sock_addr *ctx)
{
	return probe_sock_addr(ctx);
}

/* The ring buffer, from the hooks of L4 authorization and telemetry. */
static __always_inline void probe_event(__u64 value)
{
	__u64 *event = bpf_ringbuf_reserve(&probe_ringbuf, sizeof(*event), 0);

	if (!event)
		return;
	*event = value;
	/* telemetry wakes its reader only when the ring fills up */
	bpf_ringbuf_submit(event, bpf_ringbuf_query(&probe_ringbuf, BPF_RB_AVAIL_DATA) > 2048 ? BPF_RB_FORCE_WAKEUP : 0);
}

/* Telemetry reads the socket through its BTF (bpf_skc_to_tcp_sock) from sockops and sk_msg. */
static __always_inline void probe_tcp_sock(struct bpf_sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	if (tp)
		probe_event(tp->bytes_acked + bpf_ktime_get_ns());
}

SEC("cgroup/sock_release")
int probe_sock_release(struct bpf_sock *sk)
{
	struct sock *s = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct sock));
	__u64 *value = probe_lookup();

	/* a slot found by the cookie read through the socket's BTF, given back with a compare-and-swap */
	if (value)
		__sync_val_compare_and_swap(value, s->__sk_common.skc_cookie.counter, 0);
	return 1;
}

SEC("sockops")
int probe_sockops(struct bpf_sock_ops *ops)
{
	__u64 key = bpf_get_netns_cookie(ops);
	struct bpf_sock *sk = ops->sk;

	bpf_sock_ops_cb_flags_set(ops, BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
	if (sk) {
		bpf_sk_storage_get(&probe_storage, sk, 0, 0);
		probe_tcp_sock(sk);
	}
	/* telemetry's per-socket byte counts: written at ESTABLISHED, deleted at the close */
	if (bpf_map_update_elem(&probe_hash, &key, &key, BPF_ANY) == 0)
		bpf_map_delete_elem(&probe_hash, &key);
	bpf_get_socket_cookie(ops);
	if (probe_lookup())
		return 1;
	/* a socket in the sockhash only for its TLV leaves it once the TLV is sent */
	if (bpf_sock_hash_update(ops, &probe_sockhash, &key, BPF_NOEXIST) == 0)
		bpf_map_delete_elem(&probe_sockhash, &key);
	return 1;
}

SEC("sk_msg")
int probe_sk_msg(struct sk_msg_md *msg)
{
	__u64 key = bpf_get_netns_cookie(msg);
	struct bpf_sock *sk = msg->sk;

	if (sk) {
		bpf_sk_storage_get(&probe_storage, sk, 0, 0);
		probe_tcp_sock(sk);
	}
	if (bpf_map_lookup_elem(&probe_hash, &key))
		return SK_PASS;
	if (probe_lookup())
		return SK_PASS;
	if (bpf_msg_push_data(msg, 0, 16, 0) || bpf_msg_pull_data(msg, 0, 16, 0))
		return SK_PASS;
	return bpf_msg_redirect_hash(msg, &probe_sockhash, &key, BPF_F_INGRESS);
}

SEC("sk_lookup")
int probe_sk_lookup(struct bpf_sk_lookup *ctx)
{
	__u32 key = 0;
	__u64 zero = 0;

	if (!probe_lookup())
		bpf_map_update_elem(&probe_array, &key, &zero, BPF_ANY);
	probe_event(ctx->local_port);
	return SK_PASS;
}

SEC("iter/tcp")
int probe_iter_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *sk = ctx->sk_common;
	__u32 key = 0;
	__u64 zero = 0;

	if (!sk)
		return 0;
	if (!probe_lookup())
		bpf_map_update_elem(&probe_array, &key, &zero, BPF_ANY);
	probe_event(sk->skc_num);
	/* telemetry's flush: a followed socket's storage, read through its BTF */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (tp && bpf_sk_storage_get(&probe_storage, tp, 0, 0))
		probe_event(bpf_ktime_get_ns());
	if (sk->skc_state == 255 && bpf_sock_destroy(sk) == 0) /* never true: only its loading counts */
		bpf_seq_write(ctx->meta->seq, &zero, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
