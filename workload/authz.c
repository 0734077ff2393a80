/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The model's side of L4 authorization (workload/workload.h): which policies apply to each local
 * workload address, and which identity each workload address has, as authz/'s compiler takes them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workload/model.h"

#define DEFAULT_TRUST_DOMAIN "cluster.local"
#define DEFAULT_SERVICE_ACCOUNT "default"

struct builder {
	struct sm_authz_compile_input input;
	struct sm_authz_destination *destinations;
	struct sm_authz_source *sources;
	const struct sm_authz_policy **lists; /* every destination's policies, one after another */
	size_t n_lists, lists_capacity;
	char **unknown;
	size_t n_unknown;
};

void sm_model_set_authz_check(struct sm_model *model, sm_model_authz_check_fn fn, void *ctx)
{
	model->authz_check = fn;
	model->authz_check_ctx = ctx;
}

uint64_t sm_model_authz_generation(const struct sm_model *model)
{
	return model->authz_changes;
}

uint64_t sm_model_authz_destinations_generation(const struct sm_model *model)
{
	return model->authz_dests_changes + model->authz_dests_dirty;
}

uint64_t sm_model_authz_policies_generation(const struct sm_model *model)
{
	return model->authz_policies_changes + model->authz_policies_dirty;
}

/* ---- the addresses whose identity changed, for an update without the whole input ---- */

#define TOUCHED_MAX 16384 /* addresses kept; a batch of more (a full push) is listed by no one */

static void forget_touched_to(struct sm_model *model, uint64_t changes)
{
	size_t kept = 0;

	for (size_t i = 0; i < model->authz_touched.n; i++) {
		struct touched_addr *t = &VEC_AT(&model->authz_touched, struct touched_addr, i);
		if (t->changes > changes)
			VEC_AT(&model->authz_touched, struct touched_addr, kept++) = *t;
	}
	model->authz_touched.n = kept;
	if (changes > model->authz_touched_from)
		model->authz_touched_from = changes;
}

static bool touch(struct sm_model *model, const struct wl_def *def, uint64_t changes)
{
	for (uint8_t a = 0; def && a < def->n_addresses; a++) {
		struct touched_addr t = { .changes = changes, .ip = def->addresses[a] };
		if (model->authz_touched.n >= TOUCHED_MAX || vec_push(&model->authz_touched, &t, sizeof(t)))
			return false;
	}
	return true;
}

void record_touched(struct sm_model *model, uint64_t changes)
{
	if (model->authz_touched.n >= TOUCHED_MAX / 2) /* the older half goes */
		forget_touched_to(model, VEC_AT(&model->authz_touched, struct touched_addr,
						model->authz_touched.n / 2).changes);
	for (size_t i = 0; i < model->undo.n; i++) {
		const struct undo_entry *undo = &VEC_AT(&model->undo, struct undo_entry, i);
		if (undo->kind != UNDO_WORKLOAD)
			continue;
		if (!touch(model, undo->old_def, changes) || !touch(model, ((const struct wl *)undo->entity)->def, changes)) {
			forget_touched_to(model, changes); /* this batch cannot be listed whole */
			return;
		}
	}
}

struct source_changes {
	struct vec set;	  /* struct sm_authz_source */
	struct vec unset; /* uint8_t[16] */
	const uint8_t (*node)[16];
	size_t n_node;
};

static bool is_node(const struct source_changes *c, const uint8_t addr[16])
{
	for (size_t i = 0; i < c->n_node; i++)
		if (!memcmp(c->node[i], addr, 16))
			return true;
	return false;
}

/* addr as the input lists it now: the node's, a workload's with its identity, or nobody's. */
static int add_change(const struct sm_model *model, void *ctx, const uint8_t addr[16])
{
	struct source_changes *c = ctx;
	struct sm_authz_source source = { 0 };

	memcpy(source.addr, addr, 16);
	source.node = is_node(c, addr);
	if (source.node || sm_model_authz_identity(model, addr, &source.identity))
		return vec_push(&c->set, &source, sizeof(source));
	return vec_push(&c->unset, addr, 16);
}

typedef int changed_addr_fn(const struct sm_model *model, void *ctx, const uint8_t addr[16]);

static int each_def_addr(const struct sm_model *model, const struct wl_def *def, changed_addr_fn *fn, void *ctx)
{
	int err = 0;

	for (uint8_t a = 0; !err && def && a < def->n_addresses; a++)
		err = fn(model, ctx, def->addresses[a].bytes);
	return err;
}

/* fn with each address a workload held or holds in committed batches counted above since (as listed) and in
 * the batch being applied; an address may come more than once. */
