/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One destination set: its verdict for every (source class, port class), computed on bitsets, then
 * compacted into the fewest entries the kernel's fallbacks allow.
 *
 * Source classes are global; the set only sees its own policies' matches, so classes that agree on those
 * are one "row" here. Port classes: each port one of the set's matches names, and 0, "any other port".
 * A match holds in cell (row, port) when its destination side holds for the set, its source side for the
 * row and its port side for the port: per match an outer product of a row bitset and a port bitset, so a
 * policy is evaluated once per set over all cells, never per connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/compile_internal.h"

enum { ENFORCED_DENY, ENFORCED_ALLOW, ANY_DENY, ANY_ALLOW, N_FIRSTS };
#define NONE UINT32_MAX

struct set_eval {
	struct sm_compiler *c;
	uint32_t set; /* destination set (1-based) */
	const uint32_t *pols;
	size_t n_pols;
	const uint64_t *dest_bits; /* per local match */
	uint16_t *ports;	   /* sorted; port class q is ports[q - 1], class 0 any other */
	size_t n_ports, q, w;	   /* port classes, 64-bit words a row of cells takes */
	struct sm_intern rows;	   /* local source vectors */
	uint32_t *row_of;	   /* per global source class id */
	uint32_t *weight;	   /* per row: global classes in it */
	uint64_t *policy, *rule, *clause, *port_bits, *found[N_FIRSTS];
	uint32_t *first[N_FIRSTS];
	int n_firsts; /* the arrays of their own: 2 when no policy of the set is dry-run (ANY_* are ENFORCED_*) */
	uint32_t *active; /* the rows the policy being evaluated can match in */
	size_t n_active;
	bool *marked;
	bool any_allow[2]; /* enforced, counting dry-run */
	struct sm_intern verdicts;
	uint32_t *cell; /* verdict id per row * q + port class */
};

static int cmp_port(const void *a, const void *b)
{
	return *(const uint16_t *)a - *(const uint16_t *)b;
}

/* Every nonzero port a match of the set names (0 is the verdicts' wildcard, never a connection's port). */
static int collect_ports(struct set_eval *e)
{
	struct sm_compiler *c = e->c;
	size_t n = 0, cap = 0;

	for (size_t i = 0; i < e->n_pols; i++) {
		const struct sm_flat_policy *fp = &c->policies[e->pols[i]];

		for (uint32_t m = 0; m < fp->n_matches; m++) {
			const struct sm_authz_match *mt = c->matches[fp->first_match + m].match;
			const struct sm_authz_list *lists[2] = { &mt->positive[SM_AUTHZ_DESTINATION_PORTS],
								 &mt->negative[SM_AUTHZ_DESTINATION_PORTS] };

			for (int k = 0; k < 2; k++) {
				if (sm_grow(&e->ports, &cap, n + lists[k]->n + 1, sizeof(*e->ports)))
					return -ENOMEM;
				for (size_t j = 0; j < lists[k]->n; j++)
					if (lists[k]->ports[j])
						e->ports[n++] = lists[k]->ports[j];
			}
		}
	}
	if (n)
		qsort(e->ports, n, sizeof(*e->ports), cmp_port);
	e->n_ports = 0;
	for (size_t i = 0; i < n; i++)
		if (!i || e->ports[i] != e->ports[i - 1])
			e->ports[e->n_ports++] = e->ports[i];
	e->q = e->n_ports + 1;
	e->w = SM_WORDS(e->q);
	return 0;
}

/* Rows: the global source classes as the set's matches see them. */
static int build_rows(struct set_eval *e)
{
	struct sm_compiler *c = e->c;
	size_t n_local = 0;
	uint64_t *local;
	int err = 0;

	for (size_t i = 0; i < e->n_pols; i++)
		n_local += c->policies[e->pols[i]].n_src;
	local = calloc(SM_WORDS(n_local) + 1, 8);
	e->row_of = calloc(c->source_classes.n + 1, sizeof(*e->row_of));
	if (!local || !e->row_of) {
		err = -ENOMEM;
		goto out;
	}
	for (uint32_t g = 0; g < c->source_classes.n; g++) {
		const uint64_t *global = sm_intern_get(&c->source_classes, g, NULL);
		size_t at = 0;

		for (size_t i = 0; i < e->n_pols; i++) {
			const struct sm_flat_policy *fp = &c->policies[e->pols[i]];

			sm_bits_copy(local, at, global, fp->first_src, fp->n_src);
			at += fp->n_src;
		}
		if ((err = sm_intern_add(&e->rows, local, SM_WORDS(n_local) * 8, &e->row_of[g])))
			goto out;
	}
	e->weight = calloc(e->rows.n + 1, sizeof(*e->weight));
	if (!e->weight) {
		err = -ENOMEM;
		goto out;
	}
	for (uint32_t g = 0; g < c->source_classes.n; g++)
		e->weight[e->row_of[g]]++;
out:
	free(local);
	return err;
}

