/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The planner: what the datapath maps should hold for each dirty entity, written into the model's
 * image. The image records every key it changes; its net difference becomes the ordered writes.
 *
 * Endpoint slots: a backend of a service takes `capacity` slots (its weight) in the priority its
 * locality gives it. Slots of a priority stay contiguous: a removed slot is filled by moving the last
 * one into it, so the count only ever covers written slots.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "workload/model.h"

/* Positions one backend may hold in one service before it needs a larger buffer. */
#define POSITIONS_ON_STACK (2 * SM_MAX_WEIGHT)

struct desired {
	uint8_t priority;
	uint32_t replicas;
	struct sm_endpoint_value value;
};

/* ---- locality ---- */

static const char *local_attribute(const struct sm_model *model, uint8_t scope)
{
	switch (scope) {
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION:
		return model->local.region;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE:
		return model->local.zone;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__SUBZONE:
		return model->local.subzone;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NODE:
		return model->node_name;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__CLUSTER:
		return model->local.cluster;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK:
		return model->local.network;
	default:
		return NULL;
	}
}

static const char *workload_attribute(const struct wl_def *def, uint8_t scope)
{
	switch (scope) {
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION:
		return def->region;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE:
		return def->zone;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__SUBZONE:
		return def->subzone;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NODE:
		return def->node;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__CLUSTER:
		return def->cluster_id;
	case ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK:
		return def->network;
	default:
		return NULL;
	}
}

/* 0 when every preferred scope matches the local node's, one more for each scope that does not. */
static uint8_t endpoint_priority(const struct sm_model *model, const struct svc_def *svc, const struct wl_def *wl)
{
	uint8_t matched = 0;

	/* Interned strings: equal values are the same pointer. An unknown local value matches nothing. */
	while (matched < svc->n_scopes) {
		const char *local = local_attribute(model, svc->scopes[matched]);
		if (!local || local != workload_attribute(wl, svc->scopes[matched]))
			break;
		matched++;
	}
	return svc->n_scopes - matched;
}

static void set_local(struct sm_model *model, const struct local_locality *next)
{
	const char *const sources[] = { next->region, next->zone, next->subzone, next->network, next->cluster };
	const char **targets[] = { &model->local.region, &model->local.zone, &model->local.subzone,
				   &model->local.network, &model->local.cluster };

	/* New references; the batch's start values keep theirs until it commits or rolls back. */
	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
		if (model->local_changed)
			model_unintern(model, *targets[i]);
		*targets[i] = sources[i] ? model_intern(model, sources[i]) : NULL;
	}
	model->local_changed = true;
}

/* The node's locality is that of its workloads (the smallest uid decides if they disagree). */
static int update_local(struct sm_model *model)
{
	struct local_locality next = { 0 };
	const struct wl *chosen = NULL;

	for (size_t i = 0; i < model->local_workloads.n; i++) {
		const struct wl *wl = VEC_AT(&model->local_workloads, struct wl *, i);
		if (!chosen || strcmp(wl->uid, chosen->uid) < 0)
			chosen = wl;
	}
	if (chosen) {
		const struct wl_def *def = chosen->def;
		next = (struct local_locality){ def->region, def->zone, def->subzone, def->network, def->cluster_id };
	}
	if (memcmp(&next, &model->local, sizeof(next)) == 0)
		return 0;
	set_local(model, &next);
	for (struct svc *svc = model->services; svc; svc = svc->next) {
		if (!svc->def || !svc->def->n_scopes)
			continue;
		struct membership *membership;
		DL_FOREACH(svc->members, membership)
			mark_pair(model, svc, membership->workload, 0);
	}
	return 0;
}

/* ---- values ---- */

static void resolve_gateway(const struct gateway *gateway, struct sm_waypoint *out)
{
	*out = (struct sm_waypoint){ 0 };
	if (!gateway || gateway->kind == GATEWAY_NONE)
		return;
	out->port = htons(gateway->port);
	if (gateway->kind == GATEWAY_ADDRESS) {
		if (ip_is_v4(&gateway->address)) {
			memcpy(&out->addr4, gateway->address.bytes + 12, 4);
			out->flags = SM_WAYPOINT_V4;
		} else {
			memcpy(out->addr6, gateway->address.bytes, 16);
			out->flags = SM_WAYPOINT_V6;
		}
		return;
	}
	/* A service: its first VIP of each family. */
	const struct svc_def *def = gateway->service->def;
	for (uint8_t i = 0; def && i < def->n_vips; i++) {
		const struct sm_ip *vip = &def->vips[i];
		if (ip_is_v4(vip) && !(out->flags & SM_WAYPOINT_V4)) {
			memcpy(&out->addr4, vip->bytes + 12, 4);
			out->flags |= SM_WAYPOINT_V4;
		} else if (!ip_is_v4(vip) && !(out->flags & SM_WAYPOINT_V6)) {
			memcpy(out->addr6, vip->bytes, 16);
			out->flags |= SM_WAYPOINT_V6;
		}
	}
	if (!out->flags)
		out->flags = SM_WAYPOINT_UNRESOLVED;
}

