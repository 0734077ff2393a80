/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * L4 telemetry (bpf/sockmesh.h, "L4 telemetry"), included by sockmesh.bpf.c after its helpers: its
 * sockops starts following a connection (conn_start) and hands the state and RTT callbacks here
 * (conn_progress); its sk_msg counts the bytes that bypass TCP (conn_redirected, conn_tlv).
 *
 * A connection is followed when sm_conn_stats exists for its socket: made at TCP_CONNECT_CB (outbound)
 * or PASSIVE_ESTABLISHED_CB (inbound) while the knob is on. Everything after reads the socket through
 * its BTF (bpf_skc_to_tcp_sock), the same from sockops and sk_msg.
 *
 * Bytes sk_msg redirects to a local peer: the sender counts them in its own msg_sent. The peer's count
 * cannot go in the peer's storage from there: sk_msg may look the peer up in the sockhash, but that
 * takes a reference it has no helper to release (the verifier on 6.18: "program of this type cannot
 * use helper bpf_sk_release"). So a followed socket that enters the sockhash as accelerated gets an
 * entry in sm_conn_received under its own sockhash key, which is the key the sender redirects with: the
 * sender adds to it, and the socket's events read it into msg_received. Its close deletes it.
 */
#ifndef SOCKMESH_BPF_TELEMETRY_H
#define SOCKMESH_BPF_TELEMETRY_H

#define ECONNREFUSED 111
#define ETIMEDOUT 110

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sm_conn_stats);
	__uint(pinning, SM_MAP_PINNING);
} sm_conn_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SM_CONN_EVENTS_BYTES);
	__uint(pinning, SM_MAP_PINNING);
} sm_conn_events SEC(".maps");

/* Bytes redirected to a followed accelerated socket, keyed like the sockhash (not in the contract: read
 * and written by these programs only). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_DEFAULT_MAX_SOCKETS);
	__type(key, struct sm_sock_key);
	__type(value, __u64);
	__uint(pinning, SM_MAP_PINNING);
} sm_conn_received SEC(".maps");

static __always_inline bool telemetry_on(const struct sm_config *cfg)
{
	return cfg && (cfg->flags & SM_CONFIG_TELEMETRY);
}

/* Our FIN is in the sequence space once the state went through FIN_WAIT1 (or LAST_ACK). */
static __always_inline bool fin_queued(int state)
{
	return state == BPF_TCP_FIN_WAIT1 || state == BPF_TCP_FIN_WAIT2 || state == BPF_TCP_CLOSING ||
	       state == BPF_TCP_LAST_ACK;
}

/*
 * The application's bytes. TCP's bytes_acked counts every acknowledged sequence number: the connecting
 * side's SYN (acked by the SYN-ACK; the accepting side's SYN-ACK is not counted: its child starts past
 * it) and our FIN once acked (the FIN is the last sequence number: acked when snd_una reached
 * write_seq). bytes_received counts the peer's FIN once it came (tcp_fin sets SOCK_DONE), never its
 * SYN. (test_telemetry_kernel's exact counts hold each of these.) What sk_msg handed over through the sockhash never touched TCP; the TLV is not the application's.
 */
static __always_inline void conn_bytes(const struct tcp_sock *tp, const struct sm_conn_stats *st,
				       struct sm_conn_event *ev)
{
	const struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	__u64 acked = tp->bytes_acked, received = tp->bytes_received, sent;

	if (st->direction == SM_CONN_OUTBOUND && acked)
		acked--;
	if (fin_queued(sk->__sk_common.skc_state) && tp->snd_una == tp->write_seq && acked)
		acked--;
	if (((sk->__sk_common.skc_flags >> SOCK_DONE) & 1) && received)
		received--;
	sent = acked + st->msg_sent;
	ev->bytes_sent = sent > st->tlv_bytes ? sent - st->tlv_bytes : 0;
	ev->bytes_received = received + st->msg_received;
}

/* The socket's own sockhash key (key_from_ops + finish_key), from its BTF. */
static __always_inline void own_key(void *ctx, const struct tcp_sock *tp, struct sm_sock_key *key)
{
	const struct sock_common *c = &tp->inet_conn.icsk_inet.sk.__sk_common;
	__u32 *local = (__u32 *)key->local_addr, *remote = (__u32 *)key->remote_addr;

	if (c->skc_family == AF_INET) {
		map_v4(local, c->skc_rcv_saddr);
		map_v4(remote, c->skc_daddr);
	} else {
		for (int i = 0; i < 4; i++) {
			local[i] = c->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			remote[i] = c->skc_v6_daddr.in6_u.u6_addr32[i];
		}
	}
	key->local_port = c->skc_num;
	key->remote_port = bpf_ntohs(c->skc_dport);
	finish_key(key, ctx);
}

