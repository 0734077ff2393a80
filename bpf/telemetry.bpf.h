/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * L4 telemetry (bpf/sockmesh.h, "L4 telemetry"), included by sockmesh.bpf.c after its helpers: its
 * sockops starts following a connection (conn_start) and hands the state callback here
 * (conn_progress); its sk_msg counts the bytes that bypass TCP (conn_redirected, conn_tlv).
 *
 * A connection is followed when sm_conn_stats exists for its socket: made at TCP_CONNECT_CB (outbound)
 * or PASSIVE_ESTABLISHED_CB (inbound) while the knob is on, in socket storage or, for a connection that
 * connect4 translated (to a backend or a waypoint), in the slot that holds its original destination
 * (sm_orig_slots), which its close gives back. Everything after reads the socket through its BTF
 * (bpf_skc_to_tcp_sock), the same from sockops, sk_msg and the flush iterator.
 *
 * What a connection costs is the point: one socket storage (none in a slot), the state callback (no RTT callback, no
 * event at its start) and one event at its end. A connection still open after SM_CONN_REPORT_NS is
 * reported by sm_conn_flush, an iter/tcp program the agent runs in each enrolled namespace every few
 * seconds: the first report counts it opened, and bytes move within seconds even when it went idle
 * after its last burst. Events do not wake the agent (it drains the ring on a timer) unless the
 * ring is half full.
 *
 * Bytes sk_msg redirects to a local peer: the sender counts them in its own msg_sent. The peer's count
 * cannot go in the peer's storage from there: sk_msg may look the peer up in the sockhash, but that
 * takes a reference it has no helper to release (the verifier on 6.18: "program of this type cannot
 * use helper bpf_sk_release"). So a followed socket that enters the sockhash as accelerated gets an
 * entry in sm_conn_received under its own sockhash key, which is the key the sender redirects with: the
 * sender adds to it, and the socket's events read it into msg_received. Its close deletes it.
 *
 * The same entry carries the handover (bpf/sockmesh.h, "One end for two"): a connecting end creates it
 * OFFERED (one that is not accelerated only to offer it, when its peer is a local workload); an accepting
 * local workload that finds it ORs in TAKEN and is not followed unless the connecting end had closed; the
 * connecting end's close ORs in CLOSED and reports both ends if TAKEN came first. The connecting end's
 * entry is there before its peer is accepted: it is made at ACTIVE_ESTABLISHED_CB, before the connecting
 * end sends the ACK whose arrival makes the accepted socket.
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

/* A followed connecting or accelerated socket's entry, keyed like the sockhash: the bytes redirected to it
 * and the handover of its peer (bpf/sockmesh.h; read and written by these programs only). Preallocated
 * (8 MiB, against 1 MiB empty): an entry is made where a connect completes and deleted where its close
 * runs, often on two CPUs, and an allocating map then refills one CPU's cache of elements and trims the
 * other's in IRQ work, about a microsecond of program time per followed connection (docs/benchmarks.md,
 * "L4 telemetry"). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SM_DEFAULT_MAX_SOCKETS);
	__type(key, struct sm_sock_key);
	__type(value, struct sm_conn_received);
	__uint(pinning, SM_MAP_PINNING);
} sm_conn_received SEC(".maps");

/* The connections each enrolled namespace started following (bpf/sockmesh.h): entries the agent makes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_DEFAULT_MAX_NETNS);
	__type(key, __u64); /* network namespace cookie */
	__type(value, __u64);
	__uint(pinning, SM_MAP_PINNING);
} sm_conn_started SEC(".maps");

/* A followed socket's stats: in the slot it holds, if any (none until conn_start confirmed the slot, and
 * none in a slot claimed with the knob off, which has no direction: the socket is not followed), else in
 * its socket storage. */
static __always_inline struct sm_conn_stats *slot_or_storage_stats(struct sm_orig_slot *slot, void *sk)
{
	if (slot)
		return slot_followed(slot) ? &slot->stats : NULL;
	return bpf_sk_storage_get(&sm_conn_stats, sk, 0, 0);
}

