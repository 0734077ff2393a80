// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * L4 authorization, included by sockmesh.bpf.c (its maps and count() are declared there).
 *
 * sm_authz_check (sk_lookup, attached per guarded network namespace) decides each new TCP connection
 * as its SYN looks for a listener: a denied one is dropped there, so the kernel answers with a reset
 * and the server never sees it. sm_authz_reap (a TCP iterator run by the agent inside a namespace)
 * closes established connections that a newer generation of tables denies. Both decide through
 * authz_decide(), the lookups bpf/sockmesh.h describes: a handful of map lookups, no loops.
 */

#define SM_TCP_ESTABLISHED 1
#define SM_TCP_SYN_RECV 3
#define SM_TCP_CLOSE_WAIT 8
#define SM_TCP_LISTEN 10
#define SM_TCP_NEW_SYN_RECV 12

/* weak: a kernel without it (before 6.5) still loads everything but the reaper, which is then not loaded */
extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;

/* One connection as the tables key it: addresses as 16 bytes (IPv4 mapped), ports in network order. */
struct authz_conn {
	__u32 src[4];
	__u32 dst[4];
	__be16 src_port;
	__be16 dst_port;
};

enum authz_outcome {
	AUTHZ_OFF,	 /* no tables written yet */
	AUTHZ_UNGUARDED, /* to an address no policy guards */
	AUTHZ_EXEMPT,	 /* from the node itself, to a guarded address */
	AUTHZ_CHECKED,	 /* the verdict decides */
};

/* What a guarded destination gets when its set has no verdict at all: refused (fail closed). The
 * compiler writes (set, 0, 0) for every set, so only a broken table gets here. */
static const struct sm_authz_verdict authz_no_verdict = {
	.action = SM_AUTHZ_DENY,
	.reason = SM_AUTHZ_NO_ALLOW_MATCHED,
	.dry_run_action = SM_AUTHZ_DENY,
	.dry_run_reason = SM_AUTHZ_NO_ALLOW_MATCHED,
};

/* (set, class, port), (set, class, 0), (set, 0, port), (set, 0, 0): the first entry found. */
static __always_inline const struct sm_authz_verdict *authz_verdict(__u32 generation, __u32 dest_set,
								    __u32 source_class, __be16 port)
{
	struct sm_authz_verdict_key key = {
		.generation = generation, .dest_set = dest_set, .source_class = source_class, .port = port,
	};
	const struct sm_authz_verdict *verdict;

	if (source_class) {
		verdict = bpf_map_lookup_elem(&sm_authz_verdicts, &key);
		if (verdict)
			return verdict;
		key.port = 0;
		verdict = bpf_map_lookup_elem(&sm_authz_verdicts, &key);
		if (verdict)
			return verdict;
		key.source_class = 0;
		key.port = port;
	}
	verdict = bpf_map_lookup_elem(&sm_authz_verdicts, &key);
	if (verdict)
		return verdict;
	key.port = 0;
	verdict = bpf_map_lookup_elem(&sm_authz_verdicts, &key);
	if (verdict)
		return verdict;
	count(SM_COUNTER_ERRORS);
	return &authz_no_verdict;
}

/* The decision for conn under the generation in force; *verdict is set when AUTHZ_CHECKED. The
 * generation is read once, so every lookup below is of one compilation. */
