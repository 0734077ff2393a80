/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The model's lock, with a count of the threads that wait for it. The thread that applies config holds
 * the lock for a whole response: a full push for about a second, a split (a response that does not fit as
 * one batch, applied in runs) of thousands of policies for minutes. Readers that wait meanwhile are the
 * admin endpoint's requests and the events threads, whose backlogs drop events once full. Between two
 * runs of a split the model reads whole (sm_model_set_between_runs), and there the applying thread lets
 * them in (model_gate_yield). A mutex alone would not: its holder takes it back before a waiter wakes.
 */
#ifndef SOCKMESH_AGENT_MODEL_GATE_H
#define SOCKMESH_AGENT_MODEL_GATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct model_gate {
	pthread_mutex_t lock; /* the applying thread takes it as it is */
	atomic_uint waiting;  /* readers in model_gate_lock, and those between wait_begin and wait_end */
};

#define MODEL_GATE_INITIALIZER { .lock = PTHREAD_MUTEX_INITIALIZER }

/* A reader's: the lock, counted as waiting until it has it. */
void model_gate_lock(struct model_gate *gate);
/* Whether the lock was free and is now held. */
bool model_gate_trylock(struct model_gate *gate);
/* model_gate_lock for at most max_ms (a split lets the reader in between its runs meanwhile); whether the
 * lock is now held. */
bool model_gate_lock_within(struct model_gate *gate, unsigned max_ms);
void model_gate_unlock(struct model_gate *gate);
/* A reader that tries the lock from time to time instead of waiting for it (an events thread holding
 * events for the model) counts as waiting from wait_begin to wait_end. */
void model_gate_wait_begin(struct model_gate *gate);
void model_gate_wait_end(struct model_gate *gate);

/* The applying thread, holding the lock where the model reads whole: while readers wait, lets go of it
 * until none waits any more, or for at most max_ms; then holds it again. Nothing when none waits. */
void model_gate_yield(struct model_gate *gate, unsigned max_ms);

#endif
