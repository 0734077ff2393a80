/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L4 authorization's userspace side: writing a compilation's tables generation by generation, guarding
 * network namespaces with pinned sk_lookup links, reaping established connections a change denies, and
 * reading the counters and events. The lookups themselves: bpf/authz.bpf.h.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/membarrier.h>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "datapath/datapath.h"
#include "datapath/internal.h"

static bool batch_unsupported(int error)
{
	return error == ENOTSUPP || error == EOPNOTSUPP || error == EINVAL;
}

/* ---- entries in bulk ---- */

/* Updates n entries: one batch call where the map type has them (the LPM trie has not). */
static int update_entries(int fd, const void *keys, const void *values, size_t key_size, size_t value_size, size_t n)
{
	__u32 count = (__u32)n;

	if (!n || bpf_map_update_batch(fd, keys, values, &count, NULL) == 0)
		return 0;
	if (!batch_unsupported(errno))
		return -errno;
	for (size_t i = 0; i < n; i++) { /* from the start: a batch may have stopped anywhere, and updates repeat */
		if (bpf_map_update_elem(fd, (const char *)keys + i * key_size, (const char *)values + i * value_size,
					BPF_ANY))
			return -errno;
	}
	return 0;
}

/* Deletes n entries; one already gone counts as deleted. */
static int delete_entries(int fd, const void *keys, size_t key_size, size_t n)
{
	size_t done = 0;

	while (done < n) {
		__u32 count = (__u32)(n - done);
		const char *key = (const char *)keys + done * key_size;

		if (bpf_map_delete_batch(fd, key, &count, NULL) == 0) {
			done += count;
		} else if (errno == ENOENT) {
			done += count + 1; /* the batch stopped at an entry that was gone */
		} else if (batch_unsupported(errno)) {
			for (; done < n; done++) {
				if (bpf_map_delete_elem(fd, (const char *)keys + done * key_size) && errno != ENOENT)
					return -errno;
			}
		} else {
			return -errno;
		}
	}
	return 0;
}

/* The keys of a map (and their values when values is not NULL), walked with get_next_key. */
struct entries {
	void *keys;
	void *values;
	size_t n, capacity;
};

static void entries_free(struct entries *e)
{
	free(e->keys);
	free(e->values);
	memset(e, 0, sizeof(*e));
}

static int entries_push(struct entries *e, const void *key, const void *value, size_t key_size, size_t value_size)
{
	if (e->n == e->capacity) {
		size_t capacity = e->capacity ? e->capacity * 2 : 256;
		void *keys = realloc(e->keys, capacity * key_size);
		if (!keys)
			return -ENOMEM;
		e->keys = keys;
		if (value_size) {
			void *values = realloc(e->values, capacity * value_size);
			if (!values)
				return -ENOMEM;
			e->values = values;
		}
		e->capacity = capacity;
	}
	memcpy((char *)e->keys + e->n * key_size, key, key_size);
	if (value_size)
		memcpy((char *)e->values + e->n * value_size, value, value_size);
	e->n++;
	return 0;
}

struct table;
static bool of_generation(const struct table *table, const void *key, uint32_t generation);

/* Whether collect() takes this key: not when it is of generation keep in table. */
static bool wanted(const struct table *table, const void *key, uint32_t keep)
{
	return !table || !of_generation(table, key, keep);
}

/* One key at a time, for map types without batch lookups (the LPM trie). */
static int collect_walk(int fd, size_t key_size, size_t value_size, bool values, const struct table *table,
			uint32_t keep, struct entries *out)
{
	_Alignas(8) unsigned char key[32], next[32], value[32];
	void *previous = NULL;
	int ret = 0;

	while (!ret && bpf_map_get_next_key(fd, previous, next) == 0) {
		memcpy(key, next, key_size);
		previous = key;
		if (!wanted(table, key, keep))
			continue;
		if (values && bpf_map_lookup_elem(fd, key, value))
			continue; /* deleted since the walk found it */
		ret = entries_push(out, key, value, key_size, values ? value_size : 0);
	}
	if (!ret && errno != ENOENT)
		ret = -errno;
	return ret;
}

#define LOOKUP_CHUNK 4096

/*
 * Collects a map's keys (with their values when values is set), but those of generation keep in table:
 * a few thousand entries a call where the map has batch lookups, else one at a time.
 */
static int collect(int fd, size_t key_size, size_t value_size, bool values, const struct table *table, uint32_t keep,
		   struct entries *out)
{
	_Alignas(8) unsigned char in_batch[32], out_batch[32];
	char *keys = malloc(LOOKUP_CHUNK * key_size), *vals = malloc(LOOKUP_CHUNK * value_size);
	bool first = true, last = false;
	int ret = keys && vals ? 0 : -ENOMEM;

