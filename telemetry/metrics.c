/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The istio_tcp_* counters: one series per label set (the rendered label text is its key), the open
 * connections by socket cookie with the cumulative bytes already counted, so each event adds only its delta.
 * Rendering a label set costs more than the rest of an event: while the caller's names stay put (their
 * generation), the series of names already seen is found by their pointers instead, and the uids already on
 * it by theirs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uthash.h>

#include "bpf/sockmesh.h"
#include "telemetry/internal.h"
#include "telemetry/telemetry.h"

/* The uids of the workloads that fed one side of a series (a Deployment's pods share its labels). */
struct uid {
	char *copy;
	const char *seen; /* the caller's pointer to it in seen_generation, compared before the bytes */
};

struct uids {
	struct uid *items;
	size_t n, capacity;
	uint64_t seen_generation;
};

struct series {
	UT_hash_handle hh;
	char *labels; /* `reporter="source",...`: the key */
	uint64_t opened, closed, failed, received_bytes, sent_bytes;
	size_t open; /* connections open on it: never evicted before they close */
	struct uids src_uids, dst_uids;
	bool gone; /* eviction's mark: a side's workloads are all gone */
};

struct conn {
	UT_hash_handle hh;
	uint64_t id;
	struct series *series;
	uint64_t bytes_sent, bytes_received; /* the cumulative values already counted */
	time_t last_event; /* monotonic seconds */
};

/* What decides a label set, by pointer: equal pointers are equal strings within one names_generation. */
struct names_key {
	const char *side[2][9]; /* the names of struct sm_tel_workload in its labels */
	const char *service[3];
	uint8_t direction, response;
	uint8_t pad[6];
};

/* A side's uids already on the series, by pointer (a few slots): most events need not look at its uids. */
#define UIDS_SEEN 8

struct cached_series {
	UT_hash_handle hh;
	struct names_key key;
	struct series *series;
	const char *uids_seen[2][UIDS_SEEN]; /* source, destination */
};

/* More names than this (pairs of workloads that talk, per direction) and the cache starts again. */
#define MAX_CACHED 16384

struct sm_telemetry {
	pthread_mutex_t lock;
	struct series *series;
	struct conn *conns;
	size_t n_series, n_open;
	uint64_t forgotten; /* connections dropped as stale by eviction */
	struct cached_series *cache;
	size_t n_cached;
	uint64_t cache_generation; /* the names_generation the cache holds */
	struct tel_text scratch;   /* a label set being rendered */
};

int sm_telemetry_new(struct sm_telemetry **out)
{
	struct sm_telemetry *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	*out = t;
	return 0;
}

static void uids_free(struct uids *uids)
{
	for (size_t i = 0; i < uids->n; i++)
		free(uids->items[i].copy);
	free(uids->items);
}

static void series_free(struct series *s)
{
	uids_free(&s->src_uids);
	uids_free(&s->dst_uids);
	free(s->labels);
	free(s);
}

static void cache_clear(struct sm_telemetry *t)
{
	struct cached_series *entry, *tmp;

	HASH_ITER(hh, t->cache, entry, tmp) {
		HASH_DEL(t->cache, entry);
		free(entry);
	}
	t->n_cached = 0;
}

