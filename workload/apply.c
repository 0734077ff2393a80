/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Applying a response as one batch. A batch sets the new definitions (journaling the old ones), plans
 * the dirty entities into the image, and issues the image's net writes. If planning overflows a map or
 * a write fails, the writes already issued are undone, the image and the definitions are rolled back,
 * and the resources are applied one by one so that only the culprit is rejected.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>
#include <xxhash.h>

#include "workload/model.h"

/* Scratch entries kept between batches; a full push needs far more, once. */
#define SCRATCH_KEEP 4096

/*
 * An item of a response: a resource to set, or a name to remove. The first pass applies it from the
 * response and stages what applying it again takes, so that a batch split after a failure needs the
 * response no more (a caller may free it before the batch's writes: tens of MB in a full push).
 */
struct item {
	union {
		const Envoy__Service__Discovery__V3__Resource *resource; /* until staged */
		void *def; /* once staged, while the model does not hold it: what it sets (NULL: a removal) */
	};
	const char *removed; /* until staged */
	void *entity;	     /* what it sets or clears; NULL: nothing (a removal of an unknown name) */
	uint32_t undo_index; /* its undo entry in the batch it was last applied in; NO_UNDO: none (a
			      * response within the message limit holds far fewer than 2^32 items) */
	bool staged;
	bool rejected; /* invalid: its rejection stays, and it is not applied again */
	bool unnamed;  /* a resource without a name: its rejections say "(unnamed)" */
	uint8_t kind;  /* enum undo_kind, when entity */
};

#define NO_UNDO UINT32_MAX

/* ---- rejections ---- */

/* A name or reason in a NACK is cut to this: the message must stay readable whatever istiod sent. */
#define REJECTION_TEXT_SHOWN 256

/* text, or its first REJECTION_TEXT_SHOWN bytes and how long it was */
static char *shown_text(const char *text)
{
	size_t len = strlen(text);
	char *shown;

	if (len <= REJECTION_TEXT_SHOWN)
		return strdup(text);
	if (asprintf(&shown, "%.*s...(%zu bytes)", REJECTION_TEXT_SHOWN, text, len) < 0)
		return NULL;
	return shown;
}

static int add_rejection(struct sm_rejections *rejections, const char *name, const char *fmt, ...)
{
	struct sm_rejection rejection = { .name = shown_text(name && name[0] ? name : "(unnamed)") };
	char *reason = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&reason, fmt, ap) < 0)
		reason = NULL;
	va_end(ap);
	rejection.reason = reason ? shown_text(reason) : NULL;
	free(reason);
	if (rejections->count == rejections->capacity) {
		size_t capacity = rejections->capacity ? rejections->capacity * 2 : 8;
		struct sm_rejection *items = realloc(rejections->items, capacity * sizeof(*items));
		if (!items)
			goto fail;
		rejections->items = items;
		rejections->capacity = capacity;
	}
	if (!rejection.name || !rejection.reason)
		goto fail;
	rejections->items[rejections->count++] = rejection;
	return 0;
fail:
	free(rejection.name);
	free(rejection.reason);
	return -ENOMEM;
}

static void truncate_rejections(struct sm_rejections *rejections, size_t count)
{
	while (rejections->count > count) {
		struct sm_rejection *rejection = &rejections->items[--rejections->count];
		free(rejection->name);
		free(rejection->reason);
	}
}

void sm_rejections_clear(struct sm_rejections *rejections)
{
	truncate_rejections(rejections, 0);
	free(rejections->items);
	*rejections = (struct sm_rejections){ 0 };
}

char *sm_rejections_format(const struct sm_rejections *rejections)
{
	size_t shown = rejections->count < SM_REJECTIONS_SHOWN ? rejections->count : SM_REJECTIONS_SHOWN;
	size_t len = 64;
	char *text, *at;

	for (size_t i = 0; i < shown; i++)
		len += strlen(rejections->items[i].name) + strlen(rejections->items[i].reason) + 4;
	text = at = malloc(len);
	if (!text)
		return NULL;
	*at = '\0';
	for (size_t i = 0; i < shown; i++)
		at += sprintf(at, "%s%s: %s", i ? "; " : "", rejections->items[i].name, rejections->items[i].reason);
	if (rejections->count > shown)
		sprintf(at, "; and %zu more", rejections->count - shown);
	return text;
}

/* ---- applying resources ---- */

/* Decodes a resource's Any into the model's arena (reset once the resource is applied). */
static int decode_any(struct sm_model *model, const Envoy__Service__Discovery__V3__Resource *resource,
		      const char *type_url, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
		      char *reason, size_t size)
{
	const Google__Protobuf__Any *any = resource->resource;

	if (!any) {
		snprintf(reason, size, "no resource in it");
		return -EINVAL;
	}
	if (strcmp(any->type_url, type_url) != 0) {
		snprintf(reason, size, sm_pb_find_type(any->type_url) ? "a %s in a %s response" : "unknown type %s in a %s response",
			 any->type_url, type_url);
		return -EINVAL;
	}
	char err[256];
	int ret = sm_pb_decode_in(&model->decode_arena, desc, any->value.data, any->value.len, out, err, sizeof(err));
	if (ret == -ENOMEM)
		return ret; /* the whole response fails: the resource is not at fault */
	if (ret) {
		snprintf(reason, size, "does not decode: %s", err);
		return -EINVAL;
	}
	return 0;
}