static int each_changed_addr(const struct sm_model *model, uint64_t since, changed_addr_fn *fn, void *ctx)
{
	int err = 0;

	for (size_t i = 0; !err && i < model->authz_touched.n; i++) {
		const struct touched_addr *t = &VEC_AT(&model->authz_touched, struct touched_addr, i);
		if (t->changes > since)
			err = fn(model, ctx, t->ip.bytes);
	}
	for (size_t i = 0; !err && model->in_batch && i < model->undo.n; i++) { /* the batch being applied */
		const struct undo_entry *undo = &VEC_AT(&model->undo, struct undo_entry, i);
		if (undo->kind != UNDO_WORKLOAD)
			continue;
		err = each_def_addr(model, undo->old_def, fn, ctx);
		if (!err)
			err = each_def_addr(model, ((const struct wl *)undo->entity)->def, fn, ctx);
	}
	return err;
}

static int collect_changes(const struct sm_model *model, uint64_t since, const uint8_t (*was_node)[16], size_t n_was,
			   struct source_changes *c)
{
	int err = each_changed_addr(model, since, add_change, c);

	for (size_t i = 0; !err && i < n_was; i++)
		err = add_change(model, c, was_node[i]);
	for (size_t i = 0; !err && i < c->n_node; i++)
		err = add_change(model, c, c->node[i]);
	return err;
}

int sm_model_authz_source_changes(const struct sm_model *model, uint64_t since, const uint8_t (*was_node)[16],
				  size_t n_was, const uint8_t (*node)[16], size_t n_node, struct sm_authz_source **set,
				  size_t *n_set, uint8_t (**unset)[16], size_t *n_unset)
{
	struct source_changes c = { .node = node, .n_node = n_node };
	int err;

	*set = NULL;
	*unset = NULL;
	*n_set = *n_unset = 0;
	if (since < model->authz_touched_from)
		return -ESTALE;
	err = collect_changes(model, since, was_node, n_was, &c);
	if (err) {
		vec_free(&c.set);
		vec_free(&c.unset);
		return err;
	}
	*set = c.set.items;
	*n_set = c.set.n;
	*unset = c.unset.items;
	*n_unset = c.unset.n;
	return 0;
}

static void identity_of(const struct wl_def *def, struct sm_authz_identity *out)
{
	out->trust_domain = def->trust_domain && def->trust_domain[0] ? def->trust_domain : DEFAULT_TRUST_DOMAIN;
	out->namespace = def->namespace ? def->namespace : "";
	out->service_account =
		def->service_account && def->service_account[0] ? def->service_account : DEFAULT_SERVICE_ACCOUNT;
}

static bool listed(const struct sm_authz_policy *const *list, size_t n, const struct sm_authz_policy *policy)
{
	for (size_t i = 0; i < n; i++) {
		if (list[i] == policy)
			return true;
	}
	return false;
}

static int append_policy(struct builder *b, const struct sm_authz_policy *policy)
{
	if (b->n_lists == b->lists_capacity) {
		size_t capacity = b->lists_capacity ? b->lists_capacity * 2 : 64;
		const struct sm_authz_policy **lists = realloc(b->lists, capacity * sizeof(*lists));
		if (!lists)
			return -ENOMEM;
		b->lists = lists;
		b->lists_capacity = capacity;
	}
	b->lists[b->n_lists++] = policy;
	return 0;
}

/* Appends policy unless the list holds it from first on. */
static int push_policy(struct builder *b, const struct sm_authz_policy *policy, size_t first)
{
	return listed(b->lists + first, b->n_lists - first, policy) ? 0 : append_policy(b, policy);
}

static int note_unknown(struct builder *b, const struct wl *wl, const char *key)
{
	char **unknown = realloc(b->unknown, (b->n_unknown + 1) * sizeof(*unknown));
	int len;

	if (!unknown)
		return -ENOMEM;
	b->unknown = unknown;
	len = snprintf(NULL, 0, "%s: %s", wl->uid, key);
	unknown[b->n_unknown] = malloc((size_t)len + 1);
	if (!unknown[b->n_unknown])
		return -ENOMEM;
	snprintf(unknown[b->n_unknown++], (size_t)len + 1, "%s: %s", wl->uid, key);
	return 0;
}

/* Whether a policy applies to every workload of def's namespace by its scope (global, or that namespace's). */
static bool applies_by_scope(const struct authz *authz, const struct wl_def *def)
{
	return authz->def->scope == SM_AUTHZ_SCOPE_GLOBAL ||
	       (authz->def->scope == SM_AUTHZ_SCOPE_NAMESPACE && authz->def->namespace == def->namespace);
}

/* Appends the policies that apply to wl (global, its namespace's, its own list) to b->lists; names of its
 * list that no policy has are recorded when record_unknown. Each policy once: those by scope are distinct
 * entities; a listed one is skipped when its scope took it, or when the list named it before. */