void service_value(const struct sm_image *image, const struct svc *svc, struct sm_service_value *out)
{
	const struct svc_def *def = svc->def;

	*out = (struct sm_service_value){ .name_hash = svc->name_hash, .n_ports = def->n_ports, .lb_mode = def->lb_mode };
	resolve_gateway(&def->waypoint, &out->waypoint);
	for (uint8_t i = 0; i < def->n_ports; i++)
		out->ports[i] = htons(def->ports[i].service_port);
	for (uint8_t p = 0; p < SM_MAX_PRIORITIES; p++)
		out->endpoint_counts[p] = (uint16_t)image_slot_count(image, svc->id, p);
}

void backend_value(const struct wl *wl, struct sm_backend_value *out)
{
	const struct wl_def *def = wl->def;

	*out = (struct sm_backend_value){ .name_hash = wl->name_hash };
	for (uint8_t i = 0; i < def->n_addresses; i++) {
		const struct sm_ip *ip = &def->addresses[i];
		if (ip_is_v4(ip) && !(out->families & SM_HAS_V4)) {
			memcpy(&out->addr4, ip->bytes + 12, 4);
			out->families |= SM_HAS_V4;
		} else if (!ip_is_v4(ip) && !(out->families & SM_HAS_V6)) {
			memcpy(out->addr6, ip->bytes, 16);
			out->families |= SM_HAS_V6;
		}
	}
	resolve_gateway(def->waypoint, &out->waypoint);
}

static bool needs_backend(const struct wl *wl)
{
	return wl->def && wl->def->n_addresses;
}

/* The slots a workload should hold in a service, or false for none. */
static bool desired_endpoint(const struct sm_model *model, const struct svc *svc, const struct wl *wl,
			     struct desired *out)
{
	const struct svc_def *service = svc->def;

	if (!service || !wl || !needs_backend(wl) || !wl->backend_id || service->lb_mode == SM_LB_PASSTHROUGH)
		return false;
	const struct wl_def *workload = wl->def;
	const struct membership *membership = find_membership(workload, svc);
	if (!membership)
		return false;
	if (workload->status == ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY && !service->allow_unhealthy)
		return false;
	out->replicas = workload->capacity < SM_MAX_WEIGHT ? workload->capacity : SM_MAX_WEIGHT;
	if (!out->replicas)
		return false;
	out->priority = endpoint_priority(model, service, workload);
	if (service->lb_mode == SM_LB_STRICT && out->priority != 0)
		return false;

	out->value = (struct sm_endpoint_value){ .backend_id = wl->backend_id };
	for (uint8_t i = 0; i < service->n_ports; i++) {
		uint16_t port = target_port(service, i, membership);
		out->value.target_ports[i] = htons(port ? port : service->ports[i].service_port);
	}
	return true;
}

static bool frontend_value(const struct ip_claims *ip, struct sm_frontend_value *out)
{
	const struct claim *best = NULL;

	/* Services win over workloads; among equals the smallest name, so the outcome is order-free. */
	for (uint16_t i = 0; i < ip->n; i++) {
		const struct claim *claim = &ip->claims[i];
		bool ready = claim->kind == OWNER_SERVICE ? ((struct svc *)claim->owner)->id != 0
							  : ((struct wl *)claim->owner)->backend_id != 0;
		if (!ready)
			continue;
		if (best && best->kind != claim->kind) {
			if (best->kind == OWNER_SERVICE)
				continue;
		} else if (best) {
			const char *a = claim->kind == OWNER_SERVICE ? ((struct svc *)claim->owner)->key
								     : ((struct wl *)claim->owner)->uid;
			const char *b = best->kind == OWNER_SERVICE ? ((struct svc *)best->owner)->key
								    : ((struct wl *)best->owner)->uid;
			if (strcmp(a, b) >= 0)
				continue;
		}
		best = claim;
	}
	if (!best)
		return false;
	*out = best->kind == OWNER_SERVICE
		       ? (struct sm_frontend_value){ .id = ((struct svc *)best->owner)->id, .kind = SM_FRONTEND_SERVICE }
		       : (struct sm_frontend_value){ .id = ((struct wl *)best->owner)->backend_id,
						     .kind = SM_FRONTEND_WORKLOAD };
	return true;
}