/* The resource name must be the key its content gives, when the server sends one at all. */
static bool name_matches(const Envoy__Service__Discovery__V3__Resource *resource, const char *key, char *reason,
			 size_t size)
{
	if (!resource->name[0] || strcmp(resource->name, key) == 0)
		return true;
	snprintf(reason, size, "resource name does not match its key '%.200s'", key);
	return false;
}

static int apply_workload(struct sm_model *model, const Envoy__Service__Discovery__V3__Resource *resource,
			  const Istio__Workload__Workload *msg, struct sm_rejections *rejections)
{
	char reason[1024];
	struct wl_def *def;

	if (!msg->uid[0])
		return add_rejection(rejections, resource->name, "workload has no uid");
	if (strlen(msg->uid) > SM_MAX_NAME)
		return add_rejection(rejections, resource->name, "workload uid is %zu bytes long, at most %d are accepted",
				     strlen(msg->uid), SM_MAX_NAME);
	if (!name_matches(resource, msg->uid, reason, sizeof(reason)))
		return add_rejection(rejections, resource->name, "%s", reason);
	int err = parse_workload(model, msg, resource->version, &def, reason, sizeof(reason));
	if (err)
		return err == -EINVAL ? add_rejection(rejections, msg->uid, "%s", reason) : err;
	struct wl *wl = workload_ref(model, msg->uid);
	if (!wl) {
		free_wl_def(model, def);
		return -ENOMEM;
	}
	return set_def(model, UNDO_WORKLOAD, wl, def);
}

static int apply_service(struct sm_model *model, const Envoy__Service__Discovery__V3__Resource *resource,
			 const Istio__Workload__Service *msg, struct sm_rejections *rejections)
{
	char reason[1024], key[600];
	struct svc_def *def;

	if (!msg->hostname[0] || !msg->namespace_[0])
		return add_rejection(rejections, resource->name, "service has no %s",
				     msg->hostname[0] ? "namespace" : "hostname");
	if (strchr(msg->hostname, '/') || strchr(msg->namespace_, '/'))
		return add_rejection(rejections, resource->name, "service namespace or hostname contains '/'");
	if (snprintf(key, sizeof(key), "%s/%s", msg->namespace_, msg->hostname) >= (int)sizeof(key))
		return add_rejection(rejections, resource->name, "service key is longer than %zu bytes",
				     sizeof(key) - 1);
	if (!name_matches(resource, key, reason, sizeof(reason)))
		return add_rejection(rejections, resource->name, "%s", reason);
	int err = parse_service(model, msg, resource->version, &def, reason, sizeof(reason));
	if (err)
		return err == -EINVAL ? add_rejection(rejections, key, "%s", reason) : err;
	struct svc *svc = model_service_ref(model, key);
	if (!svc) {
		free_svc_def(model, def);
		return -ENOMEM;
	}
	return set_def(model, UNDO_SERVICE, svc, def);
}

static int apply_address(struct sm_model *model, const Envoy__Service__Discovery__V3__Resource *resource,
			 struct sm_rejections *rejections)
{
	ProtobufCMessage *decoded;
	char reason[1024];
	int err = decode_any(model, resource, SM_TYPE_URL_ADDRESS, &istio__workload__address__descriptor, &decoded,
			     reason, sizeof(reason));
	if (err)
		return err == -ENOMEM ? err : add_rejection(rejections, resource->name, "%s", reason);

	const Istio__Workload__Address *address = (const Istio__Workload__Address *)decoded;
	switch (address->type_case) {
	case ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD:
		err = apply_workload(model, resource, address->workload, rejections);
		break;
	case ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE:
		err = apply_service(model, resource, address->service, rejections);
		break;
	default:
		err = add_rejection(rejections, resource->name, "address is neither a workload nor a service");
		break;
	}
	sm_pb_arena_reset(&model->decode_arena);
	return err;
}

static int apply_authorization(struct sm_model *model, const Envoy__Service__Discovery__V3__Resource *resource,
			       struct sm_rejections *rejections)
{
	ProtobufCMessage *decoded;
	char reason[1024], key[600];
	struct authz_def *def;
	int err;

	err = decode_any(model, resource, SM_TYPE_URL_AUTHORIZATION, &istio__security__authorization__descriptor,
			 &decoded, reason, sizeof(reason));
	if (err)
		return err == -ENOMEM ? err : add_rejection(rejections, resource->name, "%s", reason);

