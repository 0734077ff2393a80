/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The map image: the four datapath maps held in memory. Services and backends are dense rows indexed by
 * id (ids are small and reused), each service row holding its endpoint slots per priority; frontends
 * are a hash by address. Backend rows also index where the backend sits in endpoint slots, so the
 * planner finds a workload's slots without scanning a service.
 *
 * A transaction records the first value of every key it touches; its net writes, their undo and its
 * rollback all come from that record.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "workload/internal.h"

/* Ids beyond this are refused: rows are dense, and no map is this large. */
#define IMAGE_MAX_ID (1u << 24)

struct slot {
	struct sm_endpoint_value value;
	uint32_t epoch;
	bool present;
};

struct priority_slots {
	struct slot *slots;
	uint32_t len; /* highest present index + 1 */
	uint32_t capacity;
};

struct service_row {
	struct sm_service_value value;
	uint32_t epoch;
	bool present;
	struct priority_slots priorities[SM_MAX_PRIORITIES];
};

struct backend_row {
	struct sm_backend_value value;
	uint32_t epoch;
	bool present;
	uint32_t n_positions;
	uint32_t positions_capacity; /* 0: the one position (the usual case) is stored inline */
	union {
		uint64_t one;
		uint64_t *many;
	} positions;
};

static uint64_t *row_positions(struct backend_row *row)
{
	return row->positions_capacity ? row->positions.many : &row->positions.one;
}

struct frontend_entry {
	UT_hash_handle hh;
	struct sm_frontend_key key;
	struct sm_frontend_value value;
	uint32_t epoch;
	bool present; /* false: a tombstone kept until the transaction ends */
};

/* A journal entry's place in the net writes: its write phase (< WRITE_PHASES), or none. */
#define NO_WRITE 0xff

struct journal_entry {
	uint8_t map;
	bool had;
	uint8_t phase; /* set by image_diff_begin */
	union sm_map_key key;
	uint32_t before_offset; /* into the arena, when had: 24 bytes an entry, and a full push has 225,000 */
};

struct sm_image {
	struct service_row *services;
	uint32_t services_len;
	struct backend_row *backends;
	uint32_t backends_len;
	struct frontend_entry *frontends;
	size_t counts[SM_MAP_COUNT];

	bool in_transaction;
	uint32_t epoch;
	struct journal_entry *journal;
	size_t journal_len;
	size_t journal_capacity;
	uint8_t *arena;
	size_t arena_len;
	size_t arena_capacity;
};

/* Grows a zero-filled array to hold at least needed elements, doubling. */
static int grow(void **array, size_t *capacity, size_t needed, size_t element_size)
{
	if (needed <= *capacity)
		return 0;

	size_t new_capacity = *capacity ? *capacity : 4;
	while (new_capacity < needed)
		new_capacity *= 2;
	void *grown = realloc(*array, new_capacity * element_size);
	if (!grown)
		return -ENOMEM;
	memset((char *)grown + *capacity * element_size, 0, (new_capacity - *capacity) * element_size);
	*array = grown;
	*capacity = new_capacity;
	return 0;
}

/* The same for arrays whose length fits 32 bits (rows, slots), which keeps rows small. */
static int grow32(void **array, uint32_t *capacity, uint32_t needed, size_t element_size)
{
	size_t wide = *capacity;
	int err = grow(array, &wide, needed, element_size);

	*capacity = (uint32_t)wide;
	return err;
}

int sm_image_new(struct sm_image **out)
{
	struct sm_image *image = calloc(1, sizeof(*image));

	if (!image)
		return -ENOMEM;
	image->epoch = 1;
	*out = image;
	return 0;
}

void sm_image_free(struct sm_image *image)
{
	struct frontend_entry *entry, *tmp;

	if (!image)
		return;
	for (uint32_t id = 0; id < image->services_len; id++) {
		for (int p = 0; p < SM_MAX_PRIORITIES; p++)
			free(image->services[id].priorities[p].slots);
	}
	for (uint32_t id = 0; id < image->backends_len; id++) {
		if (image->backends[id].positions_capacity)
			free(image->backends[id].positions.many);
	}
	HASH_ITER(hh, image->frontends, entry, tmp) {
		HASH_DEL(image->frontends, entry);
		free(entry);
	}
	free(image->services);
	free(image->backends);
	free(image->journal);
	free(image->arena);
	free(image);
}