/* The port classes where the match's port side holds. */
static void port_side(struct set_eval *e, const struct sm_authz_match *m, uint64_t *bits)
{
	const struct sm_authz_list *pos = &m->positive[SM_AUTHZ_DESTINATION_PORTS];
	const struct sm_authz_list *neg = &m->negative[SM_AUTHZ_DESTINATION_PORTS];

	memset(bits, pos->n ? 0 : 0xff, e->w * 8);
	for (size_t j = 0; j < pos->n; j++) {
		const uint16_t *p = bsearch(&pos->ports[j], e->ports, e->n_ports, sizeof(*p), cmp_port);

		if (p)
			sm_bit_set(bits, (size_t)(p - e->ports) + 1);
	}
	for (size_t j = 0; j < neg->n; j++) {
		const uint16_t *p = bsearch(&neg->ports[j], e->ports, e->n_ports, sizeof(*p), cmp_port);

		if (p)
			bits[(size_t)(p - e->ports + 1) / 64] &= ~(1ULL << ((size_t)(p - e->ports + 1) % 64));
	}
}

/* Whether a rule, clause or source-free match of the policy can hold for any source: then every row is
 * active; otherwise only the rows where some match's source side holds can match at all. */
static bool policy_spans_all_rows(const struct set_eval *e, const struct sm_flat_policy *fp, size_t lm)
{
	const struct sm_authz_policy *p = fp->policy;

	for (size_t r = 0; r < p->n_rules; r++) {
		if (!p->rules[r].n_clauses)
			return true;
		for (size_t k = 0; k < p->rules[r].n_clauses; k++)
			if (!p->rules[r].clauses[k].n_matches)
				return true;
	}
	for (uint32_t m = 0; m < fp->n_matches; m++)
		if (sm_bit(e->dest_bits, lm + m) && e->c->matches[fp->first_match + m].src_bit == SM_NO_BIT)
			return true;
	return false;
}

/* The rows policy i can match in (most policies name a few sources: the others are never touched). */
static void find_active(struct set_eval *e, const struct sm_flat_policy *fp, size_t lm, size_t ls)
{
	e->n_active = 0;
	if (policy_spans_all_rows(e, fp, lm)) {
		for (uint32_t row = 0; row < e->rows.n; row++)
			e->active[e->n_active++] = row;
		return;
	}
	for (uint32_t m = 0; m < fp->n_matches; m++) {
		const struct sm_flat_match *fm = &e->c->matches[fp->first_match + m];

		if (!sm_bit(e->dest_bits, lm + m))
			continue;
		for (uint32_t row = 0; row < e->rows.n; row++)
			if (!e->marked[row] && sm_bit(sm_intern_get(&e->rows, row, NULL), ls + fm->src_bit - fp->first_src)) {
				e->marked[row] = true;
				e->active[e->n_active++] = row;
			}
	}
	for (size_t a = 0; a < e->n_active; a++)
		e->marked[e->active[a]] = false;
}

#define FOR_ACTIVE(e, row) for (size_t a_ = 0, row; a_ < (e)->n_active && ((row) = (e)->active[a_], 1); a_++)

/* Into e->policy (its active rows): the cells where policy i of the set (its matches from local match lm,
 * source bits from local bit ls) matches. */
