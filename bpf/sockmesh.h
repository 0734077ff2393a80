/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The contract between the BPF programs and userspace: every map's key and value, and the constants
 * both sides must agree on. Included by the bpf/ programs (after vmlinux.h) and by userspace (workload/,
 * datapath/). Fixed-width types, explicit padding, a static assertion on every size: a change here is
 * a change of SM_LAYOUT_VERSION, which tells an agent whether it may adopt maps pinned by another.
 * test/test_contract.c holds every struct's field offsets, every enum value and every constant below
 * against test/fixtures/contract/layout-v<N>.txt, so a change without a bump fails. A retired struct
 * field or flag bit keeps its name (SM_..._RETIRED_...) and is never reused.
 *
 * Addresses are stored as 16 bytes; IPv4 as the IPv4-mapped IPv6 address ::ffff:a.b.c.d, so one map
 * serves both families. Ports and addresses are in network byte order, as the hooks see them.
 */
#ifndef SOCKMESH_BPF_CONTRACT_H
#define SOCKMESH_BPF_CONTRACT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* 1: the first layout. 2: SM_SOCK_TLV_ONLY moved off bit 3, which layout 1 had given to
 * SM_SOCK_ACCELERATED, retired then reused without a bump. 3: L4 authorization (the sm_authz_* maps,
 * their counters) and L4 telemetry (sm_conn_stats, sm_conn_events, SM_CONFIG_TELEMETRY). 4: a local
 * connection's two ends reported by its connecting end (SM_CONN_BOTH_ENDS, sm_conn_received's value a
 * struct sm_conn_received with its handover). 5: sm_conn_received preallocated. 6: sm_conn_started (the
 * followed connections each namespace started, so that the agent flushes only namespaces with some), and
 * an open connection reported only when its bytes moved (sm_conn_stats.reported_sent, reported_received);
 * SM_CONN_REPORT_NS 1 s (was 2 s), under the agent's flush interval. 7: sm_orig_slots (a followed translated
 * TCP socket's original destination and stats in a slot found by its cookie, not in socket storage). 8:
 * sm_tlv_ports (the ports a connect sent to a waypoint owing a TLV: sockops looks for a TLV only on those).
 * 9: SM_COUNTER_ORIG_SLOT_TAKEN (a followed translated connect that found its slot taken). 10: a slot for
 * every translated TCP socket that owes no TLV, followed or not; one not followed is freed by the
 * sm_sock_release program at the socket's last close (where the kernel has its kfunc, Linux 6.2). 11: a
 * socket sent to a waypoint takes a slot too: sockops and sk_msg read its pending TLV there (a layout 10
 * program would look for it in socket storage only, and send the first message without it). 12:
 * sm_authz_state.unguarded_generation where its padding was (tables that guard no address: the check
 * returns before any lookup). */
#define SM_LAYOUT_VERSION 12

/* Limits a resource is checked against before it reaches the maps. */
#define SM_MAX_PORTS 16		/* service ports per service */
#define SM_MAX_PRIORITIES 8	/* locality priorities: 0 (all scopes match) .. 6 (none of 6) */
#define SM_MAX_SLOTS 65535	/* endpoint slots per service and priority */
#define SM_MAX_WEIGHT 64	/* slots per endpoint: Workload.capacity is clamped to this */

/* The BPF programs bound an index into ports[] and endpoint_counts[] with "& (N - 1)" for the verifier. */
_Static_assert((SM_MAX_PORTS & (SM_MAX_PORTS - 1)) == 0, "SM_MAX_PORTS is used as a mask: a power of two");
_Static_assert((SM_MAX_PRIORITIES & (SM_MAX_PRIORITIES - 1)) == 0, "SM_MAX_PRIORITIES is used as a mask: a power of two");

/*
 * Default capacities of the model's maps (the entries the model fills them to); the agent may size
 * them otherwise at creation. Their max_entries in the kernel are SM_MAP_KERNEL_ENTRIES(capacity):
 * a change writes what it adds before it deletes what it replaces (so nothing ever dangles), and the
 * entries in flight are at most the state before plus the state after. These maps allocate per entry
 * (BPF_F_NO_PREALLOC), so the room costs nothing until used.
 */