	while (!ret && !last) {
		__u32 count = LOOKUP_CHUNK;
		if (bpf_map_lookup_batch(fd, first ? NULL : in_batch, out_batch, keys, vals, &count, NULL)) {
			if (first && batch_unsupported(errno)) {
				ret = collect_walk(fd, key_size, value_size, values, table, keep, out);
				break;
			}
			if (errno != ENOENT) {
				ret = -errno;
				break;
			}
			last = true; /* the last (possibly empty) chunk */
		}
		for (__u32 i = 0; !ret && i < count; i++) {
			if (wanted(table, keys + i * key_size, keep))
				ret = entries_push(out, keys + i * key_size, vals + i * value_size, key_size,
						   values ? value_size : 0);
		}
		memcpy(in_batch, out_batch, sizeof(in_batch));
		first = false;
	}
	free(keys);
	free(vals);
	return ret;
}

/* ---- generations ---- */

/* Each generation-bound table: its map, its key size, and the generation a key carries. */
struct table {
	int map; /* enum sm_dp_map_id */
	size_t key_size, value_size;
	uint32_t (*generation_of)(const void *key);
};

static uint32_t dest_generation(const void *key)
{
	return ((const struct sm_authz_dest_key *)key)->generation;
}

static uint32_t cidr_generation(const void *key)
{
	return ntohl(((const struct sm_authz_cidr_key *)key)->generation);
}

static uint32_t source_generation(const void *key)
{
	return ((const struct sm_authz_source_key *)key)->generation;
}

static uint32_t verdict_generation(const void *key)
{
	return ((const struct sm_authz_verdict_key *)key)->generation;
}

enum { TABLE_DESTS, TABLE_CIDRS, TABLE_SOURCES, TABLE_VERDICTS, TABLE_COUNT };

static const struct table tables_of[TABLE_COUNT] = {
	[TABLE_DESTS] = { SM_DP_MAP_AUTHZ_DESTS, sizeof(struct sm_authz_dest_key), sizeof(struct sm_authz_dest_value),
			  dest_generation },
	[TABLE_CIDRS] = { SM_DP_MAP_AUTHZ_CIDRS, sizeof(struct sm_authz_cidr_key), sizeof(struct sm_authz_cidr_value),
			  cidr_generation },
	[TABLE_SOURCES] = { SM_DP_MAP_AUTHZ_SOURCES, sizeof(struct sm_authz_source_key),
			    sizeof(struct sm_authz_source_value), source_generation },
	[TABLE_VERDICTS] = { SM_DP_MAP_AUTHZ_VERDICTS, sizeof(struct sm_authz_verdict_key),
			     sizeof(struct sm_authz_verdict), verdict_generation },
};

/* The keys and values of one table of a compilation. */
static void table_entries(const struct sm_authz_tables *t, int table, const void **keys, const void **values,
			  size_t *n)
{
	switch (table) {
	case TABLE_DESTS:
		*keys = t->dest_keys, *values = t->dest_values, *n = t->n_dests;
		break;
	case TABLE_CIDRS:
		*keys = t->cidr_keys, *values = t->cidr_values, *n = t->n_cidrs;
		break;
	case TABLE_SOURCES:
		*keys = t->source_keys, *values = t->source_values, *n = t->n_sources;
		break;
	default:
		*keys = t->verdict_keys, *values = t->verdicts, *n = t->n_verdicts;
		break;
	}
}

static int check_tables(const struct sm_authz_tables *t, uint32_t in_force, char *err, size_t size)
{
	if (!t->generation || t->generation == in_force)
		return fail(err, size, -EINVAL, "authorization tables of generation %u: %s", t->generation,
			    t->generation ? "that generation is in force; a new compilation needs a new one"
					  : "0 is not a generation");
	if (t->n_idents && (!t->ident_keys || !t->ident_values))
		return fail(err, size, -EINVAL, "authorization tables: %zu idents without keys or values", t->n_idents);
	for (int table = 0; table < TABLE_COUNT; table++) {
		const void *keys, *values;
		size_t n;

		table_entries(t, table, &keys, &values, &n);
		if (n && (!keys || !values))
			return fail(err, size, -EINVAL, "authorization tables: %zu %s entries without keys or values", n,
				    sm_dp_map_name(tables_of[table].map));
		for (size_t i = 0; i < n; i++) {
			uint32_t g = tables_of[table].generation_of((const char *)keys + i * tables_of[table].key_size);
			if (g != t->generation)
				return fail(err, size, -EINVAL, "%s entry %zu has generation %u, not the tables' %u",
					    sm_dp_map_name(tables_of[table].map), i, g, t->generation);
		}
	}
	return 0;
}

