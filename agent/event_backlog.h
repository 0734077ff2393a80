/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connection events read while the model is busy (an apply holds its lock: a full push for about a
 * second, a split for longer), kept in order with the time each was read, to be named once the model is
 * free: meanwhile the kernel's ring buffer keeps draining instead of filling up and dropping events.
 * Bounded: grows as events wait, up to a limit, and gives its memory back once empty.
 */
#ifndef SOCKMESH_AGENT_EVENT_BACKLOG_H
#define SOCKMESH_AGENT_EVENT_BACKLOG_H

#include <stddef.h>
#include <time.h>

#include "bpf/sockmesh.h"

struct event_backlog {
	struct waiting_event *items; /* a circular array of cap items, n of them from head */
	size_t head, n, cap, limit;
};

struct waiting_event {
	struct sm_conn_event ev;
	struct timespec read_at;
};

void event_backlog_init(struct event_backlog *b, size_t limit);
void event_backlog_free(struct event_backlog *b);
/* Appends ev, read at *read_at: 0, -ENOSPC at the limit, -ENOMEM. */
int event_backlog_push(struct event_backlog *b, const struct sm_conn_event *ev, const struct timespec *read_at);
/* The oldest event, or NULL when none waits. */
const struct waiting_event *event_backlog_front(const struct event_backlog *b);
/* Removes the oldest event; once none waits, the memory beyond the first 1,024 events' goes back. */
void event_backlog_pop(struct event_backlog *b);

#endif