/* ---- endpoint slots ---- */

static int set_slot(struct sm_image *image, uint32_t service_id, uint8_t priority, uint32_t index,
		    const struct sm_endpoint_value *value)
{
	union sm_map_key key = {
		.endpoint = { .service_id = service_id, .priority = priority, .index = index },
	};

	return sm_image_set(image, SM_MAP_ENDPOINTS, &key, value);
}

/* Removes a slot: the last slot of the priority moves into the hole, then the last is dropped. */
static int remove_slot(struct sm_image *image, uint32_t service_id, uint8_t priority, uint32_t index)
{
	uint32_t last = image_slot_count(image, service_id, priority) - 1;
	int err;

	if (index != last) {
		union sm_map_key last_key = {
			.endpoint = { .service_id = service_id, .priority = priority, .index = last },
		};
		struct sm_endpoint_value moved = *(const struct sm_endpoint_value *)sm_image_get(
			image, SM_MAP_ENDPOINTS, &last_key);
		err = set_slot(image, service_id, priority, index, &moved);
		if (err)
			return err;
	}
	return set_slot(image, service_id, priority, last, NULL);
}

static int by_priority_then_index_descending(const void *a, const void *b)
{
	const struct slot_position *x = a, *y = b;

	if (x->priority != y->priority)
		return x->priority - y->priority;
	return x->index < y->index ? 1 : x->index > y->index ? -1 : 0;
}

static struct slot_position *backend_positions(const struct sm_image *image, uint32_t backend_id,
					       uint32_t service_id, struct slot_position *on_stack, size_t *n)
{
	*n = image_backend_positions(image, backend_id, service_id, on_stack, POSITIONS_ON_STACK);
	if (*n <= POSITIONS_ON_STACK)
		return on_stack;

	struct slot_position *heap = malloc(*n * sizeof(*heap));
	if (heap)
		image_backend_positions(image, backend_id, service_id, heap, *n);
	return heap;
}

/* Makes a backend's slots in a service what desired says (NULL: none). */
static int plan_slots(struct sm_image *image, uint32_t service_id, uint32_t backend_id,
		      const struct desired *desired, char *reason, size_t size)
{
	struct slot_position on_stack[POSITIONS_ON_STACK];
	struct slot_position *positions;
	size_t n, kept = 0;
	int err = 0;

	positions = backend_positions(image, backend_id, service_id, on_stack, &n);
	if (!positions)
		return -ENOMEM;
	/* Keep the lowest indexes of the wanted priority; remove the rest, highest index first, so that
	 * the last slot moved into a hole is never one still to be removed. */
	qsort(positions, n, sizeof(*positions), by_priority_then_index_descending);
	uint32_t in_priority = 0;
	for (size_t i = 0; desired && i < n; i++)
		in_priority += positions[i].priority == desired->priority;
	uint32_t surplus = desired && in_priority > desired->replicas ? in_priority - desired->replicas : 0;
	for (size_t i = 0; i < n && !err; i++) {
		bool wanted_priority = desired && positions[i].priority == desired->priority;
		if (wanted_priority && !surplus) {
			kept++;
			continue;
		}
		if (wanted_priority)
			surplus--;
		err = remove_slot(image, service_id, positions[i].priority, positions[i].index);
	}
	if (positions != on_stack)
		free(positions);
	if (err || !desired)
		return err;

	/* Kept slots may have moved into holes; find them again, then rewrite and append. */
	positions = backend_positions(image, backend_id, service_id, on_stack, &n);
	if (!positions)
		return -ENOMEM;
	for (size_t i = 0; i < n && !err; i++)
		err = set_slot(image, service_id, desired->priority, positions[i].index, &desired->value);
	if (positions != on_stack)
		free(positions);
	for (size_t i = kept; i < desired->replicas && !err; i++) {
		uint32_t index = image_slot_count(image, service_id, desired->priority);
		if (index >= SM_MAX_SLOTS) {
			snprintf(reason, size, "service %u priority %u would need more than %d endpoint slots",
				 service_id, desired->priority, SM_MAX_SLOTS);
			return -E2BIG;
		}
		err = set_slot(image, service_id, desired->priority, index, &desired->value);
	}
	return err;
}