static bool of_generation(const struct table *table, const void *key, uint32_t generation)
{
	return table->generation_of(key) == generation;
}

/* Deletes every entry of a generation-bound table that is not of generation keep. */
static int purge(struct sm_datapath *dp, int table, uint32_t keep, char *err, size_t size)
{
	const struct table *t = &tables_of[table];
	struct entries stale = { 0 };
	int fd = dp->fds[t->map], ret;

	ret = collect(fd, t->key_size, t->value_size, false, t, keep, &stale);
	if (!ret)
		ret = delete_entries(fd, stale.keys, t->key_size, stale.n);
	if (ret)
		fail(err, size, ret, "deleting the other generations of %s: %s", sm_dp_map_name(t->map), strerror(-ret));
	entries_free(&stale);
	return ret;
}

/* Removes what was written of a generation that never came in force. */
static void unwrite(struct sm_datapath *dp, const struct sm_authz_tables *t)
{
	for (int table = 0; table < TABLE_COUNT; table++) {
		const void *keys, *values;
		size_t n;

		table_entries(t, table, &keys, &values, &n);
		delete_entries(dp->fds[tables_of[table].map], keys, tables_of[table].key_size, n);
	}
}

static int compare_addr(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct sm_frontend_key));
}

static bool sorted_by_addr(const struct sm_dp_ident *idents, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (compare_addr(&idents[i - 1], &idents[i]) > 0)
			return false;
	return true;
}

/* The map's idents, read back and sorted by address. */
static int held_idents(int fd, struct sm_dp_ident **out, size_t *n)
{
	struct entries held = { 0 };
	struct sm_dp_ident *sorted = NULL;
	int ret = collect(fd, sizeof(struct sm_frontend_key), sizeof(struct sm_authz_ident_value), true, NULL, 0, &held);

	if (!ret) {
		sorted = malloc((held.n ? held.n : 1) * sizeof(*sorted));
		ret = sorted ? 0 : -ENOMEM;
	}
	for (size_t i = 0; !ret && i < held.n; i++) {
		memcpy(&sorted[i].key, (char *)held.keys + i * sizeof(sorted[i].key), sizeof(sorted[i].key));
		memcpy(&sorted[i].value, (char *)held.values + i * sizeof(sorted[i].value), sizeof(sorted[i].value));
	}
	if (!ret) {
		qsort(sorted, held.n, sizeof(*sorted), compare_addr);
		*out = sorted;
		*n = held.n;
	} else {
		free(sorted);
	}
	entries_free(&held);
	return ret;
}

/* What the map holds after a write of the tables' idents (sorted), or NULL: not known, the next write reads
 * it back. */
static void remember_idents(struct sm_datapath *dp, struct sm_dp_ident *sorted, size_t n)
{
	free(dp->authz_idents);
	dp->authz_idents = sorted;
	dp->n_authz_idents = n;
}

/* Both lists sorted: *stale gets held's addresses wanted does not list, *changed wanted's new or changed
 * ones. One walk of both. */
static int diff_all_idents(const struct sm_dp_ident *wanted, size_t n_wanted, const struct sm_dp_ident *held,
			   size_t n_held, struct entries *changed, struct entries *stale)
{
	size_t w = 0, h = 0;
	int ret = 0;

	while (!ret && (w < n_wanted || h < n_held)) {
		int order = w == n_wanted ? 1 : h == n_held ? -1 : compare_addr(&wanted[w], &held[h]);

		if (order > 0) {
			ret = entries_push(stale, &held[h].key, NULL, sizeof(held[h].key), 0);
			h++;
			continue;
		}
		if (order < 0 || held[h].value.identity != wanted[w].value.identity)
			ret = entries_push(changed, &wanted[w].key, &wanted[w].value, sizeof(wanted[w].key),
					   sizeof(wanted[w].value));
		h += order == 0;
		w++;
	}
	return ret;
}

/* The same for the addresses listed as changed alone (tables updated from those the map holds), each looked
 * up in both lists. */
static int diff_changed_idents(const struct sm_authz_tables *t, const struct sm_dp_ident *wanted,
			       const struct sm_dp_ident *held, size_t n_held, struct entries *changed,
			       struct entries *stale)
{
	int ret = 0;