#define SM_DEFAULT_MAX_FRONTENDS 262144
#define SM_DEFAULT_MAX_SERVICES 65536
#define SM_DEFAULT_MAX_ENDPOINTS 1048576
#define SM_DEFAULT_MAX_BACKENDS 262144
#define SM_MAP_KERNEL_ENTRIES(capacity) ((capacity) * 2)
#define SM_MAX_CAPACITY (1u << 30) /* so that the kernel's entries fit in 32 bits */

enum sm_frontend_kind {
	SM_FRONTEND_SERVICE = 1,  /* id is a service id: load-balance */
	SM_FRONTEND_WORKLOAD = 2, /* id is a backend id: a pod address whose workload has a waypoint */
};

enum sm_lb_mode {
	SM_LB_RANDOM = 0,	/* weighted random over priority 0 (which then holds every endpoint) */
	SM_LB_STRICT = 1,	/* priority 0 only; none → the connect is left alone */
	SM_LB_FAILOVER = 2,	/* the first priority with endpoints */
	SM_LB_PASSTHROUGH = 3,	/* never rewritten */
};

enum sm_family_flags {
	SM_HAS_V4 = 1 << 0,
	SM_HAS_V6 = 1 << 1,
};

enum sm_waypoint_flags {
	SM_WAYPOINT_V4 = 1 << 0,	 /* addr4 is set */
	SM_WAYPOINT_V6 = 1 << 1,	 /* addr6 is set */
	SM_WAYPOINT_UNRESOLVED = 1 << 2, /* names a service that has no VIP yet: fail closed */
};

/* A waypoint: where traffic goes instead, with the port it listens on (hbone_mtls_port). */
struct sm_waypoint {
	__be32 addr4;
	__u8 addr6[16];
	__be16 port;
	__u8 flags; /* enum sm_waypoint_flags; 0: no waypoint */
	__u8 pad;
};
_Static_assert(sizeof(struct sm_waypoint) == 24, "sm_waypoint layout");

/* sm_frontends: a service VIP, or a pod address that has a waypoint. */
struct sm_frontend_key {
	__u8 addr[16];
};
_Static_assert(sizeof(struct sm_frontend_key) == 16, "sm_frontend_key layout");

struct sm_frontend_value {
	__u32 id;
	__u8 kind; /* enum sm_frontend_kind */
	__u8 pad[3];
};
_Static_assert(sizeof(struct sm_frontend_value) == 8, "sm_frontend_value layout");

/* sm_services: keyed by service id (__u32, never 0). */
struct sm_service_value {
	__u64 name_hash; /* of "namespace/hostname": lets a restarted agent keep the id */
	struct sm_waypoint waypoint;
	__be16 ports[SM_MAX_PORTS]; /* service ports; index i matches target_ports[i] of each endpoint */
	__u16 endpoint_counts[SM_MAX_PRIORITIES];
	__u8 n_ports;
	__u8 lb_mode; /* enum sm_lb_mode */
	__u8 pad[6];
};
_Static_assert(sizeof(struct sm_service_value) == 88, "sm_service_value layout");

/* sm_endpoints: slot index of a priority of a service → the backend and its target ports. */
struct sm_endpoint_key {
	__u32 service_id;
	__u8 priority;
	__u8 pad[3];
	__u32 index;
};
_Static_assert(sizeof(struct sm_endpoint_key) == 12, "sm_endpoint_key layout");

struct sm_endpoint_value {
	__u32 backend_id;
	__be16 target_ports[SM_MAX_PORTS]; /* per service port; this workload's own when it has them */
};
_Static_assert(sizeof(struct sm_endpoint_value) == 36, "sm_endpoint_value layout");

/* sm_backends: keyed by backend id (__u32, never 0); one per workload. */
struct sm_backend_value {
	__u64 name_hash; /* of the workload uid */
	__be32 addr4;
	__u8 addr6[16];
	__u8 families; /* enum sm_family_flags */
	__u8 pad[3];
	struct sm_waypoint waypoint;
};
_Static_assert(sizeof(struct sm_backend_value) == 56, "sm_backend_value layout");

/* ---- the datapath's own maps (written by datapath/, not by the workload model) ---- */

