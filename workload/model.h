/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal to workload/: the model's entities and indexes.
 *
 * Entities live as long as anything refers to them: a service key exists while a Service resource, a
 * workload's membership or a waypoint reference names it. Each entity holds an immutable definition
 * (what the last accepted resource said, parsed and validated) or none; changing a definition unlinks
 * the old one from the indexes, links the new one, and marks what the datapath must recompute.
 */
#ifndef SOCKMESH_WORKLOAD_MODEL_H
#define SOCKMESH_WORKLOAD_MODEL_H

#include <stdatomic.h>
#include <uthash.h>

#include "authz/authz.h"
#include "workload/index.h"
#include "workload/internal.h"

/* The longest uid accepted (any Kubernetes-derived uid is far shorter). */
#define SM_MAX_NAME 1024

/* A raw address as the maps hold it: 16 bytes, IPv4 as ::ffff:a.b.c.d. */
struct sm_ip {
	uint8_t bytes[16];
};

enum gateway_kind {
	GATEWAY_NONE,
	GATEWAY_ADDRESS,
	GATEWAY_SERVICE,
};

enum owner_kind {
	OWNER_SERVICE,
	OWNER_WORKLOAD,
};

struct svc;
struct wl;

/* A parsed GatewayAddress (a waypoint): an address, or a service resolved to its VIPs. */
struct gateway {
	uint8_t kind; /* enum gateway_kind */
	uint8_t owner_kind;
	uint16_t port;
	struct sm_ip address;
	const char *network; /* of the address */
	struct svc *service; /* GATEWAY_SERVICE: the named service, linked into its dependents */
	void *owner;	     /* the svc or wl whose definition holds this gateway */
	struct gateway *next, *prev;
};

struct port_pair {
	uint16_t service_port;
	uint16_t target_port;
};

/* One entry of Workload.services: this workload backs that service, with its own target ports. */
struct membership {
	struct svc *service;
	struct wl *workload;
	struct membership *next, *prev; /* in service->members */
	uint16_t n_ports;
	struct port_pair one_port; /* where ports points when there is just one (the usual case) */
	struct port_pair *ports;
};

struct wl_def {
	/* version, name and hostname live in the same allocation, after the struct */
	char *version;
	char *name;
	char *hostname;
	/* Interned: shared by the many workloads that have the same value. */
	const char *namespace, *service_account, *trust_domain, *node, *network, *cluster_id;
	const char *region, *zone, *subzone;
	const char *canonical_name, *canonical_revision, *workload_name;
	const char **policies;
	uint16_t n_policies;
	uint8_t workload_type, tunnel_protocol, status, network_mode;
	bool native_tunnel;
	bool has_capacity;
	uint8_t n_addresses;
	uint16_t n_memberships;
	uint32_t capacity;
	struct sm_ip *addresses;
	struct gateway *waypoint; /* NULL for most workloads */
	struct membership *memberships;
};

struct wl {
	struct wl *prev, *next; /* model->workloads, in the order first named (utlist): dumps follow it */
	uint64_t name_hash;     /* XXH3 of the uid: its hash in workload_index, and its backend entry's */
	struct wl_def *def;
	uint32_t backend_id;
	uint32_t dirty_epoch;
	char uid[]; /* in the same allocation: one fewer per workload (a full push makes 100,000) */
};

struct service_port {
	uint16_t service_port;
	uint16_t target_port;
};

struct svc_def {
	char *version;
	char *name;
	const char *namespace;
	char **subject_alt_names;
	uint16_t n_subject_alt_names;
	uint8_t n_vips;
	uint8_t n_ports;
	uint8_t lb_mode; /* enum sm_lb_mode */
	uint8_t n_scopes;
	uint8_t scopes[SM_MAX_PRIORITIES - 1];
	bool allow_unhealthy;
	struct sm_ip *vips;
	const char **vip_networks;
	struct service_port ports[SM_MAX_PORTS];
	struct gateway waypoint;
};

