/* SPDX-License-Identifier: Apache-2.0 */
/* A bump allocator for protobuf-c: decoded messages are freed all at once by resetting the arena. */
#include <stdlib.h>

#include "proto/proto.h"

#define CHUNK_BYTES (64u << 10)
#define ALIGNMENT 16

struct sm_pb_chunk {
	struct sm_pb_chunk *next;
	size_t size;
	_Alignas(ALIGNMENT) unsigned char data[];
};

static struct sm_pb_chunk *new_chunk(size_t size, struct sm_pb_chunk *next)
{
	struct sm_pb_chunk *chunk = malloc(sizeof(*chunk) + size);

	if (chunk) {
		chunk->next = next;
		chunk->size = size;
	}
	return chunk;
}

static void *arena_alloc(void *data, size_t size)
{
	struct sm_pb_arena *arena = data;
	size_t aligned = (size + ALIGNMENT - 1) & ~(size_t)(ALIGNMENT - 1);

	/* Large blocks (a big bytes field) get a chunk of their own, behind the current one. */
	if (aligned > CHUNK_BYTES / 4) {
		if (!arena->chunks && !(arena->chunks = new_chunk(CHUNK_BYTES, NULL)))
			return NULL;
		struct sm_pb_chunk *own = new_chunk(aligned, arena->chunks->next);
		if (!own)
			return NULL;
		arena->chunks->next = own;
		return own->data;
	}
	if (!arena->chunks || arena->used + aligned > arena->chunks->size) {
		struct sm_pb_chunk *chunk = new_chunk(CHUNK_BYTES, arena->chunks);
		if (!chunk)
			return NULL;
		arena->chunks = chunk;
		arena->used = 0;
	}
	void *block = arena->chunks->data + arena->used;
	arena->used += aligned;
	return block;
}

static void arena_free(void *data, void *pointer)
{
	(void)data;
	(void)pointer; /* everything goes at the next reset */
}

void sm_pb_arena_init(struct sm_pb_arena *arena)
{
	*arena = (struct sm_pb_arena){
		.allocator = { .alloc = arena_alloc, .free = arena_free, .allocator_data = arena },
	};
}

void sm_pb_arena_reset(struct sm_pb_arena *arena)
{
	struct sm_pb_chunk *keep = NULL;

	for (struct sm_pb_chunk *chunk = arena->chunks, *next; chunk; chunk = next) {
		next = chunk->next;
		if (!keep && chunk->size == CHUNK_BYTES) {
			keep = chunk;
			keep->next = NULL;
		} else {
			free(chunk);
		}
	}
	arena->chunks = keep;
	arena->used = 0;
}

void sm_pb_arena_release(struct sm_pb_arena *arena)
{
	sm_pb_arena_reset(arena);
	free(arena->chunks);
	arena->chunks = NULL;
}