static void eval_policy(struct set_eval *e, size_t i, size_t lm, size_t ls)
{
	struct sm_compiler *c = e->c;
	const struct sm_flat_policy *fp = &c->policies[e->pols[i]];
	const struct sm_authz_policy *p = fp->policy;
	size_t m = fp->first_match, w = e->w;

	find_active(e, fp, lm, ls);
	FOR_ACTIVE(e, row)
		memset(e->policy + row * w, 0, w * 8);
	for (size_t r = 0; r < p->n_rules; r++) {
		FOR_ACTIVE(e, row)
			memset(e->rule + row * w, 0xff, w * 8);
		for (size_t k = 0; k < p->rules[r].n_clauses; k++) {
			const struct sm_authz_clause *cl = &p->rules[r].clauses[k];

			if (!cl->n_matches)
				continue; /* true */
			FOR_ACTIVE(e, row)
				memset(e->clause + row * w, 0, w * 8);
			for (size_t j = 0; j < cl->n_matches; j++, m++, lm++) {
				const struct sm_flat_match *fm = &c->matches[m];

				if (!sm_bit(e->dest_bits, lm))
					continue;
				port_side(e, fm->match, e->port_bits);
				FOR_ACTIVE(e, row) {
					if (fm->src_bit != SM_NO_BIT &&
					    !sm_bit(sm_intern_get(&e->rows, (uint32_t)row, NULL), ls + fm->src_bit - fp->first_src))
						continue;
					for (size_t x = 0; x < w; x++)
						e->clause[row * w + x] |= e->port_bits[x];
				}
			}
			FOR_ACTIVE(e, row)
				for (size_t x = row * w; x < (row + 1) * w; x++)
					e->rule[x] &= e->clause[x];
		}
		FOR_ACTIVE(e, row)
			for (size_t x = row * w; x < (row + 1) * w; x++)
				e->policy[x] |= e->rule[x];
	}
}

/* Records policy i in the first-match arrays of the cells it matches that had none yet. */
static void note_first(struct set_eval *e, int k, uint32_t i)
{
	FOR_ACTIVE(e, row)
		for (size_t w = 0; w < e->w; w++) {
			size_t x = row * e->w + w;
			uint64_t fresh = e->policy[x] & ~e->found[k][x];

			e->found[k][x] |= fresh;
			while (fresh) {
				size_t q = w * 64 + (size_t)__builtin_ctzll(fresh);

				fresh &= fresh - 1;
				if (q < e->q)
					e->first[k][row * e->q + q] = i;
			}
		}
}

/* ztunnel's order over (first matching DENY, whether an ALLOW applies, first matching ALLOW). */
static void decide(const struct set_eval *e, uint32_t deny, bool any_allow, uint32_t allow, uint8_t *action,
		   uint8_t *reason, __u64 *policy)
{
	*policy = 0;
	if (deny != NONE) {
		*action = SM_AUTHZ_DENY;
		*reason = SM_AUTHZ_DENY_MATCHED;
		*policy = e->c->policies[e->pols[deny]].policy->hash;
	} else if (!any_allow) {
		*action = SM_AUTHZ_ALLOW;
		*reason = SM_AUTHZ_NO_ALLOW_POLICIES;
	} else if (allow != NONE) {
		*action = SM_AUTHZ_ALLOW;
		*reason = SM_AUTHZ_ALLOW_MATCHED;
		*policy = e->c->policies[e->pols[allow]].policy->hash;
	} else {
		*action = SM_AUTHZ_DENY;
		*reason = SM_AUTHZ_NO_ALLOW_MATCHED;
	}
}

/* Whether the deciding policy with dry-run policies counted (first DENY, else first ALLOW) is a dry-run one. */
static bool dry_run_decided(const struct set_eval *e, uint32_t deny, uint32_t allow)
{
	uint32_t i = deny != NONE ? deny : allow;

	return i != NONE && e->c->policies[e->pols[i]].policy->dry_run;
}

