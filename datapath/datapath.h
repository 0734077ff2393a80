/* SPDX-License-Identifier: Apache-2.0 */
/*
 * datapath/: the libbpf side. It loads, pins and attaches the BPF programs, and writes their maps
 * through the map-writer interface below, which the workload model plans against. Nothing here knows
 * protobuf; the keys and values are those of the contract, bpf/sockmesh.h.
 */
#ifndef SOCKMESH_DATAPATH_H
#define SOCKMESH_DATAPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bpf/sockmesh.h"

/* The maps the workload model writes, in the order a reader follows them. */
enum sm_map_id {
	SM_MAP_FRONTENDS,
	SM_MAP_SERVICES,
	SM_MAP_ENDPOINTS,
	SM_MAP_BACKENDS,
	SM_MAP_COUNT,
};

enum sm_map_op_kind {
	SM_OP_UPDATE,
	SM_OP_DELETE,
};

union sm_map_key {
	struct sm_frontend_key frontend;
	__u32 id; /* services, backends */
	struct sm_endpoint_key endpoint;
};

/*
 * One write: an update (value points at the map's value type) or a delete (value is NULL). before is what
 * the map holds under key until the op (NULL: nothing), so that a writer can put it back.
 */
struct sm_map_op {
	uint8_t map;  /* enum sm_map_id */
	uint8_t kind; /* enum sm_map_op_kind */
	union sm_map_key key;
	const void *value;
	const void *before;
};

/*
 * Applies ops with the effect of applying them in order. Consecutive ops on one map and of one kind touch
 * distinct keys, none of which another of them refers to: they may be grouped into batch calls, or split
 * between threads. Returns 0, or -errno with *applied set to how many ops took effect before the failure
 * (those after it did not: a writer puts back what it wrote past it).
 */
struct sm_map_writer {
	int (*apply)(struct sm_map_writer *writer, const struct sm_map_op *ops, size_t n, size_t *applied);
};

static inline const char *sm_map_name(enum sm_map_id map)
{
	static const char *const names[SM_MAP_COUNT] = { "frontends", "services", "endpoints", "backends" };
	return names[map];
}

static inline size_t sm_map_key_size(enum sm_map_id map)
{
	static const size_t sizes[SM_MAP_COUNT] = {
		sizeof(struct sm_frontend_key), sizeof(__u32), sizeof(struct sm_endpoint_key), sizeof(__u32),
	};
	return sizes[map];
}

static inline size_t sm_map_value_size(enum sm_map_id map)
{
	static const size_t sizes[SM_MAP_COUNT] = {
		sizeof(struct sm_frontend_value), sizeof(struct sm_service_value),
		sizeof(struct sm_endpoint_value), sizeof(struct sm_backend_value),
	};
	return sizes[map];
}

/* ---- L4 authorization's tables (compiled by authz/, written by sm_datapath_authz_write) ---- */

/* The tables of one generation, keys and values exactly as the maps take them (bpf/sockmesh.h). */
struct sm_authz_tables {
	uint32_t generation;
	struct sm_authz_dest_key *dest_keys;
	struct sm_authz_dest_value *dest_values;
	size_t n_dests;
	struct sm_authz_cidr_key *cidr_keys;
	struct sm_authz_cidr_value *cidr_values;
	size_t n_cidrs;
	struct sm_authz_source_key *source_keys;
	struct sm_authz_source_value *source_values;
	size_t n_sources;
	struct sm_authz_verdict_key *verdict_keys;
	struct sm_authz_verdict *verdicts;
	size_t n_verdicts;
	/* Not generation-bound: every source address and its identity hash (or SM_AUTHZ_IDENTITY_NODE). */
	struct sm_frontend_key *ident_keys;
	struct sm_authz_ident_value *ident_values;
	size_t n_idents;
	/* Written to no map: every (identity, CIDR class) pair the compiler gave a source class, as source keys
	 * of generation 0, sorted (sm_authz_update_sources: which sources the verdicts already cover). */
	struct sm_authz_source_key *pair_keys;
	size_t n_pairs;
	/* The sources entries an update of sources (sm_authz_update_*) added to those of the tables it started
	 * from: a write of idents alone writes them before the idents (a whole write writes every entry). */
	struct sm_authz_source_key *added_source_keys;
	struct sm_authz_source_value *added_source_values;
	size_t n_added_sources;
	/* authz/'s, written to no map: what such an update needs to give a pair never evaluated its class. */
	struct sm_authz_classifier *classifier;
	struct sm_authz_dest_side *dest_side; /* and what gives a local address its destination set */
	/* Set by an update of sources (sm_authz_update_idents, _sources; NULL otherwise): the addresses, sorted,
	 * whose identity may differ from the tables it started from. When the map holds those tables' idents, a
	 * write of idents alone diffs these alone. */
	struct sm_frontend_key *changed_idents;
	size_t n_changed_idents;
	/* Set by an update of this node's addresses (sm_authz_update_destinations): the addresses, sorted, whose
	 * dests entry differs from the tables it started from (guarded now, by another set, or no more); a
	 * write under the generation in force writes or deletes those entries. */
	struct sm_frontend_key *changed_dests;
	size_t n_changed_dests;
};

