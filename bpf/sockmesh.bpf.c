// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The sockmesh datapath.
 *
 * connect4/6 translate a service VIP:port into a backend (or its waypoint) before the kernel builds the
 * connection, so no packet ever carries the VIP; sendmsg4/6 send DNS to the proxy; getpeername4/6 and
 * recvmsg4/6 give the application back the address it asked for. sockops puts a TCP socket in the
 * sockhash when its first message needs the waypoint TLV or its peer is a local socket; sk_msg writes
 * the TLV once and hands a local peer's data straight to its receive queue. With SM_CONFIG_TELEMETRY,
 * sockops also follows each connection from its connect or accept to its close and sk_msg counts the
 * bytes it hands over (bpf/telemetry.bpf.h).
 *
 * Map keys and values: bpf/sockmesh.h. Addresses are kept as 16 bytes, IPv4 as ::ffff:a.b.c.d.
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/sockmesh.h"

#define AF_INET 2
#define AF_INET6 10
/* one load the compiler may neither repeat nor tear: a slot's words change under us on other CPUs */
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))

/* Seams for the BPF unit tests (test/bpf/), which include this file: maps pinned nowhere, and the slot
 * draws they choose. */
#ifndef SM_MAP_PINNING
#define SM_MAP_PINNING LIBBPF_PIN_BY_NAME
#endif
#ifndef sm_random
#define sm_random() bpf_get_prandom_u32()
#endif

/* ---- maps: pinned by name under the pin directory; max_entries are set by datapath/ before loading ---- */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_MAP_KERNEL_ENTRIES(SM_DEFAULT_MAX_FRONTENDS));
	__type(key, struct sm_frontend_key);
	__type(value, struct sm_frontend_value);
	__uint(pinning, SM_MAP_PINNING);
} sm_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_MAP_KERNEL_ENTRIES(SM_DEFAULT_MAX_SERVICES));
	__type(key, __u32);
	__type(value, struct sm_service_value);
	__uint(pinning, SM_MAP_PINNING);
} sm_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_MAP_KERNEL_ENTRIES(SM_DEFAULT_MAX_ENDPOINTS));
	__type(key, struct sm_endpoint_key);
	__type(value, struct sm_endpoint_value);
	__uint(pinning, SM_MAP_PINNING);
} sm_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_MAP_KERNEL_ENTRIES(SM_DEFAULT_MAX_BACKENDS));
	__type(key, __u32);
	__type(value, struct sm_backend_value);
	__uint(pinning, SM_MAP_PINNING);
} sm_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sm_config);
	__uint(pinning, SM_MAP_PINNING);
} sm_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sm_meta);
	__uint(pinning, SM_MAP_PINNING);
} sm_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SM_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, SM_MAP_PINNING);
} sm_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_DEFAULT_MAX_NETNS);
	__type(key, __u64); /* network namespace cookie */
	__type(value, __u8);
	__uint(pinning, SM_MAP_PINNING);
} sm_enrolled SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_DEFAULT_MAX_LOCAL_ADDRS);
	__type(key, struct sm_frontend_key);
	__type(value, __u8);
	__uint(pinning, SM_MAP_PINNING);
} sm_local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SM_DEFAULT_MAX_SOCKETS);
	__type(key, struct sm_sock_key);
	__type(value, __u64);
	__uint(pinning, SM_MAP_PINNING);
} sm_sockhash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sm_sock_state);
	__uint(pinning, SM_MAP_PINNING);
} sm_sock_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SM_ORIG_SLOTS);
	__type(key, __u32);
	__type(value, struct sm_orig_slot);
	__uint(pinning, SM_MAP_PINNING);
} sm_orig_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sm_port_bits);
	__uint(pinning, SM_MAP_PINNING);
} sm_tlv_ports SEC(".maps");

/* L4 authorization (bpf/sockmesh.h): the tables of at most two generations, their counters and events. */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sm_authz_state);
	__uint(pinning, SM_MAP_PINNING);
} sm_authz_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_DEFAULT_MAX_AUTHZ_IDENTS);
	__type(key, struct sm_frontend_key);
	__type(value, struct sm_authz_ident_value);
	__uint(pinning, SM_MAP_PINNING);
} sm_authz_idents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_DEFAULT_MAX_AUTHZ_DESTS);
	__type(key, struct sm_authz_dest_key);
	__type(value, struct sm_authz_dest_value);
	__uint(pinning, SM_MAP_PINNING);
} sm_authz_dests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_DEFAULT_MAX_AUTHZ_CIDRS);
	__type(key, struct sm_authz_cidr_key);
	__type(value, struct sm_authz_cidr_value);
	__uint(pinning, SM_MAP_PINNING);
} sm_authz_cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_DEFAULT_MAX_AUTHZ_SOURCES);
	__type(key, struct sm_authz_source_key);
	__type(value, struct sm_authz_source_value);
	__uint(pinning, SM_MAP_PINNING);
} sm_authz_sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SM_DEFAULT_MAX_AUTHZ_VERDICTS);
	__type(key, struct sm_authz_verdict_key);
	__type(value, struct sm_authz_verdict);
	__uint(pinning, SM_MAP_PINNING);
} sm_authz_verdicts SEC(".maps");

/* Preallocated: counted from softirq on every checked SYN, where an allocation could fail. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, SM_DEFAULT_MAX_AUTHZ_POLICIES);
	__type(key, __u64); /* the policy's hash; 0: "allow policies exist, but none allowed" */
	__type(value, struct sm_authz_policy_counts);
	__uint(pinning, SM_MAP_PINNING);
} sm_authz_policy_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SM_AUTHZ_EVENTS_BYTES);
	__uint(pinning, SM_MAP_PINNING);
} sm_authz_events SEC(".maps");

