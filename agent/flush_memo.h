/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which enrolled namespaces telemetry's flush may skip. A namespace whose last walk found no followed
 * socket, and whose count of started connections (sm_conn_started) has not moved since that walk began,
 * has nothing to report: a connection followed before the walk began was in the namespace's TCP table
 * during it, and one followed after moved the count.
 */
#ifndef SOCKMESH_AGENT_FLUSH_MEMO_H
#define SOCKMESH_AGENT_FLUSH_MEMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct flush_memo;

int flush_memo_new(struct flush_memo **out);
void flush_memo_free(struct flush_memo *m);
/* Whether the namespace needs a walk now; started: its count, read before the walk (counted: false when it
 * has none to read). Either way the namespace is named in this round. */
bool flush_memo_due(struct flush_memo *m, uint64_t cookie, bool counted, uint64_t started);
/* What the walk found: followed sockets, after reading started (as given to flush_memo_due). */
int flush_memo_walked(struct flush_memo *m, uint64_t cookie, bool counted, uint64_t started, size_t followed);
/* Ends a round: forgets the namespaces it did not name (gone, or not walked for an error); returns how many. */
size_t flush_memo_end_round(struct flush_memo *m);
/* Whether the namespace is remembered: walked once, and named in every round since. */
bool flush_memo_knows(const struct flush_memo *m, uint64_t cookie);

#endif