	for (size_t i = 0; !ret && i < t->n_changed_idents; i++) {
		const struct sm_frontend_key *key = &t->changed_idents[i];
		const struct sm_dp_ident *w = bsearch(key, wanted, t->n_idents, sizeof(*wanted), compare_addr);
		const struct sm_dp_ident *h = bsearch(key, held, n_held, sizeof(*held), compare_addr);

		if (w && (!h || h->value.identity != w->value.identity))
			ret = entries_push(changed, &w->key, &w->value, sizeof(w->key), sizeof(w->value));
		else if (!w && h)
			ret = entries_push(stale, &h->key, NULL, sizeof(h->key), 0);
	}
	return ret;
}

/*
 * The idents as a diff against what the map holds (as the last write left it, else read back): *stale gets
 * the map's addresses the tables do not list (deleted after the flip, while the generation in force may
 * still use them); changed and new ones are written now. Tables updated from those the map holds list the
 * addresses that changed, and only those are diffed. *wanted_out: the tables' idents, sorted (the caller's
 * to free).
 */
static int write_idents(struct sm_datapath *dp, const struct sm_authz_tables *t, struct entries *stale,
			struct sm_dp_ident **wanted_out, char *err, size_t size)
{
	int fd = dp->fds[SM_DP_MAP_AUTHZ_IDENTS], ret = 0;
	struct entries changed = { 0 };
	struct sm_dp_ident *wanted = calloc(t->n_idents ? t->n_idents : 1, sizeof(*wanted));
	struct sm_dp_ident *held = dp->authz_idents, *read_back = NULL;
	size_t n_held = dp->n_authz_idents;

	if (!wanted)
		return fail(err, size, -ENOMEM, "out of memory for %zu idents", t->n_idents);
	for (size_t i = 0; i < t->n_idents; i++)
		wanted[i] = (struct sm_dp_ident){ t->ident_keys[i], t->ident_values[i] };
	if (!sorted_by_addr(wanted, t->n_idents)) /* the compiler's come sorted */
		qsort(wanted, t->n_idents, sizeof(*wanted), compare_addr);
	if (!held) {
		ret = held_idents(fd, &read_back, &n_held);
		held = read_back;
	}
	if (!ret)
		ret = t->changed_idents && !read_back ? diff_changed_idents(t, wanted, held, n_held, &changed, stale)
						      : diff_all_idents(wanted, t->n_idents, held, n_held, &changed, stale);
	if (!ret)
		ret = update_entries(fd, changed.keys, changed.values, sizeof(struct sm_frontend_key),
				     sizeof(struct sm_authz_ident_value), changed.n);
	if (ret) {
		fail(err, size, ret, "writing %s: %s", sm_dp_map_name(SM_DP_MAP_AUTHZ_IDENTS), strerror(-ret));
		free(wanted);
	} else {
		*wanted_out = wanted;
	}
	entries_free(&changed);
	free(read_back);
	return ret;
}

/* Deletes the stale idents write_idents found; then the map holds *written (taken), else it is not known. */
static int delete_stale_idents(struct sm_datapath *dp, const struct entries *stale, struct sm_dp_ident **written,
			       size_t n_written, char *err, size_t size)
{
	int ret = delete_entries(dp->fds[SM_DP_MAP_AUTHZ_IDENTS], stale->keys, sizeof(struct sm_frontend_key), stale->n);

	if (ret) {
		remember_idents(dp, NULL, 0);
		return fail(err, size, ret, "deleting stale entries of %s: %s", sm_dp_map_name(SM_DP_MAP_AUTHZ_IDENTS),
			    strerror(-ret));
	}
	remember_idents(dp, *written, n_written);
	*written = NULL;
	return 0;
}

/*
 * Until every check that may have read the generation before the flip has ended: each runs under RCU, and
 * MEMBARRIER_CMD_GLOBAL is synchronize_rcu() (kernel/sched/membarrier.c). Without it, a check that read
 * the old generation could find its entries deleted halfway: unguarded, or no verdict. Where the command
 * is refused (nohz_full), a pause far longer than any check.
 */
static void wait_for_checks_in_flight(void)
{
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0)
		usleep(20000);
}

static int read_state(const struct sm_datapath *dp, struct sm_authz_state *state)
{
	return bpf_map_lookup_elem(dp->fds[SM_DP_MAP_AUTHZ_STATE], &(__u32){ 0 }, state) ? -errno : 0;
}

int sm_datapath_authz_generation(const struct sm_datapath *dp, uint32_t *generation)
{
	struct sm_authz_state state;
	int ret = read_state(dp, &state);

	if (!ret)
		*generation = state.generation;
	return ret;
}

