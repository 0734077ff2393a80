/* SPDX-License-Identifier: Apache-2.0 */
/* What telemetry's flush found in each enrolled namespace at its last walk (agent/flush_memo.h). */
#include <errno.h>
#include <stdlib.h>

#include <uthash.h>

#include "agent/flush_memo.h"

struct namespace_walk {
	uint64_t cookie;
	uint64_t started;  /* the count read before the last walk */
	bool counted;	   /* it had a count then */
	size_t found;	   /* followed sockets the last walk found */
	uint64_t round;	   /* the last round that named it */
	UT_hash_handle hh;
};

struct flush_memo {
	struct namespace_walk *walks;
	uint64_t round; /* the current one, from 1 */
};

int flush_memo_new(struct flush_memo **out)
{
	struct flush_memo *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->round = 1;
	*out = m;
	return 0;
}

void flush_memo_free(struct flush_memo *m)
{
	struct namespace_walk *w, *tmp;

	if (!m)
		return;
	HASH_ITER(hh, m->walks, w, tmp) {
		HASH_DEL(m->walks, w);
		free(w);
	}
	free(m);
}

static struct namespace_walk *find(const struct flush_memo *m, uint64_t cookie)
{
	struct namespace_walk *w;

	HASH_FIND(hh, m->walks, &cookie, sizeof(cookie), w);
	return w;
}

bool flush_memo_due(struct flush_memo *m, uint64_t cookie, bool counted, uint64_t started)
{
	struct namespace_walk *w = find(m, cookie);

	if (!w)
		return true;
	w->round = m->round;
	return !(w->counted && counted && w->started == started && w->found == 0);
}

int flush_memo_walked(struct flush_memo *m, uint64_t cookie, bool counted, uint64_t started, size_t followed)
{
	struct namespace_walk *w = find(m, cookie);

	if (!w) {
		w = calloc(1, sizeof(*w));
		if (!w)
			return -ENOMEM; /* not remembered: walked again next round */
		w->cookie = cookie;
		HASH_ADD(hh, m->walks, cookie, sizeof(w->cookie), w);
		if (!w->hh.tbl) { /* uthash could not grow its table (HASH_NONFATAL_OOM) */
			free(w);
			return -ENOMEM;
		}
	}
	w->started = started;
	w->counted = counted;
	w->found = followed;
	w->round = m->round;
	return 0;
}

size_t flush_memo_end_round(struct flush_memo *m)
{
	struct namespace_walk *w, *tmp;
	size_t forgotten = 0;

	HASH_ITER(hh, m->walks, w, tmp) {
		if (w->round == m->round)
			continue;
		HASH_DEL(m->walks, w);
		free(w);
		forgotten++;
	}
	m->round++;
	return forgotten;
}

bool flush_memo_knows(const struct flush_memo *m, uint64_t cookie)
{
	return find(m, cookie) != NULL;
}