	const Istio__Security__Authorization *msg = (const Istio__Security__Authorization *)decoded;
	if (!msg->name[0] || !msg->namespace_[0]) {
		err = add_rejection(rejections, resource->name, "authorization has no %s",
				    msg->name[0] ? "namespace" : "name");
	} else if (snprintf(key, sizeof(key), "%s/%s", msg->namespace_, msg->name) >= (int)sizeof(key)) {
		err = add_rejection(rejections, resource->name, "authorization key is too long");
	} else if (!name_matches(resource, key, reason, sizeof(reason))) {
		err = add_rejection(rejections, resource->name, "%s", reason);
	} else {
		err = parse_authorization(model, msg, resource->resource->value.data, resource->resource->value.len,
					  resource->version, &def, reason, sizeof(reason));
		if (err == -EINVAL) {
			err = add_rejection(rejections, key, "%s", reason);
		} else if (!err) {
			struct authz *authz = authorization_ref(model, key);
			err = authz ? set_def(model, UNDO_AUTHORIZATION, authz, def) : -ENOMEM;
			if (!authz)
				free_authz_def(model, def);
		}
	}
	sm_pb_arena_reset(&model->decode_arena);
	return err;
}

/* A removed name is a workload uid, else a service key; names never seen are ignored. */
static int remove_address(struct sm_model *model, const char *name)
{
	struct wl *wl = workload_find(model, name);
	struct svc *svc;

	if (wl && wl->def)
		return set_def(model, UNDO_WORKLOAD, wl, NULL);
	svc = service_find(model, name);
	if (svc && svc->def)
		return set_def(model, UNDO_SERVICE, svc, NULL);
	return 0;
}

static int remove_authorization(struct sm_model *model, const char *name)
{
	struct authz *authz;

	HASH_FIND_STR(model->authorizations, name, authz);
	return authz && authz->def ? set_def(model, UNDO_AUTHORIZATION, authz, NULL) : 0;
}

static int apply_from_response(struct sm_model *model, enum resource_type type, const struct item *item,
			       struct sm_rejections *rejections)
{
	if (item->removed)
		return type == TYPE_ADDRESS ? remove_address(model, item->removed)
					    : remove_authorization(model, item->removed);
	return type == TYPE_ADDRESS ? apply_address(model, item->resource, rejections)
				    : apply_authorization(model, item->resource, rejections);
}

/* Applies an item again from what the first pass staged: the same set, or the same removal. */
static int apply_staged(struct sm_model *model, struct item *item)
{
	if (item->rejected || !item->entity || (!item->def && !def_of(item->kind, item->entity)))
		return 0;
	void *def = item->def;
	item->def = NULL;
	item->undo_index = (uint32_t)model->undo.n;
	return set_def(model, item->kind, item->entity, def);
}

static int apply_item(struct sm_model *model, enum resource_type type, struct item *item,
		      struct sm_rejections *rejections)
{
	item->undo_index = NO_UNDO;
	if (item->staged)
		return apply_staged(model, item);

	size_t rejections_before = rejections->count, undo_before = model->undo.n;
	int err = apply_from_response(model, type, item, rejections);
	item->staged = true;
	item->rejected = rejections->count > rejections_before;
	item->unnamed = item->resource && !item->resource->name[0];
	item->resource = NULL;
	item->removed = NULL;
	if (model->undo.n > undo_before) {
		const struct undo_entry *undo = &VEC_AT(&model->undo, struct undo_entry, undo_before);
		item->kind = undo->kind;
		item->entity = undo->entity;
		item->undo_index = (uint32_t)undo_before;
	}
	return err;
}

/* The name a rejection of a staged item gives: its entity's key, as the response named it. */
static const char *item_name(const struct item *item)
{
	if (item->unnamed || !item->entity)
		return "";
	switch (item->kind) {
	case UNDO_WORKLOAD:
		return ((const struct wl *)item->entity)->uid;
	case UNDO_SERVICE:
		return ((const struct svc *)item->entity)->key;
	case UNDO_AUTHORIZATION:
		return ((const struct authz *)item->entity)->key;
	}
	return "";
}

/* ---- batches ---- */

static void batch_begin(struct sm_model *model)
{
	model->epoch++;
	model->mark_err = 0;
	model->dirty_workloads.n = 0;
	model->dirty_services.n = 0;
	model->dirty_pairs.n = 0;
	model->dirty_ips.n = 0;
	model->undo.n = 0;
	model->new_ids.n = 0;
	model->local_dirty = false;
	model->local_changed = false;
	model->local_before = model->local;
	model->authz_dirty = false;
	model->authz_dests_dirty = false;
	model->authz_policies_dirty = false;
	model->in_batch = true;
	image_begin(model->image);
}

static void release_service_id(struct sm_model *model, struct svc *svc)
{
	model->service_owner[svc->id] = NULL;
	if (svc->id < model->next_service_id)
		model->next_service_id = svc->id;
	svc->id = 0;
}

static void release_backend_id(struct sm_model *model, struct wl *wl)
{
	model->backend_owner[wl->backend_id] = NULL;
	if (wl->backend_id < model->next_backend_id)
		model->next_backend_id = wl->backend_id;
	wl->backend_id = 0;
}

/*
 * Releases a workload's backend id once its entry is gone, and frees the workload once nothing holds
 * it, unless items staged for a split still point at it (keep_entities).
 */
