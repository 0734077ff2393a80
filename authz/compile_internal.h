/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The compiler's own tools (not part of authz/'s API): interning of byte strings, bitsets, growing arrays.
 * Classes, sets and verdicts are all "distinct byte strings, numbered in order of first sight".
 */
#ifndef SOCKMESH_AUTHZ_COMPILE_INTERNAL_H
#define SOCKMESH_AUTHZ_COMPILE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "authz/authz.h"

/* Distinct byte strings of any length, numbered 0, 1, ... in order of first sight. */
struct sm_intern {
	uint8_t *bytes; /* every string, one after the other */
	size_t n_bytes, cap_bytes;
	size_t *offsets; /* n + 1 */
	size_t n, cap;
	uint32_t *slots; /* open addressing: id + 1, 0 empty */
	uint64_t *hashes;
	size_t cap_hashes;
	size_t n_slots; /* a power of two */
};

void sm_intern_init(struct sm_intern *in);
void sm_intern_free(struct sm_intern *in);
/* The id of blob (added when new); -ENOMEM. */
int sm_intern_add(struct sm_intern *in, const void *blob, size_t size, uint32_t *id);
/* The id of blob; -ESRCH when it was never added. */
int sm_intern_find(const struct sm_intern *in, const void *blob, size_t size, uint32_t *id);
static inline const void *sm_intern_get(const struct sm_intern *in, uint32_t id, size_t *size)
{
	if (size)
		*size = in->offsets[id + 1] - in->offsets[id];
	return in->bytes + in->offsets[id];
}

/* Makes room for need elements of elem bytes in *array (capacity *cap); -ENOMEM. */
int sm_grow(void *array, size_t *cap, size_t need, size_t elem);

#define SM_WORDS(bits) (((bits) + 63) / 64)

static inline bool sm_bit(const uint64_t *set, size_t i)
{
	return set[i / 64] >> (i % 64) & 1;
}

static inline void sm_bit_set(uint64_t *set, size_t i)
{
	set[i / 64] |= 1ULL << (i % 64);
}

/* Copies n bits from src (from bit from) into dst (at bit to); dst's other bits are kept. */
void sm_bits_copy(uint64_t *dst, size_t to, const uint64_t *src, size_t from, size_t n);

/* Whether prefix (addr, len) contains address a (host bits of addr are ignored). */
bool sm_cidr_contains(const uint8_t addr[16], unsigned len, const uint8_t a[16]);
/* addr with every bit past len cleared. */
void sm_cidr_mask(uint8_t out[16], const uint8_t addr[16], unsigned len);

/* ---- lookups over sorted tables (compile_lookup.c); the compiler sorts with the same orders ---- */
int sm_authz_cmp_dest(const void *a, const void *b);
int sm_authz_cmp_cidr(const void *a, const void *b);
int sm_authz_cmp_source(const void *a, const void *b);
int sm_authz_cmp_verdict(const void *a, const void *b);
int sm_authz_cmp_ident(const void *a, const void *b);
/* The CIDR class of addr: the longest prefix among the tables' entries, or 0 (one lookup per length, as
 * the kernel's LPM trie answers it). */
uint32_t sm_authz_cidr_class(const struct sm_authz_tables *tables, const uint8_t addr[16]);
/* The same for many addresses: the tables' entries, sorted by address then length (sm_authz_cmp_cidr), are
 * nested or apart; *parent gets, per entry, the nearest one before it that contains it (-1: none). */
#define SM_CIDR_DEPTH 130
int sm_cidr_parents(const struct sm_authz_tables *tables, int32_t **parent);
uint32_t sm_cidr_class_in(const struct sm_authz_tables *tables, const int32_t *parent, const uint8_t addr[16]);

/* ---- the compiler's state, shared by compile.c (tables) and compile_set.c (one destination set) ---- */

#define SM_NO_BIT UINT32_MAX

/* One Match of a policy, numbered in rule, clause, match order across all policies. */
struct sm_flat_match {
	const struct sm_authz_match *match;
	uint32_t src_bit;	/* its bit in source vectors, SM_NO_BIT: no source-side field */
	uint32_t cidr_atom[2];	/* SOURCE_IPS positive, negative: CIDR atom + 1, 0: no list */
	bool empty;		/* every list empty: never matches */
};

struct sm_flat_policy {
	const struct sm_authz_policy *policy;
	uint32_t first_match, n_matches;
	uint32_t first_src, n_src; /* its source bits, contiguous */
};

struct sm_verdict_row {
	struct sm_authz_verdict_key key;
	struct sm_authz_verdict value;
};

struct sm_compiler {
	const struct sm_authz_compile_input *in;
	struct sm_authz_tables *t;
	uint32_t max_dests, max_cidrs, max_sources, max_verdicts;
	struct sm_verdict_row *rows; /* the verdict entries, while they fit */
	size_t need_verdicts, n_rows, cap_rows;

	struct sm_intern policy_ids; /* policy pointer → index in policies */
	struct sm_flat_policy *policies;
	size_t n_policies, cap_policies;
	struct sm_flat_match *matches;
	size_t n_matches, cap_matches;
	size_t n_src_bits;

	struct sm_intern cidr_atoms;	 /* distinct SOURCE_IPS lists */
	struct sm_intern cidr_classes;	 /* distinct atom vectors; 0: the empty one */
	struct sm_intern source_classes; /* distinct source vectors; source class = id + 1 */
	bool *class_used;		 /* per source class id: has a verdict entry of its own */

	struct sm_intern sets; /* (policy indices, destination bits); destination set = id + 1 */

