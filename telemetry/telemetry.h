/* SPDX-License-Identifier: Apache-2.0 */
/*
 * telemetry/: Istio's L4 telemetry from resolved connection events (docs/telemetry.md). It keeps
 * ztunnel's istio_tcp_* counters by label set and formats ztunnel's access log line; it knows nothing of
 * BPF or the workload model: the caller resolves addresses into the names below.
 *
 * Thread-safe: one thread records and evicts, others render.
 */
#ifndef SOCKMESH_TELEMETRY_H
#define SOCKMESH_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* One end of a connection as the model knows it; a NULL or empty field is written `unknown`. */
struct sm_tel_workload {
	const char *uid;		/* for eviction only; NULL: not a workload */
	const char *workload;		/* workload_name (the Deployment, not the pod) */
	const char *pod;		/* the workload's name: the access log's src.workload / dst.workload */
	const char *namespace;
	const char *canonical_service;	/* also the *_app label, as ztunnel */
	const char *canonical_revision; /* also the *_version label */
	const char *cluster;
	const char *trust_domain, *service_account; /* principal: spiffe://TD/ns/NAMESPACE/sa/SA */
	const char *region, *zone;
};

/* The service the client asked for (its VIP), NULL fields when none. */
struct sm_tel_service {
	const char *hostname, *name, *namespace;
};

/* Event kinds, directions and flags are the contract's (bpf/sockmesh.h): sm_conn_event_kind, sm_conn_direction,
 * sm_conn_flags. */
enum sm_tel_response {
	SM_TEL_RESPONSE_OK = 0, /* response_flags="-" */
	SM_TEL_RESPONSE_DENY,	/* refused by an authorization policy */
	SM_TEL_RESPONSE_CONNECT, /* the connect failed (refused, timed out) */
};

struct sm_tel_conn {
	uint64_t id;	   /* the socket cookie; 0: a one-shot event (opened and ended at once, e.g. a denial) */
	uint8_t kind;	   /* enum sm_conn_event_kind */
	uint8_t direction; /* enum sm_conn_direction: OUTBOUND reports as source, INBOUND as destination */
	uint8_t response;  /* enum sm_tel_response; counts as failed when not OK */
	uint8_t flags;	   /* enum sm_conn_flags */
	/* cumulative, from the local application's view (what its socket sent and received) */
	uint64_t bytes_sent, bytes_received;
	uint64_t duration_ns;
	uint32_t srtt_us, min_rtt_us, retransmits;
	const char *src_addr, *dst_addr; /* "IP:PORT" / "[IPv6]:PORT" (access log) */
	const char *error;		 /* why it failed (access log); NULL when it did not */
	struct sm_tel_workload src, dst;
	struct sm_tel_service service;
	/* 0, or the generation of the names above (e.g. sm_model_generation for names that point into the model):
	 * while it stays the same, equal pointers are equal strings that stay in place, and the series of names
	 * already seen is found by their pointers instead of by rendering their labels. */
	uint64_t names_generation;
};

struct sm_telemetry;

int sm_telemetry_new(struct sm_telemetry **out);
void sm_telemetry_free(struct sm_telemetry *t);

/*
 * Counts one event. The first event of an id counts it opened (its labels fixed from then on); UPDATE,
 * CLOSED and FAILED add the bytes since its last event; CLOSED and FAILED count it closed, FAILED (or a
 * response other than OK) failed, and forget it. Strings are copied. 0 or -ENOMEM (nothing counted).
 */
int sm_telemetry_record(struct sm_telemetry *t, const struct sm_tel_conn *conn);

/*
 * Removes the series that have no open connection and whose source or destination workload is gone: a
 * side with uids, none of which exists any more. A connection of such a series that has had no event for
 * stale_seconds is forgotten first (its CLOSED was lost: the kernel reports a gone workload's sockets
 * closing). exists is called with the telemetry lock held (take the lock exists needs before calling
 * this, never the other way round). Returns how many series went.
 */
size_t sm_telemetry_evict(struct sm_telemetry *t, bool (*exists)(void *ctx, const char *uid), void *ctx,
			  unsigned stale_seconds);

struct sm_telemetry_counts {
	size_t series;	    /* label sets held */
	size_t open;	    /* connections followed that have not ended */
	uint64_t forgotten; /* connections eviction found stale */
};
void sm_telemetry_counts(struct sm_telemetry *t, struct sm_telemetry_counts *out);

/* The five istio_tcp_* counters in Prometheus text (# HELP, # TYPE counter); malloc'ed, NULL when out of memory. */
char *sm_telemetry_render(struct sm_telemetry *t, size_t *len);

enum sm_tel_log_format {
	SM_TEL_LOG_PLAIN, /* ztunnel's: time, level, "access", message, k=v with strings quoted */
	SM_TEL_LOG_JSON,  /* ztunnel's LOG_FORMAT=json: level, time, scope, message, then the fields */
};

/*
 * The names of the access log's recent lines, kept formatted while their names_generation lasts (a few
 * hundred KiB, fixed). One caller at a time.
 */
struct sm_tel_log_cache;
int sm_tel_log_cache_new(struct sm_tel_log_cache **out);
void sm_tel_log_cache_free(struct sm_tel_log_cache *cache);

/*
 * ztunnel's "connection complete" line for a CLOSED or FAILED event, at now (wall clock), newline ended.
 * With a cache (may be NULL) and conn's names_generation, names formatted before are copied from it.
 * Returns the length it needed (as snprintf: the line is cut when that is >= size).
 */
size_t sm_telemetry_access_log(const struct sm_tel_conn *conn, enum sm_tel_log_format format,
			       struct sm_tel_log_cache *cache, const struct timespec *now, char *buf, size_t size);

#endif