static void collect_workload(struct sm_model *model, struct wl *wl)
{
	if (wl->backend_id && !sm_image_get(model->image, SM_MAP_BACKENDS, &wl->backend_id))
		release_backend_id(model, wl);
	if (!wl->def && !wl->backend_id && !model->keep_entities)
		workload_free(model, wl);
}

static void collect_service(struct sm_model *model, struct svc *svc)
{
	if (svc->id && !sm_image_get(model->image, SM_MAP_SERVICES, &svc->id))
		release_service_id(model, svc);
	if (!svc->def && !svc->id && !svc->members && !svc->dependents && !model->keep_entities)
		service_free(model, svc);
}

static void collect_authorizations(struct sm_model *model)
{
	struct authz *authz, *tmp;

	if (model->keep_entities)
		return;
	HASH_ITER(hh, model->authorizations, authz, tmp) {
		if (!authz->def) {
			HASH_DEL(model->authorizations, authz);
			free(authz->key);
			free(authz);
		}
	}
}

/* Frees what nothing refers to any more, and ids whose entries are gone, among what the batch touched. */
static void collect(struct sm_model *model)
{
	for (size_t i = 0; i < model->dirty_workloads.n; i++)
		collect_workload(model, VEC_AT(&model->dirty_workloads, struct wl *, i));
	for (size_t i = 0; i < model->dirty_services.n; i++)
		collect_service(model, VEC_AT(&model->dirty_services, struct svc *, i));
	for (size_t i = 0; i < model->dirty_ips.n; i++) {
		struct ip_claims *ip = VEC_AT(&model->dirty_ips, struct ip_claims *, i);
		if (!ip->n && !sm_image_get(model->image, SM_MAP_FRONTENDS, &ip->ip)) {
			HASH_DEL(model->ips, ip);
			free(ip->claims);
			free(ip);
		}
	}
	bool authorizations_changed = false;
	for (size_t i = 0; i < model->undo.n; i++)
		authorizations_changed |= VEC_AT(&model->undo, struct undo_entry, i).kind == UNDO_AUTHORIZATION;
	if (authorizations_changed)
		collect_authorizations(model);
}

/* After a split, whose batches kept every entity for the staged items: all that nothing holds. */
static void collect_kept(struct sm_model *model)
{
	struct wl *wl, *wl_tmp;
	struct svc *svc, *svc_tmp;

	model->keep_entities = false;
	DL_FOREACH_SAFE(model->workloads, wl, wl_tmp)
		collect_workload(model, wl);
	DL_FOREACH_SAFE(model->services, svc, svc_tmp)
		collect_service(model, svc);
	collect_authorizations(model);
}

static void unintern_local(struct sm_model *model, struct local_locality *local)
{
	model_unintern(model, local->region);
	model_unintern(model, local->zone);
	model_unintern(model, local->subzone);
	model_unintern(model, local->network);
	model_unintern(model, local->cluster);
}

/* A full push leaves large scratch buffers behind; give them back rather than keep the peak. */
static void trim_scratch(struct sm_model *model)
{
	struct vec *vecs[] = { &model->dirty_workloads, &model->dirty_services, &model->dirty_pairs,
			       &model->dirty_ips, &model->undo, &model->new_ids };

	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
		if (vecs[i]->capacity > SCRATCH_KEEP)
			vec_free(vecs[i]);
	}
	if (model->plan.capacity > SCRATCH_KEEP)
		plan_free(&model->plan);
	image_trim(model->image, SCRATCH_KEEP);
}

/* Frees the address entries that the definitions the batch unlinked left empty (undo's old_def: at a commit
 * the ones replaced, after a rollback the ones taken back). */
static void drop_emptied_addresses(struct sm_model *model)
{
	for (size_t i = 0; i < model->undo.n; i++) {
		const struct undo_entry *undo = &VEC_AT(&model->undo, struct undo_entry, i);
		const struct wl_def *def = undo->old_def;

		if (undo->kind != UNDO_WORKLOAD || !def)
			continue;
		for (uint8_t a = 0; a < def->n_addresses; a++)
			addr_index_drop_empty(model, &def->addresses[a]);
	}
}

static void batch_commit(struct sm_model *model)
{
	image_commit(model->image);
	drop_emptied_addresses(model);
	if (model->authz_dirty)
		record_touched(model, model->authz_changes + 1);
	model->in_batch = false;
	model->authz_changes += model->authz_dirty;
	model->authz_dests_changes += model->authz_dests_dirty;
	model->authz_dests_dirty = false; /* counted: sm_model_authz_destinations_generation counts it once */
	model->authz_policies_changes += model->authz_policies_dirty;
	model->authz_policies_dirty = false;
	model->local_changes += model->local_dirty;
	if (model->local_changed)
		unintern_local(model, &model->local_before);
	for (size_t i = 0; i < model->undo.n; i++) {
		struct undo_entry *undo = &VEC_AT(&model->undo, struct undo_entry, i);
		free_def(model, undo->kind, undo->old_def);
	}
	collect(model);
}