static __always_inline struct sm_conn_stats *conn_stats(void *sk, __u64 cookie)
{
	return slot_or_storage_stats(held_slot(cookie), sk);
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
 * SYN. (test_telemetry_kernel's exact counts hold each of these.) What sk_msg handed over through the
 * sockhash never touched TCP; the TLV is not the application's.
 */
static __always_inline void conn_bytes(const struct tcp_sock *tp, const struct sm_conn_stats *st, __u64 *bytes_sent,
				       __u64 *bytes_received)
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
	*bytes_sent = sent > st->tlv_bytes ? sent - st->tlv_bytes : 0;
	*bytes_received = received + st->msg_received;
}

/* The socket's network namespace, from its BTF: the same in sockops, sk_msg and an iterator. */
static __always_inline __u64 sock_netns_cookie(const struct tcp_sock *tp)
{
	return tp->inet_conn.icsk_inet.sk.__sk_common.skc_net.net->net_cookie;
}

/* The socket's own sockhash key (key_from_ops + finish_key), from its BTF. */
static __always_inline void own_key(const struct tcp_sock *tp, __u64 netns_cookie, struct sm_sock_key *key)
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
	key->netns = is_loopback(remote) ? netns_cookie : 0; /* as finish_key */
}

/* The event's addresses: the socket's own, and what the application connected to. */
static __always_inline void conn_addrs(struct tcp_sock *tp, const struct sm_sock_key *key,
				       const struct sm_conn_stats *st, struct sm_conn_event *ev)
{
	const struct sm_sock_state *state;

	__builtin_memcpy(ev->local_addr, key->local_addr, 16);
	__builtin_memcpy(ev->remote_addr, key->remote_addr, 16);
	ev->local_port = bpf_htons((__u16)key->local_port);
	ev->remote_port = bpf_htons((__u16)key->remote_port);
	state = (st->flags & SM_CONN_TRANSLATED) ? orig_state(tp, tp_cookie(tp)) : NULL;
	if (state && (state->flags & SM_SOCK_REDIRECTED)) {
		__builtin_memcpy(ev->orig_addr, state->orig_addr, 16);
		ev->orig_port = state->orig_port;
	} else {
		__builtin_memcpy(ev->orig_addr, ev->remote_addr, 16);
		ev->orig_port = ev->remote_port;
	}
}

/* What local peers redirected to this socket so far (sm_conn_received), and whether this end reports its
 * peer too: at the close, its OR of CLOSED settles that against the peer's OR of TAKEN. */
static __always_inline void conn_received(const struct sm_sock_key *key, struct sm_conn_stats *st, bool closing)
{
	struct sm_conn_received *received = bpf_map_lookup_elem(&sm_conn_received, key);
	__u32 handover;

	if (!received)
		return;
	if (received->bytes) {
		st->msg_received = received->bytes;
		st->flags |= SM_CONN_ACCELERATED;
	}
	handover = closing ? __sync_fetch_and_or(&received->handover, SM_CONN_HANDOVER_CLOSED) : received->handover;
	if ((handover & SM_CONN_HANDOVER_OFFERED) && (handover & SM_CONN_HANDOVER_TAKEN))
		st->flags |= SM_CONN_BOTH_ENDS;
}