	struct sm_authz_classifier *classifier; /* the source side, handed to the tables at the end */
	struct sm_authz_dest_side *dests;	/* the destination side, the same */
};

/* An (identity, CIDR class) pair that occurs, and its source class. */
struct sm_pair {
	uint64_t identity;
	uint32_t cidr_class;
	uint32_t source_class;
};

struct sm_pairs {
	struct sm_pair *items;
	size_t n, cap;
	struct sm_intern ids;	     /* (identity, CIDR class) → index in items */
	struct sm_intern identities; /* identity hash → index in id_vectors */
	uint64_t *id_vectors;
	size_t cap_vectors;
	uint64_t *scratch;
};

/* An update refused, to compile in full: -ESRCH, reason "KIND ADDR: WHY", or LIMIT when addr is NULL. */
int sm_update_refused(const uint8_t *addr, const char *kind, const char *why, const char *limit, char *reason,
		      size_t reason_size);

/* ---- the source side, kept with the tables (compile_classify.c) ---- */

/* The identity side of c's matches and each CIDR class's side (after sm_compile_cidr_classes). */
int sm_classifier_new(const struct sm_compiler *c, struct sm_authz_classifier **out);
/* Once the verdicts said which classes have entries of their own: c's source classes, moved in. */
void sm_classifier_take_classes(struct sm_authz_classifier *k, struct sm_compiler *c);
/* Per source bit: whether the identity side of its match holds (identity NULL: none); -ENOMEM. */
int sm_classifier_identity_vector(const struct sm_authz_classifier *k, const struct sm_authz_identity *identity,
				  uint64_t *out);
/* Per source bit: whether the SOURCE_IPS side of its match holds for the CIDR class. */
const uint64_t *sm_classifier_cidr_vector(const struct sm_authz_classifier *k, uint32_t cidr_class);
/* The source class of a pair, and whether it has a sources entry (verdicts of its own); -ESRCH when its
 * vector is none of the compilation's classes, -ENOMEM. */
int sm_classifier_class(const struct sm_authz_classifier *k, const struct sm_authz_identity *identity,
			uint32_t cidr_class, uint32_t *source_class, bool *own_entry);
/* The entries the sources table may hold for one generation. */
uint32_t sm_classifier_max_sources(const struct sm_authz_classifier *k);
struct sm_authz_classifier *sm_classifier_ref(struct sm_authz_classifier *k);
void sm_classifier_unref(struct sm_authz_classifier *k);

/* ---- the destination side, kept with the tables (compile_dests.c) ---- */

/* Whether every list of m is empty (such a match never matches). */
bool sm_match_empty(const struct sm_authz_match *m);
int sm_dest_side_new(struct sm_authz_dest_side **out);
/* Appends p (its index is the number of policies added before it), with its matches' destination side. */
int sm_dest_side_add_policy(struct sm_authz_dest_side *s, const struct sm_authz_policy *p);
/* The key of the set of addr under the policies of those indices: n, the indices (32 bits each, padded to
 * 64), then per match of those policies in order, whether it is not empty and its destination side holds.
 * *key is malloc'ed, *size its bytes. */
int sm_dest_side_key(const struct sm_authz_dest_side *s, const uint8_t addr[16], const uint32_t *indices, size_t n,
		     uint64_t **key, size_t *size);
/* Once the verdicts are made: the compilation's sets (the keys), moved in, and the dests table's limit. */
void sm_dest_side_take_sets(struct sm_authz_dest_side *s, struct sm_intern *sets, uint32_t max_dests);
uint32_t sm_dest_side_max_dests(const struct sm_authz_dest_side *s);
/* The set the compilation gives d (its policies found by hash); -ESRCH when a policy or the key is not
 * among the compilation's, -ENOMEM. */
int sm_dest_side_set(const struct sm_authz_dest_side *s, const struct sm_authz_destination *d, uint32_t *set);
struct sm_authz_dest_side *sm_dest_side_ref(struct sm_authz_dest_side *s);
void sm_dest_side_unref(struct sm_authz_dest_side *s);

/* t's idents: each distinct address of in's sources (its first listing) with its identity, sorted by
 * address; *keep gets their indices in in->sources, in the same order (the caller's to free). */
int sm_compile_idents(const struct sm_authz_compile_input *in, struct sm_authz_tables *t, size_t **keep,
		      size_t *n_keep);
/* The CIDR classes (c->cidr_classes, 0: the empty vector) and the LPM entries (c->t's cidrs). */
int sm_compile_cidr_classes(struct sm_compiler *c);
/* The pairs of the keep[] sources (their indices in input order, as the idents table lists them) and
 * (no identity, c) for every CIDR class, with their source classes (c->source_classes). */
int sm_compile_pairs(struct sm_compiler *c, const size_t *keep, size_t n_keep, struct sm_pairs *ps);
/* The sources table, once the verdicts said which classes have entries of their own, and every pair
 * (t->pair_keys). */
int sm_compile_sources(struct sm_compiler *c, const struct sm_pairs *ps);
void sm_pairs_free(struct sm_pairs *ps);

/* Appends a verdict entry (kept while within the limit, counted always); -ENOMEM. */
int sm_compile_emit_verdict(struct sm_compiler *c, uint32_t set, uint32_t source_class, uint16_t port,
			    const struct sm_authz_verdict *verdict);
/* Evaluates destination set id (0-based) over every source class and port class, and writes its entries;
 * -E2BIG (with the reason) when that is more cells than it evaluates, -ENOMEM. */
int sm_compile_set(struct sm_compiler *c, uint32_t id, char *reason, size_t reason_size);

#endif
