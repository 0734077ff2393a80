/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy compiler: the policies that apply to this node's workloads → the tables of bpf/sockmesh.h.
 *
 * Atoms are per list, never per value: "the source address is in this SOURCE_IPS list", so a list of 500
 * CIDRs is one atom.
 *   CIDR classes    distinct vectors of SOURCE_IPS atoms; the LPM entries are the distinct prefixes of
 *                   those lists, each mapped to the class of the addresses it covers (the lists of every
 *                   shorter prefix containing it included); a prefix whose class is its parent's has none.
 *   source classes  distinct vectors "the source side of match m holds" (its CIDR lists and identity
 *                   lists), over the (identity, CIDR class) pairs that occur: each workload address's, and
 *                   (no identity, c) for every CIDR class c. Class 0 is the verdicts' wildcard.
 *   destination sets distinct (policy list, "the destination side of match m holds") per address.
 * Each set is then evaluated over (source class, port class) cells and compacted (compile_set.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "authz/compile_internal.h"

static bool list_set(const struct sm_authz_match *m, enum sm_authz_field f)
{
	return m->positive[f].n || m->negative[f].n;
}

static int cidr_atom(struct sm_compiler *c, const struct sm_authz_list *list, uint32_t *atom)
{
	uint32_t id;
	int err;

	*atom = 0;
	if (!list->n)
		return 0;
	err = sm_intern_add(&c->cidr_atoms, list->cidrs, list->n * sizeof(*list->cidrs), &id);
	*atom = id + 1;
	return err;
}

static int flatten_match(struct sm_compiler *c, struct sm_flat_policy *fp, const struct sm_authz_match *m)
{
	struct sm_flat_match *fm;
	int err;

	if ((err = sm_grow(&c->matches, &c->cap_matches, c->n_matches + 1, sizeof(*c->matches))))
		return err;
	fm = &c->matches[c->n_matches++];
	*fm = (struct sm_flat_match){ .match = m, .src_bit = SM_NO_BIT, .empty = sm_match_empty(m) };
	fp->n_matches++;
	if (list_set(m, SM_AUTHZ_SOURCE_IPS) || list_set(m, SM_AUTHZ_PRINCIPALS) || list_set(m, SM_AUTHZ_NAMESPACES) ||
	    list_set(m, SM_AUTHZ_SERVICE_ACCOUNTS)) {
		fm->src_bit = (uint32_t)c->n_src_bits++;
		fp->n_src++;
	}
	if ((err = cidr_atom(c, &m->positive[SM_AUTHZ_SOURCE_IPS], &fm->cidr_atom[0])))
		return err;
	return cidr_atom(c, &m->negative[SM_AUTHZ_SOURCE_IPS], &fm->cidr_atom[1]);
}

/* The policy's index, flattening it the first time it is seen. */
static int add_policy(struct sm_compiler *c, const struct sm_authz_policy *p, uint32_t *index)
{
	struct sm_flat_policy fp = { .policy = p, .first_match = (uint32_t)c->n_matches,
				     .first_src = (uint32_t)c->n_src_bits };
	int err;

	if ((err = sm_intern_add(&c->policy_ids, &p, sizeof(p), index)))
		return err;
	if (*index < c->n_policies)
		return 0;
	for (size_t r = 0; r < p->n_rules; r++)
		for (size_t k = 0; k < p->rules[r].n_clauses; k++)
			for (size_t m = 0; m < p->rules[r].clauses[k].n_matches; m++)
				if ((err = flatten_match(c, &fp, &p->rules[r].clauses[k].matches[m])))
					return err;
	if ((err = sm_grow(&c->policies, &c->cap_policies, c->n_policies + 1, sizeof(*c->policies))))
		return err;
	c->policies[c->n_policies++] = fp;
	/* the destination side numbers its policies in the same order: the same index */
	return sm_dest_side_add_policy(c->dests, p);
}

/* ---- idents: every source address, the first listing of an address wins ---- */

struct ordered_addr {
	uint8_t addr[16];
	size_t index;
};

/*
 * items sorted by address, equal addresses kept in their order: a stable LSD radix sort, one pass per byte
 * where the addresses differ (IPv4-mapped ones share their first 12). 100,000 addresses in an order of
 * their own (as pods get them) took qsort 20-25 ms; four passes take about 1 ms.
 */
static int sort_by_addr(struct ordered_addr **items, size_t n)
{
	struct ordered_addr *src = *items, *dst = malloc((n ? n : 1) * sizeof(*dst));
	size_t count[256];

	if (!dst)
		return -ENOMEM;
	for (int byte = 15; byte >= 0 && n; byte--) {
		struct ordered_addr *swap;
		size_t at = 0;

		memset(count, 0, sizeof(count));
		for (size_t i = 0; i < n; i++)
			count[src[i].addr[byte]]++;
		if (count[src[0].addr[byte]] == n)
			continue; /* every address has this byte: nothing to order */
		for (size_t v = 0; v < 256; v++) {
			size_t c = count[v];
			count[v] = at;
			at += c;
		}
		for (size_t i = 0; i < n; i++)
			dst[count[src[i].addr[byte]]++] = src[i];
		swap = src;
		src = dst;
		dst = swap;
	}
	free(dst);
	*items = src;
	return 0;
}

/* The distinct addresses of n items (addr at offset 0 of each stride-byte item), first listing first. */
static int distinct_addrs(const void *items, size_t n, size_t stride, size_t **out, size_t *n_out)
{
	struct ordered_addr *sorted = calloc(n ? n : 1, sizeof(*sorted));
	size_t *keep = calloc(n ? n : 1, sizeof(*keep));
	size_t k = 0;

	if (!sorted || !keep)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		memcpy(sorted[i].addr, (const uint8_t *)items + i * stride, 16);
		sorted[i].index = i;
	}
	if (sort_by_addr(&sorted, n))
		goto fail;
	for (size_t i = 0; i < n; i++)
		if (!i || memcmp(sorted[i].addr, sorted[i - 1].addr, 16))
			keep[k++] = sorted[i].index;
	free(sorted);
	*out = keep;
	*n_out = k;
	return 0;
fail:
	free(sorted);
	free(keep);
	return -ENOMEM;
}