static int applicable(const struct sm_model *model, const struct wl *wl, struct builder *b, bool record_unknown)
{
	const struct wl_def *def = wl->def;
	size_t listed_first;
	int err = 0;

	for (const struct authz *authz = model->authorizations; !err && authz; authz = authz->hh.next) {
		if (authz->def && applies_by_scope(authz, def))
			err = append_policy(b, authz->def->policy);
	}
	listed_first = b->n_lists;
	for (uint16_t i = 0; !err && i < def->n_policies; i++) {
		const struct authz *authz;
		HASH_FIND_STR(model->authorizations, def->policies[i], authz);
		if (!authz || !authz->def)
			err = record_unknown ? note_unknown(b, wl, def->policies[i]) : 0;
		else if (!applies_by_scope(authz, def))
			err = push_policy(b, authz->def->policy, listed_first);
	}
	return err;
}

static size_t count_addresses(const struct sm_model *model, bool local_only)
{
	size_t n = 0;

	if (local_only) {
		for (size_t i = 0; i < model->local_workloads.n; i++)
			n += VEC_AT(&model->local_workloads, struct wl *, i)->def->n_addresses;
		return n;
	}
	for (const struct wl *wl = model->workloads; wl; wl = wl->next)
		n += wl->def ? wl->def->n_addresses : 0;
	return n;
}

static int build_destinations(const struct sm_model *model, struct builder *b)
{
	size_t n = count_addresses(model, true), at = 0;
	size_t *starts;
	int err = 0;

	b->destinations = calloc(n + 1, sizeof(*b->destinations));
	starts = calloc(n + 1, sizeof(*starts));
	if (!b->destinations || !starts) {
		free(starts);
		return -ENOMEM;
	}
	for (size_t i = 0; !err && i < model->local_workloads.n; i++) {
		const struct wl *wl = VEC_AT(&model->local_workloads, struct wl *, i);
		size_t first = b->n_lists;
		err = applicable(model, wl, b, true);
		if (b->n_lists == first)
			continue; /* no policy: allowed, never checked */
		for (uint8_t a = 0; !err && a < wl->def->n_addresses; a++) {
			if (local_holder(model, wl->def->addresses[a].bytes) != wl)
				continue; /* another workload of this node holds it too, and its policies count */
			memcpy(b->destinations[at].addr, wl->def->addresses[a].bytes, 16);
			starts[at] = first;
			b->destinations[at++].n_policies = b->n_lists - first;
		}
	}
	/* lists may have moved while it grew: point into it only now */
	for (size_t i = 0; !err && i < at; i++)
		b->destinations[i].policies = b->lists ? b->lists + starts[i] : NULL;
	free(starts);
	b->input.destinations = b->destinations;
	b->input.n_destinations = at;
	return err;
}

/* An address held by several workloads (host-network pods share the node's) has the identity of the one
 * the model's lookups give, so that explain, telemetry and the node's own addresses see what the kernel
 * checks. */
static void add_source(void *ctx, const uint8_t addr[16], const struct wl *holder)
{
	struct builder *b = ctx;
	struct sm_authz_source *source = &b->sources[b->input.n_sources++];

	memcpy(source->addr, addr, 16);
	identity_of(holder->def, &source->identity);
}

static int build_sources(const struct sm_model *model, const uint8_t (*node)[16], size_t n_node, struct builder *b)
{
	size_t n = count_addresses(model, false), at = 0;

	b->sources = calloc(n + n_node + 1, sizeof(*b->sources));
	if (!b->sources)
		return -ENOMEM;
	for (size_t i = 0; i < n_node; i++, at++) {
		memcpy(b->sources[at].addr, node[i], 16);
		b->sources[at].node = true;
	}
	b->input.sources = b->sources;
	b->input.n_sources = at;
	addr_index_for_each_held(model, add_source, b);
	return 0;
}

void sm_model_authz_free(struct sm_model_authz *authz)
{
	if (!authz)
		return;
	if (authz->input) {
		free((void *)authz->input->destinations);
		free((void *)authz->input->sources);
		free(authz->input);
	}
	free(authz->lists);
	for (size_t i = 0; i < authz->n_unknown; i++)
		free(authz->unknown[i]);
	free(authz->unknown);
	free(authz);
}

int sm_model_authz_build(const struct sm_model *model, const uint8_t (*node_addresses)[16], size_t n_node,
			 struct sm_model_authz **out)
{
	struct builder b = { 0 };
	struct sm_model_authz *authz = calloc(1, sizeof(*authz));
	int err = authz ? 0 : -ENOMEM;