#define SM_DEFAULT_MAX_SOCKETS 65536	/* accelerated or waypoint sockets in the sockhash */
#define SM_DEFAULT_MAX_NETNS 4096	/* enrolled network namespaces */
#define SM_DEFAULT_MAX_LOCAL_ADDRS 4096	/* addresses of workloads on this node */
#define SM_DNS_PORT 53

/* Outcomes, counted per CPU in sm_counters. */
enum sm_counter {
	SM_COUNTER_REDIRECTED,		/* a service VIP rewritten to a backend */
	SM_COUNTER_VIA_WAYPOINT,	/* sent to a waypoint instead */
	SM_COUNTER_NO_ENDPOINT,		/* a known service port without a usable endpoint: left alone */
	SM_COUNTER_STRICT_NO_MATCH,	/* a strict-locality service with no endpoint in priority 0 */
	SM_COUNTER_UNTOUCHED,		/* not a frontend, or not a service port */
	SM_COUNTER_ACCELERATED,		/* sk_msg sends that went straight to the local peer */
	SM_COUNTER_ERRORS,		/* a helper failed */
	SM_COUNTER_DNS,			/* port 53 sent to the DNS proxy */
	SM_COUNTER_WAYPOINT_UNRESOLVED, /* the waypoint is not known yet: connect refused */
	SM_COUNTER_TLV,			/* original-destination TLVs written */
	SM_COUNTER_AUTHZ_ALLOWED,	/* a connection to a guarded local workload allowed by its policies */
	SM_COUNTER_AUTHZ_DENIED,	/* ... refused by them (the client gets a reset) */
	SM_COUNTER_AUTHZ_EXEMPT,	/* ... from the node itself (kubelet probes): not checked */
	SM_COUNTER_AUTHZ_UNGUARDED,	/* a connection in a guarded netns to an address with no policy */
	SM_COUNTER_AUTHZ_CLOSED,	/* an established connection closed because a change now denies it */
	SM_COUNTER_AUTHZ_EVENTS_LOST,	/* authorization events the ring buffer had no room for */
	SM_COUNTER_CONN_EVENTS_LOST,	/* connection events (telemetry) the ring buffer had no room for */
	SM_COUNTER_ORIG_SLOT_TAKEN,	/* a translated TCP connect whose sm_orig_slots slot another socket held */
	SM_COUNTER_MAX,
};

enum sm_config_flags {
	SM_CONFIG_ENROLL_ALL = 1 << 0,	/* every network namespace counts as enrolled */
	SM_CONFIG_ACCELERATE = 1 << 1,	/* same-node sockmap acceleration */
	SM_CONFIG_DNS4 = 1 << 2,	/* dns_addr4 is set */
	SM_CONFIG_DNS6 = 1 << 3,	/* dns_addr6 is set */
	SM_CONFIG_TELEMETRY = 1 << 4,	/* per-connection telemetry events (sm_conn_events) */
};

/* sm_config: one entry (key 0), the knobs. */
struct sm_config {
	__u8 dns_addr6[16];
	__be32 dns_addr4;
	__be16 dns_port;
	__u8 flags; /* enum sm_config_flags */
	__u8 pad;
};
_Static_assert(sizeof(struct sm_config) == 24, "sm_config layout");

/* sm_meta: one entry (key 0), what a later agent checks before adopting pinned maps. */
struct sm_meta {
	__u32 layout_version;
	__u32 pad;
};
_Static_assert(sizeof(struct sm_meta) == 8, "sm_meta layout");

enum sm_sock_flags {
	SM_SOCK_REDIRECTED = 1 << 0,	/* the destination was rewritten: getpeername gives back orig */
	SM_SOCK_RETIRED_VIA_WAYPOINT = 1 << 1, /* layout 1 until 039caa3 (2026-11-23): sent to a waypoint; never read */
	SM_SOCK_TLV_PENDING = 1 << 2,	/* the first message still needs its original-destination TLV */
	SM_SOCK_RETIRED_ACCELERATED = 1 << 3, /* layout 1 until 122d53d (2026-11-23): in the sockhash because its
					       * peer is local; then reused for TLV_ONLY without a bump */
	SM_SOCK_ORIG_V4 = 1 << 4,	/* orig_addr is an IPv4 address (IPv4-mapped) */
	SM_SOCK_DNS = 1 << 5,		/* an unconnected socket sent DNS to the proxy: only its replies are restored */
	SM_SOCK_TLV_ONLY = 1 << 6,	/* in the sockhash for its TLV alone (its peer is not local); layout 2 */
};