int sm_compile_idents(const struct sm_authz_compile_input *in, struct sm_authz_tables *t, size_t **keep_out,
		      size_t *n_out)
{
	size_t *keep = NULL, n = 0;
	int err = distinct_addrs(in->sources, in->n_sources, sizeof(*in->sources), &keep, &n);

	if (err)
		return err;
	t->ident_keys = calloc(n ? n : 1, sizeof(*t->ident_keys));
	t->ident_values = calloc(n ? n : 1, sizeof(*t->ident_values));
	if (!t->ident_keys || !t->ident_values) {
		free(keep);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const struct sm_authz_source *s = &in->sources[keep[i]];

		memcpy(t->ident_keys[i].addr, s->addr, 16);
		t->ident_values[i].identity = s->node ? SM_AUTHZ_IDENTITY_NODE : sm_authz_identity_hash(&s->identity);
	}
	t->n_idents = n;
	*keep_out = keep;
	*n_out = n;
	return 0;
}

/* ---- destination sets ---- */

/* A set's key (sm_dest_side_key): the policies' indices, then whether each of their matches' destination
 * side holds. */
static int destination_set(struct sm_compiler *c, const struct sm_authz_destination *d, uint32_t *set)
{
	uint32_t *indices = calloc(d->n_policies + 1, sizeof(*indices));
	uint64_t *key = NULL;
	size_t size;
	int err = indices ? 0 : -ENOMEM;

	for (size_t i = 0; !err && i < d->n_policies; i++)
		err = add_policy(c, d->policies[i], &indices[i]);
	if (!err && !(err = sm_dest_side_key(c->dests, d->addr, indices, d->n_policies, &key, &size)))
		err = sm_intern_add(&c->sets, key, size, set);
	free(key);
	free(indices);
	return err;
}

static int build_dests(struct sm_compiler *c)
{
	struct sm_authz_tables *t = c->t;
	size_t *keep = NULL, n = 0;
	int err;

	if ((err = distinct_addrs(c->in->destinations, c->in->n_destinations, sizeof(*c->in->destinations), &keep, &n)))
		return err;
	t->dest_keys = calloc(n ? n : 1, sizeof(*t->dest_keys));
	t->dest_values = calloc(n ? n : 1, sizeof(*t->dest_values));
	if (!t->dest_keys || !t->dest_values) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct sm_authz_destination *d = &c->in->destinations[keep[i]];
		uint32_t set;

		if ((err = destination_set(c, d, &set)))
			goto out;
		t->dest_keys[i].generation = t->generation;
		memcpy(t->dest_keys[i].addr, d->addr, 16);
		t->dest_values[i].dest_set = set + 1;
	}
	t->n_dests = n;
out:
	free(keep);
	return err;
}

/* ---- the whole ---- */

int sm_compile_emit_verdict(struct sm_compiler *c, uint32_t set, uint32_t source_class, uint16_t port,
			    const struct sm_authz_verdict *verdict)
{
	int err;

	if (++c->need_verdicts > c->max_verdicts)
		return 0; /* counted for the error, not kept */
	if ((err = sm_grow(&c->rows, &c->cap_rows, c->n_rows + 1, sizeof(*c->rows))))
		return err;
	c->rows[c->n_rows++] = (struct sm_verdict_row){
		.key = { .generation = c->t->generation, .dest_set = set, .source_class = source_class, .port = htons(port) },
		.value = *verdict,
	};
	return 0;
}

static int build_verdicts(struct sm_compiler *c)
{
	struct sm_authz_tables *t = c->t;
	size_t n = c->n_rows;

	if (n) /* no rows: rows is NULL, which qsort may not take */
		qsort(c->rows, n, sizeof(*c->rows), sm_authz_cmp_verdict);
	t->verdict_keys = calloc(n ? n : 1, sizeof(*t->verdict_keys));
	t->verdicts = calloc(n ? n : 1, sizeof(*t->verdicts));
	if (!t->verdict_keys || !t->verdicts)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		t->verdict_keys[i] = c->rows[i].key;
		t->verdicts[i] = c->rows[i].value;
	}
	t->n_verdicts = n;
	return 0;
}

