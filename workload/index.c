/* SPDX-License-Identifier: Apache-2.0 */
/* The model's flat index (workload/index.h). */
#include <errno.h>
#include <stdlib.h>

#include "workload/index.h"

#define MIN_SLOTS 64

static void place(struct index_slot *slots, size_t mask, uint64_t hash, void *entry)
{
	size_t i = hash & mask;

	while (slots[i].entry)
		i = (i + 1) & mask;
	slots[i] = (struct index_slot){ .hash = hash, .entry = entry };
}

/* Moves every entry into size slots, placed again from its kept hash: no key is read. */
static int rehash(struct flat_index *index, size_t size)
{
	struct index_slot *slots = calloc(size, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; index->slots && i <= index->mask; i++) {
		if (index->slots[i].entry)
			place(slots, size - 1, index->slots[i].hash, index->slots[i].entry);
	}
	free(index->slots);
	index->slots = slots;
	index->mask = size - 1;
	return 0;
}

int index_reserve(struct flat_index *index, size_t n)
{
	size_t size = index->slots ? index->mask + 1 : MIN_SLOTS;

	while (2 * (index->n + n) > size)
		size *= 2;
	return index->slots && size == index->mask + 1 ? 0 : rehash(index, size);
}

int index_add(struct flat_index *index, uint64_t hash, void *entry)
{
	int err = index_reserve(index, 1);

	if (err)
		return err;
	place(index->slots, index->mask, hash, entry);
	index->n++;
	return 0;
}

void index_remove(struct flat_index *index, uint64_t hash, const void *entry)
{
	size_t mask = index->mask, hole = hash & mask;

	if (!index->slots)
		return;
	while (index->slots[hole].entry != entry) {
		if (!index->slots[hole].entry)
			return;
		hole = (hole + 1) & mask;
	}
	/*
	 * Backward shift: a later entry of the same run moves into the hole when its home slot is at or
	 * before the hole along its probe, so that no lookup meets a free slot before reaching its entry.
	 */
	for (size_t j = (hole + 1) & mask; index->slots[j].entry; j = (j + 1) & mask) {
		size_t home = index->slots[j].hash & mask;
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			index->slots[hole] = index->slots[j];
			hole = j;
		}
	}
	index->slots[hole] = (struct index_slot){ 0 };
	index->n--;
}

void index_free(struct flat_index *index)
{
	free(index->slots);
	*index = (struct flat_index){ 0 };
}