/* ---- the datapath ---- */

#define SM_DEFAULT_PIN_DIR "/sys/fs/bpf/sockmesh"

/* Every map the datapath pins: the model's four, then its own. */
enum sm_dp_map_id {
	SM_DP_MAP_CONFIG = SM_MAP_COUNT,
	SM_DP_MAP_COUNTERS,
	SM_DP_MAP_ENROLLED,
	SM_DP_MAP_LOCAL_ADDRS,
	SM_DP_MAP_META,
	SM_DP_MAP_SOCKHASH,
	SM_DP_MAP_SOCK_STATE,
	SM_DP_MAP_AUTHZ_STATE,
	SM_DP_MAP_AUTHZ_IDENTS,
	SM_DP_MAP_AUTHZ_DESTS,
	SM_DP_MAP_AUTHZ_CIDRS,
	SM_DP_MAP_AUTHZ_SOURCES,
	SM_DP_MAP_AUTHZ_VERDICTS,
	SM_DP_MAP_AUTHZ_POLICY_COUNTERS,
	SM_DP_MAP_AUTHZ_EVENTS,
	SM_DP_MAP_CONN_STATS,
	SM_DP_MAP_CONN_EVENTS,
	SM_DP_MAP_CONN_RECEIVED,
	SM_DP_MAP_CONN_STARTED,
	SM_DP_MAP_ORIG_SLOTS,
	SM_DP_MAP_TLV_PORTS,
	SM_DP_MAP_COUNT,
};

/*
 * The largest capacity the kernel takes for a model's map: a hash map's buckets are max_entries rounded
 * up to a power of two, at most U32_MAX / 16 bytes a bucket (E2BIG beyond), so max_entries <= 2^27,
 * and a capacity is half of that (SM_MAP_KERNEL_ENTRIES). Measured on Linux 6.18: 2^27 entries load,
 * 2^27 + 1 fail with E2BIG.
 */
#define SM_DATAPATH_MAX_CAPACITY (1u << 26)

/* connect4/6, sendmsg4/6, recvmsg4/6, getpeername4/6, sockops, sock_release: the programs attached to the cgroup. */
#define SM_CGROUP_HOOKS 10

struct sm_datapath;

struct sm_datapath_options {
	const char *pin_dir; /* NULL: SM_DEFAULT_PIN_DIR */
	const char *cgroup;  /* the cgroup v2 directory whose sockets are steered */
	/*
	 * Capacities of the model's maps when they are created (their kernel max_entries are
	 * SM_MAP_KERNEL_ENTRIES of these); pinned maps keep theirs. NULL: defaults.
	 */
	const uint32_t *capacity;
	/*
	 * Attach sm_sock_release (where the kernel has its kfunc, Linux 6.2), so that a translated TCP socket
	 * telemetry does not follow keeps its original destination in a slot, freed at its last close, instead
	 * of socket storage: for an agent whose telemetry knob is off. With it on, the sockets that take slots
	 * are followed and their close frees them; a release on every socket's close would only cost. Once
	 * pinned, the release stays attached (whatever later opens ask) until uninstall: the slots claimed
	 * meanwhile need it.
	 */
	bool release_slots;
};

/* The checks open makes before it touches anything (cgroup v2, pin directory on bpffs, capacities). */
int sm_datapath_check_options(const struct sm_datapath_options *options, char *err, size_t err_size);
/*
 * Loads the datapath: checks the kernel (a clear message when a feature is missing; what it found is
 * remembered for the boot beside the pin directory's lock, under SM_LOCK_DIR, and read there by the next
 * open on the same kernel, until uninstall), adopts maps
 * pinned with this layout version (or creates and pins them), and attaches to the cgroup through
 * pinned links, replacing the programs of links already there without detaching them.
 * Returns 0 or -errno with the reason in err.
 */