static int delete_service_entries(struct sm_image *image, uint32_t service_id)
{
	union sm_map_key key = { .id = service_id };
	int err = 0;

	for (uint8_t p = 0; p < SM_MAX_PRIORITIES && !err; p++) {
		for (uint32_t i = image_slot_count(image, service_id, p); i-- > 0 && !err;)
			err = set_slot(image, service_id, p, i, NULL);
	}
	return err ? err : sm_image_set(image, SM_MAP_SERVICES, &key, NULL);
}

/* ---- ids ---- */

static int grant_id(struct sm_model *model, enum sm_map_id map, uint64_t hash, void *owner, uint32_t *id_out)
{
	bool services = map == SM_MAP_SERVICES;
	void **owners = services ? (void **)model->service_owner : (void **)model->backend_owner;
	uint32_t capacity = model->capacity[map];
	uint32_t *cursor = services ? &model->next_service_id : &model->next_backend_id;
	uint32_t hint = id_hint_find(services ? &model->service_hints : &model->backend_hints, hash);
	uint32_t id = 0;

	if (hint && hint <= capacity && !owners[hint])
		id = hint;
	for (uint32_t tried = 0; !id && tried < capacity; tried++) {
		uint32_t candidate = *cursor;
		*cursor = *cursor >= capacity ? 1 : *cursor + 1;
		if (!owners[candidate] && !image_id_in_use(model->image, map, candidate))
			id = candidate;
	}
	if (!id)
		return -ENOSPC;

	struct id_grant grant = { .map = (uint8_t)map, .id = id };
	if (vec_push(&model->new_ids, &grant, sizeof(grant)))
		return -ENOMEM;
	owners[id] = owner;
	*id_out = id;
	return 0;
}

static int grant_ids(struct sm_model *model, char *reason, size_t size)
{
	if (model->hints_pending && (model->dirty_services.n || model->dirty_workloads.n)) {
		int err = model_build_id_hints(model);
		if (err)
			return err;
	}
	for (size_t i = 0; i < model->dirty_services.n; i++) {
		struct svc *svc = VEC_AT(&model->dirty_services, struct svc *, i);
		if (svc->def && !svc->id) {
			int err = grant_id(model, SM_MAP_SERVICES, svc->name_hash, svc, &svc->id);
			if (err) {
				snprintf(reason, size, "the services map is full (%u entries)",
					 model->capacity[SM_MAP_SERVICES]);
				model->overflowed = SM_MAP_SERVICES;
				return err;
			}
		}
	}
	for (size_t i = 0; i < model->dirty_workloads.n; i++) {
		struct wl *wl = VEC_AT(&model->dirty_workloads, struct wl *, i);
		if (needs_backend(wl) && !wl->backend_id) {
			int err = grant_id(model, SM_MAP_BACKENDS, wl->name_hash, wl, &wl->backend_id);
			if (err) {
				snprintf(reason, size, "the backends map is full (%u entries)",
					 model->capacity[SM_MAP_BACKENDS]);
				model->overflowed = SM_MAP_BACKENDS;
				return err;
			}
		}
	}
	return 0;
}

/* ---- sweeping adopted leftovers ---- */

struct sweep_ctx {
	struct sm_model *model;
	enum sm_map_id map;
	struct vec orphans; /* uint32_t ids */
};

static int mark_slot_owner(void *ctx, const void *key, const void *value)
{
	struct sm_model *model = ctx;
	const struct sm_endpoint_value *endpoint = value;
	uint32_t service_id = ((const struct sm_endpoint_key *)key)->service_id;
	struct svc *svc = service_id <= model->capacity[SM_MAP_SERVICES] ? model->service_owner[service_id] : NULL;

	if (svc && svc->def) {
		uint32_t backend_id = endpoint->backend_id;
		struct wl *wl = backend_id <= model->capacity[SM_MAP_BACKENDS] ? model->backend_owner[backend_id] : NULL;
		mark_pair(model, svc, wl, backend_id);
	}
	return 0;
}