/*
 * The reaper's scratch (not pinned, not shared with userspace): the local ports of the listeners an
 * iterator session has seen, keyed (session_id << 16) | port. The TCP iterator walks listeners before
 * established sockets; sessions never collide, and the LRU forgets the old ones.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} sm_authz_listeners SEC(".maps");

/* ---- small helpers ---- */

static __always_inline void count(enum sm_counter counter)
{
	__u32 key = counter;
	__u64 *value = bpf_map_lookup_elem(&sm_counters, &key);

	if (value)
		*value += 1;
}

static __always_inline const struct sm_config *knobs(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&sm_config, &key);
}

static __always_inline bool telemetry_on(const struct sm_config *cfg)
{
	return cfg && (cfg->flags & SM_CONFIG_TELEMETRY);
}

static __always_inline bool accelerate_on(const struct sm_config *cfg)
{
	return cfg && (cfg->flags & SM_CONFIG_ACCELERATE);
}

static __always_inline bool netns_enrolled(const struct sm_config *cfg, __u64 netns_cookie)
{
	return (cfg && (cfg->flags & SM_CONFIG_ENROLL_ALL)) || bpf_map_lookup_elem(&sm_enrolled, &netns_cookie);
}

static __always_inline bool is_enrolled(void *ctx, const struct sm_config *cfg)
{
	if (cfg && (cfg->flags & SM_CONFIG_ENROLL_ALL))
		return true;
	return netns_enrolled(cfg, bpf_get_netns_cookie(ctx));
}

/* A destination as the maps key it: 16 bytes, IPv4 mapped into IPv6. */
struct dest {
	__u32 addr[4];
	__be16 port;
	bool v4;
};

static __always_inline void map_v4(__u32 addr[4], __be32 addr4)
{
	addr[0] = 0;
	addr[1] = 0;
	addr[2] = bpf_htonl(0xffff);
	addr[3] = addr4;
}

static __always_inline void set_v4(struct dest *dst, __be32 addr4)
{
	map_v4(dst->addr, addr4);
	dst->v4 = true;
}

static __always_inline void set_v6(struct dest *dst, const __u8 addr6[16])
{
	__builtin_memcpy(dst->addr, addr6, 16);
	dst->v4 = false;
}

static __always_inline bool same_addr(const __u32 a[4], const __u32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline bool is_mapped_v4(const __u32 addr[4])
{
	return addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff);
}

static __always_inline bool is_loopback(const __u32 addr[4])
{
	if (is_mapped_v4(addr))
		return (bpf_ntohl(addr[3]) >> 24) == 127;
	return addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == bpf_htonl(1);
}

/* ---- choosing where a connection goes ----
 *
 * Each decision returns its outcome, named by its counter; decide() counts it, once per connect.
 * Redirected and via_waypoint rewrite the destination; waypoint_unresolved refuses the connect; the
 * others leave it alone.
 */

static __always_inline int service_port_index(const struct sm_service_value *svc, __be16 port)
{
	for (int i = 0; i < SM_MAX_PORTS; i++) {
		if (i >= svc->n_ports)
			break;
		if (svc->ports[i] == port)
			return i;
	}
	return -1;
}

/* The priority to pick from, per the service's mode; -1 when nothing may be picked. */
static __always_inline int pick_priority(const struct sm_service_value *svc)
{
	if (svc->lb_mode != SM_LB_FAILOVER)
		return svc->endpoint_counts[0] ? 0 : -1;
	for (int p = 0; p < SM_MAX_PRIORITIES; p++) {
		if (svc->endpoint_counts[p])
			return p;
	}
	return -1;
}

/* Why a service had no endpoint to give. */
static __always_inline enum sm_counter no_endpoint(const struct sm_service_value *svc)
{
	return svc->lb_mode == SM_LB_STRICT && !svc->endpoint_counts[0] ? SM_COUNTER_STRICT_NO_MATCH
									 : SM_COUNTER_NO_ENDPOINT;
}

/* A random slot of the service's priority (weights are repeated slots). NULL when none. */
static __always_inline const struct sm_endpoint_value *pick_endpoint(__u32 service_id,
								     const struct sm_service_value *svc)
{
	int priority = pick_priority(svc);
	struct sm_endpoint_key key = { .service_id = service_id };
	const struct sm_endpoint_value *endpoint;

	if (priority < 0)
		return NULL;
	key.priority = (__u8)priority;
	key.index = sm_random() % svc->endpoint_counts[priority & (SM_MAX_PRIORITIES - 1)];
	endpoint = bpf_map_lookup_elem(&sm_endpoints, &key);
	if (!endpoint && key.index) {
		/* the count shrank between our read of it and this lookup (the last slot moved down into
		 * a hole, then went): slot 0 is there as long as any is */
		key.index = 0;
		endpoint = bpf_map_lookup_elem(&sm_endpoints, &key);
	}
	return endpoint;
}

/*
 * A random endpoint of the service and its backend; NULL when none. The agent deletes a backend right
 * after moving its slots to another, so a backend can go between our two lookups: one more pick then
 * finds the slot's new backend.
 */