/* Generation in force, and whether its tables guard no address (sm_authz_state.unguarded_generation). */
static int write_state(struct sm_datapath *dp, uint32_t generation, bool unguarded)
{
	struct sm_authz_state state = { .generation = generation, .unguarded_generation = unguarded ? generation : 0 };

	return bpf_map_update_elem(dp->fds[SM_DP_MAP_AUTHZ_STATE], &(__u32){ 0 }, &state, BPF_ANY) ? -errno : 0;
}

/* What is in force, for a write: err names the map when it cannot be read. */
static int read_in_force(const struct sm_datapath *dp, struct sm_authz_state *state, char *err, size_t size)
{
	int ret = read_state(dp, state);

	return ret ? fail(err, size, ret, "reading %s: %s", sm_dp_map_name(SM_DP_MAP_AUTHZ_STATE), strerror(-ret)) : 0;
}

int sm_datapath_authz_write(struct sm_datapath *dp, const struct sm_authz_tables *t, char *err, size_t size)
{
	struct sm_authz_state state;
	struct entries stale_idents = { 0 };
	struct sm_dp_ident *idents = NULL;
	uint32_t in_force;
	bool writing = false;
	int ret;

	if (!t)
		return fail(err, size, -EINVAL, "no authorization tables");
	if ((ret = read_in_force(dp, &state, err, size)))
		return ret;
	in_force = state.generation;
	ret = check_tables(t, in_force, err, size);
	/* leftovers of a write that never came in force (a crash between write and flip) must not mix in */
	for (int table = 0; table < TABLE_COUNT && !ret; table++)
		ret = purge(dp, table, in_force, err, size);
	writing = !ret;
	for (int table = 0; table < TABLE_COUNT && !ret; table++) {
		const struct table *tt = &tables_of[table];
		const void *keys, *values;
		size_t n;

		table_entries(t, table, &keys, &values, &n);
		ret = update_entries(dp->fds[tt->map], keys, values, tt->key_size, tt->value_size, n);
		if (ret)
			fail(err, size, ret, "writing %zu entries of generation %u to %s: %s", n, t->generation,
			     sm_dp_map_name(tt->map), strerror(-ret));
	}
	if (!ret)
		ret = write_idents(dp, t, &stale_idents, &idents, err, size);
	if (!ret && (ret = write_state(dp, t->generation, !t->n_dests)))
		fail(err, size, ret, "flipping %s to generation %u: %s", sm_dp_map_name(SM_DP_MAP_AUTHZ_STATE),
		     t->generation, strerror(-ret));
	if (ret) {
		if (writing)
			unwrite(dp, t);
		remember_idents(dp, NULL, 0); /* some may have been written */
		goto out;
	}
	/* in force: what only the old generation used can go once no check still reads it */
	wait_for_checks_in_flight();
	ret = delete_stale_idents(dp, &stale_idents, &idents, t->n_idents, err, size);
	for (int table = 0; table < TABLE_COUNT && !ret; table++)
		ret = purge(dp, table, t->generation, err, size);
out:
	entries_free(&stale_idents);
	free(idents);
	return ret;
}

/* dests keys of one generation, as the compiler sorts them */
static int compare_dest_addr(const void *a, const void *b)
{
	return memcmp(((const struct sm_authz_dest_key *)a)->addr, ((const struct sm_authz_dest_key *)b)->addr, 16);
}

/* The dests entries an update of this node's addresses changed, under the generation in force: written, or
 * deleted where the address is not guarded any more. */
static int write_changed_dests(struct sm_datapath *dp, const struct sm_authz_tables *t, char *err, size_t size)
{
	int fd = dp->fds[SM_DP_MAP_AUTHZ_DESTS], ret = 0;
	struct entries now = { 0 }, gone = { 0 };

	for (size_t i = 0; !ret && i < t->n_changed_dests; i++) {
		struct sm_authz_dest_key key = { .generation = t->generation };
		const struct sm_authz_dest_key *found;

		memcpy(key.addr, t->changed_dests[i].addr, 16);
		found = t->n_dests ? bsearch(&key, t->dest_keys, t->n_dests, sizeof(key), compare_dest_addr) : NULL;
		ret = found ? entries_push(&now, &key, &t->dest_values[found - t->dest_keys], sizeof(key),
					   sizeof(*t->dest_values))
			    : entries_push(&gone, &key, NULL, sizeof(key), 0);
	}
	if (!ret)
		ret = update_entries(fd, now.keys, now.values, sizeof(struct sm_authz_dest_key),
				     sizeof(struct sm_authz_dest_value), now.n);
	if (!ret)
		ret = delete_entries(fd, gone.keys, sizeof(struct sm_authz_dest_key), gone.n);
	if (ret)
		fail(err, size, ret, "writing %zu entries of generation %u to %s, deleting %zu: %s", now.n, t->generation,
		     sm_dp_map_name(SM_DP_MAP_AUTHZ_DESTS), gone.n, strerror(-ret));
	entries_free(&now);
	entries_free(&gone);
	return ret;
}

