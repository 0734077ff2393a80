/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/event_backlog.h"

#define FIRST_CAPACITY 1024

void event_backlog_init(struct event_backlog *b, struct model_gate *gate, size_t event_size, size_t limit)
{
	/* the event after the read time, at an 8-byte boundary as its struct wants */
	size_t slot = sizeof(struct timespec) + (event_size + 7) / 8 * 8;

	*b = (struct event_backlog){ .gate = gate, .limit = limit, .event_size = event_size, .slot_size = slot };
}

static void release(struct event_backlog *b)
{
	free(b->items);
	b->items = NULL;
	b->head = b->cap = 0;
}

void event_backlog_free(struct event_backlog *b)
{
	if (b->n && !b->held)
		model_gate_wait_end(b->gate);
	b->n = 0;
	release(b);
}

static unsigned char *slot(const struct event_backlog *b, size_t i)
{
	return b->items + ((b->head + i) % b->cap) * b->slot_size;
}

/* Twice the room, the waiting events moved to the front in order. */
static int grow(struct event_backlog *b)
{
	size_t cap = b->cap ? b->cap * 2 : FIRST_CAPACITY;
	unsigned char *items = malloc(cap * b->slot_size);
	size_t first = b->n < b->cap - b->head ? b->n : b->cap - b->head;

	if (!items)
		return -ENOMEM;
	if (b->n) {
		memcpy(items, b->items + b->head * b->slot_size, first * b->slot_size);
		memcpy(items + first * b->slot_size, b->items, (b->n - first) * b->slot_size);
	}
	free(b->items);
	b->items = items;
	b->head = 0;
	b->cap = cap;
	return 0;
}

/* Appends the event: 0, -ENOSPC at the limit, -ENOMEM. */
static int push(struct event_backlog *b, const void *event, const struct timespec *read_at)
{
	unsigned char *at;
	int err;

	if (b->n >= b->limit)
		return -ENOSPC;
	if (b->n == b->cap && (err = grow(b)))
		return err;
	if (!b->n && !b->held)
		model_gate_wait_begin(b->gate); /* until the last one is handled */
	at = slot(b, b->n++);
	memcpy(at, read_at, sizeof(*read_at));
	memcpy(at + sizeof(*read_at), event, b->event_size);
	return 0;
}

/* The oldest event and when it was read, or NULL when none waits. */
static const void *front(const struct event_backlog *b, struct timespec *read_at)
{
	if (!b->n)
		return NULL;
	memcpy(read_at, slot(b, 0), sizeof(*read_at));
	return slot(b, 0) + sizeof(*read_at);
}

/* Removes the oldest event; once none waits, the memory a long wait took goes back. */
static void pop(struct event_backlog *b)
{
	b->head = (b->head + 1) % b->cap;
	if (--b->n)
		return;
	model_gate_wait_end(b->gate);
	b->head = 0;
	if (b->cap > FIRST_CAPACITY)
		release(b);
}

void event_backlog_hold(struct event_backlog *b)
{
	if (!b->held && b->n)
		model_gate_wait_end(b->gate);
	b->held = true;
}

void event_backlog_release(struct event_backlog *b)
{
	if (b->held && b->n)
		model_gate_wait_begin(b->gate); /* until the last one is handled, as if each had waited for it */
	b->held = false;
}

void event_backlog_offer(struct event_backlog *b, const void *event, const struct timespec *read_at,
			 event_backlog_fn fn, void *ctx)
{
	if (!b->n && !b->held && model_gate_trylock(b->gate)) {
		fn(ctx, event, read_at);
		model_gate_unlock(b->gate);
		return;
	}
	atomic_fetch_add(&b->waited, 1);
	if (push(b, event, read_at))
		atomic_fetch_add(&b->dropped, 1);
}

void event_backlog_drain(struct event_backlog *b, bool wait, size_t chunk, event_backlog_fn fn, void *ctx)
{
	struct timespec read_at;
	const void *event;

	while (b->n && !b->held) {
		if (wait)
			model_gate_lock(b->gate);
		else if (!model_gate_trylock(b->gate))
			return;
		for (size_t i = 0; i < chunk && (event = front(b, &read_at)); i++) {
			fn(ctx, event, &read_at);
			pop(b);
		}
		model_gate_unlock(b->gate);
	}
}