static __always_inline const struct sm_backend_value *pick_backend(__u32 service_id, const struct sm_service_value *svc,
								   const struct sm_endpoint_value **endpoint)
{
	const struct sm_backend_value *backend = NULL;

	for (int attempt = 0; attempt < 2 && !backend; attempt++) {
		*endpoint = pick_endpoint(service_id, svc);
		if (!*endpoint)
			return NULL;
		backend = bpf_map_lookup_elem(&sm_backends, &(*endpoint)->backend_id);
	}
	return backend;
}

/* The backend's address in the family the socket can reach; false when it has none. */
static __always_inline bool backend_address(const struct sm_backend_value *backend, bool want_v4, struct dest *out)
{
	if (want_v4) {
		if (!(backend->families & SM_HAS_V4))
			return false;
		set_v4(out, backend->addr4);
		return true;
	}
	if (!(backend->families & SM_HAS_V6))
		return false;
	set_v6(out, backend->addr6);
	return true;
}

/*
 * The waypoint's address (and, when that address is itself a service VIP, one of its endpoints; when
 * it has none, the VIP itself). A waypoint not known yet refuses the connection: it must not bypass
 * the waypoint's policy.
 */
static __always_inline enum sm_counter waypoint_destination(const struct sm_waypoint *waypoint, bool want_v4,
							    struct dest *dst)
{
	const struct sm_frontend_value *frontend;
	const struct sm_service_value *svc;
	const struct sm_endpoint_value *endpoint;
	const struct sm_backend_value *backend;
	__u32 service_id;
	int index;

	if (want_v4 && (waypoint->flags & SM_WAYPOINT_V4))
		set_v4(dst, waypoint->addr4);
	else if (!want_v4 && (waypoint->flags & SM_WAYPOINT_V6))
		set_v6(dst, waypoint->addr6);
	else
		return SM_COUNTER_WAYPOINT_UNRESOLVED;
	dst->port = waypoint->port;

	frontend = bpf_map_lookup_elem(&sm_frontends, dst->addr);
	if (!frontend || frontend->kind != SM_FRONTEND_SERVICE)
		return SM_COUNTER_VIA_WAYPOINT;
	service_id = frontend->id;
	svc = bpf_map_lookup_elem(&sm_services, &service_id);
	if (!svc || (index = service_port_index(svc, dst->port)) < 0)
		return SM_COUNTER_VIA_WAYPOINT;
	backend = pick_backend(service_id, svc, &endpoint);
	if (backend && backend_address(backend, want_v4, dst))
		dst->port = endpoint->target_ports[index & (SM_MAX_PORTS - 1)];
	return SM_COUNTER_VIA_WAYPOINT;
}

/* Where a connection to dst goes: its outcome; dst is rewritten when redirected or via a waypoint. */
static __always_inline enum sm_counter translate(struct dest *dst, bool tcp)
{
	const struct sm_frontend_value *frontend;
	const struct sm_service_value *svc;
	const struct sm_endpoint_value *endpoint;
	const struct sm_backend_value *backend;
	__u32 id;
	int index;
	bool want_v4 = dst->v4;

	frontend = bpf_map_lookup_elem(&sm_frontends, dst->addr);
	if (!frontend)
		return SM_COUNTER_UNTOUCHED;
	id = frontend->id;

	if (frontend->kind == SM_FRONTEND_WORKLOAD) {
		/* A pod address is only ever redirected to its workload's waypoint. */
		backend = bpf_map_lookup_elem(&sm_backends, &id);
		if (!tcp || !backend || !backend->waypoint.flags)
			return SM_COUNTER_UNTOUCHED;
		return waypoint_destination(&backend->waypoint, want_v4, dst);
	}

	svc = bpf_map_lookup_elem(&sm_services, &id);
	if (!svc || svc->lb_mode == SM_LB_PASSTHROUGH || (index = service_port_index(svc, dst->port)) < 0)
		return SM_COUNTER_UNTOUCHED;
	if (tcp && svc->waypoint.flags)
		return waypoint_destination(&svc->waypoint, want_v4, dst);

	backend = pick_backend(id, svc, &endpoint);
	if (!backend)
		return no_endpoint(svc);
	if (tcp && backend->waypoint.flags)
		return waypoint_destination(&backend->waypoint, want_v4, dst);
	if (!backend_address(backend, want_v4, dst))
		return SM_COUNTER_NO_ENDPOINT;
	dst->port = endpoint->target_ports[index & (SM_MAX_PORTS - 1)];
	return SM_COUNTER_REDIRECTED;
}

/* The DNS proxy's address of a family, when one is set. */
static __always_inline bool dns_proxy(const struct sm_config *cfg, bool v4, struct dest *proxy)
{
	if (!cfg)
		return false;
	if (v4 && (cfg->flags & SM_CONFIG_DNS4))
		set_v4(proxy, cfg->dns_addr4);
	else if (!v4 && (cfg->flags & SM_CONFIG_DNS6))
		set_v6(proxy, cfg->dns_addr6);
	else
		return false;
	return true;
}

/* Port 53 goes to the DNS proxy when one is set (and is not itself the destination). */
static __always_inline bool dns_destination(const struct sm_config *cfg, struct dest *dst)
{
	struct dest proxy = {};

	if (dst->port != bpf_htons(SM_DNS_PORT) || !dns_proxy(cfg, dst->v4, &proxy))
		return false;
	if (same_addr(proxy.addr, dst->addr))
		return false;
	__builtin_memcpy(dst->addr, proxy.addr, 16);
	dst->port = cfg->dns_port;
	return true;
}

/* ---- a followed translated TCP socket's slot (bpf/sockmesh.h, sm_orig_slots) ---- */