int sm_datapath_open(const struct sm_datapath_options *options, struct sm_datapath **out, char *err,
		     size_t err_size);
/*
 * When maps of another layout version are pinned, open loads this version's beside them without
 * attaching: the old programs and maps keep serving. Fill the new maps (the first full sync), then
 * commit: the pinned links switch to the new programs in place and the old maps are unpinned.
 */
bool sm_datapath_migrating(const struct sm_datapath *dp);
int sm_datapath_commit(struct sm_datapath *dp, char *err, size_t err_size);
/* Opens the pinned maps only (no programs are loaded), to read or write them. */
int sm_datapath_open_pinned(const char *pin_dir, struct sm_datapath **out, char *err, size_t err_size);
/* Releases this process's handles; what is pinned keeps serving. */
void sm_datapath_close(struct sm_datapath *dp);
/*
 * For a start that fails after open: undoes what this open made (the links it pinned, the maps when it
 * created them, the directories it created), never what an earlier agent left; then closes.
 */
void sm_datapath_abandon(struct sm_datapath *dp);
/*
 * Detaches every link and unpins every map under pin_dir. Refuses a path that is not a sockmesh pin
 * directory on bpffs (one holding only links/ and maps-vN/); a pin_dir that does not exist is done.
 */
int sm_datapath_uninstall(const char *pin_dir, char *err, size_t err_size);
/* 0 while every cgroup program is attached through its pinned link; else -errno and the reason in why. */
int sm_datapath_attached(const struct sm_datapath *dp, char *why, size_t why_size);

/*
 * One owner per pin directory: an exclusive flock on a file under SM_LOCK_DIR named after the pin
 * directory's path, holding the owner's pid. The kernel releases it when the owner dies, kill -9
 * included. -EBUSY (with the holder's pid in err) when another process holds it.
 */
#define SM_LOCK_DIR "/run/sockmesh"
struct sm_pin_lock;
int sm_pin_dir_lock(const char *pin_dir, struct sm_pin_lock **out, char *err, size_t err_size);
void sm_pin_dir_unlock(struct sm_pin_lock *lock);
/* Loads (never attaches) one program per hook the datapath uses; names what the kernel lacks. */
int sm_datapath_probe(char *err, size_t err_size);
/* Where open remembers what the probe found for pin_dir: beside its lock, ".probe" for ".lock". */
void sm_datapath_probe_memo_path(const char *pin_dir, char *out, size_t size);

/* Whether the maps were already pinned (by an earlier agent) when this one opened them. */
bool sm_datapath_adopted(const struct sm_datapath *dp);
struct sm_map_writer *sm_datapath_writer(struct sm_datapath *dp);
/* The BPF writer behind sm_datapath_writer(), for benchmarks that compare its settings. */
struct sm_bpf_writer *sm_datapath_bpf_writer(struct sm_datapath *dp);
int sm_datapath_for_each(const struct sm_datapath *dp, enum sm_map_id map,
			 int (*fn)(void *ctx, const void *key, const void *value), void *ctx);
/* The capacity a model may fill the map to (its kernel max_entries leave room for changes in flight). */
int sm_datapath_capacity(const struct sm_datapath *dp, enum sm_map_id map, uint32_t *capacity);
int sm_datapath_set_config(struct sm_datapath *dp, const struct sm_config *config);
int sm_datapath_get_config(const struct sm_datapath *dp, struct sm_config *config);
/* Enrolls (or not) the network namespace with this cookie. */
int sm_datapath_enroll(struct sm_datapath *dp, uint64_t netns_cookie, bool enrolled);
/* Calls fn with each enrolled namespace's cookie; stops on non-zero and returns it. */
int sm_datapath_for_each_enrolled(const struct sm_datapath *dp, int (*fn)(void *ctx, uint64_t netns_cookie),
				  void *ctx);
/* Sets the addresses of this node's workloads, whose sockets may be accelerated. */
int sm_datapath_set_local_addresses(struct sm_datapath *dp, const struct sm_frontend_key *addrs, size_t n);
/* The per-outcome counters, summed over CPUs. */
int sm_datapath_counters(const struct sm_datapath *dp, uint64_t counters[SM_COUNTER_MAX]);
const char *sm_counter_name(enum sm_counter counter);

