/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/event_backlog.h"

#define FIRST_CAPACITY 1024

void event_backlog_init(struct event_backlog *b, size_t limit)
{
	*b = (struct event_backlog){ .limit = limit };
}

void event_backlog_free(struct event_backlog *b)
{
	free(b->items);
	*b = (struct event_backlog){ .limit = b->limit };
}

/* Twice the room, the waiting events moved to the front in order. */
static int grow(struct event_backlog *b)
{
	size_t cap = b->cap ? b->cap * 2 : FIRST_CAPACITY;
	struct waiting_event *items = malloc(cap * sizeof(*items));
	size_t first = b->n < b->cap - b->head ? b->n : b->cap - b->head;

	if (!items)
		return -ENOMEM;
	if (b->n) {
		memcpy(items, b->items + b->head, first * sizeof(*items));
		memcpy(items + first, b->items, (b->n - first) * sizeof(*items));
	}
	free(b->items);
	b->items = items;
	b->head = 0;
	b->cap = cap;
	return 0;
}

int event_backlog_push(struct event_backlog *b, const struct sm_conn_event *ev, const struct timespec *read_at)
{
	int err;

	if (b->n >= b->limit)
		return -ENOSPC;
	if (b->n == b->cap && (err = grow(b)))
		return err;
	b->items[(b->head + b->n++) % b->cap] = (struct waiting_event){ .ev = *ev, .read_at = *read_at };
	return 0;
}

const struct waiting_event *event_backlog_front(const struct event_backlog *b)
{
	return b->n ? &b->items[b->head] : NULL;
}

void event_backlog_pop(struct event_backlog *b)
{
	if (!b->n)
		return;
	b->head = (b->head + 1) % b->cap;
	if (--b->n)
		return;
	b->head = 0;
	if (b->cap > FIRST_CAPACITY) /* the memory a long wait took */
		event_backlog_free(b);
}