static __always_inline struct sm_orig_slot *orig_slot(__u64 cookie)
{
	__u32 index = (__u32)cookie & (SM_ORIG_SLOTS - 1);

	return bpf_map_lookup_elem(&sm_orig_slots, &index);
}

/* The socket's cookie, 0 if it has none yet, read through its BTF: sk_msg and iterators have no cookie
 * helper, and bpf_get_socket_cookie would give one to every socket it is asked about. */
static __always_inline __u64 tp_cookie(const struct tcp_sock *tp)
{
	return tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
}

/* The same from a socket pointer: a socket that holds a slot got its cookie when it claimed it. */
static __always_inline __u64 known_cookie(void *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	return tp ? tp_cookie(tp) : 0;
}

/* The slot this socket (its cookie) holds, if it holds one: none without a cookie (a free slot holds 0). */
static __always_inline struct sm_orig_slot *held_slot(__u64 cookie)
{
	struct sm_orig_slot *slot = cookie ? orig_slot(cookie) : NULL;

	return slot && READ_ONCE(slot->cookie) == cookie ? slot : NULL;
}

/* Whether telemetry follows the socket that holds slot: its start confirmed the slot and gave the stats a
 * direction. Else nothing reads the slot's stats, and the socket's release frees the slot. */
static __always_inline bool slot_followed(const struct sm_orig_slot *slot)
{
	return !READ_ONCE(slot->unconfirmed_since) && slot->stats.direction;
}

/* At a sock_addr hook: a TCP socket's cookie, 0 for UDP (which never holds a slot) or a socket without one. */
static __always_inline __u64 tcp_cookie(struct bpf_sock_addr *ctx)
{
	return ctx->protocol == IPPROTO_TCP ? known_cookie(ctx->sk) : 0;
}

/*
 * The socket's slot, taken if it is free or its own, or if a connect that never reached TCP_CONNECT_CB
 * left it unconfirmed for SM_ORIG_SLOT_STALE_S. NULL: another socket holds it. Taking over a stale slot
 * first swaps its unconfirmed_since to 0, so that two sockets never both take it; a socket that has just
 * claimed a slot shows 0 there until it notes its time, and is left alone meanwhile. A slot claimed
 * confirmed (no start will confirm it: telemetry is off) gets 0 there, also when its socket connects again;
 * only an unconfirmed one reads the clock (7% of connect4's time in a profile).
 */
static __always_inline struct sm_orig_slot *claim_slot(__u64 cookie, bool confirmed)
{
	struct sm_orig_slot *slot = orig_slot(cookie);
	__u64 holder, since;

	if (!slot)
		return NULL;
	holder = READ_ONCE(slot->cookie);
	if (holder == cookie) {
		if (READ_ONCE(slot->unconfirmed_since)) /* connecting again: stale from now on, or confirmed now */
			slot->unconfirmed_since = confirmed ? 0 : bpf_ktime_get_coarse_ns();
		return slot;
	}
	if (holder) {
		since = READ_ONCE(slot->unconfirmed_since);
		if (!since || bpf_ktime_get_coarse_ns() - since < SM_ORIG_SLOT_STALE_S * 1000000000ULL)
			return NULL;
		if (__sync_val_compare_and_swap(&slot->unconfirmed_since, since, 0) != since)
			return NULL;
	}
	if (__sync_val_compare_and_swap(&slot->cookie, holder, cookie) != holder)
		return NULL;
	slot->unconfirmed_since = confirmed ? 0 : bpf_ktime_get_coarse_ns();
	return slot;
}

/* The slot goes back, once its socket is done with it. */
static __always_inline void release_slot(struct sm_orig_slot *slot, __u64 cookie)
{
	slot->state.flags = 0;
	slot->unconfirmed_since = 0;
	__sync_val_compare_and_swap(&slot->cookie, cookie, 0);
}

/* A TCP socket connecting without a slot gives back the one an earlier connect of it claimed. */
static __always_inline void release_held_slot(struct bpf_sock_addr *ctx)
{
	__u64 cookie = tcp_cookie(ctx);
	struct sm_orig_slot *slot = held_slot(cookie);

	if (slot)
		release_slot(slot, cookie);
}

/* The word of sm_tlv_ports that holds a port's (host order) bit, and that bit. */
static __always_inline __u32 *tlv_port_word(__u16 port, __u32 *bit)
{
	struct sm_port_bits *ports = bpf_map_lookup_elem(&sm_tlv_ports, &(__u32){ 0 });

	*bit = 1u << (port & 31);
	return ports ? &ports->words[(port >> 5) & (SM_TLV_PORT_WORDS - 1)] : NULL;
}

/* Before a socket sent to a waypoint can reach sockops: its port is one that a TLV is owed to. */
static __always_inline void mark_tlv_port(__be16 port)
{
	__u32 bit, *word = tlv_port_word(bpf_ntohs(port), &bit);

	if (word && !(*word & bit)) /* written once a port: the line stays shared between CPUs */
		__sync_fetch_and_or(word, bit);
}

/* What a socket remembers of its connect: its slot's when it holds one, else its socket storage's. */
static __always_inline struct sm_sock_state *orig_state(void *sk, __u64 cookie)
{
	struct sm_orig_slot *slot = held_slot(cookie);

	return slot ? &slot->state : bpf_sk_storage_get(&sm_sock_state, sk, 0, 0);
}

