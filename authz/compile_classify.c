/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The source side of the compilation, kept with its tables: what gives an (identity, CIDR class) pair its
 * source class. A pair's class is the class of its vector "the source side of match m holds": the identity
 * side of each match (its PRINCIPALS, NAMESPACES and SERVICE_ACCOUNTS lists, copied out of the policies,
 * which the model may free once a later compilation replaced them) ANDed with the CIDR class's side. A later
 * update of sources gives a pair never evaluated the class it would have had, when its vector is one the
 * compilation made a class of: the verdicts of every class are in the tables already.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/compile_internal.h"

static const enum sm_authz_field identity_fields[] = { SM_AUTHZ_PRINCIPALS, SM_AUTHZ_NAMESPACES,
						       SM_AUTHZ_SERVICE_ACCOUNTS };
#define N_IDENTITY_FIELDS (sizeof(identity_fields) / sizeof(identity_fields[0]))

struct sm_authz_classifier {
	unsigned refs;
	size_t words;		   /* of a source vector */
	struct sm_authz_match *sides; /* the distinct identity sides of the matches (the other lists empty) */
	size_t n_sides, cap_sides;
	uint32_t *side_of_bit;	      /* per source bit: its match's side */
	size_t n_bits;
	uint64_t *cidr_vectors; /* per CIDR class, per source bit: whether the SOURCE_IPS side holds */
	size_t n_cidr_classes;
	struct sm_intern classes; /* source vectors: class = id + 1 */
	bool *class_used;	  /* per class id: has verdict entries of its own (a sources entry) */
	uint32_t max_sources;
};

/* ---- the identity side, copied ---- */