/* ---- rows ---- */

static struct service_row *service_row(const struct sm_image *image, uint32_t id)
{
	return id < image->services_len ? &image->services[id] : NULL;
}

static struct backend_row *backend_row(const struct sm_image *image, uint32_t id)
{
	return id < image->backends_len ? &image->backends[id] : NULL;
}

static int ensure_service_row(struct sm_image *image, uint32_t id)
{
	if (id == 0 || id >= IMAGE_MAX_ID)
		return -ERANGE;
	return grow32((void **)&image->services, &image->services_len, id + 1, sizeof(struct service_row));
}

static int ensure_backend_row(struct sm_image *image, uint32_t id)
{
	if (id == 0 || id >= IMAGE_MAX_ID)
		return -ERANGE;
	return grow32((void **)&image->backends, &image->backends_len, id + 1, sizeof(struct backend_row));
}

static struct slot *find_slot(const struct sm_image *image, const struct sm_endpoint_key *key)
{
	struct service_row *row = service_row(image, key->service_id);

	if (!row || key->priority >= SM_MAX_PRIORITIES)
		return NULL;
	struct priority_slots *prio = &row->priorities[key->priority];
	return key->index < prio->capacity ? &prio->slots[key->index] : NULL;
}

static struct frontend_entry *find_frontend(const struct sm_image *image, const struct sm_frontend_key *key)
{
	struct frontend_entry *entry;

	HASH_FIND(hh, image->frontends, key, sizeof(*key), entry);
	return entry;
}

const void *sm_image_get(const struct sm_image *image, enum sm_map_id map, const void *key)
{
	switch (map) {
	case SM_MAP_FRONTENDS: {
		struct frontend_entry *entry = find_frontend(image, key);
		return entry && entry->present ? &entry->value : NULL;
	}
	case SM_MAP_SERVICES: {
		struct service_row *row = service_row(image, *(const __u32 *)key);
		return row && row->present ? &row->value : NULL;
	}
	case SM_MAP_ENDPOINTS: {
		struct slot *slot = find_slot(image, key);
		return slot && slot->present ? &slot->value : NULL;
	}
	case SM_MAP_BACKENDS: {
		struct backend_row *row = backend_row(image, *(const __u32 *)key);
		return row && row->present ? &row->value : NULL;
	}
	default:
		return NULL;
	}
}

size_t sm_image_count(const struct sm_image *image, enum sm_map_id map)
{
	return image->counts[map];
}

/* ---- the transaction record ---- */

static int journal_record(struct sm_image *image, enum sm_map_id map, const void *key, uint32_t *epoch)
{
	if (!image->in_transaction || *epoch == image->epoch)
		return 0;

	const void *before = sm_image_get(image, map, key);
	size_t value_size = sm_map_value_size(map);

	if (grow((void **)&image->journal, &image->journal_capacity, image->journal_len + 1,
		 sizeof(struct journal_entry)))
		return -ENOMEM;
	struct journal_entry *entry = &image->journal[image->journal_len];
	*entry = (struct journal_entry){ .map = (uint8_t)map, .had = before != NULL };
	memcpy(&entry->key, key, sm_map_key_size(map)); /* callers may pass just the map's key type */
	if (before) {
		if (image->arena_len + value_size > UINT32_MAX)
			return -ENOMEM; /* 4 GiB of first values: no map holds that many entries */
		if (grow((void **)&image->arena, &image->arena_capacity, image->arena_len + value_size + 8, 1))
			return -ENOMEM;
		entry->before_offset = (uint32_t)image->arena_len;
		memcpy(image->arena + image->arena_len, before, value_size);
		/* Undo writes hand these out as values: keep each one aligned like its struct. */
		image->arena_len += (value_size + 7) & ~(size_t)7;
	}
	image->journal_len++;
	*epoch = image->epoch;
	return 0;
}