/* ---- L4 authorization (datapath/authz.c; bpf/sockmesh.h's sm_authz_* section) ---- */

/*
 * Writes a compilation: its generation's dests, cidrs, sources and verdicts (batch updates), the idents
 * as a diff against the map (changed and new updated), then flips sm_authz_state.generation to
 * tables->generation, then deletes the idents it does not list and every entry of any other generation.
 * Tables without dests are valid: nothing is guarded, and the flip says so (unguarded_generation), so that
 * checks return without a lookup. The generation must be new (not 0, not the one in
 * force) and every key must carry it. When a write before the flip fails, the generation in force keeps
 * serving and what was written of the new one is removed. Returns 0 or -errno, err naming the map.
 */
int sm_datapath_authz_write(struct sm_datapath *dp, const struct sm_authz_tables *tables, char *err, size_t size);
/*
 * Writes an update of the tables in force (tables->generation is the generation in force:
 * sm_authz_update_idents, sm_authz_update_sources, sm_authz_update_destinations) with no flip: the sources
 * entries it added, the dests entries of its changed_dests, then its idents as a diff against the map,
 * deleting the idents it does not list. A first dest clears unguarded_generation before it is written; the
 * last one's deletion sets it after. Returns 0 or -errno (-EINVAL: another generation is in force), err
 * naming the map.
 */
int sm_datapath_authz_write_update(struct sm_datapath *dp, const struct sm_authz_tables *tables, char *err,
				  size_t size);
/* The generation in force; 0: none written yet (nothing is checked). */
int sm_datapath_authz_generation(const struct sm_datapath *dp, uint32_t *generation);

/*
 * Attaches sm_authz_check to a network namespace (an sk_lookup link) and pins the link as
 * <pin dir>/links/authz-<cookie> (cookie in decimal: the namespace's SO_NETNS_COOKIE, which the caller
 * gives). A pin that is already there and attached to a live namespace is kept (its program switched
 * to this datapath's). The link outlives the agent; sm_datapath_open switches pinned ones to its program.
 */
int sm_datapath_guard_netns(struct sm_datapath *dp, int netns_fd, uint64_t cookie, char *err, size_t size);
/* Detaches and unpins the namespace's link; one that is not there is done. */
int sm_datapath_unguard_netns(struct sm_datapath *dp, uint64_t cookie);
/* Unpins the links whose namespace is gone; returns how many, or -errno. */
int sm_datapath_sweep_guards(struct sm_datapath *dp);
/* Calls fn with each guarded namespace's cookie (from the pins); stops on non-zero and returns it. */
int sm_datapath_for_each_guard(const struct sm_datapath *dp, int (*fn)(void *ctx, uint64_t cookie), void *ctx);

/*
 * Closes the established inbound connections of a namespace that the tables in force deny (the
 * sm_authz_reap iterator, run by a short-lived thread inside netns_fd; -1: the caller's own
 * namespace). *closed: how many it closed. With only_if_local, only when one of those n_only addresses
 * may be local in that namespace (a socket binds to it): a connection to an address is accepted where
 * the address is local. *walked (when not NULL): whether the namespace's table was walked.
 */
int sm_datapath_authz_reap(struct sm_datapath *dp, int netns_fd, const struct sm_frontend_key *only_if_local,
			   size_t n_only, bool *walked, unsigned *closed, char *err, size_t size);

/* The ring buffer of denials, closes and dry-run denials (libbpf's ring_buffer). */
struct sm_authz_events;
int sm_datapath_authz_events_open(struct sm_datapath *dp, int (*fn)(void *ctx, const struct sm_authz_event *event),
				  void *ctx, struct sm_authz_events **out);
/* Calls fn for each event waiting, waiting up to timeout_ms for one; returns how many or -errno
 * (fn's non-zero return stops it and is returned). */
int sm_authz_events_poll(struct sm_authz_events *events, int timeout_ms);
/* An epoll fd that is readable when events wait, for the caller's own loop (then sm_authz_events_poll(.., 0)). */
int sm_authz_events_fd(const struct sm_authz_events *events);
void sm_authz_events_close(struct sm_authz_events *events);