/* sm_sock_state (socket storage): what the application asked for, kept per socket. */
struct sm_sock_state {
	__u8 orig_addr[16];
	__be16 orig_port;
	__u8 flags; /* enum sm_sock_flags */
	__u8 pad[5];
};
_Static_assert(sizeof(struct sm_sock_state) == 24, "sm_sock_state layout");

/* sm_sockhash key: a TCP socket by its own view of the connection. netns is set only for loopback
 * pairs, whose 4-tuples repeat across namespaces; pod addresses are unique on a node. */
struct sm_sock_key {
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u32 local_port;  /* host order */
	__u32 remote_port; /* host order */
	__u64 netns;
};
_Static_assert(sizeof(struct sm_sock_key) == 48, "sm_sock_key layout");

/* ---- L4 authorization (docs/authorization.md): written by datapath/ from authz/'s compiled tables ---- */

/*
 * A connection is checked in the destination's network namespace, by an sk_lookup program, when its SYN
 * looks for a listener: (source address, destination address, destination port) → a verdict, through
 *   1. sm_authz_dests: (generation, destination address) → destination set; none: not guarded, allowed
 *   2. sm_authz_idents: source address → identity (a workload's, hashed; SM_AUTHZ_IDENTITY_NODE exempts)
 *   3. sm_authz_cidrs (LPM): (generation, source address) → CIDR class; none: class 0
 *   4. sm_authz_sources: (generation, identity or 0, CIDR class) → source class; none: class 0
 *   5. sm_authz_verdicts: (generation, set, class, port), then port 0, then class 0 with the port, then
 *      class 0 port 0: the first entry found is the verdict; the compiler writes (set, 0, 0) for every set.
 * The tables of one compilation share a generation; the agent writes a new generation whole, then flips
 * sm_authz_state.generation, then deletes the old one, so a lookup never mixes two compilations.
 * sm_authz_idents has no generation: identities are hashes of their text, the same in every compilation.
 */
#define SM_AUTHZ_IDENTITY_NONE 0		/* no identity: the address belongs to no workload */
#define SM_AUTHZ_IDENTITY_NODE 0xffffffffffffffffULL /* the node itself: never checked */
#define SM_AUTHZ_CIDR_PREFIX_BASE 32		/* an LPM prefix length counts the generation's 32 bits */

#define SM_DEFAULT_MAX_AUTHZ_IDENTS 262144	/* workload addresses of the mesh, and the node's */
#define SM_DEFAULT_MAX_AUTHZ_DESTS 8192		/* local workload addresses, two generations */
#define SM_DEFAULT_MAX_AUTHZ_CIDRS 65536	/* distinct prefixes, two generations */
#define SM_DEFAULT_MAX_AUTHZ_SOURCES 131072	/* (identity, CIDR class) pairs, two generations */
#define SM_DEFAULT_MAX_AUTHZ_VERDICTS 1048576	/* verdict entries, two generations */
#define SM_DEFAULT_MAX_AUTHZ_POLICIES 16384	/* policies counted per CPU */
#define SM_AUTHZ_EVENTS_BYTES (256 * 1024)	/* ring buffer of denials and closes */

enum sm_authz_action {
	SM_AUTHZ_ALLOW = 0,
	SM_AUTHZ_DENY = 1,
};

/* Why a verdict is what it is; ztunnel's wording is in docs/authorization.md. */
enum sm_authz_reason {
	SM_AUTHZ_NO_ALLOW_POLICIES = 1, /* allowed: no enforced ALLOW policy applies */
	SM_AUTHZ_ALLOW_MATCHED = 2,	/* allowed: policy matched */
	SM_AUTHZ_DENY_MATCHED = 3,	/* denied: "explicitly denied by: NS/NAME" (policy) */
	SM_AUTHZ_NO_ALLOW_MATCHED = 4,	/* denied: "allow policies exist, but none allowed" */
};

