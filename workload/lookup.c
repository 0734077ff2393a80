/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lookups by address (workload/workload.h): an index of every workload address, kept by workload_set_def,
 * so that naming a connection's ends costs two hash lookups (telemetry resolves thousands a second).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "workload/model.h"

#define DEFAULT_TRUST_DOMAIN "cluster.local"
#define DEFAULT_SERVICE_ACCOUNT "default"

static uint64_t addr_hash(const uint8_t addr[16])
{
	return XXH3_64bits(addr, sizeof(struct sm_ip));
}

static bool owners_of(const void *entry, const void *addr)
{
	return memcmp(((const struct addr_owners *)entry)->ip.bytes, addr, sizeof(struct sm_ip)) == 0;
}

static struct addr_owners *find(const struct sm_model *model, const uint8_t addr[16])
{
	return index_find(&model->addr_owners, addr_hash(addr), owners_of, addr);
}

/* The owners array when it is allocated, else NULL (the one owner is held in the entry). */
static struct wl **owners_heap(struct addr_owners *entry)
{
	return entry->owners == &entry->one_owner ? NULL : entry->owners;
}

int addr_index_add(struct sm_model *model, const struct sm_ip *ip, struct wl *wl)
{
	struct addr_owners *entry = find(model, ip->bytes);

	if (!entry) {
		entry = calloc(1, sizeof(*entry));
		if (!entry)
			return -ENOMEM;
		entry->ip = *ip;
		entry->owners = &entry->one_owner;
		entry->capacity = 1;
		if (index_add(&model->addr_owners, addr_hash(ip->bytes), entry)) {
			free(entry);
			return -ENOMEM;
		}
	}
	if (entry->n == entry->capacity) {
		uint16_t capacity = entry->capacity * 2;
		struct wl **owners = realloc(owners_heap(entry), capacity * sizeof(*owners));
		if (!owners)
			return -ENOMEM;
		if (entry->owners == &entry->one_owner)
			owners[0] = entry->one_owner;
		entry->owners = owners;
		entry->capacity = capacity;
	}
	entry->owners[entry->n++] = wl;
	return 0;
}

void addr_index_remove(struct sm_model *model, const struct sm_ip *ip, const struct wl *wl)
{
	struct addr_owners *entry = find(model, ip->bytes);

	for (uint16_t i = 0; entry && i < entry->n; i++) {
		if (entry->owners[i] == wl) {
			entry->owners[i] = entry->owners[--entry->n];
			return;
		}
	}
}

void addr_index_drop_empty(struct sm_model *model, const struct sm_ip *ip)
{
	struct addr_owners *entry = find(model, ip->bytes);

	if (entry && !entry->n) {
		index_remove(&model->addr_owners, addr_hash(ip->bytes), entry);
		free(owners_heap(entry));
		free(entry);
	}
}

/*
 * The owner that answers for an address several workloads hold: the one of the smallest uid, so that the
 * answer does not depend on the order they came in or were redefined in (a redefinition relinks a
 * workload, which moves it in the owners' array), nor change without a change of its holders.
 */
static const struct wl *first_owner(const struct addr_owners *entry)
{
	const struct wl *first = entry->owners[0];

	for (uint16_t i = 1; i < entry->n; i++)
		if (strcmp(entry->owners[i]->uid, first->uid) < 0)
			first = entry->owners[i];
	return first;
}

void addr_index_for_each_held(const struct sm_model *model,
			      void (*fn)(void *ctx, const uint8_t addr[16], const struct wl *holder), void *ctx)
{
	for (size_t i = 0; model->addr_owners.slots && i <= model->addr_owners.mask; i++) {
		const struct addr_owners *entry = model->addr_owners.slots[i].entry;
		if (entry && entry->n)
			fn(ctx, entry->ip.bytes, first_owner(entry));
	}
}

void addr_index_free(struct sm_model *model)
{
	for (size_t i = 0; model->addr_owners.slots && i <= model->addr_owners.mask; i++) {
		struct addr_owners *entry = model->addr_owners.slots[i].entry;
		if (entry) {
			free(owners_heap(entry));
			free(entry);
		}
	}
	index_free(&model->addr_owners);
}