static char *copy_string(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void list_free(struct sm_authz_list *list, enum sm_authz_field f)
{
	for (size_t i = 0; i < list->n; i++) {
		if (f == SM_AUTHZ_SERVICE_ACCOUNTS) {
			free(list->accounts[i].namespace);
			free(list->accounts[i].name);
		} else {
			free(list->strings[i].value);
		}
	}
	free(f == SM_AUTHZ_SERVICE_ACCOUNTS ? (void *)list->accounts : (void *)list->strings);
	list->n = 0;
}

/* dst: src's entries, or nothing (-ENOMEM; dst then holds what list_free takes). */
static int list_copy(struct sm_authz_list *dst, const struct sm_authz_list *src, enum sm_authz_field f)
{
	bool accounts = f == SM_AUTHZ_SERVICE_ACCOUNTS;

	dst->n = 0;
	if (!src->n)
		return 0;
	if (accounts)
		dst->accounts = calloc(src->n, sizeof(*dst->accounts));
	else
		dst->strings = calloc(src->n, sizeof(*dst->strings));
	if (accounts ? !dst->accounts : !dst->strings)
		return -ENOMEM;
	for (size_t i = 0; i < src->n; i++) {
		dst->n = i + 1; /* what list_free walks */
		if (accounts) {
			dst->accounts[i].namespace = copy_string(src->accounts[i].namespace);
			dst->accounts[i].name = copy_string(src->accounts[i].name);
			if (!dst->accounts[i].namespace || !dst->accounts[i].name)
				return -ENOMEM;
		} else {
			dst->strings[i].kind = src->strings[i].kind;
			dst->strings[i].value = copy_string(src->strings[i].value);
			if (!dst->strings[i].value)
				return -ENOMEM;
		}
	}
	return 0;
}

static void side_free(struct sm_authz_match *side)
{
	for (size_t k = 0; k < N_IDENTITY_FIELDS; k++) {
		list_free(&side->positive[identity_fields[k]], identity_fields[k]);
		list_free(&side->negative[identity_fields[k]], identity_fields[k]);
	}
}

static int side_copy(struct sm_authz_match *side, const struct sm_authz_match *m)
{
	int err = 0;

	for (size_t k = 0; !err && k < N_IDENTITY_FIELDS; k++) {
		enum sm_authz_field f = identity_fields[k];

		if (!(err = list_copy(&side->positive[f], &m->positive[f], f)))
			err = list_copy(&side->negative[f], &m->negative[f], f);
	}
	return err;
}

/* ---- matching an identity ---- */

/* An identity as the policies see it: the principal "TD/ns/NS/sa/SA", its namespace and account. */
struct peer {
	const struct sm_authz_identity *identity; /* NULL: none */
	char *principal;
};

static bool string_matches(const struct sm_authz_string *s, const char *value)
{
	size_t n = strlen(value), k = strlen(s->value);

	switch (s->kind) {
	case SM_AUTHZ_EXACT:
		return !strcmp(value, s->value);
	case SM_AUTHZ_PREFIX:
		return n >= k && !memcmp(value, s->value, k);
	case SM_AUTHZ_SUFFIX:
		return n >= k && !memcmp(value + n - k, s->value, k);
	case SM_AUTHZ_PRESENCE:
		return n > 0;
	}
	return false;
}

/* Whether one entry of the list (of kind f) matches the peer; false without an identity. */
static bool identity_in(const struct peer *peer, enum sm_authz_field f, const struct sm_authz_list *list)
{
	const struct sm_authz_identity *id = peer->identity;

	if (!id)
		return false;
	for (size_t i = 0; i < list->n; i++) {
		if (f == SM_AUTHZ_PRINCIPALS && string_matches(&list->strings[i], peer->principal))
			return true;
		if (f == SM_AUTHZ_NAMESPACES && string_matches(&list->strings[i], id->namespace))
			return true;
		if (f == SM_AUTHZ_SERVICE_ACCOUNTS && !strcmp(list->accounts[i].namespace, id->namespace) &&
		    !strcmp(list->accounts[i].name, id->service_account))
			return true;
	}
	return false;
}

static bool identity_holds(const struct peer *peer, const struct sm_authz_match *side)
{
	for (size_t k = 0; k < N_IDENTITY_FIELDS; k++) {
		enum sm_authz_field f = identity_fields[k];

		if (side->positive[f].n && !identity_in(peer, f, &side->positive[f]))
			return false;
		if (side->negative[f].n && identity_in(peer, f, &side->negative[f]))
			return false;
	}
	return true;
}

static int peer_init(struct peer *peer, const struct sm_authz_identity *identity)
{
	size_t size;

	peer->identity = identity;
	peer->principal = NULL;
	if (!identity)
		return 0;
	size = strlen(identity->trust_domain) + strlen(identity->namespace) + strlen(identity->service_account) + 9;
	peer->principal = malloc(size);
	if (!peer->principal)
		return -ENOMEM;
	snprintf(peer->principal, size, "%s/ns/%s/sa/%s", identity->trust_domain, identity->namespace,
		 identity->service_account);
	return 0;
}

int sm_classifier_identity_vector(const struct sm_authz_classifier *k, const struct sm_authz_identity *identity,
				  uint64_t *out)
{
	bool *holds = malloc(k->n_sides + 1);
	struct peer peer;
	int err = holds ? peer_init(&peer, identity) : -ENOMEM;

	if (err) {
		free(holds);
		return err;
	}
	for (size_t s = 0; s < k->n_sides; s++)
		holds[s] = identity_holds(&peer, &k->sides[s]);
	memset(out, 0, k->words * 8);
	for (size_t bit = 0; bit < k->n_bits; bit++)
		if (holds[k->side_of_bit[bit]])
			sm_bit_set(out, bit);
	free(peer.principal);
	free(holds);
	return 0;
}

const uint64_t *sm_classifier_cidr_vector(const struct sm_authz_classifier *k, uint32_t cidr_class)
{
	return k->cidr_vectors + cidr_class * k->words;
}

/* ---- made by the compilation ---- */

/* Per CIDR class, per source bit: whether the SOURCE_IPS side of its match holds. */
static int cidr_vectors(struct sm_authz_classifier *k, const struct sm_compiler *c)
{
	k->n_cidr_classes = c->cidr_classes.n;
	k->cidr_vectors = calloc(k->n_cidr_classes * k->words + 1, sizeof(*k->cidr_vectors));
	if (!k->cidr_vectors)
		return -ENOMEM;
	for (uint32_t cls = 0; cls < k->n_cidr_classes; cls++) {
		const uint64_t *atoms = sm_intern_get(&c->cidr_classes, cls, NULL);

		for (size_t m = 0; m < c->n_matches; m++) {
			const struct sm_flat_match *fm = &c->matches[m];

			if (fm->src_bit == SM_NO_BIT)
				continue;
			if (fm->cidr_atom[0] && !sm_bit(atoms, fm->cidr_atom[0] - 1))
				continue;
			if (fm->cidr_atom[1] && sm_bit(atoms, fm->cidr_atom[1] - 1))
				continue;
			sm_bit_set(k->cidr_vectors + cls * k->words, fm->src_bit);
		}
	}
	return 0;
}

/* ---- the distinct sides ---- */

struct blob {
	uint8_t *bytes;
	size_t n, cap;
};

static int blob_put(struct blob *b, const void *bytes, size_t n)
{
	int err = sm_grow(&b->bytes, &b->cap, b->n + n + 1, 1);

	if (!err) {
		memcpy(b->bytes + b->n, bytes, n);
		b->n += n;
	}
	return err;
}

static int blob_put_string(struct blob *b, const char *s)
{
	return blob_put(b, s ? s : "", (s ? strlen(s) : 0) + 1);
}

/* The identity side of m as bytes: equal bytes, equal sides. */
static int side_bytes(const struct sm_authz_match *m, struct blob *b)
{
	int err = 0;

	b->n = 0;
	for (size_t k = 0; !err && k < N_IDENTITY_FIELDS; k++) {
		enum sm_authz_field f = identity_fields[k];

		for (int negative = 0; !err && negative < 2; negative++) {
			const struct sm_authz_list *list = negative ? &m->negative[f] : &m->positive[f];
			uint64_t n = list->n;

			err = blob_put(b, &n, sizeof(n));
			for (size_t i = 0; !err && i < list->n; i++) {
				if (f == SM_AUTHZ_SERVICE_ACCOUNTS) {
					if (!(err = blob_put_string(b, list->accounts[i].namespace)))
						err = blob_put_string(b, list->accounts[i].name);
				} else if (!(err = blob_put(b, &list->strings[i].kind, 1))) {
					err = blob_put_string(b, list->strings[i].value);
				}
			}
		}
	}
	return err;
}

/* Each source bit's side, each distinct side copied once: the policies name the same namespaces and
 * principals over and over, and an identity is matched against each distinct side once. */
static int distinct_sides(struct sm_authz_classifier *k, const struct sm_compiler *c)
{
	struct sm_intern seen;
	struct blob b = { 0 };
	int err = 0;

	sm_intern_init(&seen);
	k->side_of_bit = calloc(c->n_src_bits + 1, sizeof(*k->side_of_bit));
	if (!k->side_of_bit)
		return -ENOMEM;
	for (size_t m = 0; !err && m < c->n_matches; m++) {
		const struct sm_flat_match *fm = &c->matches[m];
		uint32_t id;

		if (fm->src_bit == SM_NO_BIT)
			continue;
		if ((err = side_bytes(fm->match, &b)) || (err = sm_intern_add(&seen, b.bytes, b.n, &id)))
			break;
		k->side_of_bit[fm->src_bit] = id;
		if (id < k->n_sides)
			continue;
		if ((err = sm_grow(&k->sides, &k->cap_sides, k->n_sides + 1, sizeof(*k->sides))))
			break;
		k->sides[k->n_sides] = (struct sm_authz_match){ 0 };
		k->n_sides++; /* what side_free walks, also when the copy fails */
		err = side_copy(&k->sides[id], fm->match);
	}
	free(b.bytes);
	sm_intern_free(&seen);
	return err;
}

int sm_classifier_new(const struct sm_compiler *c, struct sm_authz_classifier **out)
{
	struct sm_authz_classifier *k = calloc(1, sizeof(*k));
	int err = -ENOMEM;

	*out = NULL;
	if (!k)
		return -ENOMEM;
	k->refs = 1;
	sm_intern_init(&k->classes);
	k->words = SM_WORDS(c->n_src_bits);
	k->n_bits = c->n_src_bits;
	if ((err = distinct_sides(k, c)) || (err = cidr_vectors(k, c)))
		goto fail;
	*out = k;
	return 0;
fail:
	sm_classifier_unref(k);
	return err;
}

void sm_classifier_take_classes(struct sm_authz_classifier *k, struct sm_compiler *c)
{
	k->classes = c->source_classes;
	sm_intern_init(&c->source_classes);
	k->class_used = c->class_used;
	c->class_used = NULL;
	k->max_sources = c->max_sources;
}

/* ---- used by updates ---- */

int sm_classifier_class(const struct sm_authz_classifier *k, const struct sm_authz_identity *identity,
			uint32_t cidr_class, uint32_t *source_class, bool *own_entry)
{
	uint64_t *vector = calloc(k->words + 1, sizeof(*vector));
	uint32_t id;
	int err;

	if (!vector)
		return -ENOMEM;
	if (cidr_class >= k->n_cidr_classes || !k->class_used) {
		err = -ESRCH;
		goto out;
	}
	if ((err = sm_classifier_identity_vector(k, identity, vector)))
		goto out;
	for (size_t w = 0; w < k->words; w++)
		vector[w] &= k->cidr_vectors[cidr_class * k->words + w];
	if ((err = sm_intern_find(&k->classes, vector, k->words * 8, &id)))
		goto out;
	*source_class = id + 1;
	*own_entry = k->class_used[id];
out:
	free(vector);
	return err;
}

uint32_t sm_classifier_max_sources(const struct sm_authz_classifier *k)
{
	return k->max_sources;
}

struct sm_authz_classifier *sm_classifier_ref(struct sm_authz_classifier *k)
{
	if (k)
		k->refs++;
	return k;
}

void sm_classifier_unref(struct sm_authz_classifier *k)
{
	if (!k || --k->refs)
		return;
	for (size_t i = 0; i < k->n_sides; i++)
		side_free(&k->sides[i]);
	free(k->sides);
	free(k->side_of_bit);
	free(k->cidr_vectors);
	sm_intern_free(&k->classes);
	free(k->class_used);
	free(k);
}