/*
 * Puts back what the batch replaced. The definitions it had set go back to their items, staged for a
 * split; until the split ends, no entity is freed, since staged items and definitions point at them.
 * It needs no memory, so that it cannot stop half-way when memory is short (what failed the batch): what
 * it links back was linked before the batch, in room the batch kept (address entries and claims are
 * freed only after it, vectors do not shrink, the image keeps its rows); a dirty mark it cannot record
 * costs nothing, since the next batch starts its marks anew.
 */
static void batch_rollback(struct sm_model *model, struct item *items, size_t n)
{
	model->keep_entities = true;
	model->authz_dests_dirty = false;
	model->authz_policies_dirty = false;
	model->in_batch = false;
	image_rollback(model->image);
	for (size_t i = model->undo.n; i-- > 0;) {
		struct undo_entry *undo = &VEC_AT(&model->undo, struct undo_entry, i);
		void *current = def_of(undo->kind, undo->entity);
		switch (undo->kind) {
		case UNDO_WORKLOAD:
			workload_set_def(model, undo->entity, undo->old_def);
			break;
		case UNDO_SERVICE:
			service_set_def(model, undo->entity, undo->old_def);
			break;
		case UNDO_AUTHORIZATION:
			authorization_set_def(model, undo->entity, undo->old_def);
			break;
		}
		undo->old_def = current;
	}
	drop_emptied_addresses(model);
	for (size_t i = 0; i < n; i++) {
		if (items[i].undo_index < model->undo.n) {
			items[i].def = VEC_AT(&model->undo, struct undo_entry, items[i].undo_index).old_def;
			items[i].undo_index = NO_UNDO;
		}
	}
	for (size_t i = 0; i < model->new_ids.n; i++) {
		struct id_grant *grant = &VEC_AT(&model->new_ids, struct id_grant, i);
		if (grant->map == SM_MAP_SERVICES && model->service_owner[grant->id])
			release_service_id(model, model->service_owner[grant->id]);
		else if (grant->map == SM_MAP_BACKENDS && model->backend_owner[grant->id])
			release_backend_id(model, model->backend_owner[grant->id]);
	}
	if (model->local_changed)
		unintern_local(model, &model->local);
	model->local = model->local_before;
	collect(model);
	model->undo.n = 0;
}

/* Net writes handed to the writer at a time: a full push's would take tens of MB at once. */
#define WRITE_CHUNK 4096

static void describe_failed_write(struct sm_model *model, int err, enum sm_map_id map, char *reason, size_t size)
{
	if (err == -E2BIG || err == -ENOSPC) {
		snprintf(reason, size, "the kernel's %s map is full", sm_map_name(map));
		model->overflowed = map;
	} else {
		snprintf(reason, size, "writing the %s map failed: %s", sm_map_name(map), strerror(-err));
	}
}

/*
 * Undoes every write before the cursor, last first. Returns -EIO if it cannot. It takes no memory: the undo
 * is planned in the room the writes had (a batch that wrote nothing has nothing to undo), so that running out
 * of memory while writing never leaves the maps unlike the model.
 */
static int undo_writes(struct sm_model *model, struct sm_map_writer *writer, struct diff_cursor *cursor)
{
	for (;;) {
		size_t undone = 0;
		if (image_undo_next(model->image, cursor, &model->plan, WRITE_CHUNK))
			return -EIO;
		if (!model->plan.n)
			return 0;
		if (writer->apply(writer, model->plan.ops, model->plan.n, &undone))
			return -EIO;
	}
}

/* Issues the batch's net writes; on failure, undoes those that took effect. Returns -EIO if it cannot. */
static int write_batch(struct sm_model *model, struct sm_map_writer *writer, char *reason, size_t size)
{
	struct diff_cursor cursor, chunk_start;
	size_t applied = 0;
	int err;

	image_diff_begin(model->image, &cursor);
	for (;;) {
		chunk_start = cursor;
		applied = 0;
		err = image_diff_next(model->image, &cursor, &model->plan, WRITE_CHUNK);
		if (err || !model->plan.n)
			break;
		err = writer->apply(writer, model->plan.ops, model->plan.n, &applied);
		if (err) {
			size_t failed = applied < model->plan.n ? applied : model->plan.n - 1;
			describe_failed_write(model, err, model->plan.ops[failed].map, reason, size);
			break;
		}
	}
	if (!err)
		return 0;
	/* back to just after the last write that took effect */
	cursor = chunk_start;
	if (applied && image_diff_next(model->image, &cursor, &model->plan, applied))
		return -EIO;
	return undo_writes(model, writer, &cursor) ? -EIO : err;
}

/* The agent's check that the batch's authorization state compiles; a compile that does not fit is an
 * overflow like a full map: split and retried item by item, so only what does not fit is rejected. */
static int check_authz(struct sm_model *model, char *reason, size_t size)
{
	int err = model->authz_check(model->authz_check_ctx, model, reason, size);

	return err == -E2BIG || err == -ENOSPC || err == -ENOMEM || !err ? err : -EINVAL;
}

