/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The model's entities and their indexes: setting a definition unlinks the old one, links the new one
 * and marks what the datapath must recompute. Applying responses is apply.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>
#include <xxhash.h>

#include "workload/model.h"

/* ---- small containers ---- */

int vec_push(struct vec *vec, const void *item, size_t item_size)
{
	if (vec->n == vec->capacity) {
		size_t capacity = vec->capacity ? vec->capacity * 2 : 16;
		void *items = realloc(vec->items, capacity * item_size);
		if (!items)
			return -ENOMEM;
		vec->items = items;
		vec->capacity = capacity;
	}
	memcpy((char *)vec->items + vec->n * item_size, item, item_size);
	vec->n++;
	return 0;
}

void vec_free(struct vec *vec)
{
	free(vec->items);
	*vec = (struct vec){ 0 };
}

static bool interned_is(const void *entry, const void *text)
{
	return strcmp(((const struct interned *)entry)->text, text) == 0;
}

const char *model_intern(struct sm_model *model, const char *text)
{
	size_t len = strlen(text);
	uint64_t hash = XXH3_64bits(text, len);
	struct interned *entry = index_find(&model->strings, hash, interned_is, text);

	if (!entry) {
		entry = malloc(sizeof(*entry) + len + 1);
		if (!entry)
			return NULL;
		entry->refs = 0;
		memcpy(entry->text, text, len + 1);
		if (index_add(&model->strings, hash, entry)) {
			free(entry);
			return NULL;
		}
	}
	entry->refs++;
	return entry->text;
}

void model_unintern(struct sm_model *model, const char *text)
{
	if (!text)
		return;

	struct interned *entry = (struct interned *)(text - offsetof(struct interned, text));
	if (--entry->refs == 0) {
		index_remove(&model->strings, XXH3_64bits(text, strlen(text)), entry);
		free(entry);
	}
}

static uint64_t name_hash(const char *name)
{
	return XXH3_64bits(name, strlen(name));
}

/*
 * ---- dirty marks: each entity at most once per batch ----
 * A mark that cannot be recorded (no memory) fails the batch (mark_err, checked by plan_dirty): a
 * batch planned without it would leave the maps unlike the model.
 */

static void mark(struct sm_model *model, struct vec *dirty, uint32_t *dirty_epoch, const void *entity)
{
	if (*dirty_epoch == model->epoch)
		return;
	*dirty_epoch = model->epoch;
	if (vec_push(dirty, &entity, sizeof(entity)))
		model->mark_err = -ENOMEM;
}

void mark_workload(struct sm_model *model, struct wl *wl)
{
	mark(model, &model->dirty_workloads, &wl->dirty_epoch, wl);
}

void mark_service(struct sm_model *model, struct svc *svc)
{
	mark(model, &model->dirty_services, &svc->dirty_epoch, svc);
}

void mark_pair(struct sm_model *model, struct svc *svc, struct wl *wl, uint32_t backend_id)
{
	struct dirty_pair pair = { .service = svc, .workload = wl, .backend_id = backend_id };

	if (vec_push(&model->dirty_pairs, &pair, sizeof(pair)))
		model->mark_err = -ENOMEM;
	mark_service(model, svc);
}

void mark_ip(struct sm_model *model, struct ip_claims *ip)
{
	mark(model, &model->dirty_ips, &ip->dirty_epoch, ip);
}

/* ---- entities ---- */

struct membership *find_membership(const struct wl_def *def, const struct svc *svc)
{
	for (uint16_t i = 0; i < def->n_memberships; i++) {
		if (def->memberships[i].service == svc)
			return &def->memberships[i];
	}
	return NULL;
}

uint16_t target_port(const struct svc_def *def, uint8_t port, const struct membership *membership)
{
	uint16_t target = def->ports[port].target_port;

	for (uint16_t j = 0; membership && j < membership->n_ports; j++) {
		if (membership->ports[j].service_port == def->ports[port].service_port && membership->ports[j].target_port)
			target = membership->ports[j].target_port;
	}
	return target;
}