	if (!err)
		err = build_destinations(model, &b);
	/* without a guarded destination no source is ever looked up */
	if (!err && b.input.n_destinations)
		err = build_sources(model, node_addresses, n_node, &b);
	if (!err) {
		authz->input = malloc(sizeof(*authz->input));
		err = authz->input ? 0 : -ENOMEM;
	}
	if (authz) {
		if (authz->input)
			*authz->input = b.input;
		authz->lists = b.lists;
		authz->unknown = b.unknown;
		authz->n_unknown = b.n_unknown;
	}
	if (err) {
		if (!authz || !authz->input) {
			free(b.destinations);
			free(b.sources);
		}
		sm_model_authz_free(authz);
		return err;
	}
	*out = authz;
	return 0;
}

int sm_model_authz_policies_for(const struct sm_model *model, const uint8_t addr[16],
				const struct sm_authz_policy ***policies, size_t *n, bool *local)
{
	const struct wl *wl = workload_at(model, addr, true); /* of this node's, the one whose policies guard it */
	struct builder b = { 0 };
	int err;

	*policies = NULL;
	*n = 0;
	*local = false;
	if (!wl)
		return 0;
	*local = model->node_name && wl->def->node == model->node_name;
	err = applicable(model, wl, &b, false);
	if (err) {
		free(b.lists);
		return err;
	}
	*policies = b.lists;
	*n = b.n_lists;
	return 0;
}

bool sm_model_authz_identity(const struct sm_model *model, const uint8_t addr[16], struct sm_authz_identity *out)
{
	const struct wl *wl = workload_at(model, addr, false);

	if (wl)
		identity_of(wl->def, out);
	return wl != NULL;
}

/* ---- this node's addresses whose destination set may have changed ---- */

struct dest_changes {
	struct builder b;  /* the policies of every changed destination, one after another */
	struct vec set;	   /* struct sm_authz_destination, policies set once b.lists stops moving */
	struct vec starts; /* size_t per destination: where its policies start in b.lists */
	struct vec unset;  /* uint8_t[16] */
};

/* addr as the whole input lists it among the destinations: guarded with its local holder's policies, or not
 * at all. -ESRCH when that workload lists a policy that has not arrived: the whole input names it. */
static int add_dest_change(const struct sm_model *model, void *ctx, const uint8_t addr[16])
{
	struct dest_changes *c = ctx;
	struct sm_authz_destination d = { 0 };
	const struct wl *wl = local_holder(model, addr);
	size_t first = c->b.n_lists;
	int err;

	if (wl && (err = applicable(model, wl, &c->b, true)))
		return err;
	if (c->b.n_unknown)
		return -ESRCH;
	if (c->b.n_lists == first) /* not this node's, or no policy: not guarded */
		return vec_push(&c->unset, addr, 16);
	memcpy(d.addr, addr, 16);
	d.n_policies = c->b.n_lists - first;
	if ((err = vec_push(&c->starts, &first, sizeof(first))))
		return err;
	return vec_push(&c->set, &d, sizeof(d));
}

static void dest_changes_free(struct dest_changes *c)
{
	free(c->b.lists);
	for (size_t i = 0; i < c->b.n_unknown; i++)
		free(c->b.unknown[i]);
	free(c->b.unknown);
	vec_free(&c->set);
	vec_free(&c->starts);
	vec_free(&c->unset);
}

/* t, updated of sources from the tables of `since`, brought to this node's addresses now. */
static int update_destinations(const struct sm_model *model, uint64_t since, struct sm_authz_tables *t, char *reason,
			       size_t reason_size)
{
	struct dest_changes c = { 0 };
	int err = each_changed_addr(model, since, add_dest_change, &c);

	for (size_t i = 0; !err && i < c.set.n; i++)
		VEC_AT(&c.set, struct sm_authz_destination, i).policies = c.b.lists + VEC_AT(&c.starts, size_t, i);
	if (!err)
		err = sm_authz_update_destinations(t, c.set.items, c.set.n, (const uint8_t(*)[16])c.unset.items,
						   c.unset.n, reason, reason_size);
	else if (err == -ESRCH)
		snprintf(reason, reason_size, "an address of this node that only the whole input tells the policies of");
	dest_changes_free(&c);
	return err;
}

int sm_model_authz_update(const struct sm_model *model, const struct sm_authz_tables *prev, uint64_t since,
			  const uint8_t (*was_node)[16], size_t n_was, const uint8_t (*node)[16], size_t n_node,
			  bool destinations, struct sm_authz_tables **out, char *reason, size_t reason_size)
{
	struct sm_authz_source *set;
	uint8_t(*unset)[16];
	size_t n_set, n_unset;
	int err = sm_model_authz_source_changes(model, since, was_node, n_was, node, n_node, &set, &n_set, &unset,
						&n_unset);

	if (err)
		return err;
	err = sm_authz_update_idents(prev, set, n_set, (const uint8_t(*)[16])unset, n_unset, out, reason, reason_size);
	free(set);
	free(unset);
	if (!err && destinations && (err = update_destinations(model, since, *out, reason, reason_size))) {
		sm_authz_tables_free(*out);
		*out = NULL;
	}
	return err;
}