/* Set by the loader when sm_sock_release is loaded (its kfunc needs Linux 6.2) and attached before connect4/6:
 * only then may a slot that telemetry does not follow be claimed, since nothing else would free it. */
const volatile bool release_frees_slots = false;

/*
 * Remembers what the application asked for, for getpeername, recvmsg and the TLV: in a slot for a TCP
 * socket when it gets one, and when either the socket's release or telemetry's close frees it; else in its
 * socket storage. With the telemetry knob off the slot is confirmed at once: no start will confirm it, and
 * the socket's release gives it back.
 */
static __always_inline void remember(struct bpf_sock_addr *ctx, const struct sm_config *cfg, const struct dest *orig,
				     __u8 flags)
{
	struct sm_sock_state *state = NULL;

	if (ctx->protocol == IPPROTO_TCP && (release_frees_slots || telemetry_on(cfg))) {
		struct sm_orig_slot *slot = claim_slot(bpf_get_socket_cookie(ctx), !telemetry_on(cfg));

		if (!slot)
			count(SM_COUNTER_ORIG_SLOT_TAKEN); /* so that a node short of slots shows it */
		else if (!telemetry_on(cfg))
			slot->stats.direction = 0; /* not followed (an earlier holder's stats may be in it) */
		state = slot ? &slot->state : NULL;
	} else {
		release_held_slot(ctx); /* from an earlier connect of this socket */
	}
	if (!state)
		state = bpf_sk_storage_get(&sm_sock_state, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!state) {
		count(SM_COUNTER_ERRORS);
		return;
	}
	__builtin_memcpy(state->orig_addr, orig->addr, 16);
	state->orig_port = orig->port;
	state->flags = flags | SM_SOCK_REDIRECTED | (orig->v4 ? SM_SOCK_ORIG_V4 : 0);
}

/* A socket connecting again (UDP, or TCP after a failed connect) to something not redirected: what it
 * remembered of an earlier connect no longer holds. */
static __always_inline void forget(struct bpf_sock_addr *ctx)
{
	struct sm_sock_state *state;

	release_held_slot(ctx);
	state = bpf_sk_storage_get(&sm_sock_state, ctx->sk, 0, 0);
	if (state)
		state->flags = 0;
}

/*
 * Where a connect (or, dns_only, an unconnected datagram) to dst goes, counted here and nowhere else:
 * one outcome per decision. SM_COUNTER_MAX (not counted): a datagram that is not DNS.
 */
static __always_inline enum sm_counter decide(const struct sm_config *cfg, struct dest *dst, bool tcp, bool dns_only)
{
	enum sm_counter outcome;

	if (dns_destination(cfg, dst))
		outcome = SM_COUNTER_DNS;
	else if (dns_only)
		return SM_COUNTER_MAX;
	else
		outcome = translate(dst, tcp);
	count(outcome);
	return outcome;
}

/* The whole connect/sendmsg decision; returns 1 to let the syscall go on, 0 to refuse it. */
static __always_inline int steer(struct bpf_sock_addr *ctx, struct dest *dst, bool dns_only)
{
	const struct sm_config *cfg = knobs();
	struct dest orig = *dst;

	/* unconnected UDP: only DNS is steered, and most datagrams are not DNS */
	if (dns_only && dst->port != bpf_htons(SM_DNS_PORT))
		return 1;
	if (!is_enrolled(ctx, cfg))
		return 1;

	switch (decide(cfg, dst, ctx->protocol == IPPROTO_TCP, dns_only)) {
	case SM_COUNTER_DNS:
		remember(ctx, cfg, &orig, dns_only ? SM_SOCK_DNS : 0);
		return 1;
	case SM_COUNTER_MAX:
		return 1;
	case SM_COUNTER_REDIRECTED:
		remember(ctx, cfg, &orig, 0);
		return 1;
	case SM_COUNTER_VIA_WAYPOINT:
		mark_tlv_port(dst->port);
		remember(ctx, cfg, &orig, SM_SOCK_TLV_PENDING);
		return 1;
	case SM_COUNTER_WAYPOINT_UNRESOLVED:
		forget(ctx);
		return 0;
	default:
		forget(ctx);
		return 1;
	}
}

static __always_inline void dest_from_ctx6(const struct bpf_sock_addr *ctx, struct dest *dst)
{
	dst->addr[0] = ctx->user_ip6[0];
	dst->addr[1] = ctx->user_ip6[1];
	dst->addr[2] = ctx->user_ip6[2];
	dst->addr[3] = ctx->user_ip6[3];
	dst->port = (__be16)ctx->user_port;
	dst->v4 = is_mapped_v4(dst->addr);
}

static __always_inline void dest_to_ctx6(struct bpf_sock_addr *ctx, const struct dest *dst)
{
	ctx->user_ip6[0] = dst->addr[0];
	ctx->user_ip6[1] = dst->addr[1];
	ctx->user_ip6[2] = dst->addr[2];
	ctx->user_ip6[3] = dst->addr[3];
	ctx->user_port = dst->port;
}

static __always_inline int steer4(struct bpf_sock_addr *ctx, bool dns_only)
{
	struct dest dst = {};
	int ret;

	set_v4(&dst, ctx->user_ip4);
	dst.port = (__be16)ctx->user_port;
	ret = steer(ctx, &dst, dns_only);
	ctx->user_ip4 = dst.addr[3];
	ctx->user_port = dst.port;
	return ret;
}

static __always_inline int steer6(struct bpf_sock_addr *ctx, bool dns_only)
{
	struct dest dst = {};
	int ret;

	dest_from_ctx6(ctx, &dst);
	ret = steer(ctx, &dst, dns_only);
	dest_to_ctx6(ctx, &dst);
	return ret;
}