static bool svc_has_key(const void *entry, const void *key)
{
	return strcmp(((const struct svc *)entry)->key, key) == 0;
}

static bool wl_has_uid(const void *entry, const void *uid)
{
	return strcmp(((const struct wl *)entry)->uid, uid) == 0;
}

struct svc *service_find(const struct sm_model *model, const char *key)
{
	return index_find(&model->service_index, name_hash(key), svc_has_key, key);
}

struct wl *workload_find(const struct sm_model *model, const char *uid)
{
	return index_find(&model->workload_index, name_hash(uid), wl_has_uid, uid);
}

struct svc *model_service_ref(struct sm_model *model, const char *key)
{
	uint64_t hash = name_hash(key);
	struct svc *svc = index_find(&model->service_index, hash, svc_has_key, key);

	if (svc)
		return svc;
	svc = calloc(1, sizeof(*svc));
	if (!svc || !(svc->key = strdup(key)) || index_add(&model->service_index, hash, svc)) {
		if (svc)
			free(svc->key);
		free(svc);
		return NULL;
	}
	svc->name_hash = hash;
	DL_APPEND(model->services, svc);
	mark_service(model, svc); /* so that it is collected if nothing comes to need it */
	return svc;
}

struct wl *workload_ref(struct sm_model *model, const char *uid)
{
	uint64_t hash = name_hash(uid); /* as workload_find's */
	struct wl *wl = index_find(&model->workload_index, hash, wl_has_uid, uid);

	if (wl)
		return wl;
	size_t len = strlen(uid);
	wl = calloc(1, sizeof(*wl) + len + 1);
	if (!wl)
		return NULL;
	memcpy(wl->uid, uid, len);
	wl->name_hash = hash;
	if (index_add(&model->workload_index, hash, wl)) {
		free(wl);
		return NULL;
	}
	DL_APPEND(model->workloads, wl);
	mark_workload(model, wl);
	return wl;
}

void service_free(struct sm_model *model, struct svc *svc)
{
	index_remove(&model->service_index, svc->name_hash, svc);
	DL_DELETE(model->services, svc);
	free(svc->key);
	free(svc);
}

void workload_free(struct sm_model *model, struct wl *wl)
{
	index_remove(&model->workload_index, wl->name_hash, wl);
	DL_DELETE(model->workloads, wl);
	free(wl);
}

struct authz *authorization_ref(struct sm_model *model, const char *key)
{
	struct authz *authz;

	HASH_FIND_STR(model->authorizations, key, authz);
	if (authz)
		return authz;
	authz = calloc(1, sizeof(*authz));
	if (!authz || !(authz->key = strdup(key))) {
		free(authz);
		return NULL;
	}
	HASH_ADD_KEYPTR(hh, model->authorizations, authz->key, strlen(authz->key), authz);
	if (!authz->hh.tbl) { /* uthash could not grow its table (HASH_NONFATAL_OOM) */
		free(authz->key);
		free(authz);
		return NULL;
	}
	return authz;
}

struct ip_claims *model_ip(struct sm_model *model, const struct sm_frontend_key *key, bool create)
{
	struct ip_claims *ip;

	HASH_FIND(hh, model->ips, key, sizeof(*key), ip);
	if (ip || !create)
		return ip;
	ip = calloc(1, sizeof(*ip));
	if (!ip)
		return NULL;
	ip->ip = *key;
	HASH_ADD(hh, model->ips, ip, sizeof(ip->ip), ip);
	if (!ip->hh.tbl) { /* uthash could not grow its table (HASH_NONFATAL_OOM) */
		free(ip);
		return NULL;
	}
	return ip;
}