void image_begin(struct sm_image *image)
{
	image->in_transaction = true;
	image->epoch++;
	image->journal_len = 0;
	image->arena_len = 0;
}

/* ---- setting entries ---- */

/*
 * Whether setting an entry (present or not, holding held) to value (NULL: deleting it) changes nothing.
 * Such a set leaves no journal entry: a restart's first push sets every entry to what it holds, and
 * journaling them all (225,000 at 100k workloads, each with a copy of its value) took a fifth of its
 * apply. The diff would have written none of them anyway.
 */
static bool unchanged(bool present, const void *held, const void *value, size_t size)
{
	return value ? present && memcmp(held, value, size) == 0 : !present;
}

static int add_position(struct sm_image *image, uint32_t backend_id, uint64_t position)
{
	int err = ensure_backend_row(image, backend_id);
	if (err)
		return err;

	struct backend_row *row = &image->backends[backend_id];
	if (!row->positions_capacity && !row->n_positions) {
		row->positions.one = position;
		row->n_positions = 1;
		return 0;
	}
	if (!row->positions_capacity) {
		uint64_t one = row->positions.one;
		row->positions.many = NULL;
		err = grow32((void **)&row->positions.many, &row->positions_capacity, 4, sizeof(uint64_t));
		if (err) {
			row->positions.one = one;
			return err;
		}
		row->positions.many[0] = one;
	}
	err = grow32((void **)&row->positions.many, &row->positions_capacity, row->n_positions + 1, sizeof(uint64_t));
	if (err)
		return err;
	row->positions.many[row->n_positions++] = position;
	return 0;
}

static void remove_position(struct sm_image *image, uint32_t backend_id, uint64_t position)
{
	struct backend_row *row = backend_row(image, backend_id);

	uint64_t *positions = row ? row_positions(row) : NULL;

	for (uint32_t i = 0; row && i < row->n_positions; i++) {
		if (positions[i] == position) {
			positions[i] = positions[--row->n_positions];
			return;
		}
	}
}

static uint64_t encode_position(const struct sm_endpoint_key *key)
{
	return (uint64_t)key->service_id << 32 | (uint64_t)key->priority << 24 | key->index;
}

static int set_endpoint(struct sm_image *image, const struct sm_endpoint_key *key,
			const struct sm_endpoint_value *value)
{
	if (key->priority >= SM_MAX_PRIORITIES || key->index >= SM_MAX_SLOTS ||
	    memcmp(key->pad, "\0\0\0", sizeof(key->pad)))
		return -ERANGE;
	int err = ensure_service_row(image, key->service_id);
	if (err)
		return err;

	struct priority_slots *prio = &image->services[key->service_id].priorities[key->priority];
	if (value) {
		err = grow32((void **)&prio->slots, &prio->capacity, key->index + 1, sizeof(struct slot));
		if (err)
			return err;
	}
	struct slot *slot = find_slot(image, key);
	if (!slot || unchanged(slot->present, &slot->value, value, sizeof(*value)))
		return 0; /* deleting what was never there, or setting what is */
	err = journal_record(image, SM_MAP_ENDPOINTS, key, &slot->epoch);
	if (err)
		return err;

	uint64_t position = encode_position(key);
	if (value && (!slot->present || slot->value.backend_id != value->backend_id)) {
		err = add_position(image, value->backend_id, position);
		if (err)
			return err;
	}
	if (slot->present && (!value || slot->value.backend_id != value->backend_id))
		remove_position(image, slot->value.backend_id, position);

	if (value) {
		image->counts[SM_MAP_ENDPOINTS] += !slot->present;
		slot->value = *value;
		slot->present = true;
		if (key->index >= prio->len)
			prio->len = key->index + 1;
	} else if (slot->present) {
		image->counts[SM_MAP_ENDPOINTS]--;
		slot->present = false;
		while (prio->len && !prio->slots[prio->len - 1].present)
			prio->len--;
	}
	return 0;
}