SEC("cgroup/connect4")
int sm_connect4(struct bpf_sock_addr *ctx)
{
	return steer4(ctx, false);
}

SEC("cgroup/connect6")
int sm_connect6(struct bpf_sock_addr *ctx)
{
	return steer6(ctx, false);
}

SEC("cgroup/sendmsg4")
int sm_sendmsg4(struct bpf_sock_addr *ctx)
{
	return steer4(ctx, true);
}

SEC("cgroup/sendmsg6")
int sm_sendmsg6(struct bpf_sock_addr *ctx)
{
	return steer6(ctx, true);
}

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak; /* weak: not loaded before 6.2 */

/*
 * A socket's last close: the slot it holds goes back, unless telemetry follows its connection, whose last
 * event (at TCP_CLOSE, often after this) still reads the slot and then frees it. Nothing can ask the
 * socket for its peer any more. Every socket of the cgroup passes here: one without a cookie (never
 * translated, never followed) returns before looking at any slot.
 */
SEC("cgroup/sock_release")
int sm_sock_release(struct bpf_sock *sk)
{
	/* the cookie through the socket's BTF: this hook has no bpf_skc_to_tcp_sock, and the cookie helper
	 * would give one to every socket */
	struct sock *s = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct sock));
	__u64 cookie = sk->protocol == IPPROTO_TCP ? s->__sk_common.skc_cookie.counter : 0;
	struct sm_orig_slot *slot = held_slot(cookie);

	if (slot && !slot_followed(slot))
		release_slot(slot, cookie);
	return 1;
}

/* ---- giving the application back the address it asked for ---- */

static __always_inline const struct sm_sock_state *redirected_state(struct bpf_sock_addr *ctx)
{
	const struct sm_sock_state *state = orig_state(ctx->sk, tcp_cookie(ctx));

	return state && (state->flags & SM_SOCK_REDIRECTED) ? state : NULL;
}

/* For a DNS reply on an unconnected socket, only what comes from the proxy is the "server's". */
static __always_inline bool from_dns_proxy(const struct sm_config *cfg, const struct dest *src)
{
	struct dest proxy = {};

	return dns_proxy(cfg, src->v4, &proxy) && src->port == cfg->dns_port && same_addr(proxy.addr, src->addr);
}

static __always_inline bool restore(const struct sm_sock_state *state, struct dest *addr)
{
	if (!state)
		return false;
	if ((state->flags & SM_SOCK_DNS) && !from_dns_proxy(knobs(), addr))
		return false;
	__builtin_memcpy(addr->addr, state->orig_addr, 16);
	addr->port = state->orig_port;
	return true;
}

static __always_inline int restore4(struct bpf_sock_addr *ctx)
{
	struct dest addr = {};

	set_v4(&addr, ctx->user_ip4);
	addr.port = (__be16)ctx->user_port;
	if (restore(redirected_state(ctx), &addr)) {
		ctx->user_ip4 = addr.addr[3];
		ctx->user_port = addr.port;
	}
	return 1;
}

static __always_inline int restore6(struct bpf_sock_addr *ctx)
{
	struct dest addr = {};

	dest_from_ctx6(ctx, &addr);
	if (restore(redirected_state(ctx), &addr))
		dest_to_ctx6(ctx, &addr);
	return 1;
}

SEC("cgroup/getpeername4")
int sm_getpeername4(struct bpf_sock_addr *ctx)
{
	return restore4(ctx);
}

SEC("cgroup/getpeername6")
int sm_getpeername6(struct bpf_sock_addr *ctx)
{
	return restore6(ctx);
}

SEC("cgroup/recvmsg4")
int sm_recvmsg4(struct bpf_sock_addr *ctx)
{
	return restore4(ctx);
}

SEC("cgroup/recvmsg6")
int sm_recvmsg6(struct bpf_sock_addr *ctx)
{
	return restore6(ctx);
}

/* ---- the sockhash: waypoint TLVs and same-node acceleration ---- */

/* Context fields are read one by one at constant offsets: the verifier refuses pointers into them. */

/* remote_port: sockops and sk_msg hand out the big-endian port shifted into the upper half on
 * little-endian machines (and not shifted elsewhere); a connected socket never has port 0. */
static __always_inline __u32 remote_port(__u32 field)
{
	return field >> 16 ? bpf_ntohl(field) : bpf_ntohs((__u16)field);
}

static __always_inline void finish_key(struct sm_sock_key *key, void *ctx)
{
	key->netns = is_loopback((const __u32 *)key->remote_addr) ? bpf_get_netns_cookie(ctx) : 0;
}

/* The socket's own key, but for its netns (finish_key): only a socket that enters the sockhash needs it. */
static __always_inline void key_from_ops(struct sm_sock_key *key, struct bpf_sock_ops *ops)
{
	__u32 *local = (__u32 *)key->local_addr, *remote = (__u32 *)key->remote_addr;

	if (ops->family == AF_INET) {
		map_v4(local, ops->local_ip4);
		map_v4(remote, ops->remote_ip4);
	} else {
		local[0] = ops->local_ip6[0];
		local[1] = ops->local_ip6[1];
		local[2] = ops->local_ip6[2];
		local[3] = ops->local_ip6[3];
		remote[0] = ops->remote_ip6[0];
		remote[1] = ops->remote_ip6[1];
		remote[2] = ops->remote_ip6[2];
		remote[3] = ops->remote_ip6[3];
	}
	key->local_port = ops->local_port;
	key->remote_port = remote_port(ops->remote_port);
}