static int claim_ip(struct sm_model *model, const struct sm_ip *address, enum owner_kind kind, void *owner)
{
	struct ip_claims *ip = model_ip(model, (const struct sm_frontend_key *)address, true);

	if (!ip)
		return -ENOMEM;
	if (ip->n == ip->capacity) {
		uint16_t capacity = ip->capacity ? ip->capacity * 2 : 1;
		struct claim *claims = realloc(ip->claims, capacity * sizeof(*claims));
		if (!claims)
			return -ENOMEM;
		ip->claims = claims;
		ip->capacity = capacity;
	}
	ip->claims[ip->n++] = (struct claim){ .kind = (uint8_t)kind, .owner = owner };
	mark_ip(model, ip);
	return 0;
}

static void unclaim_ip(struct sm_model *model, const struct sm_ip *address, void *owner)
{
	struct ip_claims *ip = model_ip(model, (const struct sm_frontend_key *)address, false);

	for (uint16_t i = 0; ip && i < ip->n; i++) {
		if (ip->claims[i].owner == owner) {
			ip->claims[i] = ip->claims[--ip->n];
			mark_ip(model, ip);
			return;
		}
	}
}

/* A pod address is a frontend only when traffic to it must go to its waypoint. */
static bool workload_claims_addresses(const struct wl_def *def)
{
	return def->waypoint &&
	       def->network_mode != ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK;
}

static bool is_local(const struct sm_model *model, const struct wl_def *def)
{
	return model->node_name && def->node == model->node_name;
}

static void remove_local(struct sm_model *model, struct wl *wl)
{
	for (size_t i = 0; i < model->local_workloads.n; i++) {
		if (VEC_AT(&model->local_workloads, struct wl *, i) == wl) {
			VEC_AT(&model->local_workloads, struct wl *, i) =
				VEC_AT(&model->local_workloads, struct wl *, --model->local_workloads.n);
			return;
		}
	}
}

static void mark_dependents(struct sm_model *model, struct svc *svc)
{
	struct gateway *gateway;

	DL_FOREACH(svc->dependents, gateway) {
		if (gateway->owner_kind == OWNER_SERVICE)
			mark_service(model, gateway->owner);
		else
			mark_workload(model, gateway->owner);
	}
}

static void link_gateway(struct sm_model *model, struct gateway *gateway, enum owner_kind kind, void *owner)
{
	gateway->owner_kind = (uint8_t)kind;
	gateway->owner = owner;
	if (gateway->kind == GATEWAY_SERVICE) {
		DL_APPEND(gateway->service->dependents, gateway);
		mark_service(model, gateway->service);
	}
}

static void unlink_gateway(struct sm_model *model, struct gateway *gateway)
{
	if (gateway->kind == GATEWAY_SERVICE) {
		DL_DELETE(gateway->service->dependents, gateway);
		mark_service(model, gateway->service);
	}
}

/* What cannot fail comes first: a rollback unlinks all of it, whatever failed after. */
static int link_workload(struct sm_model *model, struct wl *wl, struct wl_def *def)
{
	model->n_workloads++;
	mark_workload(model, wl);
	for (uint16_t i = 0; i < def->n_memberships; i++) {
		struct membership *membership = &def->memberships[i];
		membership->workload = wl;
		DL_APPEND(membership->service->members, membership);
		mark_pair(model, membership->service, wl, 0);
	}
	if (def->waypoint)
		link_gateway(model, def->waypoint, OWNER_WORKLOAD, wl);
	if (workload_claims_addresses(def)) {
		for (uint8_t i = 0; i < def->n_addresses; i++) {
			if (claim_ip(model, &def->addresses[i], OWNER_WORKLOAD, wl))
				return -ENOMEM;
		}
	}
	if (is_local(model, def)) {
		if (vec_push(&model->local_workloads, &wl, sizeof(wl)))
			return -ENOMEM;
		model->local_dirty = true;
	}
	for (uint8_t i = 0; i < def->n_addresses; i++) {
		if (addr_index_add(model, &def->addresses[i], wl))
			return -ENOMEM;
	}
	return 0;
}