/* sm_authz_state: one entry (key 0). */
struct sm_authz_state {
	__u32 generation; /* of the tables in force; 0: none written yet, nothing is checked */
	/* equal to generation when those tables guard no address: the check returns at once, without a lookup
	 * (a node without policies for its workloads). It names a generation, so that a check reading the two
	 * fields across a flip takes either write whole: a stale value is never the new generation's. */
	__u32 unguarded_generation;
};
_Static_assert(sizeof(struct sm_authz_state) == 8, "sm_authz_state layout");

/* sm_authz_idents: key struct sm_frontend_key (an address), value: */
struct sm_authz_ident_value {
	__u64 identity; /* hash of "trust-domain/ns/NS/sa/SA" (never 0 or SM_AUTHZ_IDENTITY_NODE), or NODE */
};
_Static_assert(sizeof(struct sm_authz_ident_value) == 8, "sm_authz_ident_value layout");

struct sm_authz_dest_key {
	__u32 generation;
	__u8 addr[16];
};
_Static_assert(sizeof(struct sm_authz_dest_key) == 20, "sm_authz_dest_key layout");

struct sm_authz_dest_value {
	__u32 dest_set;
	__u32 pad;
};
_Static_assert(sizeof(struct sm_authz_dest_value) == 8, "sm_authz_dest_value layout");

/* sm_authz_cidrs (LPM trie): prefixlen = SM_AUTHZ_CIDR_PREFIX_BASE + the prefix of addr (IPv4: 96 + n). */
struct sm_authz_cidr_key {
	__u32 prefixlen;
	__be32 generation; /* big-endian, so that it is the leading bits of the trie's key */
	__u8 addr[16];
};
_Static_assert(sizeof(struct sm_authz_cidr_key) == 24, "sm_authz_cidr_key layout");

struct sm_authz_cidr_value {
	__u32 cidr_class;
	__u32 pad;
};
_Static_assert(sizeof(struct sm_authz_cidr_value) == 8, "sm_authz_cidr_value layout");

struct sm_authz_source_key {
	__u32 generation;
	__u32 cidr_class;
	__u64 identity;
};
_Static_assert(sizeof(struct sm_authz_source_key) == 16, "sm_authz_source_key layout");

struct sm_authz_source_value {
	__u32 source_class;
	__u32 pad;
};
_Static_assert(sizeof(struct sm_authz_source_value) == 8, "sm_authz_source_value layout");

struct sm_authz_verdict_key {
	__u32 generation;
	__u32 dest_set;
	__u32 source_class; /* 0: every class without its own entry */
	__be16 port;	    /* 0: every port without its own entry */
	__u16 pad;
};
_Static_assert(sizeof(struct sm_authz_verdict_key) == 16, "sm_authz_verdict_key layout");

struct sm_authz_verdict {
	__u64 policy;	      /* hash of the deciding policy's "ns/name" (sm_authz_policy_hash); 0: none */
	__u64 dry_run_policy; /* the dry-run policy that would have decided otherwise; 0: none */
	__u8 action;	      /* enum sm_authz_action */
	__u8 reason;	      /* enum sm_authz_reason */
	__u8 dry_run_action;  /* the verdict had dry-run policies been enforced */
	__u8 dry_run_reason;
	__u32 pad;
};
_Static_assert(sizeof(struct sm_authz_verdict) == 24, "sm_authz_verdict layout");

/* sm_authz_policy_counters (per CPU, hash): key the policy's hash, value: */
struct sm_authz_policy_counts {
	__u64 allowed;		/* connections it allowed */
	__u64 denied;		/* connections it denied (for "none allowed": key 0) */
	__u64 dry_run_denied;	/* connections it would have denied, were it enforced */
	__u64 closed;		/* established connections closed after a change made it deny them */
};
_Static_assert(sizeof(struct sm_authz_policy_counts) == 32, "sm_authz_policy_counts layout");

enum sm_authz_event_kind {
	SM_AUTHZ_EVENT_DENIED = 1,	  /* a SYN refused */
	SM_AUTHZ_EVENT_CLOSED = 2,	  /* an established connection closed after a change */
	SM_AUTHZ_EVENT_DRY_RUN_DENIED = 3, /* allowed, but a dry-run policy would have denied it */
};