static bool is_fatal(int err)
{
	return err == -ENOMEM || err == -EIO;
}

/* Who frees the response as the first batch reads it (NULL in the batches of a split). */
struct release {
	const struct sm_response_release *to;
	const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response;
	size_t read; /* resources[0 .. read) are read no more */
};

/* The item that held resource is staged: it and the ones before it are read no more (items hold the
 * resources in the response's order, after the removals). */
static void resource_read(struct release *release, const void *resource)
{
	if (!release || !release->to || !release->to->read_up_to || !resource)
		return;
	while (release->read < release->response->n_resources &&
	       (const void *)release->response->resources[release->read] != resource)
		release->read++;
	if (release->read < release->response->n_resources)
		release->to->read_up_to(release->to->ctx, ++release->read);
}

/*
 * Applies items as one batch: 0, committed, or the error with the reason, rolled back (-EIO: the undo
 * failed, nothing rolled back).
 */
static int apply_batch(struct sm_model *model, enum resource_type type, struct item *items, size_t n, bool sweep,
		       struct release *release, struct sm_map_writer *writer, struct sm_rejections *rejections,
		       char *reason, size_t reason_size)
{
	int err = 0;

	batch_begin(model);
	model->overflowed = -1;
	for (size_t i = 0; i < n && !err; i++) {
		const void *resource = items[i].staged ? NULL : items[i].resource;
		err = apply_item(model, type, &items[i], rejections);
		resource_read(release, resource);
	}
	if (!err && release && release->to && release->to->release)
		release->to->release(release->to->ctx); /* every item is staged (after an error some may not be) */
	if (!err)
		err = plan_dirty(model, sweep, reason, reason_size);
	if (!err && model->authz_dirty && model->authz_check)
		err = check_authz(model, reason, reason_size);
	if (!err)
		err = write_batch(model, writer, reason, reason_size);
	if (!err) {
		batch_commit(model);
		trim_scratch(model);
		if (sweep)
			model->sweep_pending = false;
		return 0;
	}
	if (err != -EIO)
		batch_rollback(model, items, n);
	return err;
}

/* An item that failed alone (err, with the reason): valid, but the maps cannot take it beside what the model
 * holds. Rejected, its overflow counted; a fatal error returned as it is. */
static int reject_alone(struct sm_model *model, const struct item *item, int err, const char *reason,
			struct sm_rejections *rejections)
{
	if (is_fatal(err))
		return err;
	if (model->overflowed >= 0)
		model->overflows[model->overflowed]++;
	return add_rejection(rejections, item_name(item), "%s", reason);
}

/* One item alone, rejected when it does not fit; *did_not_fit: whether it was. */
static int apply_alone(struct sm_model *model, enum resource_type type, struct item *item,
		       struct sm_map_writer *writer, struct sm_rejections *rejections, bool *did_not_fit)
{
	char reason[512] = "";
	int err = apply_batch(model, type, item, 1, false, NULL, writer, rejections, reason, sizeof(reason));

	*did_not_fit = err && !is_fatal(err);
	return err ? reject_alone(model, item, err, reason, rejections) : 0;
}

/* In an Authorization response whose policies fill the tables: the policies left, tried once together, or
 * rejected without being tried alone. */
static int apply_rest_or_reject(struct sm_model *model, struct item *items, size_t n, struct sm_map_writer *writer,
				struct sm_rejections *rejections)
{
	char reason[512] = "";
	int err = apply_batch(model, TYPE_AUTHORIZATION, items, n, false, NULL, writer, rejections, reason,
			      sizeof(reason));

	if (!err || is_fatal(err))
		return err;
	err = 0;
	for (size_t i = 0; i < n && !err; i++)
		if (!items[i].rejected) /* one found invalid is rejected already */
			err = add_rejection(rejections, item_name(&items[i]),
				    "not tried alone: the two policies before it did not fit the authorization tables, and "
				    "those left do not fit together (%s)", reason);
	return err;
}

/* Before each run of a split: the caller's turn to let others read the model (sm_model_set_between_runs),
 * then -ECANCELED once the splits are stopped (a stop that came meanwhile included). */
static int next_run(struct sm_model *model)
{
	/* readers let in here keep names by pointer while the generation stays: each run may free them */
	model->changes++;
	if (model->between_runs)
		model->between_runs(model->between_runs_ctx);
	return atomic_load(&model->splits_stopped) ? -ECANCELED : 0;
}

/*
 * Applies items, which do not fit as one batch, taking what applying each alone in turn would take (when
 * taking an item never makes room for a later one; else perhaps more: a run that fits as a whole is taken),
 * in fewer batches (each one compiles the authorization tables when policies changed): a run of items from
 * the first grows by doubling until it does not fit, then halves to the longest that does; an item that does
 * not fit alone beside what was taken is rejected (with deferred: listed there instead), and the next run
 * starts after it. In an Authorization response, two policies in a row that do not fit alone mean that the
 * tables are full: the rest is tried once together, else rejected (a response of 10,000 policies that
 * overflow took 10,000 compilations one by one, more than an hour at 100,000 workloads; now 48). After
 * sm_model_stop_splits, ends before its next run with -ECANCELED.
 */