static void unlink_workload(struct sm_model *model, struct wl *wl, struct wl_def *def)
{
	for (uint16_t i = 0; i < def->n_memberships; i++) {
		struct membership *membership = &def->memberships[i];
		DL_DELETE(membership->service->members, membership);
		mark_pair(model, membership->service, wl, 0);
	}
	if (def->waypoint)
		unlink_gateway(model, def->waypoint);
	if (workload_claims_addresses(def)) {
		for (uint8_t i = 0; i < def->n_addresses; i++)
			unclaim_ip(model, &def->addresses[i], wl);
	}
	if (is_local(model, def)) {
		remove_local(model, wl);
		model->local_dirty = true;
	}
	for (uint8_t i = 0; i < def->n_addresses; i++)
		addr_index_remove(model, &def->addresses[i], wl);
	model->n_workloads--;
	mark_workload(model, wl);
}

static void mark_members(struct sm_model *model, struct svc *svc)
{
	struct membership *membership;

	DL_FOREACH(svc->members, membership)
		mark_pair(model, svc, membership->workload, 0);
}

/* What cannot fail comes first: a rollback unlinks all of it, whatever failed after. */
static int link_service(struct sm_model *model, struct svc *svc, struct svc_def *def)
{
	link_gateway(model, &def->waypoint, OWNER_SERVICE, svc);
	model->n_services++;
	for (uint8_t i = 0; i < def->n_vips; i++) {
		if (claim_ip(model, &def->vips[i], OWNER_SERVICE, svc))
			return -ENOMEM;
	}
	return 0;
}

static void unlink_service(struct sm_model *model, struct svc *svc, struct svc_def *def)
{
	for (uint8_t i = 0; i < def->n_vips; i++)
		unclaim_ip(model, &def->vips[i], svc);
	unlink_gateway(model, &def->waypoint);
	model->n_services--;
}

int workload_set_def(struct sm_model *model, struct wl *wl, struct wl_def *def)
{
	if (wl->def)
		unlink_workload(model, wl, wl->def);
	wl->def = def;
	return def ? link_workload(model, wl, def) : 0;
}

int service_set_def(struct sm_model *model, struct svc *svc, struct svc_def *def)
{
	if (svc->def)
		unlink_service(model, svc, svc->def);
	svc->def = def;
	mark_service(model, svc);
	mark_members(model, svc);
	mark_dependents(model, svc);
	return def ? link_service(model, svc, def) : 0;
}

void authorization_set_def(struct sm_model *model, struct authz *authz, struct authz_def *def)
{
	model->n_authorizations += (def != NULL) - (authz->def != NULL);
	authz->def = def;
}

void free_def(struct sm_model *model, enum undo_kind kind, void *def)
{
	switch (kind) {
	case UNDO_WORKLOAD:
		free_wl_def(model, def);
		break;
	case UNDO_SERVICE:
		free_svc_def(model, def);
		break;
	case UNDO_AUTHORIZATION:
		free_authz_def(model, def);
		break;
	}
}

void *def_of(enum undo_kind kind, const void *entity)
{
	switch (kind) {
	case UNDO_WORKLOAD:
		return ((const struct wl *)entity)->def;
	case UNDO_SERVICE:
		return ((const struct svc *)entity)->def;
	case UNDO_AUTHORIZATION:
		return ((const struct authz *)entity)->def;
	}
	return NULL;
}

static bool same_addresses(const struct wl_def *a, const struct wl_def *b)
{
	return a->n_addresses == b->n_addresses &&
	       (!a->n_addresses || memcmp(a->addresses, b->addresses, a->n_addresses * sizeof(*a->addresses)) == 0);
}

static bool same_policies(const struct wl_def *a, const struct wl_def *b)
{
	if (a->n_policies != b->n_policies)
		return false;
	for (uint16_t i = 0; i < a->n_policies; i++) {
		if (a->policies[i] != b->policies[i]) /* interned */
			return false;
	}
	return true;
}