struct svc {
	struct svc *prev, *next; /* model->services, in the order first named (utlist): dumps follow it */
	char *key;
	uint64_t name_hash;       /* XXH3 of the key: its hash in service_index, and its service entry's */
	struct svc_def *def;
	uint32_t id;
	struct membership *members;  /* the workloads whose Workload.services name this key */
	struct gateway *dependents;  /* the waypoints (of services and workloads) that name this key */
	uint32_t dirty_epoch;
};

struct authz_def {
	char *version;
	const char *namespace;
	uint8_t scope; /* istio.security.Scope */
	uint8_t *bytes; /* the Authorization message, decoded again for dumps */
	size_t len;
	struct sm_authz_policy *policy; /* parsed and validated (authz/) */
};

struct authz {
	UT_hash_handle hh; /* by "namespace/name" */
	char *key;
	struct authz_def *def;
};

struct claim {
	uint8_t kind; /* enum owner_kind */
	void *owner;
};

/* Who wants an address in the frontends map: services for their VIPs, workloads with a waypoint. */
struct ip_claims {
	UT_hash_handle hh;
	struct sm_frontend_key ip;
	uint16_t n;
	uint16_t capacity;
	struct claim *claims;
	uint32_t dirty_epoch;
};

/* Every workload by each of its addresses (usually one owner; more across networks). */
struct addr_owners {
	struct sm_ip ip;
	uint16_t n, capacity;
	struct wl **owners; /* &one_owner while there is just one (the usual case) */
	struct wl *one_owner;
};

struct interned {
	uint32_t refs;
	char text[];
};

/* A (service, backend) pair whose endpoint slots must be recomputed; wl is NULL for an orphan. */
struct dirty_pair {
	struct svc *service;
	struct wl *workload;
	uint32_t backend_id;
};

/* What a batch changed, to put back if its writes fail. */
struct undo_entry {
	uint8_t kind; /* 0 workload, 1 service, 2 authorization */
	void *entity;
	void *old_def;
};

/* An address of a workload that a batch changing the authorization state redefined (held before or after). */
struct touched_addr {
	uint64_t changes; /* authz_changes once that batch committed */
	struct sm_ip ip;
};

struct local_locality {
	const char *region, *zone, *subzone, *network, *cluster;
};

struct vec {
	void *items;
	size_t n;
	size_t capacity;
};

struct sm_model {
	const char *node_name;   /* interned; NULL when not set */
	bool locality_fixed;
	struct local_locality local;
	uint32_t capacity[SM_MAP_COUNT];
	uint64_t overflows[SM_MAP_COUNT];
	int overflowed; /* the map that made the last plan fail, or -1 */

	struct flat_index workload_index; /* by uid */
	struct flat_index service_index;  /* by key, "namespace/hostname" */
	struct wl *workloads;
	struct svc *services;
	struct authz *authorizations;
	struct ip_claims *ips;
	struct flat_index addr_owners; /* struct addr_owners by address (lookup.c): address → workloads */
	struct flat_index strings;     /* struct interned by text */
	size_t n_workloads, n_services, n_authorizations; /* with a definition */

	struct sm_image *image;
	struct svc **service_owner;   /* by service id */
	struct wl **backend_owner;    /* by backend id */
	uint32_t next_service_id, next_backend_id;
	/* name hash → id, of entries adopted from pinned maps (id_hint_find) */
	struct flat_index service_hints, backend_hints;
	bool hints_pending; /* adopted, the hints not built yet (model_build_id_hints) */
	bool sweep_pending;
	bool keep_entities; /* a split is under way: staged items point at entities that hold no definition */
	atomic_bool splits_stopped; /* sm_model_stop_splits: set from any thread, read between a split's runs */
	sm_model_between_runs_fn between_runs; /* sm_model_set_between_runs; NULL: none */
	void *between_runs_ctx;