static int collect_orphan(void *ctx, uint32_t id, const void *value)
{
	struct sweep_ctx *sweep = ctx;
	struct sm_model *model = sweep->model;
	bool owned;

	(void)value;
	if (id > model->capacity[sweep->map])
		owned = false;
	else if (sweep->map == SM_MAP_SERVICES)
		owned = model->service_owner[id] != NULL;
	else
		owned = model->backend_owner[id] != NULL;
	return owned ? 0 : vec_push(&sweep->orphans, &id, sizeof(id));
}

static int mark_frontend(void *ctx, const void *key, const void *value)
{
	struct sm_model *model = ctx;
	struct ip_claims *ip = model_ip(model, key, true);

	(void)value;
	if (!ip)
		return -ENOMEM;
	mark_ip(model, ip);
	return 0;
}

static int sweep_orphans(struct sm_model *model)
{
	struct sweep_ctx sweep = { .model = model };
	int err;

	err = sm_image_for_each(model->image, SM_MAP_ENDPOINTS, mark_slot_owner, model);
	if (!err)
		err = sm_image_for_each(model->image, SM_MAP_FRONTENDS, mark_frontend, model);
	sweep.map = SM_MAP_SERVICES;
	if (!err)
		err = image_for_each_id(model->image, SM_MAP_SERVICES, collect_orphan, &sweep);
	for (size_t i = 0; !err && i < sweep.orphans.n; i++)
		err = delete_service_entries(model->image, VEC_AT(&sweep.orphans, uint32_t, i));
	sweep.orphans.n = 0;
	sweep.map = SM_MAP_BACKENDS;
	if (!err)
		err = image_for_each_id(model->image, SM_MAP_BACKENDS, collect_orphan, &sweep);
	for (size_t i = 0; !err && i < sweep.orphans.n; i++) {
		union sm_map_key key = { .id = VEC_AT(&sweep.orphans, uint32_t, i) };
		err = sm_image_set(model->image, SM_MAP_BACKENDS, &key, NULL);
	}
	free(sweep.orphans.items);
	return err;
}

/* ---- the plan ---- */

/*
 * Whether pair was met before in this batch: a workload's update marks its pairs when it is unlinked
 * and again when linked, and a pair's plan depends only on the model's state, so once is enough.
 * seen: an open-addressing set of mask + 1 slots (NULL: no set, plan everything).
 */
static bool seen_before(const struct dirty_pair **seen, size_t mask, const struct dirty_pair *pair)
{
	uint64_t hash = (uint64_t)(uintptr_t)pair->service * 0x9e3779b97f4a7c15ull ^
			(uint64_t)(uintptr_t)pair->workload * 0xc2b2ae3d27d4eb4full ^ pair->backend_id;

	if (!seen)
		return false;
	for (size_t at = (size_t)(hash ^ (hash >> 31)) & mask;; at = (at + 1) & mask) {
		const struct dirty_pair *other = seen[at];
		if (!other) {
			seen[at] = pair;
			return false;
		}
		if (other->service == pair->service && other->workload == pair->workload &&
		    other->backend_id == pair->backend_id)
			return true;
	}
}

static int plan_pairs(struct sm_model *model, char *reason, size_t size)
{
	size_t n = model->dirty_pairs.n, slots = 4;
	const struct dirty_pair **seen = NULL;
	int err = 0;

	while (slots < 2 * n)
		slots *= 2;
	if (n > 1 && !(seen = calloc(slots, sizeof(*seen))))
		return -ENOMEM;
	for (size_t i = 0; i < n && !err; i++) {
		const struct dirty_pair *pair = &VEC_AT(&model->dirty_pairs, struct dirty_pair, i);
		uint32_t backend_id = pair->workload ? pair->workload->backend_id : pair->backend_id;
		struct desired desired;

		if (!pair->service->id || !backend_id || seen_before(seen, slots - 1, pair))
			continue;
		bool wanted = desired_endpoint(model, pair->service, pair->workload, &desired);
		err = plan_slots(model->image, pair->service->id, backend_id, wanted ? &desired : NULL, reason, size);
		if (err == -E2BIG)
			model->overflowed = SM_MAP_ENDPOINTS;
	}
	free(seen);
	return err;
}

static int plan_services(struct sm_model *model)
{
	for (size_t i = 0; i < model->dirty_services.n; i++) {
		struct svc *svc = VEC_AT(&model->dirty_services, struct svc *, i);
		union sm_map_key key = { .id = svc->id };
		struct sm_service_value value;
		int err;

		if (!svc->id)
			continue;
		if (svc->def) {
			service_value(model->image, svc, &value);
			err = sm_image_set(model->image, SM_MAP_SERVICES, &key, &value);
		} else {
			err = delete_service_entries(model->image, svc->id);
		}
		if (err)
			return err;
	}
	return 0;
}