/* The same Authorization message, sent again (a local config's every reload sends each policy). */
static bool same_policy(const struct authz_def *a, const struct authz_def *b)
{
	return a && b && a->len == b->len && (!a->len || memcmp(a->bytes, b->bytes, a->len) == 0);
}

/* Whether replacing old by new (either NULL) can change what authorization compiles to. */
static bool changes_authz(enum undo_kind kind, const void *old_def, const void *new_def)
{
	const struct wl_def *a = old_def, *b = new_def;

	if (kind == UNDO_AUTHORIZATION)
		return !same_policy(old_def, new_def);
	if (kind != UNDO_WORKLOAD)
		return false;
	if (!a || !b)
		return (a ? a : b)->n_addresses > 0;
	return !same_addresses(a, b) || a->namespace != b->namespace || a->service_account != b->service_account ||
	       a->trust_domain != b->trust_domain || a->node != b->node || !same_policies(a, b);
}

/* Sets a definition (owning it from here on, also on failure) and journals the one it replaces. */
int set_def(struct sm_model *model, enum undo_kind kind, void *entity, void *def)
{
	struct undo_entry undo = { .kind = (uint8_t)kind, .entity = entity, .old_def = def_of(kind, entity) };

	if (changes_authz(kind, undo.old_def, def)) {
		model->authz_dirty = true;
		model->authz_dests_dirty |= kind == UNDO_AUTHORIZATION || (undo.old_def && is_local(model, undo.old_def)) ||
					    (def && is_local(model, def));
		model->authz_policies_dirty |= kind == UNDO_AUTHORIZATION;
	}

	if (vec_push(&model->undo, &undo, sizeof(undo))) {
		free_def(model, kind, def);
		return -ENOMEM;
	}
	switch (kind) {
	case UNDO_WORKLOAD:
		return workload_set_def(model, entity, def);
	case UNDO_SERVICE:
		return service_set_def(model, entity, def);
	case UNDO_AUTHORIZATION:
		authorization_set_def(model, entity, def);
		return 0;
	}
	return -EINVAL;
}

/* ---- the model's life ---- */

int sm_model_new(const struct sm_model_options *options, struct sm_model **out)
{
	static const uint32_t default_capacity[SM_MAP_COUNT] = {
		[SM_MAP_FRONTENDS] = SM_DEFAULT_MAX_FRONTENDS,
		[SM_MAP_SERVICES] = SM_DEFAULT_MAX_SERVICES,
		[SM_MAP_ENDPOINTS] = SM_DEFAULT_MAX_ENDPOINTS,
		[SM_MAP_BACKENDS] = SM_DEFAULT_MAX_BACKENDS,
	};
	struct sm_model *model = calloc(1, sizeof(*model));
	int err = -ENOMEM;

	if (!model)
		return -ENOMEM;
	model->epoch = 1;
	model->changes = 1; /* sm_model_generation is never 0 */
	sm_pb_arena_init(&model->decode_arena);
	model->next_service_id = 1;
	model->next_backend_id = 1;
	for (int map = 0; map < SM_MAP_COUNT; map++)
		model->capacity[map] = options->capacity[map] ? options->capacity[map] : default_capacity[map];
	if (options->node_name && options->node_name[0] &&
	    !(model->node_name = model_intern(model, options->node_name)))
		goto fail;
	if (options->locality) {
		const struct sm_locality *l = options->locality;
		const char *const sources[] = { l->region, l->zone, l->subzone, l->network, l->cluster };
		const char **targets[] = { &model->local.region, &model->local.zone, &model->local.subzone,
					   &model->local.network, &model->local.cluster };
		for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
			if (sources[i] && !(*targets[i] = model_intern(model, sources[i])))
				goto fail;
		}
		model->locality_fixed = true;
	}
	err = sm_image_new(&model->image);
	if (err)
		goto fail;
	model->service_owner = calloc((size_t)model->capacity[SM_MAP_SERVICES] + 1, sizeof(struct svc *));
	model->backend_owner = calloc((size_t)model->capacity[SM_MAP_BACKENDS] + 1, sizeof(struct wl *));
	if (!model->service_owner || !model->backend_owner) {
		err = -ENOMEM;
		goto fail;
	}
	*out = model;
	return 0;