/* Of entry's owners on this node, the one of the smallest uid (NULL: none), for the reason first_owner
 * gives: the answer must not depend on the owners' order. */
static const struct wl *first_local_owner(const struct sm_model *model, const struct addr_owners *entry)
{
	const struct wl *first = NULL;

	for (uint16_t i = 0; model->node_name && i < entry->n; i++) {
		const struct wl *wl = entry->owners[i];
		if (wl->def->node == model->node_name && (!first || strcmp(wl->uid, first->uid) < 0))
			first = wl;
	}
	return first;
}

const struct wl *workload_at(const struct sm_model *model, const uint8_t addr[16], bool local_first)
{
	const struct addr_owners *entry = find(model, addr);
	const struct wl *local;

	if (!entry || !entry->n)
		return NULL;
	local = local_first ? first_local_owner(model, entry) : NULL;
	return local ? local : first_owner(entry);
}

const struct wl *local_holder(const struct sm_model *model, const uint8_t addr[16])
{
	const struct addr_owners *entry = find(model, addr);

	return entry ? first_local_owner(model, entry) : NULL;
}

static const char *or_default(const char *value, const char *fallback)
{
	return value && value[0] ? value : fallback;
}

bool sm_model_workload_at(const struct sm_model *model, const uint8_t addr[16], struct sm_workload_labels *out)
{
	const struct wl *wl = workload_at(model, addr, true);
	const struct wl_def *def;

	if (!wl)
		return false;
	def = wl->def;
	*out = (struct sm_workload_labels){
		.uid = wl->uid,
		.workload_name = def->workload_name,
		.name = def->name,
		.namespace = def->namespace,
		.canonical_name = def->canonical_name,
		.canonical_revision = def->canonical_revision,
		.cluster_id = def->cluster_id,
		.trust_domain = or_default(def->trust_domain, DEFAULT_TRUST_DOMAIN),
		.service_account = or_default(def->service_account, DEFAULT_SERVICE_ACCOUNT),
		.region = def->region,
		.zone = def->zone,
	};
	return true;
}

static void service_labels(const struct svc *svc, struct sm_service_labels *out)
{
	const char *slash = strchr(svc->key, '/');

	*out = (struct sm_service_labels){
		.hostname = slash ? slash + 1 : svc->key,
		.name = svc->def->name,
		.namespace = svc->def->namespace,
	};
}

bool sm_model_service_at(const struct sm_model *model, const uint8_t addr[16], struct sm_service_labels *out)
{
	const struct ip_claims *ip;

	HASH_FIND(hh, model->ips, addr, sizeof(struct sm_frontend_key), ip);
	for (uint16_t i = 0; ip && i < ip->n; i++) {
		const struct svc *svc = ip->claims[i].owner;
		if (ip->claims[i].kind != OWNER_SERVICE || !svc->def)
			continue;
		service_labels(svc, out);
		return true;
	}
	return false;
}

bool sm_model_service_of_port(const struct sm_model *model, const uint8_t addr[16], uint16_t port,
			      struct sm_service_labels *out)
{
	const struct wl *wl = workload_at(model, addr, true);

	for (uint16_t m = 0; wl && m < wl->def->n_memberships; m++) {
		const struct membership *membership = &wl->def->memberships[m];
		const struct svc_def *def = membership->service->def;
		for (uint8_t p = 0; def && p < def->n_ports; p++) {
			uint16_t target = target_port(def, p, membership);
			if ((target ? target : def->ports[p].service_port) == port) {
				service_labels(membership->service, out);
				return true;
			}
		}
	}
	return false;
}

uint64_t sm_model_generation(const struct sm_model *model)
{
	return model->changes;
}

bool sm_model_workload_exists(const struct sm_model *model, const char *uid)
{
	const struct wl *wl = workload_find(model, uid);

	return wl && wl->def;
}