/* Entries one generation of an authorization map may hold (its max_entries halved; sm_authz_idents: all). */
int sm_datapath_authz_capacity(const struct sm_datapath *dp, int map, uint32_t *per_generation);
/*
 * What sm_authz_check decides for src → dst:port (host order), read from the pinned tables the same way:
 * 1 with the verdict when the destination is guarded, 0 when it is not (or nothing is in force), -ENOENT
 * when it is and the source is the node (exempt).
 */
int sm_datapath_authz_lookup(const struct sm_datapath *dp, const uint8_t src[16], const uint8_t dst[16], uint16_t port,
			     struct sm_authz_verdict *out);

/* Calls fn with each counted policy's counts, summed over CPUs; stops on non-zero and returns it. */
int sm_datapath_authz_policy_counts(const struct sm_datapath *dp,
				    int (*fn)(void *ctx, uint64_t policy, const struct sm_authz_policy_counts *sum),
				    void *ctx);

/* ---- L4 telemetry (datapath/telemetry.c; bpf/sockmesh.h's "L4 telemetry" section) ---- */

/*
 * The ring buffer of connection events (sm_conn_events), written while the knobs have
 * SM_CONFIG_TELEMETRY (sm_datapath_set_config). fn gets each event; its non-zero return stops a poll. A
 * connecting end's event with SM_CONN_BOTH_ENDS is followed by its accepting end's, made from it (the kernel
 * followed only the connecting end): as if each end had reported, with the flag on both.
 */
struct sm_conn_events;
int sm_datapath_conn_events_open(struct sm_datapath *dp, int (*fn)(void *ctx, const struct sm_conn_event *ev),
				 void *ctx, struct sm_conn_events **out);
/* Waits up to timeout_ms (the programs wake the reader only when the ring is half full), then calls fn for
 * each event waiting; returns how many or -errno (fn's non-zero return stops it and is returned). */
int sm_conn_events_poll(struct sm_conn_events *e, int timeout_ms);
void sm_conn_events_close(struct sm_conn_events *e);
/*
 * Reports the followed connections of netns_fd's namespace (-1: the caller's) that have not reported for
 * SM_CONN_REPORT_NS and whose bytes moved (the sm_conn_flush iterator: an UPDATE event each). Run every
 * few seconds in each enrolled namespace, it counts a long connection opened, and its bytes, within
 * seconds. *followed: how many followed sockets it found there, reported or not (connecting ones too).
 */
int sm_datapath_conn_flush(struct sm_datapath *dp, int netns_fd, size_t *followed, char *err, size_t size);
/*
 * The connections the namespace of netns_cookie started following, summed over CPUs (sm_conn_started,
 * bpf/sockmesh.h): 0 with *started; -ENOENT when the namespace had no count, which is made now (its
 * connections are counted from here on); -E2BIG when the map is full; another -errno.
 */
int sm_datapath_conn_started(struct sm_datapath *dp, uint64_t netns_cookie, uint64_t *started);
/* Removes the counts of namespaces keep() says no to; returns how many or -errno. */
int sm_datapath_conn_started_sweep(struct sm_datapath *dp, bool (*keep)(void *ctx, uint64_t netns_cookie),
				   void *ctx);

/* One thread's buffers for batch calls. */
struct sm_bpf_lane {
	void *keys;
	void *values;
};

/*
 * The map writer over BPF map fds: consecutive ops on one map go in one batch call (the kernel's
 * bpf_map_*_batch), falling back to single calls where batches are not supported. Deleting an entry
 * that is already gone counts as done. On a machine with two CPUs or more, a long run of ops on one map
 * is split between the caller's thread and a second one (a full push's writes take two thirds of the time).
 */
struct sm_bpf_writer {
	struct sm_map_writer writer;
	int fds[SM_MAP_COUNT];
	bool single_calls; /* set when the kernel refused a batch call */
	bool two_lanes;	   /* this process may run on two CPUs or more */
	int lanes_ready;   /* lanes whose buffers are allocated */
	struct sm_bpf_lane lanes[2];
	size_t calls; /* bpf() calls issued, for benchmarks */
};

void sm_bpf_writer_init(struct sm_bpf_writer *writer, const int fds[SM_MAP_COUNT]);
void sm_bpf_writer_release(struct sm_bpf_writer *writer);

/* Calls fn for each entry of a map fd (keys and values of map's contract types); stops on non-zero. */
int sm_map_for_each(int fd, int (*fn)(void *ctx, const void *key, const void *value), void *ctx);

#endif