/* The event's addresses: the socket's own, and what the application connected to. */
static __always_inline void conn_addrs(struct bpf_sock *bsk, const struct sm_sock_key *key,
				       const struct sm_conn_stats *st, struct sm_conn_event *ev)
{
	const struct sm_sock_state *state;

	__builtin_memcpy(ev->local_addr, key->local_addr, 16);
	__builtin_memcpy(ev->remote_addr, key->remote_addr, 16);
	ev->local_port = bpf_htons((__u16)key->local_port);
	ev->remote_port = bpf_htons((__u16)key->remote_port);
	state = (st->flags & SM_CONN_TRANSLATED) ? bpf_sk_storage_get(&sm_sock_state, bsk, 0, 0) : NULL;
	if (state && (state->flags & SM_SOCK_REDIRECTED)) {
		__builtin_memcpy(ev->orig_addr, state->orig_addr, 16);
		ev->orig_port = state->orig_port;
	} else {
		__builtin_memcpy(ev->orig_addr, ev->remote_addr, 16);
		ev->orig_port = ev->remote_port;
	}
}

/* What local peers redirected to this socket so far (sm_conn_received). */
static __always_inline void conn_received(const struct sm_sock_key *key, struct sm_conn_stats *st)
{
	__u64 *received = bpf_map_lookup_elem(&sm_conn_received, key);

	if (received && *received) {
		st->msg_received = *received;
		st->flags |= SM_CONN_ACCELERATED;
	}
}

