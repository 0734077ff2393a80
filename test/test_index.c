/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The model's flat index (workload/index.h) against a plain array that holds the same entries: runs of
 * adds and removes whose hashes collide on purpose and whose runs wrap around the end of the slots,
 * every entry looked up after each step, so that a removal's backward shift that strands an entry (or
 * a growth that drops one) shows at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "workload/index.h"

#define ENTRIES 2000

struct item {
	uint64_t hash;
	int key;
	bool present;
};

static bool has_key(const void *entry, const void *key)
{
	return ((const struct item *)entry)->key == *(const int *)key;
}

/* Every item is found exactly when it is present, and the count agrees. */
static void check_all(const struct flat_index *index, const struct item *items, size_t n)
{
	size_t present = 0;

	for (size_t i = 0; i < n; i++) {
		const void *found = index_find(index, items[i].hash, has_key, &items[i].key);
		assert_ptr_equal(found, items[i].present ? &items[i] : NULL);
		present += items[i].present;
	}
	assert_int_equal(index->n, present);
	assert_true(!index->slots || 2 * index->n <= index->mask + 1);
}

/* A small table by hand: four entries whose home is the last slot, so that their run wraps to slot 0. */
static void a_run_across_the_end(void **state)
{
	(void)state;
	struct flat_index index = { 0 };
	struct item items[4];
	const size_t order[] = { 1, 0, 3, 2 };

	for (int i = 0; i < 4; i++) {
		items[i] = (struct item){ .hash = 63 + 64 * (uint64_t)i, .key = i, .present = true };
		assert_int_equal(index_add(&index, items[i].hash, &items[i]), 0);
	}
	assert_int_equal(index.mask, 63); /* still the first 64 slots: the run is 63, 0, 1, 2 */
	check_all(&index, items, 4);
	for (size_t i = 0; i < 4; i++) {
		items[order[i]].present = false;
		index_remove(&index, items[order[i]].hash, &items[order[i]]);
		check_all(&index, items, 4);
	}
	assert_null(index.slots[63].entry);
	index_free(&index);
}

/* Removing what is not there changes nothing. */
static void removing_an_absent_entry(void **state)
{
	(void)state;
	struct flat_index index = { 0 };
	struct item items[2] = { { .hash = 5, .key = 0, .present = true }, { .hash = 5, .key = 1 } };

	index_remove(&index, 5, &items[1]); /* no slots yet */
	assert_int_equal(index_add(&index, items[0].hash, &items[0]), 0);
	index_remove(&index, 5, &items[1]); /* same hash, other entry */
	index_remove(&index, 6, &items[1]);
	check_all(&index, items, 2);
	index_free(&index);
}

/* Room reserved at once: the adds that follow keep the same slots, and the index stays at most half full. */
static void reserved_room_takes_the_adds(void **state)
{
	(void)state;
	static struct item items[1000];
	struct flat_index index = { 0 };

	assert_int_equal(index_reserve(&index, 1000), 0);
	const struct index_slot *slots = index.slots;
	for (int i = 0; i < 1000; i++) {
		items[i] = (struct item){ .hash = (uint64_t)i * 0x9e3779b97f4a7c15u, .key = i, .present = true };
		assert_int_equal(index_add(&index, items[i].hash, &items[i]), 0);
	}
	assert_ptr_equal(index.slots, slots);
	check_all(&index, items, 1000);
	index_free(&index);
}

/* Random adds and removes over hashes drawn from a few values, most of them near the end of the slots. */
static void random_steps_against_an_array(void **state)
{
	(void)state;
	static struct item items[ENTRIES];
	struct flat_index index = { 0 };
	uint64_t seed = 0x9e3779b97f4a7c15u;

	for (int i = 0; i < ENTRIES; i++) {
		seed = seed * 6364136223846793005u + 1442695040888963407u;
		/* 16 distinct hashes, each shared by about 125 entries, all in the last slots of any table */
		items[i] = (struct item){ .hash = ~(uint64_t)0 - (seed >> 60), .key = i };
	}
	for (int step = 0; step < 6 * ENTRIES; step++) {
		seed = seed * 6364136223846793005u + 1442695040888963407u;
		struct item *item = &items[(seed >> 33) % ENTRIES];
		if (item->present)
			index_remove(&index, item->hash, item);
		else
			assert_int_equal(index_add(&index, item->hash, item), 0);
		item->present = !item->present;
		if (step % 97 == 0)
			check_all(&index, items, ENTRIES);
	}
	check_all(&index, items, ENTRIES);
	index_free(&index);
	assert_null(index.slots);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_run_across_the_end),
		cmocka_unit_test(removing_an_absent_entry),
		cmocka_unit_test(reserved_room_takes_the_adds),
		cmocka_unit_test(random_steps_against_an_array),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