/* The generation in force marked as guarding no address, or addresses, with no flip. */
static int mark_unguarded(struct sm_datapath *dp, uint32_t generation, bool unguarded, char *err, size_t size)
{
	int ret = write_state(dp, generation, unguarded);

	return ret ? fail(err, size, ret, "marking generation %u as guarding %s in %s: %s", generation,
			  unguarded ? "no address" : "addresses", sm_dp_map_name(SM_DP_MAP_AUTHZ_STATE), strerror(-ret))
		   : 0;
}

int sm_datapath_authz_write_update(struct sm_datapath *dp, const struct sm_authz_tables *t, char *err, size_t size)
{
	struct sm_authz_state state;
	struct entries stale = { 0 };
	struct sm_dp_ident *idents = NULL;
	int ret;

	if (!t)
		return fail(err, size, -EINVAL, "no authorization tables");
	if ((ret = read_in_force(dp, &state, err, size)))
		return ret;
	if (!state.generation || t->generation != state.generation)
		return fail(err, size, -EINVAL, "identities of generation %u, but generation %u is in force",
			    t->generation, state.generation);
	bool was_unguarded = state.unguarded_generation == state.generation;
	/* a first guarded address: checks look addresses up again before its entry is written */
	if (was_unguarded && t->n_dests && (ret = mark_unguarded(dp, t->generation, false, err, size)))
		return ret;
	/* the sources entries of new identities first: no ident names them before they are there */
	ret = update_entries(dp->fds[SM_DP_MAP_AUTHZ_SOURCES], t->added_source_keys, t->added_source_values,
			     sizeof(struct sm_authz_source_key), sizeof(struct sm_authz_source_value), t->n_added_sources);
	if (ret)
		return fail(err, size, ret, "writing %zu entries of generation %u to %s: %s", t->n_added_sources,
			    t->generation, sm_dp_map_name(SM_DP_MAP_AUTHZ_SOURCES), strerror(-ret));
	/* no flip: a check reads an address's identity, or a local address's set, before or after its change,
	 * both valid */
	ret = write_changed_dests(dp, t, err, size);
	if (ret)
		return ret;
	ret = write_idents(dp, t, &stale, &idents, err, size);
	if (ret)
		remember_idents(dp, NULL, 0); /* some may have been written */
	else
		ret = delete_stale_idents(dp, &stale, &idents, t->n_idents, err, size);
	/* the last guarded address gone: checks return at once again */
	if (!ret && !was_unguarded && !t->n_dests)
		ret = mark_unguarded(dp, t->generation, true, err, size);
	entries_free(&stale);
	free(idents);
	return ret;
}

/* ---- guarded namespaces ---- */

#define GUARD_PREFIX "authz-"

static void guard_path(const struct sm_datapath *dp, uint64_t cookie, char *out, size_t size)
{
	snprintf(out, size, "%s/links/" GUARD_PREFIX "%llu", dp->pin_dir, (unsigned long long)cookie);
}

static bool guard_cookie(const char *name, uint64_t *cookie)
{
	unsigned long long value;
	char tail;

	if (sscanf(name, GUARD_PREFIX "%llu%c", &value, &tail) != 1)
		return false;
	*cookie = value;
	return true;
}

/* The inode of the namespace a pinned link is attached to; 0 when that namespace is gone. */
static int guard_netns_ino(int link_fd, __u32 *ino)
{
	struct bpf_link_info info = { 0 };
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(link_fd, &info, &len))
		return -errno;
	if (info.type != BPF_LINK_TYPE_NETNS)
		return -EINVAL;
	*ino = info.netns.netns_ino;
	return 0;
}

static int check_loaded(const struct sm_datapath *dp, char *err, size_t size)
{
	if (!dp->skel)
		return fail(err, size, -EINVAL, "only the maps of %s are open: no programs to attach", dp->pin_dir);
	return 0;
}

