/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An open-addressing index of the model's entities by a 64-bit hash of their key: linear probing in
 * one flat array kept at most half full, removal by backward shift (no tombstones). It replaces
 * uthash for the model's largest tables, whose lookups walked a bucket's chain through the entities
 * themselves: at 100,000 entries, a cache miss per step. The index holds hashes and pointers; the
 * entities hold their keys, which the caller's match compares.
 */
#ifndef SOCKMESH_WORKLOAD_INDEX_H
#define SOCKMESH_WORKLOAD_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct index_slot {
	uint64_t hash;
	void *entry; /* NULL: free */
};

struct flat_index {
	struct index_slot *slots;
	size_t mask; /* the number of slots less one (a power of two); 0 before the first add */
	size_t n;
};

/* The entry with this hash that match(entry, key) accepts, or NULL. Inline, so that match is too. */
static inline void *index_find(const struct flat_index *index, uint64_t hash,
			       bool (*match)(const void *entry, const void *key), const void *key)
{
	if (!index->slots)
		return NULL;
	for (size_t i = hash & index->mask;; i = (i + 1) & index->mask) {
		const struct index_slot *slot = &index->slots[i];
		if (!slot->entry)
			return NULL;
		if (slot->hash == hash && match(slot->entry, key))
			return slot->entry;
	}
}

/* Makes room for n more entries at once: the adds that follow neither grow the index nor fail. */
int index_reserve(struct flat_index *index, size_t n);
/* Adds an entry that is not in the index; grows the index first if it would be over half full. */
int index_add(struct flat_index *index, uint64_t hash, void *entry);
/* Removes the entry (the pointer itself) added under hash; nothing if it is not there. */
void index_remove(struct flat_index *index, uint64_t hash, const void *entry);
void index_free(struct flat_index *index);

#endif