void sm_telemetry_free(struct sm_telemetry *t)
{
	struct series *s, *s_tmp;
	struct conn *c, *c_tmp;

	if (!t)
		return;
	cache_clear(t);
	free(t->scratch.data);
	HASH_ITER(hh, t->conns, c, c_tmp) {
		HASH_DEL(t->conns, c);
		free(c);
	}
	HASH_ITER(hh, t->series, s, s_tmp) {
		HASH_DEL(t->series, s);
		series_free(s);
	}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* ---- labels, in ztunnel's order (CommonTrafficLabels) ---- */

/* name includes its separator and the opening quote: `,source_app="` */
static void label(struct tel_text *text, const char *name, const char *value)
{
	tel_append_str(text, name);
	tel_append_escaped(text, value, TEL_ESCAPE_PROMETHEUS);
	tel_append_str(text, "\"");
}

static void principal(struct tel_text *text, const char *name, const struct sm_tel_workload *w)
{
	if (!w->namespace || !w->namespace[0] || !w->trust_domain || !w->service_account) {
		label(text, name, NULL);
		return;
	}
	tel_append_str(text, name);
	tel_append_str(text, "spiffe://");
	tel_append_escaped(text, w->trust_domain, TEL_ESCAPE_PROMETHEUS);
	tel_append_str(text, "/ns/");
	tel_append_escaped(text, w->namespace, TEL_ESCAPE_PROMETHEUS);
	tel_append_str(text, "/sa/");
	tel_append_escaped(text, w->service_account, TEL_ESCAPE_PROMETHEUS);
	tel_append_str(text, "\"");
}

#define SIDE_LABELS(prefix)                                                                                    \
	{ "," prefix "_workload=\"", "," prefix "_canonical_service=\"", "," prefix "_canonical_revision=\"",     \
	  "," prefix "_workload_namespace=\"", "," prefix "_principal=\"", "," prefix "_app=\"",                  \
	  "," prefix "_version=\"", "," prefix "_cluster=\"" }

static void side(struct tel_text *text, const char *const names[8], const struct sm_tel_workload *w)
{
	label(text, names[0], w->workload);
	label(text, names[1], w->canonical_service);
	label(text, names[2], w->canonical_revision);
	label(text, names[3], w->namespace);
	principal(text, names[4], w);
	label(text, names[5], w->canonical_service);
	label(text, names[6], w->canonical_revision);
	label(text, names[7], w->cluster);
}

static const char *response_flags(uint8_t response)
{
	switch (response) {
	case SM_TEL_RESPONSE_DENY: return "DENY";
	case SM_TEL_RESPONSE_CONNECT: return "CONNECT";
	default: return "-";
	}
}

static void labels_of(const struct sm_tel_conn *c, struct tel_text *text)
{
	static const char *const source[8] = SIDE_LABELS("source");
	static const char *const destination[8] = SIDE_LABELS("destination");

	label(text, "reporter=\"", c->direction == SM_CONN_OUTBOUND ? "source" : "destination");
	side(text, source, &c->src);
	label(text, ",destination_service=\"", c->service.hostname);
	label(text, ",destination_service_namespace=\"", c->service.namespace);
	label(text, ",destination_service_name=\"", c->service.name);
	side(text, destination, &c->dst);
	label(text, ",request_protocol=\"", "tcp");
	label(text, ",response_flags=\"", response_flags(c->response));
	/* sockmesh does not encrypt: never mutual_tls */
	label(text, ",connection_security_policy=\"", "none");
	label(text, ",source_region=\"", c->src.region);
	label(text, ",source_zone=\"", c->src.zone);
	label(text, ",destination_region=\"", c->dst.region);
	label(text, ",destination_zone=\"", c->dst.zone);
}

/* ---- series ---- */

/* generation: the names_generation uid comes with (0: none), in which equal pointers are equal uids. */
static int uids_add(struct uids *uids, const char *uid, uint64_t generation)
{
	if (!uid || !uid[0])
		return 0;
	if (generation && generation != uids->seen_generation) {
		for (size_t i = 0; i < uids->n; i++)
			uids->items[i].seen = NULL;
		uids->seen_generation = generation;
	}
	for (size_t i = 0; generation && i < uids->n; i++) {
		if (uids->items[i].seen == uid)
			return 0;
	}
	for (size_t i = 0; i < uids->n; i++) {
		if (strcmp(uids->items[i].copy, uid) == 0) {
			uids->items[i].seen = generation ? uid : NULL;
			return 0;
		}
	}
	if (uids->n == uids->capacity) {
		size_t capacity = uids->capacity ? uids->capacity * 2 : 2;
		struct uid *items = realloc(uids->items, capacity * sizeof(*items));
		if (!items)
			return -ENOMEM;
		uids->items = items;
		uids->capacity = capacity;
	}
	if (!(uids->items[uids->n].copy = strdup(uid)))
		return -ENOMEM;
	uids->items[uids->n++].seen = generation ? uid : NULL;
	return 0;
}

/* The series of c's labels, created when new; NULL when out of memory. */
static struct series *series_by_labels(struct sm_telemetry *t, const struct sm_tel_conn *c)
{
	struct tel_text *text = &t->scratch;
	struct series *s;

	text->len = 0;
	text->failed = false;
	labels_of(c, text);
	if (text->failed)
		return NULL;
	HASH_FIND(hh, t->series, text->data, text->len, s);
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s || !(s->labels = malloc(text->len + 1))) {
			free(s);
			return NULL;
		}
		memcpy(s->labels, text->data, text->len);
		s->labels[text->len] = '\0';
		HASH_ADD_KEYPTR(hh, t->series, s->labels, text->len, s);
		if (!s->hh.tbl) { /* uthash could not grow its table (HASH_NONFATAL_OOM) */
			free(s->labels);
			free(s);
			return NULL;
		}
		t->n_series++;
	}
	return s;
}