/* One record; a full ring buffer loses it (counted), never waits. */
static __always_inline void conn_emit(void *ctx, struct bpf_sock *bsk, struct sm_conn_stats *st, __u8 kind,
				      __u8 failure)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(bsk);
	struct sm_sock_key key = {};
	struct sm_conn_event *ev;

	if (!tp)
		return;
	st->reported_ns = bpf_ktime_get_ns();
	own_key(ctx, tp, &key);
	conn_received(&key, st);
	ev = bpf_ringbuf_reserve(&sm_conn_events, sizeof(*ev), 0);
	if (!ev) {
		count(SM_COUNTER_CONN_EVENTS_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	/* set by bpf_get_socket_cookie at conn_start; sk_msg has no cookie helper */
	ev->socket_cookie = tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
	ev->netns_cookie = bpf_get_netns_cookie(ctx);
	ev->start_ns = st->start_ns;
	ev->now_ns = st->reported_ns;
	conn_bytes(tp, st, ev);
	conn_addrs(bsk, &key, st, ev);
	ev->kind = kind;
	ev->direction = st->direction;
	ev->flags = st->flags;
	ev->failure = failure;
	ev->srtt_us = tp->srtt_us >> 3;
	ev->min_rtt_us = tp->rtt_min.s[0].v;
	ev->total_retrans = tp->total_retrans;
	/* no wakeup per event (it costs the program a wakeup of the agent, microseconds): the agent drains
	 * on a timer, and is woken only when the ring is half full */
	bpf_ringbuf_submit(ev, bpf_ringbuf_query(&sm_conn_events, BPF_RB_AVAIL_DATA) >= SM_CONN_EVENTS_BYTES / 2 ?
				       BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Follows a connection from here: its stats, the state callback (its close) and the RTT callback (a
 * cheap tick while bytes flow: one per RTT sample, which only data and its ACKs bring). */
static __always_inline void conn_start(struct bpf_sock_ops *ops, struct bpf_sock *sk, __u8 direction)
{
	struct sm_conn_stats *st = bpf_sk_storage_get(&sm_conn_stats, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	const struct sm_sock_state *state;

	if (!st) {
		count(SM_COUNTER_ERRORS);
		return;
	}
	__builtin_memset(st, 0, sizeof(*st)); /* a socket may connect again after a failed connect */
	st->start_ns = bpf_ktime_get_ns();
	st->direction = direction;
	state = direction == SM_CONN_OUTBOUND ? bpf_sk_storage_get(&sm_sock_state, sk, 0, 0) : NULL;
	if (state && (state->flags & SM_SOCK_REDIRECTED))
		st->flags |= SM_CONN_TRANSLATED;
	if (state && (state->flags & SM_SOCK_TLV_PENDING))
		st->flags |= SM_CONN_WAYPOINT;
	bpf_get_socket_cookie(ops); /* gives the socket its cookie, which every event reads */
	if (bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG |
						   BPF_SOCK_OPS_RTT_CB_FLAG))
		count(SM_COUNTER_ERRORS);
	conn_emit(ops, sk, st, SM_CONN_OPENED, SM_CONN_FAIL_NONE);
}

static __always_inline __u8 conn_failure(struct bpf_sock *bsk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(bsk);
	int err = tp ? tp->inet_conn.icsk_inet.sk.sk_err : 0;

	if (err == ECONNREFUSED)
		return SM_CONN_FAIL_REFUSED;
	if (err == ETIMEDOUT)
		return SM_CONN_FAIL_TIMEOUT;
	return SM_CONN_FAIL_OTHER;
}

/* The socket's entry in sm_conn_received goes with it (the key as it entered the sockhash). */
static __always_inline void conn_forget_received(struct bpf_sock_ops *ops)
{
	struct sm_sock_key key = {};

	key_from_ops(&key, ops);
	finish_key(&key, ops);
	bpf_map_delete_elem(&sm_conn_received, &key);
}

/* STATE_CB and RTT_CB, which only followed sockets asked for: the close, or a report now and then. */
static __always_inline void conn_progress(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;
	struct sm_conn_stats *st;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&sm_conn_stats, sk, 0, 0);
	if (!st)
		return;
	if (ops->op == BPF_SOCK_OPS_STATE_CB) {
		/* the callback runs before the state changes: args are the old state and the new */
		if (ops->args[1] != BPF_TCP_CLOSE)
			return;
		if (ops->args[0] == BPF_TCP_SYN_SENT) {
			conn_emit(ops, sk, st, SM_CONN_FAILED, conn_failure(sk));
			return;
		}
		conn_emit(ops, sk, st, SM_CONN_CLOSED, SM_CONN_FAIL_NONE);
		conn_forget_received(ops);
		return;
	}
	if (bpf_ktime_get_ns() - st->reported_ns >= SM_CONN_REPORT_NS)
		conn_emit(ops, sk, st, SM_CONN_UPDATE, SM_CONN_FAIL_NONE);
}

/* sk_msg pushed the waypoint TLV: TCP will count it, the application did not send it. */
static __always_inline void conn_tlv(struct bpf_sock *sk, __u32 len)
{
	struct sm_conn_stats *st = bpf_sk_storage_get(&sm_conn_stats, sk, 0, 0);

	if (st)
		st->tlv_bytes += len;
}

/*
 * sk_msg handed size bytes straight to the peer's receive queue: TCP sees them on neither side. The
 * sender counts them sent; the peer received, in its sm_conn_received entry (when it is followed), whose
 * key is the one the redirect used. An accelerated sender has no ACKs, so no RTT callback: it reports
 * from here.
 */
static __always_inline void conn_redirected(struct sk_msg_md *msg, struct bpf_sock *sk, const struct sm_sock_key *peer_key,
					    __u32 size)
{
	struct sm_conn_stats *st = bpf_sk_storage_get(&sm_conn_stats, sk, 0, 0);
	__u64 *received = bpf_map_lookup_elem(&sm_conn_received, peer_key);

	if (received)
		__sync_fetch_and_add(received, size);
	if (!st)
		return;
	st->msg_sent += size; /* only this socket's own sends run here, under its lock */
	st->flags |= SM_CONN_ACCELERATED;
	if (bpf_ktime_get_ns() - st->reported_ns >= SM_CONN_REPORT_NS)
		conn_emit(msg, sk, st, SM_CONN_UPDATE, SM_CONN_FAIL_NONE);
}

/* A followed socket entering the sockhash as accelerated: its peer's redirects are counted from now. */
static __always_inline void conn_accelerated(struct bpf_sock *sk, const struct sm_sock_key *key)
{
	__u64 zero = 0;

	if (!bpf_sk_storage_get(&sm_conn_stats, sk, 0, 0))
		return;
	/* BPF_ANY: a connection that reuses the key of one before it starts from zero */
	if (bpf_map_update_elem(&sm_conn_received, key, &zero, BPF_ANY))
		count(SM_COUNTER_ERRORS);
}

#endif