int sm_datapath_guard_netns(struct sm_datapath *dp, int netns_fd, uint64_t cookie, char *err, size_t size)
{
	int prog_fd, link_fd, fd, ret = check_loaded(dp, err, size);
	char path[PATH_MAX];
	struct stat st;
	__u32 ino = 0;

	if (ret)
		return ret;
	if (fstat(netns_fd, &st))
		return fail(err, size, -errno, "the network namespace (cookie %llu): %s", (unsigned long long)cookie,
			    strerror(errno));
	prog_fd = bpf_program__fd(dp->skel->progs.sm_authz_check);
	guard_path(dp, cookie, path, sizeof(path));
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		if (guard_netns_ino(fd, &ino) == 0 && ino == (__u32)st.st_ino) {
			ret = bpf_link_update(fd, prog_fd, NULL) ? -errno : 0;
			close(fd);
			return ret ? fail(err, size, ret, "switching %s to this agent's program: %s", path, strerror(-ret)) : 0;
		}
		/* attached elsewhere or to a namespace that is gone: replaced */
		bpf_link_detach(fd);
		close(fd);
		if (unlink(path) && errno != ENOENT)
			return fail(err, size, -errno, "cannot unpin the stale %s: %s", path, strerror(errno));
	}
	link_fd = bpf_link_create(prog_fd, netns_fd, BPF_SK_LOOKUP, NULL);
	if (link_fd < 0)
		return fail(err, size, -errno, "attaching sm_authz_check to the network namespace (cookie %llu): %s",
			    (unsigned long long)cookie, strerror(errno));
	if (bpf_obj_pin(link_fd, path))
		ret = fail(err, size, -errno, "pinning %s: %s", path, strerror(errno)); /* closing detaches it */
	close(link_fd);
	return ret;
}

int sm_datapath_unguard_netns(struct sm_datapath *dp, uint64_t cookie)
{
	char path[PATH_MAX];
	int fd;

	guard_path(dp, cookie, path, sizeof(path));
	fd = bpf_obj_get(path);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	bpf_link_detach(fd); /* now, whoever else holds the link */
	close(fd);
	return unlink(path) && errno != ENOENT ? -errno : 0;
}

/* Calls fn with each guard pin's cookie and path; stops on non-zero and returns it. */
static int walk_guards(const struct sm_datapath *dp, int (*fn)(void *ctx, uint64_t cookie, const char *path),
		       void *ctx)
{
	char dir[PATH_MAX], path[PATH_MAX + NAME_MAX + 2];
	struct dirent *entry;
	uint64_t cookie;
	int ret = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/links", dp->pin_dir);
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (!ret && (entry = readdir(d))) {
		if (!guard_cookie(entry->d_name, &cookie))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, entry->d_name);
		ret = fn(ctx, cookie, path);
	}
	closedir(d);
	return ret;
}

struct guard_walk {
	int (*fn)(void *ctx, uint64_t cookie);
	void *ctx;
	int prog_fd;
	unsigned swept;
	char *err;
	size_t size;
};

static int give_cookie(void *ctx, uint64_t cookie, const char *path)
{
	struct guard_walk *walk = ctx;

	(void)path;
	return walk->fn(walk->ctx, cookie);
}

int sm_datapath_for_each_guard(const struct sm_datapath *dp, int (*fn)(void *ctx, uint64_t cookie), void *ctx)
{
	struct guard_walk walk = { .fn = fn, .ctx = ctx };

	return walk_guards(dp, give_cookie, &walk);
}

static int sweep_one(void *ctx, uint64_t cookie, const char *path)
{
	struct guard_walk *walk = ctx;
	int fd = bpf_obj_get(path);
	__u32 ino = 1;

	(void)cookie;
	if (fd < 0)
		return 0;
	if (guard_netns_ino(fd, &ino) == 0 && ino == 0) {
		bpf_link_detach(fd);
		if (unlink(path) == 0)
			walk->swept++;
	}
	close(fd);
	return 0;
}

int sm_datapath_sweep_guards(struct sm_datapath *dp)
{
	struct guard_walk walk = { 0 };
	int ret = walk_guards(dp, sweep_one, &walk);

	return ret ? ret : (int)walk.swept;
}

static int relink_one(void *ctx, uint64_t cookie, const char *path)
{
	struct guard_walk *walk = ctx;
	int fd = bpf_obj_get(path), ret = 0;
	__u32 ino = 0;

	(void)cookie;
	if (fd < 0)
		return fail(walk->err, walk->size, -errno, "opening the pinned link %s: %s", path, strerror(errno));
	/* a link whose namespace is gone cannot take a program: sm_datapath_sweep_guards removes it */
	if (guard_netns_ino(fd, &ino) == 0 && ino && bpf_link_update(fd, walk->prog_fd, NULL))
		ret = fail(walk->err, walk->size, -errno, "replacing the program of the pinned link %s: %s", path,
			   strerror(errno));
	close(fd);
	return ret;
}