/* One record; a full ring buffer loses it (counted), never waits. */
static __always_inline void conn_emit(struct tcp_sock *tp, struct sm_conn_stats *st, __u8 kind, __u8 failure)
{
	__u64 netns_cookie = sock_netns_cookie(tp);
	struct sm_sock_key key = {};
	struct sm_conn_event *ev;

	st->reported_ns = bpf_ktime_get_ns();
	own_key(tp, netns_cookie, &key);
	conn_received(&key, st, kind == SM_CONN_CLOSED);
	ev = bpf_ringbuf_reserve(&sm_conn_events, sizeof(*ev), 0);
	if (!ev) {
		count(SM_COUNTER_CONN_EVENTS_LOST);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->socket_cookie = tp_cookie(tp); /* set at conn_start */
	ev->netns_cookie = netns_cookie;
	ev->start_ns = st->start_ns;
	ev->now_ns = st->reported_ns;
	conn_bytes(tp, st, &ev->bytes_sent, &ev->bytes_received);
	st->reported_sent = ev->bytes_sent;
	st->reported_received = ev->bytes_received;
	conn_addrs(tp, &key, st, ev);
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

/* Follows a connection from here: its stats and the state callback (its close), counted in its namespace's
 * (netns: that namespace's cookie) sm_conn_started. Nothing is emitted: its end, or sm_conn_flush if it
 * lasts, reports it. */
static __always_inline void conn_start(struct bpf_sock_ops *ops, struct bpf_sock *sk, __u8 direction, __u64 netns)
{
	__u64 cookie = bpf_get_socket_cookie(ops); /* gives the socket its cookie, which every event reads */
	struct sm_orig_slot *slot = direction == SM_CONN_OUTBOUND ? held_slot(cookie) : NULL;
	struct sm_conn_stats *st =
		slot ? &slot->stats : bpf_sk_storage_get(&sm_conn_stats, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	const struct sm_sock_state *state;
	__u64 *started;

	if (!st) {
		count(SM_COUNTER_ERRORS);
		return;
	}
	__builtin_memset(st, 0, sizeof(*st)); /* a socket may connect again after a failed connect */
	st->reported_sent = SM_CONN_NOT_REPORTED;
	st->start_ns = bpf_ktime_get_ns();
	st->reported_ns = st->start_ns; /* sm_conn_flush reports it once it is SM_CONN_REPORT_NS old */
	st->direction = direction;
	if (slot)
		state = &slot->state;
	else
		state = direction == SM_CONN_OUTBOUND ? bpf_sk_storage_get(&sm_sock_state, sk, 0, 0) : NULL;
	if (state && (state->flags & SM_SOCK_REDIRECTED))
		st->flags |= SM_CONN_TRANSLATED;
	if (state && (state->flags & SM_SOCK_TLV_PENDING))
		st->flags |= SM_CONN_WAYPOINT;
	if (bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG))
		count(SM_COUNTER_ERRORS);
	else if (slot)
		slot->unconfirmed_since = 0; /* its close frees it now */
	/* after the storage: a flush that began before this count moved finds the socket (it is in the
	 * namespace's TCP table from before TCP_CONNECT_CB and PASSIVE_ESTABLISHED_CB) */
	started = bpf_map_lookup_elem(&sm_conn_started, &netns);
	if (started)
		__sync_fetch_and_add(started, 1); /* atomic: sockops may run in a softirq over its own CPU's task */
}

static __always_inline __u8 conn_failure(const struct tcp_sock *tp)
{
	int err = tp->inet_conn.icsk_inet.sk.sk_err;

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

/* STATE_CB, which only followed sockets asked for: their close. It runs before the state changes: args
 * are the old state and the new; only the move to CLOSE matters (several moves lead there). */
static __always_inline void conn_progress(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;
	struct sm_orig_slot *slot;
	struct sm_conn_stats *st;
	struct tcp_sock *tp;
	__u64 cookie;

	if (ops->args[1] != BPF_TCP_CLOSE || !sk)
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	cookie = tp_cookie(tp);
	slot = held_slot(cookie);
	st = slot_or_storage_stats(slot, tp);
	if (!st)
		return;
	if (ops->args[0] == BPF_TCP_SYN_SENT) {
		conn_emit(tp, st, SM_CONN_FAILED, conn_failure(tp));
	} else {
		conn_emit(tp, st, SM_CONN_CLOSED, SM_CONN_FAIL_NONE);
		conn_forget_received(ops);
	}
	if (slot)
		release_slot(slot, cookie); /* done with it once its last event is out */
}

/* sk_msg pushed the waypoint TLV (cookie: the socket's, which sk_msg read to find it): TCP will count it,
 * the application did not send it. */
static __always_inline void conn_tlv(struct bpf_sock *sk, __u64 cookie, __u32 len)
{
	struct sm_conn_stats *st = conn_stats(sk, cookie);

	if (st)
		st->tlv_bytes += len;
}

/*
 * sk_msg handed size bytes straight to the peer's receive queue: TCP sees them on neither side. The
 * sender counts them sent; the peer received, in its sm_conn_received entry (when it is followed), whose
 * key is the one the redirect used.
 */
static __always_inline void conn_redirected(struct bpf_sock *sk, const struct sm_sock_key *peer_key, __u32 size)
{
	struct sm_conn_stats *st = conn_stats(sk, known_cookie(sk));
	struct sm_conn_received *received = bpf_map_lookup_elem(&sm_conn_received, peer_key);

	if (received)
		__sync_fetch_and_add(&received->bytes, size);
	if (!st)
		return;
	st->msg_sent += size; /* only this socket's own sends run here, under its lock */
	st->flags |= SM_CONN_ACCELERATED;
}

/* A connecting end sees every byte of the connection, both ways, unless it talks to a waypoint: the
 * waypoint's own count holds the TLV, which this end's takes out. */
static __always_inline bool can_report_peer(const struct sm_conn_stats *st)
{
	return st->direction == SM_CONN_OUTBOUND && !(st->flags & SM_CONN_WAYPOINT);
}

/* A followed socket's sm_conn_received entry (key: as in the sockhash). */
static __always_inline void conn_enter_received(const struct sm_conn_stats *st, const struct sm_sock_key *key)
{
	struct sm_conn_received entry = {};

	if (can_report_peer(st))
		entry.handover = SM_CONN_HANDOVER_OFFERED;
	/* BPF_ANY: a connection that reuses the key of one before it starts from zero */
	if (bpf_map_update_elem(&sm_conn_received, key, &entry, BPF_ANY))
		count(SM_COUNTER_ERRORS);
}

/* A followed socket entering the sockhash as accelerated: its peer's redirects are counted from now. */
static __always_inline void conn_accelerated(struct bpf_sock *sk, const struct sm_sock_key *key)
{
	struct sm_conn_stats *st = conn_stats(sk, known_cookie(sk));

	if (st)
		conn_enter_received(st, key);
}

/*
 * A followed connecting end established with the accelerate knob off, to a local workload: an entry that
 * only offers the handover (TCP carries every byte, and each end's TCP counts the other's).
 */
static __always_inline void conn_established_unaccelerated(struct bpf_sock_ops *ops, struct bpf_sock *sk,
							   struct sm_sock_key *key)
{
	struct sm_conn_stats *st;

	if (!bpf_map_lookup_elem(&sm_local_addrs, key->remote_addr))
		return;
	st = conn_stats(sk, known_cookie(sk));
	if (!st || !can_report_peer(st))
		return;
	finish_key(key, ops);
	conn_enter_received(st, key);
}

/*
 * An accepted connection to a local workload (key: its own, without finish_key): true when its
 * connecting end, a followed local socket, offered to report it and this end took the handover before
 * that end's close; it is then not followed.
 */
static __always_inline bool conn_handed_over(struct bpf_sock_ops *ops, const struct sm_sock_key *key)
{
	struct sm_sock_key peer = {};
	struct sm_conn_received *entry;
	__u32 handover;

	__builtin_memcpy(peer.local_addr, key->remote_addr, 16);
	__builtin_memcpy(peer.remote_addr, key->local_addr, 16);
	peer.local_port = key->remote_port;
	peer.remote_port = key->local_port;
	finish_key(&peer, ops);
	entry = bpf_map_lookup_elem(&sm_conn_received, &peer);
	if (!entry || !(entry->handover & SM_CONN_HANDOVER_OFFERED))
		return false;
	handover = __sync_fetch_and_or(&entry->handover, SM_CONN_HANDOVER_TAKEN);
	return !(handover & SM_CONN_HANDOVER_CLOSED);
}

/*
 * Whether an open connection has something to report: its first report (which counts it opened), bytes that
 * passed since its last, or nothing for SM_CONN_IDLE_REPORT_S (the agent forgets a gone workload's connection
 * that stays silent for minutes).
 */
static __always_inline bool conn_has_news(struct tcp_sock *tp, struct sm_conn_stats *st, __u64 now)
{
	struct sm_sock_key key = {};
	__u64 sent, received;

	if (st->reported_sent == SM_CONN_NOT_REPORTED || now - st->reported_ns >= SM_CONN_IDLE_REPORT_S * 1000000000ULL)
		return true;
	own_key(tp, sock_netns_cookie(tp), &key);
	conn_received(&key, st, false);
	conn_bytes(tp, st, &sent, &received);
	return sent != st->reported_sent || received != st->reported_received;
}

/*
 * The agent runs this over the TCP sockets of each enrolled namespace every few seconds: a followed
 * connection not reported for SM_CONN_REPORT_NS (one open for that long, or reported that long ago)
 * reports its bytes so far if it has news (conn_has_news). Established ones and those closing; not one
 * still connecting (its end says what became of it). It writes a byte for each followed socket it finds,
 * connecting ones too: the agent walks a namespace again only while it has some (or has started more).
 */
SEC("iter/tcp")
int sm_conn_flush(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sm_conn_stats *st;
	struct tcp_sock *tp;
	__u8 state, found = 1;
	__u64 now;

	if (!skc)
		return 0;
	state = skc->skc_state;
	if (state == BPF_TCP_LISTEN || state == BPF_TCP_CLOSE)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	st = tp ? conn_stats(tp, tp_cookie(tp)) : NULL;
	if (!st)
		return 0;
	bpf_seq_write(ctx->meta->seq, &found, sizeof(found));
	now = bpf_ktime_get_ns();
	if (state != BPF_TCP_SYN_SENT && now - st->reported_ns >= SM_CONN_REPORT_NS && conn_has_news(tp, st, now))
		conn_emit(tp, st, SM_CONN_UPDATE, SM_CONN_FAIL_NONE);
	return 0;
}

#endif
