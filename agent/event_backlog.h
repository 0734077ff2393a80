/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Datapath events read while the model is busy (an apply holds its lock: a full push for about a second,
 * a split for longer), kept in order with the time each was read, to be handled once the model is free:
 * meanwhile the kernel's ring buffer keeps draining instead of filling up and dropping events. While
 * events wait, the backlog counts as waiting for the model's gate, so that a split lets it in between
 * its runs. Events of one fixed size (the connection events' or the authorization events'). Bounded:
 * grows as events wait, up to a limit, and gives its memory back once empty. Held (before the model
 * holds what names the events), every event waits, and the backlog does not count as waiting for the gate.
 */
#ifndef SOCKMESH_AGENT_EVENT_BACKLOG_H
#define SOCKMESH_AGENT_EVENT_BACKLOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "agent/model_gate.h"

struct event_backlog {
	struct model_gate *gate; /* the model's, under whose lock events are handled */
	unsigned char *items; /* a circular array of cap slots, n of them from head: the read time, then the event */
	size_t head, n, cap, limit, event_size, slot_size;
	bool held; /* until event_backlog_release: every event waits, none is handled */
	atomic_ullong waited, dropped; /* events offered while the lock was busy; of those, beyond the room */
};

void event_backlog_init(struct event_backlog *b, struct model_gate *gate, size_t event_size, size_t limit);
/* The events that wait (none once drained at stop); the counts stay. */
void event_backlog_free(struct event_backlog *b);

/* From event_backlog_hold to event_backlog_release, every event offered waits (counted in waited), and none
 * is drained: nothing can name them yet. Meanwhile the backlog does not count as waiting for the gate, so
 * that an apply does not let it in between two runs for nothing. */
void event_backlog_hold(struct event_backlog *b);
void event_backlog_release(struct event_backlog *b);

/* What handles an event, under the model's lock. */
typedef void (*event_backlog_fn)(void *ctx, const void *event, const struct timespec *read_at);
/* An event just read (event_size bytes, at *read_at): handled by fn at once when the lock is free and none
 * waits before it; else it waits (counted in waited), or is dropped when there is no room or memory
 * (counted in dropped too). */
void event_backlog_offer(struct event_backlog *b, const void *event, const struct timespec *read_at,
			 event_backlog_fn fn, void *ctx);
/* The events that wait, in order, to fn, chunk at a time under the lock while it is free (wait: for it to be).
 * Once none waits, the memory beyond the first 1,024 events' goes back. Nothing while held. */
void event_backlog_drain(struct event_backlog *b, bool wait, size_t chunk, event_backlog_fn fn, void *ctx);

#endif