	/* the batch being applied */
	uint32_t epoch;
	int mark_err; /* -ENOMEM when a dirty mark could not be recorded */
	bool local_dirty; /* the batch linked or unlinked a workload of this node */
	struct vec dirty_workloads;  /* struct wl * */
	struct vec dirty_services;   /* struct svc * */
	struct vec dirty_pairs;	     /* struct dirty_pair */
	struct vec dirty_ips;	     /* struct ip_claims * */
	struct vec undo;	     /* struct undo_entry */
	struct vec local_workloads;  /* struct wl *: those on this node */
	struct local_locality local_before; /* local at the batch's start; holds references once changed */
	bool local_changed;
	uint64_t local_changes;	    /* committed batches with local_dirty: sm_model_local_generation */
	struct vec new_ids;	     /* struct id_grant: ids granted in this batch */
	struct plan plan; /* the batch's writes, then (in the same room) their undo */
	struct sm_pb_arena decode_arena; /* each resource's Any, decoded */

	/* Checks that a batch's authorization state compiles (set by the agent); NULL: not checked. */
	sm_model_authz_check_fn authz_check;
	void *authz_check_ctx;
	bool authz_dirty;      /* the batch changed a policy, or a workload's address, identity or node */
	uint64_t authz_changes; /* committed batches that changed the authorization state */
	bool authz_dests_dirty;	/* ... a policy, or the authorization state of a workload of this node */
	uint64_t authz_dests_changes; /* committed batches with authz_dests_dirty */
	bool authz_policies_dirty;    /* ... a policy */
	uint64_t authz_policies_changes; /* committed batches with authz_policies_dirty */
	bool in_batch;		      /* from batch_begin to the batch's commit or rollback: undo is its journal */
	struct vec authz_touched;     /* struct touched_addr: what committed batches' workloads held, or hold */
	uint64_t authz_touched_from;  /* authz_touched lists every batch whose authz_changes count is above this */
	uint64_t changes;	/* applies and adoptions: sm_model_generation */
};

/* An id hint's entry in its flat index is the id itself, as a pointer (ids start at 1): at 1M workloads the
 * hints are 1M entries, and an allocation each took a third of a restart's adoption. */
static inline bool any_id_hint(const void *entry, const void *key)
{
	(void)entry, (void)key;
	return true; /* two entries with one name hash: the first added keeps it */
}

/*
 * Builds the id hints from the adopted image, when the first ids are granted after an adoption: not at
 * the adoption itself, so that they are not held beside the first push while it is read, the agent's
 * peak (32 MiB at 1M workloads). Returns 0 or -ENOMEM; a retry completes what a failure left.
 */
int model_build_id_hints(struct sm_model *model);

/* The id the adopted maps held under this name hash, or 0. */
static inline uint32_t id_hint_find(const struct flat_index *hints, uint64_t name_hash)
{
	return (uint32_t)(uintptr_t)index_find(hints, name_hash, any_id_hint, NULL);
}

struct id_grant {
	uint8_t map; /* SM_MAP_SERVICES or SM_MAP_BACKENDS */
	uint32_t id;
};

enum resource_type {
	TYPE_ADDRESS,
	TYPE_AUTHORIZATION,
};

enum undo_kind {
	UNDO_WORKLOAD,
	UNDO_SERVICE,
	UNDO_AUTHORIZATION,
};

/* containers (model.c) */
int vec_push(struct vec *vec, const void *item, size_t item_size);
void vec_free(struct vec *vec);
#define VEC_AT(vec, type, i) (((type *)(vec)->items)[i])

/* strings (model.c) */
const char *model_intern(struct sm_model *model, const char *text);
void model_unintern(struct sm_model *model, const char *text);

/* entities (model.c) */
struct svc *model_service_ref(struct sm_model *model, const char *key);
struct wl *workload_ref(struct sm_model *model, const char *uid);
/* The entity by its name, or NULL: no reference taken, nothing created. */
struct svc *service_find(const struct sm_model *model, const char *key);
struct wl *workload_find(const struct sm_model *model, const char *uid);
/* Takes the entity out of its index and list and frees it (its definition is the caller's). */
void service_free(struct sm_model *model, struct svc *svc);
void workload_free(struct sm_model *model, struct wl *wl);
struct authz *authorization_ref(struct sm_model *model, const char *key);
int workload_set_def(struct sm_model *model, struct wl *wl, struct wl_def *def);
int service_set_def(struct sm_model *model, struct svc *svc, struct svc_def *def);
void authorization_set_def(struct sm_model *model, struct authz *authz, struct authz_def *def);
/* A workload's membership of a service, or NULL. */
struct membership *find_membership(const struct wl_def *def, const struct svc *svc);
/* The target port of the service's port-th port for a member: its own when it has one, else the
 * service's (0: the service port itself). */