int sm_datapath_relink_guards(struct sm_datapath *dp, char *err, size_t size)
{
	struct guard_walk walk = { .err = err, .size = size };
	int ret = check_loaded(dp, err, size);

	if (ret)
		return ret;
	if (size)
		err[0] = '\0';
	walk.prog_fd = bpf_program__fd(dp->skel->progs.sm_authz_check);
	ret = walk_guards(dp, relink_one, &walk);
	if (ret < 0 && !err[0])
		fail(err, size, ret, "reading %s/links: %s", dp->pin_dir, strerror(-ret));
	return ret;
}

/* ---- reaping established connections ---- */

/* The sm_authz_reap iterator writes a byte for each socket it closed. */
int sm_datapath_authz_reap(struct sm_datapath *dp, int netns_fd, const struct sm_frontend_key *only_if_local,
			   size_t n_only, bool *walked, unsigned *closed, char *err, size_t size)
{
	size_t output = 0;
	int ret = check_loaded(dp, err, size);

	*closed = 0;
	if (walked)
		*walked = false;
	if (ret)
		return ret;
	if (!dp->can_reap)
		return fail(err, size, -EOPNOTSUPP, "this kernel cannot close sockets from BPF (bpf_sock_destroy, Linux 6.5 "
			    "or later): established connections stay until they end");
	ret = sm_dp_run_tcp_iter(dp->skel->progs.sm_authz_reap, netns_fd, only_if_local, n_only, walked, &output, err,
				 size);
	*closed = (unsigned)output;
	return ret;
}

/* ---- events and counts ---- */

struct sm_authz_events {
	struct ring_buffer *ring;
	int (*fn)(void *ctx, const struct sm_authz_event *event);
	void *ctx;
};

static int on_event(void *ctx, void *data, size_t size)
{
	struct sm_authz_events *events = ctx;
	struct sm_authz_event event;

	if (size < sizeof(event))
		return 0; /* not of this layout: skipped */
	memcpy(&event, data, sizeof(event));
	return events->fn(events->ctx, &event);
}

int sm_datapath_authz_events_open(struct sm_datapath *dp, int (*fn)(void *ctx, const struct sm_authz_event *event),
				  void *ctx, struct sm_authz_events **out)
{
	struct sm_authz_events *events = calloc(1, sizeof(*events));

	if (!events)
		return -ENOMEM;
	events->fn = fn;
	events->ctx = ctx;
	events->ring = ring_buffer__new(dp->fds[SM_DP_MAP_AUTHZ_EVENTS], on_event, events, NULL);
	if (!events->ring) {
		int ret = -errno;
		free(events);
		return ret;
	}
	*out = events;
	return 0;
}

int sm_authz_events_poll(struct sm_authz_events *events, int timeout_ms)
{
	return ring_buffer__poll(events->ring, timeout_ms);
}

int sm_authz_events_fd(const struct sm_authz_events *events)
{
	return ring_buffer__epoll_fd(events->ring);
}

void sm_authz_events_close(struct sm_authz_events *events)
{
	if (!events)
		return;
	ring_buffer__free(events->ring);
	free(events);
}

int sm_datapath_authz_policy_counts(const struct sm_datapath *dp,
				    int (*fn)(void *ctx, uint64_t policy, const struct sm_authz_policy_counts *sum),
				    void *ctx)
{
	int fd = dp->fds[SM_DP_MAP_AUTHZ_POLICY_COUNTERS], cpus, ret = 0;
	struct sm_authz_policy_counts *values = sm_dp_per_cpu_values(sizeof(*values), &cpus);
	__u64 key, next, *previous = NULL;

	if (!values)
		return cpus;
	while (!ret && bpf_map_get_next_key(fd, previous, &next) == 0) {
		struct sm_authz_policy_counts sum = { 0 };
		key = next;
		previous = &key;
		if (bpf_map_lookup_elem(fd, &key, values))
			continue;
		for (int cpu = 0; cpu < cpus; cpu++) {
			sum.allowed += values[cpu].allowed;
			sum.denied += values[cpu].denied;
			sum.dry_run_denied += values[cpu].dry_run_denied;
			sum.closed += values[cpu].closed;
		}
		ret = fn(ctx, key, &sum);
	}
	if (!ret && errno != ENOENT)
		ret = -errno;
	free(values);
	return ret;
}