static int split(struct sm_model *model, enum resource_type type, struct item *items, size_t n,
		 struct sm_map_writer *writer, struct sm_rejections *rejections, struct vec *deferred)
{
	size_t i = 0, taken = 0, failing = n; /* the last run taken; the shortest run from i known not to fit, or 0 */
	unsigned rejected_in_a_row = 0;
	int err = 0;

	while (!err && i < n) {
		if ((err = next_run(model)))
			return err;
		size_t run = failing ? (failing + 1) / 2 : taken ? taken * 2 : 1;
		char reason[512];
		bool rejected;

		if (run > n - i)
			run = n - i;
		if (run > 1) {
			err = apply_batch(model, type, &items[i], run, false, NULL, writer, rejections, reason, sizeof(reason));
			if (is_fatal(err))
				return err;
			failing = err ? run : failing ? failing - run : 0;
			taken = err ? taken : run;
			i += err ? 0 : run;
			rejected_in_a_row = err ? rejected_in_a_row : 0;
			err = 0;
			continue;
		}
		if ((err = apply_alone(model, type, &items[i], writer, rejections, &rejected)))
			return err;
		if (rejected && deferred && model->overflowed >= 0) { /* a map's overflow: tried after the sweep */
			model->overflows[model->overflowed]--;
			truncate_rejections(rejections, rejections->count - 1);
			err = vec_push(deferred, &i, sizeof(i));
		}
		rejected_in_a_row = rejected ? rejected_in_a_row + 1 : 0;
		taken = rejected ? 0 : 1;
		failing = 0;
		i++;
		if (!err && type == TYPE_AUTHORIZATION && rejected_in_a_row == 2 && i < n && !(err = next_run(model)))
			return apply_rest_or_reject(model, &items[i], n - i, writer, rejections);
	}
	return err;
}

/*
 * The first Address response after an adoption, split: while its items are applied in runs, the
 * entries of the earlier config that this one no longer holds still take room, which they give back
 * only at the sweep. What did not fit beside them is tried again after it, so that a restart takes
 * what a fresh start would.
 */
static int split_sweeping(struct sm_model *model, enum resource_type type, struct item *items, size_t n,
			  struct sm_map_writer *writer, struct sm_rejections *rejections)
{
	struct vec deferred = { 0 };
	char reason[512];
	bool rejected;
	int err = split(model, type, items, n, writer, rejections, &deferred);

	if (!err && !(err = next_run(model))) /* the sweep is a run too */
		err = apply_batch(model, type, NULL, 0, true, NULL, writer, rejections, reason, sizeof(reason));
	for (size_t i = 0; !err && i < deferred.n; i++) {
		if (!(err = next_run(model)))
			err = apply_alone(model, type, &items[VEC_AT(&deferred, size_t, i)], writer, rejections, &rejected);
	}
	free(deferred.items);
	return err;
}

/*
 * Applies items as one batch. On an overflow or a failed write, rolls the batch back and, when split
 * is allowed, applies them in the runs that fit (split) so that only the ones that cannot fit are rejected.
 */
static int apply_items(struct sm_model *model, enum resource_type type, struct item *items, size_t n,
		       bool sweep, struct release *release, struct sm_map_writer *writer,
		       struct sm_rejections *rejections)
{
	char reason[512] = "";
	int err = apply_batch(model, type, items, n, sweep, release, writer, rejections, reason, sizeof(reason));

	if (!err || is_fatal(err))
		return err;
	if (n == 1 && !sweep)
		return reject_alone(model, items, err, reason, rejections);
	if (n == 0)
		return err;
	return sweep ? split_sweeping(model, type, items, n, writer, rejections)
		     : split(model, type, items, n, writer, rejections, NULL);
}

/*
 * A response's names, each once, for collect_items: entries in one array (no allocation per name: a full
 * push has 110,000 of them) over the response's own strings, found by the model's flat index.
 */
struct name_entry {
	const char *name;
	uint32_t applied; /* the index of the resource applied under this name; NOT_APPLIED: none */
	bool removed;
	bool sent;
	bool queued;
};

#define NOT_APPLIED UINT32_MAX

struct name_table {
	struct flat_index index; /* the entries, by XXH3 of the name */
	struct name_entry *entries;
	size_t n;
};

static bool entry_named(const void *entry, const void *name)
{
	return strcmp(((const struct name_entry *)entry)->name, name) == 0;
}

/* Room for names entries, reserved at once: name_entry neither grows nor fails after it. */
static int name_table_init(struct name_table *table, size_t names)
{
	*table = (struct name_table){ .entries = calloc(names + 1, sizeof(*table->entries)) }; /* + 1: not calloc(0) */
	if (!table->entries)
		return -ENOMEM;
	return index_reserve(&table->index, names);
}

static void name_table_free(struct name_table *table)
{
	index_free(&table->index);
	free(table->entries);
}