static __always_inline enum authz_outcome authz_decide(const struct authz_conn *conn,
						       const struct sm_authz_verdict **verdict)
{
	struct sm_authz_dest_key dest_key = {};
	struct sm_authz_cidr_key cidr_key = {};
	struct sm_authz_source_key source_key = {};
	const struct sm_authz_ident_value *ident;
	const struct sm_authz_dest_value *dest;
	const struct sm_authz_cidr_value *cidr;
	const struct sm_authz_source_value *source;
	const struct sm_authz_state *state;
	__u32 zero = 0, generation;

	state = bpf_map_lookup_elem(&sm_authz_state, &zero);
	if (!state || !state->generation)
		return AUTHZ_OFF;
	generation = state->generation;
	if (state->unguarded_generation == generation)
		return AUTHZ_UNGUARDED;

	/* the destination first: most are guarded by no policy, and then whose the source is does not matter */
	dest_key.generation = generation;
	__builtin_memcpy(dest_key.addr, conn->dst, 16);
	dest = bpf_map_lookup_elem(&sm_authz_dests, &dest_key);
	if (!dest)
		return AUTHZ_UNGUARDED;

	ident = bpf_map_lookup_elem(&sm_authz_idents, conn->src);
	source_key.identity = ident ? ident->identity : SM_AUTHZ_IDENTITY_NONE;
	if (source_key.identity == SM_AUTHZ_IDENTITY_NODE)
		return AUTHZ_EXEMPT;

	cidr_key.prefixlen = SM_AUTHZ_CIDR_PREFIX_BASE + 128;
	cidr_key.generation = bpf_htonl(generation);
	__builtin_memcpy(cidr_key.addr, conn->src, 16);
	cidr = bpf_map_lookup_elem(&sm_authz_cidrs, &cidr_key);

	source_key.generation = generation;
	source_key.cidr_class = cidr ? cidr->cidr_class : 0;
	source = bpf_map_lookup_elem(&sm_authz_sources, &source_key);

	*verdict = authz_verdict(generation, dest->dest_set, source ? source->source_class : 0, conn->dst_port);
	return AUTHZ_CHECKED;
}

enum authz_tally {
	TALLY_ALLOWED,
	TALLY_DENIED,
	TALLY_DRY_RUN_DENIED,
	TALLY_CLOSED,
};

/* One more connection in a policy's per-CPU counts (its entry made on first use). */
static __always_inline void authz_tally(__u64 policy, enum authz_tally tally)
{
	struct sm_authz_policy_counts *counts = bpf_map_lookup_elem(&sm_authz_policy_counters, &policy);

	if (!counts) {
		struct sm_authz_policy_counts zero = {};

		bpf_map_update_elem(&sm_authz_policy_counters, &policy, &zero, BPF_NOEXIST);
		counts = bpf_map_lookup_elem(&sm_authz_policy_counters, &policy);
		if (!counts) {
			count(SM_COUNTER_ERRORS); /* the map is full */
			return;
		}
	}
	switch (tally) {
	case TALLY_ALLOWED:
		counts->allowed += 1;
		break;
	case TALLY_DENIED:
		counts->denied += 1;
		break;
	case TALLY_DRY_RUN_DENIED:
		counts->dry_run_denied += 1;
		break;
	case TALLY_CLOSED:
		counts->closed += 1;
		break;
	}
}

static __always_inline void authz_event(const struct authz_conn *conn, __u64 policy, __u8 kind, __u8 reason,
					__u64 netns_cookie)
{
	struct sm_authz_event *event = bpf_ringbuf_reserve(&sm_authz_events, sizeof(*event), 0);

	if (!event) {
		count(SM_COUNTER_AUTHZ_EVENTS_LOST);
		return;
	}
	event->policy = policy;
	__builtin_memcpy(event->src_addr, conn->src, 16);
	__builtin_memcpy(event->dst_addr, conn->dst, 16);
	event->src_port = conn->src_port;
	event->dst_port = conn->dst_port;
	event->kind = kind;
	event->reason = reason;
	event->pad[0] = 0;
	event->pad[1] = 0;
	event->netns_cookie = netns_cookie;
	bpf_ringbuf_submit(event, 0);
}

/* ---- new connections ---- */

/*
 * Returns SK_DROP for a denied connection (the SYN gets a reset), else SK_PASS without selecting a
 * socket: the kernel's own lookup then goes on as if no program were attached. Its events carry no
 * netns cookie (sk_lookup programs may not call bpf_get_netns_cookie): the destination address names
 * the workload.
 */
static __always_inline int authz_check(const struct authz_conn *conn)
{
	const struct sm_authz_verdict *verdict = NULL;

	switch (authz_decide(conn, &verdict)) {
	case AUTHZ_OFF:
		return SK_PASS;
	case AUTHZ_EXEMPT:
		count(SM_COUNTER_AUTHZ_EXEMPT);
		return SK_PASS;
	case AUTHZ_UNGUARDED:
		count(SM_COUNTER_AUTHZ_UNGUARDED);
		return SK_PASS;
	case AUTHZ_CHECKED:
		break;
	}
	if (verdict->action == SM_AUTHZ_DENY) {
		count(SM_COUNTER_AUTHZ_DENIED);
		authz_tally(verdict->policy, TALLY_DENIED);
		authz_event(conn, verdict->policy, SM_AUTHZ_EVENT_DENIED, verdict->reason, 0);
		return SK_DROP;
	}
	count(SM_COUNTER_AUTHZ_ALLOWED);
	authz_tally(verdict->policy, TALLY_ALLOWED);
	if (verdict->dry_run_action == SM_AUTHZ_DENY) {
		authz_tally(verdict->dry_run_policy, TALLY_DRY_RUN_DENIED);
		authz_event(conn, verdict->dry_run_policy, SM_AUTHZ_EVENT_DRY_RUN_DENIED, verdict->dry_run_reason, 0);
	}
	return SK_PASS;
}