/* sm_authz_events (ring buffer): one record per event. */
struct sm_authz_event {
	__u64 policy;
	__u8 src_addr[16];
	__u8 dst_addr[16];
	__be16 src_port;
	__be16 dst_port;
	__u8 kind;   /* enum sm_authz_event_kind */
	__u8 reason; /* enum sm_authz_reason */
	__u8 pad[2];
	__u64 netns_cookie; /* CLOSED only: sk_lookup programs cannot read it (the address names the workload) */
};
_Static_assert(sizeof(struct sm_authz_event) == 56, "sm_authz_event layout");

/* ---- L4 telemetry (docs/telemetry.md): per-connection events, read by the agent ---- */

/*
 * With SM_CONFIG_TELEMETRY, a TCP connection of an enrolled namespace is followed from its connect (or,
 * on the server side, from the handshake's end when its local address is a local workload's) to its
 * close: sockops sets the state callback at TCP_CONNECT_CB / PASSIVE_ESTABLISHED_CB, keeps sm_conn_stats
 * in socket storage and emits an sm_conn_event at the close; the iterator sm_conn_flush, which the
 * agent runs in each enrolled namespace, emits one for each connection open or unreported for
 * SM_CONN_REPORT_NS whose bytes moved since its last report (or that has none, or none for
 * SM_CONN_IDLE_REPORT_S). Bytes are the application's: TCP's bytes_acked and
 * bytes_received, plus what sk_msg handed to (or received from) a local peer through the sockhash, which
 * never passes through TCP, minus the waypoint TLV's bytes. What a local peer's sk_msg hands to a
 * followed accelerated socket is added up in sm_conn_received (hash: the receiver's struct sm_sock_key,
 * as in the sockhash → struct sm_conn_received), since sk_msg cannot reach the receiver's socket
 * storage; the receiver's events read it into msg_received and its close deletes it
 * (bpf/telemetry.bpf.h).
 *
 * One end for two: a followed connecting end holds every byte count of the connection, both ways (what
 * its TCP acked and received, what it and its peer handed over through the sockhash), unless it talks to a
 * waypoint, whose count holds the TLV. When its peer is a local workload that would be followed too, the
 * connecting end makes an sm_conn_received entry even if it is not accelerated, and the peer takes the
 * handover that entry offers instead of following itself (no socket storage, no state callback, no
 * event). The connecting end's events then carry SM_CONN_BOTH_ENDS: the reader of the ring
 * (datapath/telemetry.c) hands on each such event and the accepting end's, made from it. The handover is
 * decided by one atomic OR of each side on the entry's handover word, so that a connecting end closing
 * while its peer is being accepted never leaves the peer's record to no one.
 *
 * Namespaces with nothing to flush: sm_conn_started (per-CPU hash: network namespace cookie → __u64) counts
 * the connections each enrolled namespace started following. The agent makes and removes its entries (a
 * namespace without one is not counted); the programs only add to them. sm_conn_flush writes one byte per
 * followed socket it finds (connecting or open). A namespace whose last flush found none, and whose count
 * has not moved since that flush began, has nothing to report and is not walked.
 */
#define SM_CONN_EVENTS_BYTES (1024 * 1024) /* ring buffer of connection events */
#define SM_CONN_REPORT_NS 1000000000ULL	   /* sm_conn_flush reports a connection open or unreported this long */
#define SM_CONN_IDLE_REPORT_S 60	   /* ... when its bytes moved since its last report, or that was this long ago */
#define SM_CONN_NOT_REPORTED 0xffffffffffffffffULL /* sm_conn_stats.reported_sent before the first report */

enum sm_conn_direction {
	SM_CONN_OUTBOUND = 1, /* a local workload opened it: reporter="source" */
	SM_CONN_INBOUND = 2,  /* to a local workload: reporter="destination" */
};

enum sm_conn_event_kind {
	SM_CONN_OPENED = 1,  /* retired: no longer emitted (a connection's first event counts it opened) */
	SM_CONN_UPDATE = 2,  /* still open: its bytes so far (sm_conn_flush) */
	SM_CONN_CLOSED = 3,  /* ended after it was established */
	SM_CONN_FAILED = 4,  /* ended before it was established (failure says how) */
};