static int set_service(struct sm_image *image, uint32_t id, const struct sm_service_value *value)
{
	int err = ensure_service_row(image, id);
	if (err)
		return err;

	struct service_row *row = &image->services[id];
	if (unchanged(row->present, &row->value, value, sizeof(*value)))
		return 0;
	err = journal_record(image, SM_MAP_SERVICES, &id, &row->epoch);
	if (err)
		return err;
	image->counts[SM_MAP_SERVICES] += (value != NULL) - row->present;
	row->present = value != NULL;
	if (value)
		row->value = *value;
	return 0;
}

static int set_backend(struct sm_image *image, uint32_t id, const struct sm_backend_value *value)
{
	int err = ensure_backend_row(image, id);
	if (err)
		return err;

	struct backend_row *row = &image->backends[id];
	if (unchanged(row->present, &row->value, value, sizeof(*value)))
		return 0;
	err = journal_record(image, SM_MAP_BACKENDS, &id, &row->epoch);
	if (err)
		return err;
	image->counts[SM_MAP_BACKENDS] += (value != NULL) - row->present;
	row->present = value != NULL;
	if (value)
		row->value = *value;
	return 0;
}

static int set_frontend(struct sm_image *image, const struct sm_frontend_key *key,
			const struct sm_frontend_value *value)
{
	struct frontend_entry *entry = find_frontend(image, key);

	if (!entry) {
		if (!value)
			return 0;
		entry = calloc(1, sizeof(*entry));
		if (!entry)
			return -ENOMEM;
		entry->key = *key;
		HASH_ADD(hh, image->frontends, key, sizeof(entry->key), entry);
		if (!entry->hh.tbl) { /* uthash could not grow its table (HASH_NONFATAL_OOM) */
			free(entry);
			return -ENOMEM;
		}
	} else if (unchanged(entry->present, &entry->value, value, sizeof(*value))) {
		return 0;
	}
	int err = journal_record(image, SM_MAP_FRONTENDS, key, &entry->epoch);
	if (err)
		return err;
	image->counts[SM_MAP_FRONTENDS] += (value != NULL) - entry->present;
	entry->present = value != NULL;
	if (value) {
		entry->value = *value;
	} else if (!image->in_transaction) {
		HASH_DEL(image->frontends, entry);
		free(entry);
	}
	return 0;
}

int sm_image_set(struct sm_image *image, enum sm_map_id map, const void *key, const void *value)
{
	switch (map) {
	case SM_MAP_FRONTENDS:
		return set_frontend(image, key, value);
	case SM_MAP_SERVICES:
		return set_service(image, *(const __u32 *)key, value);
	case SM_MAP_ENDPOINTS:
		return set_endpoint(image, key, value);
	case SM_MAP_BACKENDS:
		return set_backend(image, *(const __u32 *)key, value);
	default:
		return -EINVAL;
	}
}

/* ---- ending a transaction ---- */

/* Frees the frontends the transaction deleted; only journaled keys can be tombstones. */
static void purge_frontend_tombstones(struct sm_image *image)
{
	for (size_t i = 0; i < image->journal_len; i++) {
		const struct journal_entry *journaled = &image->journal[i];
		if (journaled->map != SM_MAP_FRONTENDS)
			continue;
		struct frontend_entry *entry = find_frontend(image, &journaled->key.frontend);
		if (entry && !entry->present) {
			HASH_DEL(image->frontends, entry);
			free(entry);
		}
	}
}

void image_commit(struct sm_image *image)
{
	image->in_transaction = false;
	purge_frontend_tombstones(image);
}

static const void *journal_before(const struct sm_image *image, const struct journal_entry *entry)
{
	return entry->had ? image->arena + entry->before_offset : NULL;
}

/*
 * Puts every entry back to its first value, without memory: rows and slots do not shrink, so each entry finds
 * the room it had. A backend's list of the slots naming it would grow beyond its old room if a slot were
 * given back to it before another was taken away (the journal holds first values, not each step): every
 * slot the transaction touched is emptied first, and only then are the first values restored.
 */
void image_rollback(struct sm_image *image)
{
	image->in_transaction = false;
	for (size_t i = image->journal_len; i-- > 0;) {
		const struct journal_entry *entry = &image->journal[i];
		if (entry->map == SM_MAP_ENDPOINTS)
			sm_image_set(image, entry->map, &entry->key, NULL);
	}
	for (size_t i = image->journal_len; i-- > 0;) {
		const struct journal_entry *entry = &image->journal[i];
		sm_image_set(image, entry->map, &entry->key, journal_before(image, entry));
	}
	purge_frontend_tombstones(image);
	image->journal_len = 0;
	image->arena_len = 0;
}