uint16_t target_port(const struct svc_def *def, uint8_t port, const struct membership *membership);
/* Sets a definition (owning it from here on, also on failure) and journals the one it replaces. */
int set_def(struct sm_model *model, enum undo_kind kind, void *entity, void *def);
/* The definition an entity holds now (NULL: none). */
void *def_of(enum undo_kind kind, const void *entity);
void free_def(struct sm_model *model, enum undo_kind kind, void *def);
int model_classify(const char *type_url, enum resource_type *type);

/* parse.c: resources → definitions; on failure, reason says why. */
int parse_workload(struct sm_model *model, const Istio__Workload__Workload *msg, const char *version,
		   struct wl_def **out, char *reason, size_t reason_size);
int parse_service(struct sm_model *model, const Istio__Workload__Service *msg, const char *version,
		  struct svc_def **out, char *reason, size_t reason_size);
int parse_authorization(struct sm_model *model, const Istio__Security__Authorization *msg, const uint8_t *bytes,
			size_t len, const char *version, struct authz_def **out, char *reason, size_t reason_size);
void free_wl_def(struct sm_model *model, struct wl_def *def);
void free_svc_def(struct sm_model *model, struct svc_def *def);
void free_authz_def(struct sm_model *model, struct authz_def *def);

/* plan.c: the dirty entities → the image. */
/*
 * Plans the batch's dirty entities into the model's image: ids, endpoint slots, services, backends,
 * frontends. With sweep, also removes what the image holds that no entity owns (adopted leftovers).
 * Returns 0, -ENOSPC or -E2BIG when a map or a service's slots would overflow (reason says which), or
 * -ENOMEM.
 */
int plan_dirty(struct sm_model *model, bool sweep, char *reason, size_t reason_size);
void service_value(const struct sm_image *image, const struct svc *svc, struct sm_service_value *out);
void backend_value(const struct wl *wl, struct sm_backend_value *out);
bool ip_is_v4(const struct sm_ip *ip);

/*
 * lookup.c: the address index, kept by workload_set_def. An entry that loses its last owner stays, empty,
 * until addr_index_drop_empty once the batch has ended: a rollback that puts the owner back then takes no
 * memory (it cannot fail half-way).
 */
int addr_index_add(struct sm_model *model, const struct sm_ip *ip, struct wl *wl);
void addr_index_remove(struct sm_model *model, const struct sm_ip *ip, const struct wl *wl);
void addr_index_drop_empty(struct sm_model *model, const struct sm_ip *ip);
void addr_index_free(struct sm_model *model);
/* Each address some workload holds, with the one workload_at(model, addr, false) gives (of several, the
 * smallest uid), in no order. */
void addr_index_for_each_held(const struct sm_model *model,
			      void (*fn)(void *ctx, const uint8_t addr[16], const struct wl *holder), void *ctx);
/* The workload holding addr, or NULL: of several, the smallest uid, among this node's first when local_first,
 * so that the answer depends on the holders alone. */
const struct wl *workload_at(const struct sm_model *model, const uint8_t addr[16], bool local_first);
/* Of the workloads of this node that hold addr, the one workload_at(model, addr, true) gives, whose policies
 * guard it (NULL: none). */
const struct wl *local_holder(const struct sm_model *model, const uint8_t addr[16]);

/* authorization (authz.c): notes the addresses the batch's workloads held or hold, as of count changes */
void record_touched(struct sm_model *model, uint64_t changes);

/* marking (model.c) */
void mark_workload(struct sm_model *model, struct wl *wl);
void mark_service(struct sm_model *model, struct svc *svc);
void mark_pair(struct sm_model *model, struct svc *svc, struct wl *wl, uint32_t backend_id);
void mark_ip(struct sm_model *model, struct ip_claims *ip);
struct ip_claims *model_ip(struct sm_model *model, const struct sm_frontend_key *key, bool create);

#endif