/* The context's addresses: remote_port is in network order, local_port in host order. */
SEC("sk_lookup")
int sm_authz_check(struct bpf_sk_lookup *ctx)
{
	struct authz_conn conn = {};

	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (ctx->family == AF_INET) {
		map_v4(conn.src, ctx->remote_ip4);
		map_v4(conn.dst, ctx->local_ip4);
	} else {
		conn.src[0] = ctx->remote_ip6[0];
		conn.src[1] = ctx->remote_ip6[1];
		conn.src[2] = ctx->remote_ip6[2];
		conn.src[3] = ctx->remote_ip6[3];
		conn.dst[0] = ctx->local_ip6[0];
		conn.dst[1] = ctx->local_ip6[1];
		conn.dst[2] = ctx->local_ip6[2];
		conn.dst[3] = ctx->local_ip6[3];
	}
	conn.src_port = ctx->remote_port;
	conn.dst_port = bpf_htons((__u16)ctx->local_port);
	return authz_check(&conn);
}

/* ---- established connections ---- */

static __always_inline void conn_from_sock(const struct sock_common *sk, struct authz_conn *conn)
{
	if (sk->skc_family == AF_INET) {
		map_v4(conn->src, sk->skc_daddr);
		map_v4(conn->dst, sk->skc_rcv_saddr);
	} else {
		for (int i = 0; i < 4; i++) {
			conn->src[i] = sk->skc_v6_daddr.in6_u.u6_addr32[i];
			conn->dst[i] = sk->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
		}
	}
	conn->src_port = sk->skc_dport;
	conn->dst_port = bpf_htons(sk->skc_num);
}

static __always_inline bool inbound_state(__u8 state)
{
	return state == SM_TCP_ESTABLISHED || state == SM_TCP_CLOSE_WAIT || state == SM_TCP_SYN_RECV ||
	       state == SM_TCP_NEW_SYN_RECV;
}

/*
 * Closes each inbound connection the tables in force deny. Inbound: a connection whose local port has
 * a listener in this namespace (the iterator shows listeners first), so a local workload's own
 * outbound socket is never taken for one. Writes one byte to the iterator's output per socket closed,
 * which is how userspace counts them.
 */
SEC("iter/tcp")
int sm_authz_reap(struct bpf_iter__tcp *ctx)
{
	struct sock_common *sk = ctx->sk_common;
	const struct sm_authz_verdict *verdict = NULL;
	struct authz_conn conn = {};
	__u8 state, yes = 1;
	__u64 key;

	if (!sk)
		return 0;
	state = sk->skc_state;
	key = (ctx->meta->session_id << 16) | sk->skc_num;
	if (state == SM_TCP_LISTEN) {
		bpf_map_update_elem(&sm_authz_listeners, &key, &yes, BPF_ANY);
		return 0;
	}
	if (!inbound_state(state) || !bpf_map_lookup_elem(&sm_authz_listeners, &key))
		return 0;
	conn_from_sock(sk, &conn);
	if (authz_decide(&conn, &verdict) != AUTHZ_CHECKED || verdict->action != SM_AUTHZ_DENY)
		return 0;
	if (bpf_sock_destroy(sk)) {
		count(SM_COUNTER_ERRORS);
		return 0;
	}
	count(SM_COUNTER_AUTHZ_CLOSED);
	authz_tally(verdict->policy, TALLY_CLOSED);
	authz_event(&conn, verdict->policy, SM_AUTHZ_EVENT_CLOSED, verdict->reason, sk->skc_net.net->net_cookie);
	bpf_seq_write(ctx->meta->seq, &yes, 1);
	return 0;
}