/* ---- net writes ---- */

void plan_reset(struct plan *plan)
{
	plan->n = 0;
}

void plan_free(struct plan *plan)
{
	free(plan->ops);
	*plan = (struct plan){ 0 };
}

static int plan_reserve(struct plan *plan, size_t n)
{
	if (n <= plan->capacity)
		return 0;

	size_t capacity = plan->capacity ? plan->capacity : 64;
	while (capacity < n)
		capacity *= 2;
	struct sm_map_op *ops = realloc(plan->ops, capacity * sizeof(*ops));
	if (!ops)
		return -ENOMEM;
	plan->ops = ops;
	plan->capacity = capacity;
	return 0;
}

/* Updates bottom-up so each reference is written before what refers to it; deletes top-down. */
static uint8_t write_phase(enum sm_map_id map, enum sm_map_op_kind kind)
{
	static const uint8_t update_phase[SM_MAP_COUNT] = {
		[SM_MAP_BACKENDS] = 0, [SM_MAP_ENDPOINTS] = 1, [SM_MAP_SERVICES] = 2, [SM_MAP_FRONTENDS] = 3,
	};
	static const uint8_t delete_phase[SM_MAP_COUNT] = {
		[SM_MAP_FRONTENDS] = 4, [SM_MAP_SERVICES] = 5, [SM_MAP_ENDPOINTS] = 6, [SM_MAP_BACKENDS] = 7,
	};
	return kind == SM_OP_UPDATE ? update_phase[map] : delete_phase[map];
}

void image_diff_begin(struct sm_image *image, struct diff_cursor *cursor)
{
	*cursor = (struct diff_cursor){ 0 };
	for (size_t i = 0; i < image->journal_len; i++) {
		struct journal_entry *entry = &image->journal[i];
		const void *before = journal_before(image, entry);
		const void *after = sm_image_get(image, entry->map, &entry->key);

		if ((!before && !after) ||
		    (before && after && memcmp(before, after, sm_map_value_size(entry->map)) == 0)) {
			entry->phase = NO_WRITE;
			continue;
		}
		entry->phase = write_phase(entry->map, after ? SM_OP_UPDATE : SM_OP_DELETE);
		cursor->left[entry->phase]++;
	}
}

int image_diff_next(struct sm_image *image, struct diff_cursor *cursor, struct plan *plan, size_t max)
{
	plan_reset(plan);
	if (plan_reserve(plan, max))
		return -ENOMEM;
	for (; cursor->phase < WRITE_PHASES && plan->n < max; cursor->phase++, cursor->index = 0) {
		/* a phase with writes left has one at or past index: the scan stays in the journal */
		for (; cursor->left[cursor->phase] && plan->n < max; cursor->index++) {
			const struct journal_entry *entry = &image->journal[cursor->index];
			if (entry->phase != cursor->phase)
				continue;
			const void *after = sm_image_get(image, entry->map, &entry->key);
			plan->ops[plan->n++] = (struct sm_map_op){
				.map = entry->map, .kind = after ? SM_OP_UPDATE : SM_OP_DELETE, .key = entry->key,
				.value = after, .before = journal_before(image, entry),
			};
			cursor->left[cursor->phase]--;
		}
		if (cursor->left[cursor->phase])
			break; /* the plan is full within this phase */
	}
	return 0;
}

int image_undo_next(struct sm_image *image, struct diff_cursor *cursor, struct plan *undo, size_t max)
{
	plan_reset(undo);
	if (cursor->phase == 0 && cursor->index == 0)
		return 0; /* nothing was written: no room needed */
	if (plan_reserve(undo, max))
		return -ENOMEM;
	while (undo->n < max && (cursor->phase > 0 || cursor->index > 0)) {
		if (cursor->index == 0 || cursor->phase >= WRITE_PHASES) {
			cursor->phase--;
			cursor->index = image->journal_len;
			continue;
		}
		const struct journal_entry *entry = &image->journal[--cursor->index];
		if (entry->phase != cursor->phase)
			continue;
		const void *before = journal_before(image, entry);
		undo->ops[undo->n] = (struct sm_map_op){
			.map = entry->map, .kind = before ? SM_OP_UPDATE : SM_OP_DELETE, .key = entry->key,
			.value = before, .before = sm_image_get(image, entry->map, &entry->key),
		};
		undo->n++;
	}
	return 0;
}