/* name's entry, made for it when it has none */
static struct name_entry *name_entry(struct name_table *table, const char *name)
{
	uint64_t hash = XXH3_64bits(name, strlen(name));
	struct name_entry *entry = index_find(&table->index, hash, entry_named, name);

	if (!entry) {
		entry = &table->entries[table->n++];
		*entry = (struct name_entry){ .name = name, .applied = NOT_APPLIED };
		index_add(&table->index, hash, entry); /* reserved: cannot fail */
	}
	return entry;
}

/*
 * The response's items, removals first: when a batch must be split, what they free (ids, map room) is
 * then free for the resources after them. A name sent twice, or both sent and removed, is ambiguous
 * (Envoy rejects such a response whole): the first copy of a name sent twice is applied and the later
 * ones are rejected; a name both sent and removed is rejected and keeps its old state.
 */
static int collect_items(const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response, struct item *items,
			 size_t *n, struct sm_rejections *rejections)
{
	size_t n_removed = response->n_removed_resources, n_sent = response->n_resources;
	struct name_table names;
	struct name_entry **entry_of; /* each removed name's entry, then each resource's (NULL: unnamed) */
	int err = name_table_init(&names, n_removed + n_sent);

	entry_of = err ? NULL : calloc(n_removed + n_sent + 1, sizeof(*entry_of)); /* + 1: never calloc(0) */
	if (!entry_of)
		err = -ENOMEM;
	for (size_t i = 0; i < n_removed && !err; i++) {
		entry_of[i] = name_entry(&names, response->removed_resources[i]);
		entry_of[i]->removed = true;
	}
	for (size_t i = 0; i < n_sent && !err; i++) {
		const Envoy__Service__Discovery__V3__Resource *resource = response->resources[i];
		if (!resource->name[0])
			continue;
		struct name_entry *entry = entry_of[n_removed + i] = name_entry(&names, resource->name);
		if (entry->removed)
			err = add_rejection(rejections, resource->name, "is both sent and removed in this response");
		else if (entry->sent)
			err = add_rejection(rejections, resource->name, "appears more than once in this response");
		else
			entry->applied = (uint32_t)i;
		entry->sent = true;
	}
	for (size_t i = 0; i < n_removed && !err; i++) {
		if (!entry_of[i]->sent && !entry_of[i]->queued)
			items[(*n)++].removed = response->removed_resources[i];
		entry_of[i]->queued = true;
	}
	for (size_t i = 0; i < n_sent && !err; i++) {
		const struct name_entry *entry = entry_of[n_removed + i];
		if (!entry || entry->applied == i)
			items[(*n)++].resource = response->resources[i];
	}
	free(entry_of);
	name_table_free(&names);
	return err;
}

/* Frees what a split left staged (the definitions of items it rejected) and what nothing holds. */
static void end_split(struct sm_model *model, struct item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (items[i].staged && items[i].def)
			free_def(model, items[i].kind, items[i].def);
	}
	collect_kept(model);
}

/*
 * After the sweep every adopted entry that the config still names has its id again, and the rest are
 * gone: the hints have nothing left to keep, and at 1M workloads they hold 32 MiB.
 */
static void drop_id_hints(struct sm_model *model)
{
	model->hints_pending = false;
	index_free(&model->service_hints);
	index_free(&model->backend_hints);
}

int sm_model_apply_releasing(struct sm_model *model,
			     const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response,
			     const struct sm_response_release *release, struct sm_map_writer *writer,
			     struct sm_rejections *rejections)
{
	enum resource_type type;
	struct item *items;
	size_t n = 0;
	int err;

	if (model_classify(response->type_url, &type))
		return add_rejection(rejections, response->type_url[0] ? response->type_url : "(no type_url)",
				     "unknown type URL; sockmesh subscribes to %s and %s", SM_TYPE_URL_ADDRESS,
				     SM_TYPE_URL_AUTHORIZATION);

	bool sweeping = type == TYPE_ADDRESS && model->sweep_pending;
	items = calloc(response->n_resources + response->n_removed_resources + 1, sizeof(*items));
	if (!items)
		return -ENOMEM;

	/* counted whatever the outcome: a failed batch may have changed what the lookups return before its undo */
	model->changes++;
	err = collect_items(response, items, &n, rejections);
	if (!err)
		err = apply_items(model, type, items, n, sweeping,
				  &(struct release){ .to = release, .response = response }, writer, rejections);
	if (sweeping && !model->sweep_pending)
		drop_id_hints(model);
	if (model->keep_entities)
		end_split(model, items, n);
	free(items);
	return err;
}

void sm_model_stop_splits(struct sm_model *model)
{
	atomic_store(&model->splits_stopped, true);
}

void sm_model_set_between_runs(struct sm_model *model, sm_model_between_runs_fn fn, void *ctx)
{
	model->between_runs = fn;
	model->between_runs_ctx = ctx;
}

int sm_model_apply(struct sm_model *model, const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response,
		   struct sm_map_writer *writer, struct sm_rejections *rejections)
{
	return sm_model_apply_releasing(model, response, NULL, writer, rejections);
}