static void side_key(const struct sm_tel_workload *w, const char *out[9])
{
	out[0] = w->workload;
	out[1] = w->namespace;
	out[2] = w->canonical_service;
	out[3] = w->canonical_revision;
	out[4] = w->cluster;
	out[5] = w->trust_domain;
	out[6] = w->service_account;
	out[7] = w->region;
	out[8] = w->zone;
}

static void names_key_of(const struct sm_tel_conn *c, struct names_key *key)
{
	memset(key, 0, sizeof(*key));
	side_key(&c->src, key->side[0]);
	side_key(&c->dst, key->side[1]);
	key->service[0] = c->service.hostname;
	key->service[1] = c->service.name;
	key->service[2] = c->service.namespace;
	key->direction = c->direction;
	key->response = c->response;
}

/* The key's words mixed (uthash's own hash reads the bytes one at a time). */
static unsigned names_hash(const struct names_key *key)
{
	uint64_t h = 0;

	_Static_assert(sizeof(*key) % sizeof(uintptr_t) == 0, "names_key is whole words");
	for (size_t i = 0; i < sizeof(*key); i += sizeof(uintptr_t)) {
		uintptr_t word;
		memcpy(&word, (const char *)key + i, sizeof(word));
		h = (h ^ word) * 0x9e3779b97f4a7c15ULL;
	}
	return (unsigned)(h >> 32);
}

/* The series of c's names, from the cache or by its labels (created when new; NULL when out of memory); *out:
 * its cache entry, made when new (NULL when there was no memory for it: found by its labels next time). */
static struct series *cached_series(struct sm_telemetry *t, const struct sm_tel_conn *c, struct cached_series **out)
{
	struct cached_series *entry;
	struct names_key key;
	struct series *s;
	unsigned hash;

	if (c->names_generation != t->cache_generation) {
		cache_clear(t);
		t->cache_generation = c->names_generation;
	}
	names_key_of(c, &key);
	hash = names_hash(&key);
	HASH_FIND_BYHASHVALUE(hh, t->cache, &key, sizeof(key), hash, entry);
	*out = entry;
	if (entry)
		return entry->series;
	s = series_by_labels(t, c);
	if (!s)
		return NULL;
	if (t->n_cached >= MAX_CACHED)
		cache_clear(t);
	entry = calloc(1, sizeof(*entry));
	if (entry) {
		entry->key = key;
		entry->series = s;
		HASH_ADD_BYHASHVALUE(hh, t->cache, key, sizeof(entry->key), hash, entry);
		if (entry->hh.tbl) {
			t->n_cached++;
		} else { /* uthash could not grow its table (HASH_NONFATAL_OOM): the series, not cached */
			free(entry);
			entry = NULL;
		}
	}
	*out = entry;
	return s;
}

/* The memo slot of uid: the top 3 bits of its pointer, mixed. */
static size_t uid_slot(const char *uid)
{
	_Static_assert(UIDS_SEEN == 8, "three bits");
	return (size_t)((uint64_t)(uintptr_t)uid * 0x9e3779b97f4a7c15ULL >> 61);
}

/* uid on a side of s, known by entry's memo when there is one (NULL: uids_add decides). */
static int add_uid(struct series *s, struct cached_series *entry, int side, const char *uid, uint64_t generation)
{
	const char **seen = entry ? &entry->uids_seen[side][uid_slot(uid)] : NULL;
	int err;

	if (seen && *seen == uid)
		return 0;
	err = uids_add(side ? &s->dst_uids : &s->src_uids, uid, generation);
	if (!err && seen)
		*seen = uid;
	return err;
}