/* ---- reading ---- */

uint32_t image_slot_count(const struct sm_image *image, uint32_t service_id, uint8_t priority)
{
	struct service_row *row = service_row(image, service_id);

	return row && priority < SM_MAX_PRIORITIES ? row->priorities[priority].len : 0;
}

size_t image_backend_positions(const struct sm_image *image, uint32_t backend_id, uint32_t service_id,
			       struct slot_position *out, size_t max)
{
	struct backend_row *row = backend_row(image, backend_id);
	const uint64_t *positions = row ? row_positions(row) : NULL;
	size_t n = 0;

	for (uint32_t i = 0; row && i < row->n_positions; i++) {
		uint64_t position = positions[i];
		if ((uint32_t)(position >> 32) != service_id)
			continue;
		if (n < max)
			out[n] = (struct slot_position){
				.service_id = service_id,
				.priority = (uint8_t)(position >> 24),
				.index = (uint32_t)(position & 0xffffff),
			};
		n++;
	}
	return n;
}

int sm_image_for_each(const struct sm_image *image, enum sm_map_id map,
		      int (*fn)(void *ctx, const void *key, const void *value), void *ctx)
{
	union sm_map_key key;
	int ret;

	switch (map) {
	case SM_MAP_FRONTENDS:
		for (struct frontend_entry *entry = image->frontends; entry; entry = entry->hh.next) {
			key.frontend = entry->key;
			if (entry->present && (ret = fn(ctx, &key, &entry->value)))
				return ret;
		}
		return 0;
	case SM_MAP_SERVICES:
	case SM_MAP_BACKENDS:
		for (uint32_t id = 1; id < (map == SM_MAP_SERVICES ? image->services_len : image->backends_len); id++) {
			const void *value = sm_image_get(image, map, &id);
			key.id = id;
			if (value && (ret = fn(ctx, &key, value)))
				return ret;
		}
		return 0;
	case SM_MAP_ENDPOINTS:
		for (uint32_t id = 1; id < image->services_len; id++) {
			for (uint8_t p = 0; p < SM_MAX_PRIORITIES; p++) {
				const struct priority_slots *prio = &image->services[id].priorities[p];
				for (uint32_t i = 0; i < prio->len; i++) {
					if (!prio->slots[i].present)
						continue;
					key.endpoint = (struct sm_endpoint_key){ .service_id = id, .priority = p, .index = i };
					if ((ret = fn(ctx, &key, &prio->slots[i].value)))
						return ret;
				}
			}
		}
		return 0;
	default:
		return -EINVAL;
	}
}

int image_for_each_id(const struct sm_image *image, enum sm_map_id map,
		      int (*fn)(void *ctx, uint32_t id, const void *value), void *ctx)
{
	uint32_t len = map == SM_MAP_SERVICES ? image->services_len : image->backends_len;

	for (uint32_t id = 1; id < len; id++) {
		const void *value = sm_image_get(image, map, &id);
		int ret = value ? fn(ctx, id, value) : 0;
		if (ret)
			return ret;
	}
	return 0;
}

struct copy_ctx {
	struct sm_image *dst;
	enum sm_map_id map;
};

static int copy_entry(void *ctx, const void *key, const void *value)
{
	struct copy_ctx *copy = ctx;

	return sm_image_set(copy->dst, copy->map, key, value);
}

int image_copy(struct sm_image *dst, const struct sm_image *src)
{
	for (int map = 0; map < SM_MAP_COUNT; map++) {
		struct copy_ctx ctx = { .dst = dst, .map = map };
		int err = sm_image_for_each(src, map, copy_entry, &ctx);
		if (err)
			return err;
	}
	return 0;
}