/* 812000 → "812,000" */
static void with_commas(char *buf, size_t size, size_t value)
{
	char digits[32];
	int n = snprintf(digits, sizeof(digits), "%zu", value), k = 0;

	for (int i = 0; i < n && k + 2 < (int)size; i++) {
		if (i && (n - i) % 3 == 0)
			buf[k++] = ',';
		buf[k++] = digits[i];
	}
	buf[k] = 0;
}

static int check_limit(const char *table, size_t need, uint32_t max, char *reason, size_t reason_size)
{
	char a[32], b[32];

	if (need <= max)
		return 0;
	with_commas(a, sizeof(a), need);
	with_commas(b, sizeof(b), max);
	snprintf(reason, reason_size, "%s: %s entries needed, %s fit", table, a, b);
	return -E2BIG;
}

static void compiler_free(struct sm_compiler *c)
{
	sm_intern_free(&c->policy_ids);
	free(c->policies);
	free(c->matches);
	sm_intern_free(&c->cidr_atoms);
	sm_intern_free(&c->cidr_classes);
	sm_intern_free(&c->source_classes);
	free(c->class_used);
	sm_intern_free(&c->sets);
	free(c->rows);
	sm_classifier_unref(c->classifier);
	sm_dest_side_unref(c->dests);
}

static uint32_t limit(uint32_t given, uint32_t map_default)
{
	return given ? given : map_default / 2;
}

static int compile(struct sm_compiler *c, char *reason, size_t reason_size)
{
	struct sm_pairs ps = { 0 };
	size_t *keep = NULL, n_keep = 0;
	int err;

	if ((err = sm_compile_idents(c->in, c->t, &keep, &n_keep)) || (err = build_dests(c)) ||
	    (err = check_limit("dests", c->t->n_dests, c->max_dests, reason, reason_size)) ||
	    (err = sm_compile_cidr_classes(c)) ||
	    (err = check_limit("cidrs", c->t->n_cidrs, c->max_cidrs, reason, reason_size)) ||
	    (err = sm_classifier_new(c, &c->classifier)) || (err = sm_compile_pairs(c, keep, n_keep, &ps)))
		goto out;
	c->class_used = calloc(c->source_classes.n + 1, sizeof(*c->class_used));
	if (!c->class_used) {
		err = -ENOMEM;
		goto out;
	}
	for (uint32_t s = 0; s < c->sets.n; s++)
		if ((err = sm_compile_set(c, s, reason, reason_size)))
			goto out;
	if ((err = check_limit("verdicts", c->need_verdicts, c->max_verdicts, reason, reason_size)) ||
	    (err = build_verdicts(c)) || (err = sm_compile_sources(c, &ps)))
		goto out;
	if ((err = check_limit("sources", c->t->n_sources, c->max_sources, reason, reason_size)))
		goto out;
	sm_classifier_take_classes(c->classifier, c);
	c->t->classifier = c->classifier;
	c->classifier = NULL;
	sm_dest_side_take_sets(c->dests, &c->sets, c->max_dests);
	c->t->dest_side = c->dests;
	c->dests = NULL;
out:
	if (err == -ENOMEM)
		snprintf(reason, reason_size, "out of memory compiling the authorization tables");
	sm_pairs_free(&ps);
	free(keep);
	return err;
}

int sm_authz_compile(const struct sm_authz_compile_input *input, uint32_t generation,
		     struct sm_authz_tables **out, char *reason, size_t reason_size)
{
	struct sm_compiler c = {
		.in = input,
		.max_dests = limit(input->max_dests, SM_DEFAULT_MAX_AUTHZ_DESTS),
		.max_cidrs = limit(input->max_cidrs, SM_DEFAULT_MAX_AUTHZ_CIDRS),
		.max_sources = limit(input->max_sources, SM_DEFAULT_MAX_AUTHZ_SOURCES),
		.max_verdicts = limit(input->max_verdicts, SM_DEFAULT_MAX_AUTHZ_VERDICTS),
	};
	int err;

	*out = NULL;
	if (!generation) {
		snprintf(reason, reason_size, "generation 0 is reserved (no tables)");
		return -EINVAL;
	}
	c.t = calloc(1, sizeof(*c.t));
	if (!c.t) {
		snprintf(reason, reason_size, "out of memory compiling the authorization tables");
		return -ENOMEM;
	}
	c.t->generation = generation;
	sm_intern_init(&c.policy_ids);
	sm_intern_init(&c.cidr_atoms);
	sm_intern_init(&c.cidr_classes);
	sm_intern_init(&c.source_classes);
	sm_intern_init(&c.sets);
	err = sm_dest_side_new(&c.dests);
	if (!err)
		err = compile(&c, reason, reason_size);
	else
		snprintf(reason, reason_size, "out of memory compiling the authorization tables");
	compiler_free(&c);
	if (err) {
		sm_authz_tables_free(c.t);
		return err;
	}
	*out = c.t;
	return 0;
}
