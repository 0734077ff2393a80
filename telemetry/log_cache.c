/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The access log's names, kept formatted: a line's names (its workloads, namespaces, identities, service) are
 * the same for every connection of a pair of workloads, and formatting them costs more than the rest of the
 * line. Each kind of fragment has a table of slots indexed by the names' pointers; a slot holds the last
 * fragment that hashed there, so the table never grows, and one of another generation is simply not equal.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry/internal.h"
#include "telemetry/telemetry.h"

/* A node's own workloads are few (the source side, outbound); the pairs of services and peers many. */
#define SOURCE_SLOTS 256
#define DESTINATION_SLOTS 2048

struct sm_tel_log_cache {
	struct tel_log_fragment source[SOURCE_SLOTS], destination[DESTINATION_SLOTS];
};

int sm_tel_log_cache_new(struct sm_tel_log_cache **out)
{
	/* zeroed: generation 0 is never looked up */
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void sm_tel_log_cache_free(struct sm_tel_log_cache *cache)
{
	free(cache);
}

static size_t slot_index(const struct tel_log_names *names, size_t n_slots)
{
	uint64_t h = names->generation;

	for (size_t i = 0; i < sizeof(names->names) / sizeof(names->names[0]); i++)
		h = (h ^ (uintptr_t)names->names[i]) * 0x9e3779b97f4a7c15ULL;
	h = (h ^ ((uint64_t)names->format << 8 | names->direction)) * 0x9e3779b97f4a7c15ULL;
	return (size_t)(h >> 32) & (n_slots - 1);
}

struct tel_log_fragment *tel_log_cache_slot(struct sm_tel_log_cache *cache, enum tel_log_side side,
					    const struct tel_log_names *names)
{
	_Static_assert((SOURCE_SLOTS & (SOURCE_SLOTS - 1)) == 0, "a power of two");
	_Static_assert((DESTINATION_SLOTS & (DESTINATION_SLOTS - 1)) == 0, "a power of two");
	if (!cache || !names->generation)
		return NULL;
	if (side == TEL_LOG_SOURCE)
		return &cache->source[slot_index(names, SOURCE_SLOTS)];
	return &cache->destination[slot_index(names, DESTINATION_SLOTS)];
}

bool tel_log_fragment_is(const struct tel_log_fragment *slot, const struct tel_log_names *names)
{
	return slot && memcmp(&slot->names, names, sizeof(*names)) == 0;
}

void tel_log_fragment_keep(struct tel_log_fragment *slot, const struct tel_log_names *names, const char *text,
			   size_t len)
{
	if (!slot || len > sizeof(slot->text))
		return; /* formatted each time */
	slot->names = *names;
	slot->len = (uint16_t)len;
	memcpy(slot->text, text, len);
}
