/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to workload/: the image's transactions and indexes, shared by the model and the planner. */
#ifndef SOCKMESH_WORKLOAD_INTERNAL_H
#define SOCKMESH_WORKLOAD_INTERNAL_H

#include "workload/workload.h"

/* A planned write list: ops in phase order. */
struct plan {
	struct sm_map_op *ops;
	size_t n;
	size_t capacity;
};

void plan_reset(struct plan *plan);
void plan_free(struct plan *plan);

/*
 * Transactions: between begin and commit/rollback, the image remembers each touched key's first value.
 * Its net writes (one per changed key) come in the order readers need: updates of backends, endpoints,
 * services, frontends, then deletes of frontends, services, endpoints, backends. They are handed out
 * a plan at a time, so that a full push never holds them all: diff_begin marks what each touched key
 * needs, diff_next fills a plan with the next writes from the cursor (none at the end), undo_next
 * with the writes that undo those before the cursor, last first. Value pointers in a plan stay valid
 * until the image changes again.
 */
#define WRITE_PHASES 8

struct diff_cursor {
	uint8_t phase;
	size_t index;		     /* into the journal */
	size_t left[WRITE_PHASES]; /* writes of each phase not handed out yet: a phase ends at its last */
};

void image_begin(struct sm_image *image);
void image_diff_begin(struct sm_image *image, struct diff_cursor *cursor);
int image_diff_next(struct sm_image *image, struct diff_cursor *cursor, struct plan *plan, size_t max);
/* The undo of the writes before cursor, last first; reserves max ops in undo only when there is any. */
int image_undo_next(struct sm_image *image, struct diff_cursor *cursor, struct plan *undo, size_t max);
void image_rollback(struct sm_image *image);
void image_commit(struct sm_image *image);
/* Frees the transaction record's buffers when they hold more than keep entries. */
void image_trim(struct sm_image *image, size_t keep);

/* Slots in use for a service's priority (present slots are always 0 .. count - 1 in the model's image). */
uint32_t image_slot_count(const struct sm_image *image, uint32_t service_id, uint8_t priority);

/* Where a backend sits in endpoint slots: (service id << 32 | priority << 24 | index) each. */
struct slot_position {
	uint32_t service_id;
	uint8_t priority;
	uint32_t index;
};

size_t image_backend_positions(const struct sm_image *image, uint32_t backend_id, uint32_t service_id,
			       struct slot_position *out, size_t max);

/* Service and backend ids that have an entry, in ascending order, via a callback. */
int image_for_each_id(const struct sm_image *image, enum sm_map_id map,
		      int (*fn)(void *ctx, uint32_t id, const void *value), void *ctx);

/* Whether an id has an entry, or had one earlier in the transaction (then it must not be reused yet). */
bool image_id_in_use(const struct sm_image *image, enum sm_map_id map, uint32_t id);

/* Copies every entry of src into dst, an sm_image_set each (journaled when dst is in a transaction). */
int image_copy(struct sm_image *dst, const struct sm_image *src);

#endif