fail:
	sm_model_free(model);
	return err;
}

void sm_model_free(struct sm_model *model)
{
	if (!model)
		return;

	struct wl *wl, *wl_tmp;
	DL_FOREACH_SAFE(model->workloads, wl, wl_tmp) {
		free_wl_def(model, wl->def); /* not unlinked: what it links to goes too */
		free(wl);
	}
	index_free(&model->workload_index);
	struct svc *svc, *svc_tmp;
	DL_FOREACH_SAFE(model->services, svc, svc_tmp) {
		free_svc_def(model, svc->def);
		free(svc->key);
		free(svc);
	}
	index_free(&model->service_index);
	struct authz *authz, *authz_tmp;
	HASH_ITER(hh, model->authorizations, authz, authz_tmp) {
		HASH_DEL(model->authorizations, authz);
		free_authz_def(model, authz->def);
		free(authz->key);
		free(authz);
	}
	addr_index_free(model);
	struct ip_claims *ip, *ip_tmp;
	HASH_ITER(hh, model->ips, ip, ip_tmp) {
		HASH_DEL(model->ips, ip);
		free(ip->claims);
		free(ip);
	}
	const char **locals[] = { &model->local.region, &model->local.zone, &model->local.subzone,
				  &model->local.network, &model->local.cluster, &model->node_name };
	for (size_t i = 0; i < sizeof(locals) / sizeof(locals[0]); i++)
		model_unintern(model, *locals[i]);
	index_free(&model->strings); /* empty by now: every definition released its strings */
	index_free(&model->service_hints);
	index_free(&model->backend_hints);
	sm_image_free(model->image);
	free(model->service_owner);
	free(model->backend_owner);
	vec_free(&model->dirty_workloads);
	vec_free(&model->dirty_services);
	vec_free(&model->dirty_pairs);
	vec_free(&model->dirty_ips);
	vec_free(&model->authz_touched);
	vec_free(&model->undo);
	vec_free(&model->new_ids);
	vec_free(&model->local_workloads);
	plan_free(&model->plan);
	sm_pb_arena_release(&model->decode_arena);
	free(model);
}

static int add_hint(struct flat_index *hints, uint64_t hash, uint32_t id)
{
	if (id_hint_find(hints, hash))
		return 0; /* two entries with one name hash: the first keeps it */
	return index_add(hints, hash, (void *)(uintptr_t)id);
}

static int hint_service(void *ctx, uint32_t id, const void *value)
{
	struct sm_model *model = ctx;

	return add_hint(&model->service_hints, ((const struct sm_service_value *)value)->name_hash, id);
}

static int hint_backend(void *ctx, uint32_t id, const void *value)
{
	struct sm_model *model = ctx;

	return add_hint(&model->backend_hints, ((const struct sm_backend_value *)value)->name_hash, id);
}

int model_build_id_hints(struct sm_model *model)
{
	int err = index_reserve(&model->service_hints, sm_image_count(model->image, SM_MAP_SERVICES));

	if (!err)
		err = index_reserve(&model->backend_hints, sm_image_count(model->image, SM_MAP_BACKENDS));
	if (!err)
		err = image_for_each_id(model->image, SM_MAP_SERVICES, hint_service, model);
	if (!err)
		err = image_for_each_id(model->image, SM_MAP_BACKENDS, hint_backend, model);
	if (!err)
		model->hints_pending = false;
	return err;
}

/* Once the model's image holds what the maps hold: services and backends keep their ids by name, and the
 * first Address response sweeps what it does not name. */
static void adopted(struct sm_model *model)
{
	model->hints_pending = true;
	model->sweep_pending = true;
}