/* The key its peer has: ours mirrored. */
static __always_inline void peer_key_from_msg(struct sm_sock_key *key, struct sk_msg_md *msg)
{
	__u32 *local = (__u32 *)key->local_addr, *remote = (__u32 *)key->remote_addr;

	if (msg->family == AF_INET) {
		map_v4(local, msg->remote_ip4);
		map_v4(remote, msg->local_ip4);
	} else {
		local[0] = msg->remote_ip6[0];
		local[1] = msg->remote_ip6[1];
		local[2] = msg->remote_ip6[2];
		local[3] = msg->remote_ip6[3];
		remote[0] = msg->local_ip6[0];
		remote[1] = msg->local_ip6[1];
		remote[2] = msg->local_ip6[2];
		remote[3] = msg->local_ip6[3];
	}
	key->local_port = remote_port(msg->remote_port);
	key->remote_port = msg->local_port;
	finish_key(key, msg);
}

/* Whether a socket connected to this remote port (the context's field) may owe a TLV: only one connected to
 * a port that connect4/6 sent a waypoint's TLV to (its slot or storage says whether it does; looking that up
 * costs more). */
static __always_inline bool port_owed_tlv(__u32 remote_port_field)
{
	__u32 bit, *word = tlv_port_word(remote_port(remote_port_field), &bit);

	return word && (*word & bit);
}

/* Whether a socket at this callback may owe its first message a TLV: only a connecting one, to such a port. */
static __always_inline bool may_owe_tlv(struct bpf_sock_ops *ops, __u32 op)
{
	return op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && port_owed_tlv(ops->remote_port);
}

static __always_inline bool peer_is_local(const __u8 remote[16])
{
	return is_loopback((const __u32 *)remote) || bpf_map_lookup_elem(&sm_local_addrs, remote);
}

#include "bpf/telemetry.bpf.h"

/*
 * Into the sockhash: accelerated (its peer is local), or owing its first message a TLV. An
 * accelerated socket needs no storage of its own (creating it costs a microsecond a socket):
 * sk_msg redirects any message whose peer it finds in the sockhash.
 */
static __always_inline void enter_sockhash(struct bpf_sock_ops *ops, struct bpf_sock *sk, const struct sm_config *cfg,
					   struct sm_sock_key *key, bool may_owe)
{
	struct sm_sock_state *state;
	bool accelerate = accelerate_on(cfg) && peer_is_local(key->remote_addr);

	if (!accelerate) {
		if (!may_owe)
			return;
		state = orig_state(sk, known_cookie(sk));
		if (!state || !(state->flags & SM_SOCK_TLV_PENDING))
			return;
		state->flags |= SM_SOCK_TLV_ONLY;
		/* to leave the sockhash once its first message, with the TLV, is on its way (leave_sockhash) */
		if (bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG))
			count(SM_COUNTER_ERRORS);
	}
	finish_key(key, ops);
	if (accelerate)
		conn_accelerated(sk, key); /* before its peer can find it */
	if (bpf_sock_hash_update(ops, &sm_sockhash, key, BPF_ANY))
		count(SM_COUNTER_ERRORS);
}

/*
 * A socket in the sockhash only for its TLV, once the TLV is written (its first send), leaves it: sk_msg has
 * nothing more to do for it, and out of the sockhash its later sends and receives take TCP's own path
 * instead of the sockmap's. Sockops sees it at the next segment it sizes; the psock goes once that send
 * ends. sk_msg may not take a socket out of a sockhash, sockops may.
 */
static __always_inline void leave_sockhash(struct bpf_sock_ops *ops)
{
	struct sm_sock_key key = {};
	struct sm_sock_state *state;
	struct bpf_sock *sk = ops->sk;

	if (!sk)
		return;
	state = orig_state(sk, known_cookie(sk));
	if (state && (state->flags & SM_SOCK_TLV_PENDING))
		return; /* not yet sent */
	if (state) {
		key_from_ops(&key, ops);
		finish_key(&key, ops);
		bpf_map_delete_elem(&sm_sockhash, &key);
	}
	/* Without a state here the socket was put in an older layout's sockhash, whose sk_msg it keeps and
	 * which this program cannot reach: it stays there, but its segments stop calling us. */
	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
}