enum sm_conn_failure {
	SM_CONN_FAIL_NONE = 0,
	SM_CONN_FAIL_REFUSED = 1, /* reset in answer to the SYN (nothing listens, or a policy denied it) */
	SM_CONN_FAIL_TIMEOUT = 2, /* the SYN was never answered */
	SM_CONN_FAIL_OTHER = 3,
};

enum sm_conn_flags {
	SM_CONN_ACCELERATED = 1 << 0, /* some of its bytes went through the sockhash to a local peer */
	SM_CONN_WAYPOINT = 1 << 1,    /* sent to a waypoint, with the original-destination TLV */
	SM_CONN_TRANSLATED = 1 << 2,  /* orig_addr:orig_port (a service VIP) was rewritten */
	/* the connecting end's event stands for the accepting end too (the handover above); the accepting end's
	 * event that the ring's reader makes from it carries it as well: its duration and RTT are the
	 * connecting end's, its socket_cookie that end's with the top bit set, its netns_cookie 0 */
	SM_CONN_BOTH_ENDS = 1 << 3,
};

/* sm_conn_received's handover word: bits set by one atomic OR each, never cleared. */
enum sm_conn_handover {
	SM_CONN_HANDOVER_OFFERED = 1 << 0, /* at the entry's creation: a connecting end that can report its peer */
	SM_CONN_HANDOVER_TAKEN = 1 << 1,   /* by the accepting end; it left its record to the connecting end
					    * unless it found CLOSED already set */
	SM_CONN_HANDOVER_CLOSED = 1 << 2,  /* by the connecting end's close; it reports its peer only if it
					    * found TAKEN already set */
};

/* sm_conn_received (hash, struct sm_sock_key → this): a followed socket's that is accelerated, or that
 * connected to a local workload and offers the handover. */
struct sm_conn_received {
	__u64 bytes;	/* what local peers' sk_msg handed to this socket */
	__u32 handover; /* enum sm_conn_handover */
	__u32 pad;
};
_Static_assert(sizeof(struct sm_conn_received) == 16, "sm_conn_received layout");

/* sm_conn_stats (socket storage): what a followed connection carries. */
struct sm_conn_stats {
	__u64 start_ns;	    /* bpf_ktime_get_ns at connect / accept */
	__u64 msg_sent;	    /* bytes handed to a local peer's receive queue by sk_msg */
	__u64 msg_received; /* bytes a local peer's sk_msg handed to this socket */
	__u64 reported_ns;  /* the last event's time */
	__u64 reported_sent;	   /* bytes_sent in the last event, or SM_CONN_NOT_REPORTED before the first */
	__u64 reported_received; /* bytes_received in the last event */
	__u32 tlv_bytes;    /* waypoint TLV bytes in TCP's count, to take out */
	__u8 direction;	    /* enum sm_conn_direction */
	__u8 flags;	    /* enum sm_conn_flags */
	__u8 pad[2];
};
_Static_assert(sizeof(struct sm_conn_stats) == 56, "sm_conn_stats layout");

/*
 * sm_orig_slots (array of SM_ORIG_SLOTS, index: the socket's cookie & (SM_ORIG_SLOTS - 1)): a TCP socket
 * that connect4/6 redirected (to a backend, or to a waypoint since layout 11) keeps its sm_sock_state here,
 * and when telemetry follows it its sm_conn_stats too, instead of in socket storage, whose making is most
 * of what connect4 and telemetry's start cost such a connection (docs/benchmarks.md, "The original
 * destination in a slot"). The slot is the socket's while its cookie is in it:
 * - connect4/6 claims a free slot (cookie 0) with a compare-and-swap; a slot another socket holds leaves
 *   this one to socket storage (counted: orig_slot_taken);
 * - with the telemetry knob off the claim is confirmed at once (unconfirmed_since 0, stats.direction 0:
 *   not followed), and the socket's release (sm_sock_release, its last close) frees it; layout 10;
 * - with the knob on connect4/6 notes when (unconfirmed_since); telemetry's start (TCP_CONNECT_CB) confirms
 *   it and asks for the state callback, whose move to TCP_CLOSE frees it once the connection's last event
 *   is out (a release before that leaves a followed slot alone);
 * - a connect that failed before TCP_CONNECT_CB never confirms its slot: its release frees it; until then,
 *   after SM_ORIG_SLOT_STALE_S a later connect may take it over (that socket has no peer to name), and
 *   connecting it elsewhere frees it at once.
 * Readers look for the socket's cookie in its slot first, then in socket storage.
 */