static int evaluate(struct set_eval *e)
{
	struct sm_compiler *c = e->c;
	size_t n_cells = e->rows.n * e->q, lm = 0, ls = 0;

	for (size_t i = 0; i < e->n_pols; i++) {
		const struct sm_flat_policy *fp = &c->policies[e->pols[i]];
		const struct sm_authz_policy *p = fp->policy;
		bool allow = p->action == SM_AUTHZ_ALLOW;

		e->any_allow[1] |= allow;
		e->any_allow[0] |= allow && !p->dry_run;
		eval_policy(e, i, lm, ls);
		if (!p->dry_run)
			note_first(e, allow ? ENFORCED_ALLOW : ENFORCED_DENY, (uint32_t)i);
		if (e->n_firsts == N_FIRSTS)
			note_first(e, allow ? ANY_ALLOW : ANY_DENY, (uint32_t)i);
		lm += fp->n_matches;
		ls += fp->n_src;
	}
	for (size_t x = 0; x < n_cells; x++) {
		struct sm_authz_verdict v = { 0 };
		int err;

		decide(e, e->first[ENFORCED_DENY][x], e->any_allow[0], e->first[ENFORCED_ALLOW][x], &v.action,
		       &v.reason, &v.policy);
		decide(e, e->first[ANY_DENY][x], e->any_allow[1], e->first[ANY_ALLOW][x], &v.dry_run_action,
		       &v.dry_run_reason, &v.dry_run_policy);
		/* only a dry-run policy deciding is news: an enforced one deciding both is already in policy */
		if (v.dry_run_policy && !dry_run_decided(e, e->first[ANY_DENY][x], e->first[ANY_ALLOW][x]))
			v.dry_run_policy = 0;
		if ((err = sm_intern_add(&e->verdicts, &v, sizeof(v), &e->cell[x])))
			return err;
	}
	return 0;
}

/* The most common verdict among the rows (weighted by their classes) that pass the filter, in column q. */
static uint32_t mode(const struct set_eval *e, uint32_t *count, size_t q, const bool *skip, uint32_t *best_count)
{
	uint32_t best = NONE;

	memset(count, 0, e->verdicts.n * sizeof(*count));
	for (uint32_t row = 0; row < e->rows.n; row++) {
		uint32_t v = e->cell[row * e->q + q];

		if (skip && skip[row])
			continue;
		count[v] += e->weight[row];
		if (best == NONE || count[v] > count[best])
			best = v;
	}
	*best_count = best == NONE ? 0 : count[best];
	return best;
}

static int emit(struct set_eval *e, uint32_t cls, uint16_t port, uint32_t verdict)
{
	return sm_compile_emit_verdict(e->c, e->set, cls, port, sm_intern_get(&e->verdicts, verdict, NULL));
}

/*
 * (set, 0, 0): the most common verdict for "any other port"; (set, class, 0) for the classes whose own
 * differs (it must: that cell has no other fallback); (set, 0, port) where the classes without their own
 * row mostly agree on something else; (set, class, port) where the cell differs from what is left.
 */
static int compact(struct set_eval *e)
{
	uint32_t *count = calloc(e->verdicts.n + 1, sizeof(*count));
	uint32_t *column = calloc(e->q, sizeof(*column));
	bool *has_row = calloc(e->rows.n + 1, sizeof(*has_row));
	uint32_t *first = NULL, *next = NULL, def, n;
	int err = -ENOMEM;

	first = malloc((e->rows.n + 1) * sizeof(*first));
	next = malloc((e->c->source_classes.n + 1) * sizeof(*next));
	if (!count || !column || !has_row || !first || !next)
		goto out;
	/* the global classes of each row, as linked lists */
	memset(first, 0xff, (e->rows.n + 1) * sizeof(*first));
	for (uint32_t g = (uint32_t)e->c->source_classes.n; g-- > 0;) {
		next[g] = first[e->row_of[g]];
		first[e->row_of[g]] = g;
	}
	def = mode(e, count, 0, NULL, &n);
	if (def == NONE)
		def = 0; /* no source class at all: the evaluated verdicts are still one per port class */
	for (uint32_t row = 0; row < e->rows.n; row++)
		has_row[row] = e->cell[row * e->q] != def;
	if ((err = emit(e, 0, 0, def)))
		goto out;
	for (size_t q = 1; q < e->q; q++) {
		uint32_t n_best, n_def = 0;
		uint32_t best = mode(e, count, q, has_row, &n_best);

		column[q] = NONE;
		if (best != NONE) {
			n_def = count[def];
			if (best != def && n_best > n_def + 1) {
				column[q] = best;
				if ((err = emit(e, 0, e->ports[q - 1], best)))
					goto out;
			}
		}
	}
	for (uint32_t row = 0; row < e->rows.n; row++) {
		const uint32_t *cells = e->cell + row * e->q;

		for (uint32_t g = first[row]; g != NONE; g = next[g]) {
			if (has_row[row]) {
				e->c->class_used[g] = true;
				if ((err = emit(e, g + 1, 0, cells[0])))
					goto out;
			}
			for (size_t q = 1; q < e->q; q++) {
				uint32_t fallback = has_row[row] ? cells[0] : column[q] != NONE ? column[q] : def;

				if (cells[q] == fallback)
					continue;
				e->c->class_used[g] = true;
				if ((err = emit(e, g + 1, e->ports[q - 1], cells[q])))
					goto out;
			}
		}
	}
	err = 0;
out:
	free(count);
	free(column);
	free(has_row);
	free(first);
	free(next);
	return err;
}