int sm_model_adopt(struct sm_model *model, const struct sm_image *maps)
{
	int err;

	model->changes++;
	err = image_copy(model->image, maps);
	if (!err)
		adopted(model);
	return err;
}

static bool image_empty(const struct sm_image *image)
{
	for (int map = 0; map < SM_MAP_COUNT; map++) {
		if (sm_image_count(image, map))
			return false;
	}
	return true;
}

int sm_model_adopt_image(struct sm_model *model, struct sm_image *maps)
{
	if (!image_empty(model->image)) {
		sm_image_free(maps);
		return -EBUSY;
	}
	model->changes++;
	sm_image_free(model->image);
	model->image = maps;
	adopted(model);
	return 0;
}

int model_classify(const char *type_url, enum resource_type *type)
{
	if (strcmp(type_url, SM_TYPE_URL_ADDRESS) == 0)
		*type = TYPE_ADDRESS;
	else if (strcmp(type_url, SM_TYPE_URL_AUTHORIZATION) == 0)
		*type = TYPE_AUTHORIZATION;
	else
		return -EPROTONOSUPPORT;
	return 0;
}

/* ---- reading the model ---- */

const struct sm_image *sm_model_image(const struct sm_model *model)
{
	return model->image;
}

int sm_model_for_each_version(const struct sm_model *model, const char *type_url,
			      int (*fn)(void *ctx, const char *name, const char *version), void *ctx)
{
	enum resource_type type;
	int ret;

	if (model_classify(type_url, &type))
		return -EPROTONOSUPPORT;
	if (type == TYPE_AUTHORIZATION) {
		for (struct authz *authz = model->authorizations; authz; authz = authz->hh.next) {
			if (authz->def && (ret = fn(ctx, authz->key, authz->def->version)))
				return ret;
		}
		return 0;
	}
	for (struct wl *wl = model->workloads; wl; wl = wl->next) {
		if (wl->def && (ret = fn(ctx, wl->uid, wl->def->version)))
			return ret;
	}
	for (struct svc *svc = model->services; svc; svc = svc->next) {
		if (svc->def && (ret = fn(ctx, svc->key, svc->def->version)))
			return ret;
	}
	return 0;
}

void sm_model_stats(const struct sm_model *model, struct sm_model_stats *stats)
{
	*stats = (struct sm_model_stats){
		.workloads = model->n_workloads,
		.services = model->n_services,
		.authorizations = model->n_authorizations,
	};
	for (int map = 0; map < SM_MAP_COUNT; map++) {
		stats->map_entries[map] = sm_image_count(model->image, map);
		stats->map_capacity[map] = model->capacity[map];
		stats->map_overflows[map] = model->overflows[map];
	}
}

void sm_model_local_locality(const struct sm_model *model, struct sm_locality *out)
{
	*out = (struct sm_locality){
		.region = model->local.region,
		.zone = model->local.zone,
		.subzone = model->local.subzone,
		.network = model->local.network,
		.cluster = model->local.cluster,
	};
}

int sm_model_for_each_local_address(const struct sm_model *model, int (*fn)(void *ctx, const uint8_t addr[16]),
				    void *ctx)
{
	for (size_t i = 0; i < model->local_workloads.n; i++) {
		const struct wl_def *def = VEC_AT(&model->local_workloads, struct wl *, i)->def;
		for (uint8_t a = 0; a < def->n_addresses; a++) {
			int ret = fn(ctx, def->addresses[a].bytes);
			if (ret)
				return ret;
		}
	}
	return 0;
}

uint64_t sm_model_local_generation(const struct sm_model *model)
{
	return model->local_changes;
}

uint32_t sm_model_service_id(const struct sm_model *model, const char *key)
{
	const struct svc *svc = service_find(model, key);

	return svc ? svc->id : 0;
}

uint32_t sm_model_backend_id(const struct sm_model *model, const char *uid)
{
	const struct wl *wl = workload_find(model, uid);

	return wl ? wl->backend_id : 0;
}