#define SM_ORIG_SLOTS 65536
#define SM_ORIG_SLOT_STALE_S 10
struct sm_orig_slot {
	__u64 cookie;		 /* the holder's socket cookie; 0: free */
	__u64 unconfirmed_since; /* bpf_ktime_get_coarse_ns() at the claim; 0 once confirmed */
	struct sm_sock_state state;
	struct sm_conn_stats stats;
};
_Static_assert(sizeof(struct sm_orig_slot) == 96, "sm_orig_slot layout");

/*
 * sm_tlv_ports (array of one entry): one bit per TCP port, set by connect4/6 the first time it sends a
 * socket to a waypoint on that port owing the TLV (bit port & 31 of words[port / 32], ports in host order).
 * sockops looks up a connecting socket's storage for a TLV only when its remote port's bit is set: with
 * both knobs off every other socket returns before reading anything of its own (docs/benchmarks.md,
 * "Sockops that return at once"). A bit is never cleared: a port that no waypoint serves any more costs its
 * sockets that one lookup, nothing else.
 */
#define SM_TLV_PORT_WORDS (65536 / 32)
struct sm_port_bits {
	__u32 words[SM_TLV_PORT_WORDS];
};
_Static_assert(sizeof(struct sm_port_bits) == 8192, "sm_port_bits layout");

/* sm_conn_events (ring buffer): one record per event. Addresses as everywhere (16 bytes, IPv4 mapped). */
struct sm_conn_event {
	__u64 socket_cookie; /* bpf_get_socket_cookie: the connection's id from its open to its close */
	__u64 netns_cookie;
	__u64 start_ns;
	__u64 now_ns;
	__u64 bytes_sent;     /* by this socket's application, from its own view */
	__u64 bytes_received; /* by this socket's application */
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u8 orig_addr[16];   /* what the application connected to (outbound; = remote when not translated) */
	__be16 local_port;
	__be16 remote_port;
	__be16 orig_port;
	__u8 kind;	      /* enum sm_conn_event_kind */
	__u8 direction;	      /* enum sm_conn_direction */
	__u8 flags;	      /* enum sm_conn_flags */
	__u8 failure;	      /* enum sm_conn_failure */
	__u8 pad[6];
	__u32 srtt_us;	      /* smoothed RTT (the kernel's srtt_us >> 3) */
	__u32 min_rtt_us;
	__u32 total_retrans;
	__u32 pad2;
};
_Static_assert(sizeof(struct sm_conn_event) == 128, "sm_conn_event layout");

/*
 * The waypoint TLV (docs/wire.md), prepended to the first message: type 1, a 32-bit length
 * (network order), the value (address, then port, network order), then the end marker: type 0xfe with
 * length 0. 16 bytes in all for an IPv4 destination, 28 for IPv6.
 */
#define SM_TLV_TYPE_ORIG_DST 0x01
#define SM_TLV_TYPE_END 0xfe
#define SM_TLV_TYPE_OFF 0	/* 1 byte */
#define SM_TLV_LENGTH_OFF 1	/* __be32: the value's length */
#define SM_TLV_VALUE_OFF 5	/* address, then port */
#define SM_TLV_HEADER_LEN 5	/* type and length, of the TLV and of the end marker */
#define SM_TLV_VALUE_LEN_V4 6	/* 4-byte address + 2-byte port */
#define SM_TLV_VALUE_LEN_V6 18	/* 16-byte address + 2-byte port */
#define SM_TLV_END_OFF_V4 (SM_TLV_VALUE_OFF + SM_TLV_VALUE_LEN_V4)
#define SM_TLV_END_OFF_V6 (SM_TLV_VALUE_OFF + SM_TLV_VALUE_LEN_V6)
#define SM_TLV_LEN_V4 (SM_TLV_END_OFF_V4 + SM_TLV_HEADER_LEN)
#define SM_TLV_LEN_V6 (SM_TLV_END_OFF_V6 + SM_TLV_HEADER_LEN)
_Static_assert(SM_TLV_LEN_V4 == 16 && SM_TLV_LEN_V6 == 28, "the waypoint TLV's sizes on the wire");

#endif