static int plan_backends(struct sm_model *model)
{
	for (size_t i = 0; i < model->dirty_workloads.n; i++) {
		struct wl *wl = VEC_AT(&model->dirty_workloads, struct wl *, i);
		union sm_map_key key = { .id = wl->backend_id };
		struct sm_backend_value value;

		if (!wl->backend_id)
			continue;
		if (needs_backend(wl))
			backend_value(wl, &value);
		int err = sm_image_set(model->image, SM_MAP_BACKENDS, &key, needs_backend(wl) ? &value : NULL);
		if (err)
			return err;
	}
	return 0;
}

static int plan_frontends(struct sm_model *model)
{
	for (size_t i = 0; i < model->dirty_ips.n; i++) {
		struct ip_claims *ip = VEC_AT(&model->dirty_ips, struct ip_claims *, i);
		union sm_map_key key = { .frontend = ip->ip };
		struct sm_frontend_value value;
		bool wanted = frontend_value(ip, &value);

		int err = sm_image_set(model->image, SM_MAP_FRONTENDS, &key, wanted ? &value : NULL);
		if (err)
			return err;
	}
	return 0;
}

static int check_capacity(struct sm_model *model, char *reason, size_t size)
{
	for (int map = 0; map < SM_MAP_COUNT; map++) {
		size_t count = sm_image_count(model->image, map);
		if (count > model->capacity[map]) {
			snprintf(reason, size, "the %s map would hold %zu entries, its capacity is %u", sm_map_name(map),
				 count, model->capacity[map]);
			model->overflowed = map;
			return -ENOSPC;
		}
	}
	return 0;
}

int plan_dirty(struct sm_model *model, bool sweep, char *reason, size_t size)
{
	int err = 0;

	if (model->local_dirty && !model->locality_fixed)
		err = update_local(model);
	if (!err)
		err = grant_ids(model, reason, size);
	if (!err && sweep)
		err = sweep_orphans(model);
	if (!err)
		err = model->mark_err;
	if (!err)
		err = plan_pairs(model, reason, size);
	if (!err)
		err = plan_services(model);
	if (!err)
		err = plan_backends(model);
	if (!err)
		err = plan_frontends(model);
	if (!err)
		err = model->mark_err;
	if (!err)
		err = check_capacity(model, reason, size);
	if (err == -ENOMEM)
		snprintf(reason, size, "out of memory");
	return err;
}

/* ---- from scratch ---- */

static int build_service(const struct sm_model *model, struct sm_image *image, const struct svc *svc)
{
	const struct membership *membership;
	union sm_map_key key = { .id = svc->id };
	struct sm_service_value value;
	char reason[128];

	DL_FOREACH(svc->members, membership) {
		struct desired desired;
		if (!desired_endpoint(model, svc, membership->workload, &desired))
			continue;
		int err = plan_slots(image, svc->id, membership->workload->backend_id, &desired, reason, sizeof(reason));
		if (err)
			return err;
	}
	service_value(image, svc, &value);
	return sm_image_set(image, SM_MAP_SERVICES, &key, &value);
}

int sm_model_build_image(const struct sm_model *model, struct sm_image **out)
{
	struct sm_image *image = NULL;
	int err = sm_image_new(&image);

	for (const struct svc *svc = model->services; !err && svc; svc = svc->next) {
		if (svc->def && svc->id)
			err = build_service(model, image, svc);
	}
	for (const struct wl *wl = model->workloads; !err && wl; wl = wl->next) {
		union sm_map_key key = { .id = wl->backend_id };
		struct sm_backend_value value;
		if (!wl->backend_id || !needs_backend(wl))
			continue;
		backend_value(wl, &value);
		err = sm_image_set(image, SM_MAP_BACKENDS, &key, &value);
	}
	for (const struct ip_claims *ip = model->ips; !err && ip; ip = ip->hh.next) {
		union sm_map_key key = { .frontend = ip->ip };
		struct sm_frontend_value value;
		if (frontend_value(ip, &value))
			err = sm_image_set(image, SM_MAP_FRONTENDS, &key, &value);
	}
	if (err) {
		sm_image_free(image);
		return err;
	}
	*out = image;
	return 0;
}