/* The series of c's labels, created when new, with c's uids; NULL when out of memory. Names whose pointers
 * are cached find it without rendering their labels, and their uids without looking at the series' uids. */
static struct series *series_of(struct sm_telemetry *t, const struct sm_tel_conn *c)
{
	struct cached_series *entry = NULL;
	struct series *s = c->names_generation ? cached_series(t, c, &entry) : series_by_labels(t, c);

	if (!s || add_uid(s, entry, 0, c->src.uid, c->names_generation) ||
	    add_uid(s, entry, 1, c->dst.uid, c->names_generation))
		return NULL; /* the series stays: it may count without knowing every uid */
	return s;
}

/* ---- recording ---- */

static time_t monotonic_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec;
}

/* What grows: d = now - before, 0 when a counter went back (it cannot, unless an event was lost). */
static uint64_t delta(uint64_t now, uint64_t *before)
{
	uint64_t d = now >= *before ? now - *before : 0;

	*before = now;
	return d;
}

/* Request bytes (client → server: istio_tcp_received_bytes_total) and response bytes, for the reporter. */
static void add_bytes(struct series *s, const struct sm_tel_conn *c, struct conn *conn)
{
	uint64_t sent = delta(c->bytes_sent, &conn->bytes_sent);
	uint64_t received = delta(c->bytes_received, &conn->bytes_received);

	/* the client's own sends are the request; the server's receives are */
	s->received_bytes += c->direction == SM_CONN_OUTBOUND ? sent : received;
	s->sent_bytes += c->direction == SM_CONN_OUTBOUND ? received : sent;
}

int sm_telemetry_record(struct sm_telemetry *t, const struct sm_tel_conn *c)
{
	bool ends = c->kind == SM_CONN_CLOSED || c->kind == SM_CONN_FAILED;
	struct conn one_shot = { 0 }, *conn = NULL;
	int err = 0;

	pthread_mutex_lock(&t->lock);
	/* as ztunnel: the end is counted under the final response_flags, the opening under "-"; a series that
	 * may need memory is found first, so that running short counts nothing */
	struct series *end_flagged = NULL;
	if (ends && c->response != SM_TEL_RESPONSE_OK && !(end_flagged = series_of(t, c))) {
		err = -ENOMEM;
		goto out;
	}
	if (c->id)
		HASH_FIND(hh, t->conns, &c->id, sizeof(c->id), conn);
	if (!conn) {
		/* opened under "-" whatever its end, as ztunnel counts it before it knows */
		struct sm_tel_conn opening = *c;
		opening.response = SM_TEL_RESPONSE_OK;
		/* one whose first event is its end (most short ones) is counted without being followed */
		conn = c->id && !ends ? calloc(1, sizeof(*conn)) : &one_shot;
		struct series *s = conn ? series_of(t, &opening) : NULL;
		if (!s || !conn) {
			if (conn != &one_shot)
				free(conn);
			err = -ENOMEM;
			goto out;
		}
		conn->id = c->id;
		conn->series = s;
		if (conn != &one_shot) {
			HASH_ADD(hh, t->conns, id, sizeof(conn->id), conn);
			if (!conn->hh.tbl) { /* uthash could not grow its table (HASH_NONFATAL_OOM) */
				free(conn);
				err = -ENOMEM;
				goto out;
			}
		}
		s->opened++;
		s->open++;
		t->n_open++;
	}
	add_bytes(conn->series, c, conn);
	if (!ends) {
		conn->last_event = monotonic_seconds();
		goto out;
	}
	struct series *end = end_flagged ? end_flagged : conn->series;
	end->closed++;
	if (c->kind == SM_CONN_FAILED || c->response != SM_TEL_RESPONSE_OK)
		end->failed++;
	conn->series->open--;
	t->n_open--;
	if (conn != &one_shot) {
		HASH_DEL(t->conns, conn);
		free(conn);
	}
out:
	pthread_mutex_unlock(&t->lock);
	return err;
}

/* ---- eviction ---- */

/* True when the side had uids and none exists any more; with prune, the ones gone are dropped (and counted
 * in *pruned). */