/* ---- comparing and checking ---- */

static int compare_endpoints(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct sm_endpoint_value));
}

/* The present endpoint values of a service's priority, sorted. */
static struct sm_endpoint_value *sorted_endpoints(const struct sm_image *image, uint32_t id, uint8_t p,
						  size_t *n)
{
	struct service_row *row = service_row(image, id);
	const struct priority_slots *prio = row ? &row->priorities[p] : NULL;
	struct sm_endpoint_value *values = malloc(sizeof(*values) * (prio && prio->len ? prio->len : 1));

	*n = 0;
	for (uint32_t i = 0; values && prio && i < prio->len; i++) {
		if (prio->slots[i].present)
			values[(*n)++] = prio->slots[i].value;
	}
	if (values)
		qsort(values, *n, sizeof(*values), compare_endpoints);
	return values;
}

static bool endpoints_equivalent(const struct sm_image *a, const struct sm_image *b, uint32_t id, uint8_t p)
{
	size_t na, nb;
	struct sm_endpoint_value *va = sorted_endpoints(a, id, p, &na);
	struct sm_endpoint_value *vb = sorted_endpoints(b, id, p, &nb);
	bool equal = va && vb && na == nb && memcmp(va, vb, na * sizeof(*va)) == 0;

	free(va);
	free(vb);
	return equal;
}

struct equivalence_ctx {
	const struct sm_image *other;
	enum sm_map_id map;
	char *diff;
	size_t diff_size;
};

static int entry_in_other(void *ctx, const void *key, const void *value)
{
	struct equivalence_ctx *eq = ctx;
	const void *theirs = sm_image_get(eq->other, eq->map, key);

	if (theirs && memcmp(theirs, value, sm_map_value_size(eq->map)) == 0)
		return 0;
	if (eq->map == SM_MAP_FRONTENDS)
		snprintf(eq->diff, eq->diff_size, "frontends: an address differs (%s)", theirs ? "value" : "missing");
	else
		snprintf(eq->diff, eq->diff_size, "%s: id %u differs (%s)", sm_map_name(eq->map),
			 *(const __u32 *)key, theirs ? "value" : "missing");
	return 1;
}

bool sm_image_equivalent(const struct sm_image *a, const struct sm_image *b, char *diff, size_t diff_size)
{
	static const enum sm_map_id keyed[] = { SM_MAP_FRONTENDS, SM_MAP_SERVICES, SM_MAP_BACKENDS };

	for (size_t i = 0; i < sizeof(keyed) / sizeof(keyed[0]); i++) {
		if (sm_image_count(a, keyed[i]) != sm_image_count(b, keyed[i])) {
			snprintf(diff, diff_size, "%s: %zu entries against %zu", sm_map_name(keyed[i]),
				 sm_image_count(a, keyed[i]), sm_image_count(b, keyed[i]));
			return false;
		}
		struct equivalence_ctx ctx = { .other = b, .map = keyed[i], .diff = diff, .diff_size = diff_size };
		if (sm_image_for_each(a, keyed[i], entry_in_other, &ctx))
			return false;
	}
	if (sm_image_count(a, SM_MAP_ENDPOINTS) != sm_image_count(b, SM_MAP_ENDPOINTS)) {
		snprintf(diff, diff_size, "endpoints: %zu entries against %zu", sm_image_count(a, SM_MAP_ENDPOINTS),
			 sm_image_count(b, SM_MAP_ENDPOINTS));
		return false;
	}
	uint32_t len = a->services_len > b->services_len ? a->services_len : b->services_len;
	for (uint32_t id = 1; id < len; id++) {
		for (uint8_t p = 0; p < SM_MAX_PRIORITIES; p++) {
			if (!endpoints_equivalent(a, b, id, p)) {
				snprintf(diff, diff_size, "endpoints of service %u priority %u differ", id, p);
				return false;
			}
		}
	}
	return true;
}