SEC("sockops")
int sm_sockops(struct bpf_sock_ops *ops)
{
	const struct sm_config *cfg;
	struct sm_sock_key key = {};
	struct bpf_sock *sk;
	__u32 op = ops->op;
	bool may_owe;
	__u64 netns;

	if (op == BPF_SOCK_OPS_STATE_CB) {
		conn_progress(ops); /* only sockets that telemetry follows asked for it */
		return 1;
	}
	if (op == BPF_SOCK_OPS_HDR_OPT_LEN_CB) {
		leave_sockhash(ops); /* only sockets in the sockhash for their TLV asked for it */
		return 1;
	}
	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	cfg = knobs();
	may_owe = may_owe_tlv(ops, op);
	/* with both knobs off, any socket but one that may owe a TLV returns before reading anything of its
	 * own: 0.1 µs less a connection (docs/benchmarks.md, "Sockops that return at once") */
	if (!telemetry_on(cfg) && !accelerate_on(cfg) && !may_owe)
		return 1;
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB && !telemetry_on(cfg))
		return 1;
	if (ops->family != AF_INET && ops->family != AF_INET6)
		return 1;
	sk = ops->sk;
	if (!sk)
		return 1;
	netns = bpf_get_netns_cookie(ops); /* once: whether it is enrolled, and telemetry's count of what it started */
	if (!netns_enrolled(cfg, netns))
		return 1;
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		conn_start(ops, sk, SM_CONN_OUTBOUND, netns);
		return 1;
	}
	key_from_ops(&key, ops);
	/* followed before it can enter the sockhash, so that no message its peer redirects goes uncounted */
	/* reporter="destination": connections to a workload of this node, as ztunnel's inbound (a loopback
	 * listener that is no workload's, such as a waypoint's or the pod's own localhost, is not one), unless
	 * a local connecting end reports this one too */
	if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && telemetry_on(cfg) &&
	    bpf_map_lookup_elem(&sm_local_addrs, key.local_addr) && !conn_handed_over(ops, &key))
		conn_start(ops, sk, SM_CONN_INBOUND, netns);
	enter_sockhash(ops, sk, cfg, &key, may_owe);
	/* with the knob on, a local peer made it accelerated (its entry is made there) and any other needs none:
	 * only with it off does a connecting end look its peer up among the local workloads */
	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && telemetry_on(cfg) && !accelerate_on(cfg))
		conn_established_unaccelerated(ops, sk, &key);
	return 1;
}

/* The TLV of a destination (sockmesh.h): type, value length, address and port, end marker. */
static __always_inline void fill_tlv(__u8 *tlv, const __u8 *addr, __u32 addr_len, __be16 port, __u32 end_off)
{
	__be32 value_len = bpf_htonl(addr_len + sizeof(port));

	tlv[SM_TLV_TYPE_OFF] = SM_TLV_TYPE_ORIG_DST;
	__builtin_memcpy(&tlv[SM_TLV_LENGTH_OFF], &value_len, sizeof(value_len));
	__builtin_memcpy(&tlv[SM_TLV_VALUE_OFF], addr, addr_len);
	__builtin_memcpy(&tlv[SM_TLV_VALUE_OFF + addr_len], &port, sizeof(port));
	tlv[end_off + SM_TLV_TYPE_OFF] = SM_TLV_TYPE_END; /* its length stays 0 */
}

/* Prepends the original destination (docs/wire.md) to the first message; false when it could not. */
static __always_inline bool write_tlv(struct sk_msg_md *msg, const struct sm_sock_state *state)
{
	bool v4 = state->flags & SM_SOCK_ORIG_V4;
	__u32 len = v4 ? SM_TLV_LEN_V4 : SM_TLV_LEN_V6;
	__u8 tlv[SM_TLV_LEN_V6] = {};
	__u8 *data, *end;

	if (v4)
		fill_tlv(tlv, &state->orig_addr[12], 4, state->orig_port, SM_TLV_END_OFF_V4);
	else
		fill_tlv(tlv, state->orig_addr, 16, state->orig_port, SM_TLV_END_OFF_V6);
	if (bpf_msg_push_data(msg, 0, len, 0) || bpf_msg_pull_data(msg, 0, len, 0))
		return false;
	data = msg->data;
	end = msg->data_end;
	if (v4) {
		if (data + SM_TLV_LEN_V4 > end)
			return false;
		__builtin_memcpy(data, tlv, SM_TLV_LEN_V4);
	} else {
		if (data + SM_TLV_LEN_V6 > end)
			return false;
		__builtin_memcpy(data, tlv, SM_TLV_LEN_V6);
	}
	count(SM_COUNTER_TLV);
	return true;
}

SEC("sk_msg")
int sm_sk_msg(struct sk_msg_md *msg)
{
	const struct sm_config *cfg;
	struct sm_sock_state *state = NULL;
	struct sm_sock_key peer = {};
	struct bpf_sock *sk = msg->sk;
	__u64 cookie = 0;

	if (!sk)
		return SK_PASS;
	/* only a socket connected to a port a TLV was sent to can owe one: an accelerated socket on any other
	 * port looks up neither its slot nor its storage, on every message */
	if (port_owed_tlv(msg->remote_port)) {
		cookie = known_cookie(sk);
		state = orig_state(sk, cookie);
	}
	if (state && (state->flags & SM_SOCK_TLV_PENDING)) {
		/* once only, whatever happens: a TLV in the middle of the stream would corrupt it; and a
		 * first message without its TLV must not reach the waypoint */
		state->flags &= ~SM_SOCK_TLV_PENDING;
		if (!write_tlv(msg, state)) {
			count(SM_COUNTER_ERRORS);
			return SK_DROP;
		}
		conn_tlv(sk, cookie, state->flags & SM_SOCK_ORIG_V4 ? SM_TLV_LEN_V4 : SM_TLV_LEN_V6);
	}
	if (state && (state->flags & SM_SOCK_TLV_ONLY))
		return SK_PASS; /* its peer is not local: no redirect to try */
	cfg = knobs();
	if (!accelerate_on(cfg))
		return SK_PASS;

	/* the peer is in the sockhash only when it is local and accelerated; else the message goes out */
	peer_key_from_msg(&peer, msg);
	if (bpf_msg_redirect_hash(msg, &sm_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		count(SM_COUNTER_ACCELERATED);
		/* knob off: nothing more per message (connections followed before go uncounted meanwhile) */
		if (telemetry_on(cfg))
			conn_redirected(sk, &peer, msg->size);
	}
	return SK_PASS;
}

#include "bpf/authz.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