static int alloc_grids(struct set_eval *e)
{
	size_t words = e->rows.n * e->w + 1, cells = e->rows.n * e->q + 1;

	e->policy = calloc(words, 8);
	e->rule = calloc(words, 8);
	e->clause = calloc(words, 8);
	e->port_bits = calloc(e->w + 1, 8);
	e->cell = calloc(cells, sizeof(*e->cell));
	e->active = calloc(e->rows.n + 1, sizeof(*e->active));
	e->marked = calloc(e->rows.n + 1, sizeof(*e->marked));
	if (!e->active || !e->marked || !e->policy || !e->rule || !e->clause || !e->port_bits || !e->cell)
		return -ENOMEM;
	e->n_firsts = ANY_DENY; /* without dry-run policies, counting them changes no first match */
	for (size_t i = 0; i < e->n_pols; i++)
		if (e->c->policies[e->pols[i]].policy->dry_run)
			e->n_firsts = N_FIRSTS;
	for (int k = 0; k < e->n_firsts; k++) {
		e->found[k] = calloc(words, 8);
		e->first[k] = malloc(cells * sizeof(*e->first[k]));
		if (!e->found[k] || !e->first[k])
			return -ENOMEM;
		memset(e->first[k], 0xff, cells * sizeof(*e->first[k]));
	}
	for (int k = e->n_firsts; k < N_FIRSTS; k++) {
		e->found[k] = e->found[k - ANY_DENY];
		e->first[k] = e->first[k - ANY_DENY];
	}
	return 0;
}

static void set_eval_free(struct set_eval *e)
{
	free(e->ports);
	sm_intern_free(&e->rows);
	free(e->row_of);
	free(e->weight);
	free(e->policy);
	free(e->rule);
	free(e->clause);
	free(e->port_bits);
	for (int k = 0; k < e->n_firsts; k++) {
		free(e->found[k]);
		free(e->first[k]);
	}
	sm_intern_free(&e->verdicts);
	free(e->cell);
	free(e->active);
	free(e->marked);
}

/* Cells a set may evaluate: its grids take about 20 bytes a cell while it is compiled. */
#define MAX_CELLS (1u << 23)

static int check_cells(const struct set_eval *e, char *reason, size_t reason_size)
{
	if ((uint64_t)e->rows.n * e->q <= MAX_CELLS)
		return 0;
	snprintf(reason, reason_size,
		 "verdicts: destination set %u needs %zu source classes by %zu port classes evaluated, more than %u",
		 e->set, (size_t)e->rows.n, e->q, MAX_CELLS);
	return -E2BIG;
}

int sm_compile_set(struct sm_compiler *c, uint32_t id, char *reason, size_t reason_size)
{
	const uint32_t *key = sm_intern_get(&c->sets, id, NULL);
	struct set_eval e = {
		.c = c,
		.set = id + 1,
		.pols = key + 1,
		.n_pols = key[0],
		.dest_bits = (const uint64_t *)(const void *)key + (key[0] + 2) / 2,
	};
	int err;

	sm_intern_init(&e.rows);
	sm_intern_init(&e.verdicts);
	if (!(err = collect_ports(&e)) && !(err = build_rows(&e)) && !(err = check_cells(&e, reason, reason_size)) &&
	    !(err = alloc_grids(&e)) && !(err = evaluate(&e)))
		err = compact(&e);
	set_eval_free(&e);
	return err;
}