static int check_frontend(void *ctx, const void *key, const void *value)
{
	const struct sm_image *image = ctx;
	const struct sm_frontend_value *frontend = value;
	enum sm_map_id target = frontend->kind == SM_FRONTEND_SERVICE ? SM_MAP_SERVICES : SM_MAP_BACKENDS;

	(void)key;
	if (frontend->kind != SM_FRONTEND_SERVICE && frontend->kind != SM_FRONTEND_WORKLOAD)
		return -EINVAL;
	return sm_image_get(image, target, &frontend->id) ? 0 : -ENOENT;
}

int sm_image_check(const struct sm_image *image, char *err, size_t err_size)
{
	if (sm_image_for_each(image, SM_MAP_FRONTENDS, check_frontend, (void *)image)) {
		snprintf(err, err_size, "a frontend names a missing service or backend");
		return -EFAULT;
	}
	for (uint32_t id = 1; id < image->services_len; id++) {
		const struct service_row *row = &image->services[id];
		if (!row->present)
			continue;
		for (uint8_t p = 0; p < SM_MAX_PRIORITIES; p++) {
			const struct priority_slots *prio = &row->priorities[p];
			for (uint32_t i = 0; i < row->value.endpoint_counts[p]; i++) {
				if (i >= prio->len || !prio->slots[i].present) {
					snprintf(err, err_size, "service %u priority %u: count %u covers missing slot %u",
						 id, p, row->value.endpoint_counts[p], i);
					return -EFAULT;
				}
				uint32_t backend_id = prio->slots[i].value.backend_id;
				if (!sm_image_get(image, SM_MAP_BACKENDS, &backend_id)) {
					snprintf(err, err_size, "service %u priority %u slot %u: backend %u is missing", id,
						 p, i, backend_id);
					return -EFAULT;
				}
			}
		}
	}
	return 0;
}

/* ---- the image as a map writer ---- */

/* Whether op->before is what the image holds under op's key, as a writer that puts it back relies on. */
static bool holds_before(const struct sm_image *image, const struct sm_map_op *op)
{
	const void *held = sm_image_get(image, op->map, &op->key);

	return unchanged(held != NULL, held, op->before, sm_map_value_size(op->map));
}

static int image_writer_apply(struct sm_map_writer *base, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	struct sm_image_writer *writer = (struct sm_image_writer *)base;

	for (*applied = 0; *applied < n; (*applied)++) {
		const struct sm_map_op *op = &ops[*applied];
		if (writer->fail_after && writer->ops_applied >= writer->fail_after) {
			writer->fail_after = 0;
			return writer->fail_error ? writer->fail_error : -ENOSPC;
		}
		if (writer->check_each_write && !holds_before(writer->image, op)) {
			snprintf(writer->check_error, sizeof(writer->check_error),
				 "a write to the %s map names a value before it that the map does not hold",
				 sm_map_name(op->map));
			return -EFAULT;
		}
		int err = sm_image_set(writer->image, op->map, &op->key, op->kind == SM_OP_UPDATE ? op->value : NULL);
		if (err)
			return err;
		writer->ops_applied++;
		if (writer->check_each_write &&
		    sm_image_check(writer->image, writer->check_error, sizeof(writer->check_error))) {
			(*applied)++;
			return -EFAULT;
		}
	}
	return 0;
}

void sm_image_writer_init(struct sm_image_writer *writer, struct sm_image *image)
{
	*writer = (struct sm_image_writer){ .writer = { .apply = image_writer_apply }, .image = image };
}

bool image_id_in_use(const struct sm_image *image, enum sm_map_id map, uint32_t id)
{
	bool present, touched;

	if (map == SM_MAP_SERVICES) {
		struct service_row *row = service_row(image, id);
		present = row && row->present;
		touched = row && row->epoch == image->epoch;
	} else {
		struct backend_row *row = backend_row(image, id);
		present = row && row->present;
		touched = row && row->epoch == image->epoch;
	}
	return present || (image->in_transaction && touched);
}

void image_trim(struct sm_image *image, size_t keep)
{
	if (image->in_transaction || image->journal_capacity <= keep)
		return;
	free(image->journal);
	free(image->arena);
	image->journal = NULL;
	image->arena = NULL;
	image->journal_capacity = image->arena_capacity = 0;
	image->journal_len = image->arena_len = 0;
}