static bool side_gone(struct uids *uids, bool (*exists)(void *ctx, const char *uid), void *ctx, bool prune,
		      size_t *pruned)
{
	bool had = uids->n > 0, any = false;

	for (size_t i = 0; i < uids->n;) {
		if (exists(ctx, uids->items[i].copy)) {
			any = true;
			i++;
		} else if (prune) {
			free(uids->items[i].copy);
			uids->items[i] = uids->items[--uids->n];
			(*pruned)++;
		} else {
			i++;
		}
	}
	return had && !any;
}

/* Connections of gone workloads without an event for stale_seconds: their end was lost. */
static void forget_stale(struct sm_telemetry *t, unsigned stale_seconds)
{
	time_t now = monotonic_seconds();
	struct conn *c, *tmp;

	HASH_ITER(hh, t->conns, c, tmp) {
		if (!c->series->gone || now - c->last_event < (time_t)stale_seconds)
			continue;
		c->series->open--;
		t->n_open--;
		t->forgotten++;
		HASH_DEL(t->conns, c);
		free(c);
	}
}

size_t sm_telemetry_evict(struct sm_telemetry *t, bool (*exists)(void *ctx, const char *uid), void *ctx,
			  unsigned stale_seconds)
{
	struct series *s, *tmp;
	size_t removed = 0, pruned = 0;
	bool stale = false;

	pthread_mutex_lock(&t->lock);
	/* a series with open connections keeps its uids: they decide once the last one is closed */
	for (s = t->series; s; s = s->hh.next) {
		bool src_gone = side_gone(&s->src_uids, exists, ctx, !s->open, &pruned);
		bool dst_gone = side_gone(&s->dst_uids, exists, ctx, !s->open, &pruned);
		s->gone = src_gone || dst_gone;
		stale |= s->gone && s->open;
	}
	if (stale)
		forget_stale(t, stale_seconds);
	HASH_ITER(hh, t->series, s, tmp) {
		if (s->open || !s->gone)
			continue;
		HASH_DEL(t->series, s);
		series_free(s);
		t->n_series--;
		removed++;
	}
	if (removed || pruned)
		cache_clear(t); /* it may point at them, or remember uids they no longer hold */
	pthread_mutex_unlock(&t->lock);
	return removed;
}

void sm_telemetry_counts(struct sm_telemetry *t, struct sm_telemetry_counts *out)
{
	pthread_mutex_lock(&t->lock);
	*out = (struct sm_telemetry_counts){ .series = t->n_series, .open = t->n_open, .forgotten = t->forgotten };
	pthread_mutex_unlock(&t->lock);
}

/* ---- rendering ---- */

static const struct {
	const char *name, *help;
	size_t offset;
} counters[] = {
	{ "istio_tcp_connections_opened_total", "The total number of TCP connections opened",
	  offsetof(struct series, opened) },
	{ "istio_tcp_connections_closed_total", "The total number of TCP connections closed",
	  offsetof(struct series, closed) },
	{ "istio_tcp_received_bytes_total",
	  "The size of total bytes received during request in case of a TCP connection",
	  offsetof(struct series, received_bytes) },
	{ "istio_tcp_sent_bytes_total", "The size of total bytes sent during response in case of a TCP connection",
	  offsetof(struct series, sent_bytes) },
	{ "istio_tcp_connections_failed_total", "The total number of TCP connections that failed",
	  offsetof(struct series, failed) },
};

char *sm_telemetry_render(struct sm_telemetry *t, size_t *len)
{
	struct tel_text text = { 0 };

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		tel_append(&text, "# HELP %s %s.\n# TYPE %s counter\n", counters[i].name, counters[i].help,
			   counters[i].name);
		for (const struct series *s = t->series; s; s = s->hh.next) {
			uint64_t value = *(const uint64_t *)((const char *)s + counters[i].offset);
			tel_append_str(&text, counters[i].name);
			TEL_APPEND_LITERAL(&text, "{");
			tel_append_mem(&text, s->labels, s->hh.keylen);
			TEL_APPEND_LITERAL(&text, "} ");
			tel_append_u64(&text, value);
			TEL_APPEND_LITERAL(&text, "\n");
		}
	}
	pthread_mutex_unlock(&t->lock);
	*len = tel_text_end(&text);
	if (text.failed || !text.data) {
		free(text.data);
		return NULL;
	}
	return text.data;
}
