/* SPDX-License-Identifier: Apache-2.0 */
/*
 * workload/: the model of what istiod sent (workloads, services, authorizations) and the map plan that
 * turns each change into ordered writes to the datapath's maps. It knows nothing of gRPC or libbpf.
 *
 * Applying a response: each resource is validated and applied whole or not at all; a bad one is
 * rejected alone with a reason and keeps its previous state. The model keeps an image of what the maps
 * hold; a change's writes are the net difference between the image before and after it, issued so
 * that a concurrent reader never meets a dangling id or a half-written service: updates bottom-up
 * (backends, endpoints, services, frontends), deletes top-down, an endpoint hole filled by moving the
 * last slot into it before the count shrinks. A write that fails is undone and its resource rejected.
 */
#ifndef SOCKMESH_WORKLOAD_H
#define SOCKMESH_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "authz/authz.h"
#include "datapath/datapath.h"
#include "proto/proto.h"

/* ---- The map image: the four maps held in memory ---- */

struct sm_image;

int sm_image_new(struct sm_image **out);
void sm_image_free(struct sm_image *image);
/* Sets (value != NULL) or deletes one entry. Returns 0 or -ENOMEM / -ERANGE (a key past the limits). */
int sm_image_set(struct sm_image *image, enum sm_map_id map, const void *key, const void *value);
const void *sm_image_get(const struct sm_image *image, enum sm_map_id map, const void *key);
size_t sm_image_count(const struct sm_image *image, enum sm_map_id map);
/* Calls fn for every entry of map (in no particular order) until it returns non-zero, which is returned. */
int sm_image_for_each(const struct sm_image *image, enum sm_map_id map,
		      int (*fn)(void *ctx, const void *key, const void *value), void *ctx);
/*
 * Equal as the datapath reads them: the same frontends, services and backends, and for each service and
 * priority the same endpoints in any slot order. On a difference, diff names the first one found.
 */
bool sm_image_equivalent(const struct sm_image *a, const struct sm_image *b, char *diff, size_t diff_size);
/*
 * What a reader of the maps relies on: every frontend names a present service or backend, every
 * service's count covers present slots only, and every slot under a count names a present backend.
 * Returns 0 or -EFAULT with the first violation in err.
 */
int sm_image_check(const struct sm_image *image, char *err, size_t err_size);

/* A map writer into an image: the test double of the kernel's maps. */
struct sm_image_writer {
	struct sm_map_writer writer;
	struct sm_image *image;
	bool check_each_write;	 /* check each op's before and run sm_image_check after it; fail with -EFAULT on
				  * a violation */
	size_t fail_after;	 /* when non-zero, the op after this many fails (then reset)... */
	int fail_error;		 /* ...with this -errno (0: -ENOSPC, a full map) */
	size_t ops_applied;	 /* counts every op applied */
	char check_error[256];	 /* the violation that made an op fail */
};

void sm_image_writer_init(struct sm_image_writer *writer, struct sm_image *image);

/* ---- The model ---- */

struct sm_model;

/* Where this node is; each field may be NULL (unknown). */
struct sm_locality {
	const char *region;
	const char *zone;
	const char *subzone;
	const char *network;
	const char *cluster;
};

struct sm_model_options {
	/* This node (NODE_NAME): the workloads on it give the local locality, network and cluster. */
	const char *node_name;
	/* When set, the local locality is taken from here instead. */
	const struct sm_locality *locality;
	/* Map capacities (max_entries); 0 takes the contract's default. */
	uint32_t capacity[SM_MAP_COUNT];
};

int sm_model_new(const struct sm_model_options *options, struct sm_model **out);
void sm_model_free(struct sm_model *model);

/*
 * Takes what the maps already hold (pinned by an earlier agent) as the starting image: services and
 * backends keep their ids by name, unchanged entries are not rewritten, and what the first applied
 * Address response does not name is removed at its end. Call before the first apply.
 */
int sm_model_adopt(struct sm_model *model, const struct sm_image *maps);
/* The same, taking maps as the model's image instead of copying it entry by entry (2M entries at 1M
 * workloads); maps is freed with the model, or at once on an error. -EBUSY: the model's image holds entries
 * already (adopt before the first apply). */
int sm_model_adopt_image(struct sm_model *model, struct sm_image *maps);

struct sm_rejection {
	char *name;
	char *reason;
};

struct sm_rejections {
	struct sm_rejection *items;
	size_t count;
	size_t capacity;
};

void sm_rejections_clear(struct sm_rejections *rejections);
/*
 * "name: reason; name: reason", for a NACK's error_detail: the first SM_REJECTIONS_SHOWN, then how
 * many more (a broken push can reject every resource). The caller frees the result.
 */
#define SM_REJECTIONS_SHOWN 100
char *sm_rejections_format(const struct sm_rejections *rejections);

/*
 * Applies one response (its resources, then its removals) and writes the changes through writer.
 * Rejected resources are appended to rejections. Returns 0, also when some were rejected; -ENOMEM (memory
 * ran short: nothing of the response is applied, but for a response being applied resource by resource
 * after a map overflowed, whose resources done before stay applied; the versions the model holds say
 * which; the maps equal the model's image either way); -EIO when a failed write could not be undone (the
 * maps then differ from the model's image); or the writer's -errno when removing what the first response
 * after a restart or resync no longer lists failed (its resources are applied; the removal is tried again
 * with the next Address response); -ECANCELED after sm_model_stop_splits, when the response had to be split.
 */
int sm_model_apply(struct sm_model *model, const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response,
		   struct sm_map_writer *writer, struct sm_rejections *rejections);

/*
 * How the caller of sm_model_apply_releasing hears that the model reads its response no more. A caller
 * that holds a large response (a full push is tens of MB) frees it as it goes, which lowers the apply's
 * peak memory. Neither may be called at all (a response rejected whole, an error before that point): the
 * caller frees what is left once the apply returns.
 */
struct sm_response_release {
	/* response->resources[0 .. n) are read no more: called as the model takes each in, n growing. May
	 * be NULL. */
	void (*read_up_to)(void *ctx, size_t n);
	/* Nothing of the response is read any more: its resources are all in the model, before the batch
	 * is planned and written (also when it must then be split). May be NULL. */
	void (*release)(void *ctx);
	void *ctx;
};

/* The same, telling release (NULL: nothing) when the response is read no more. */
int sm_model_apply_releasing(struct sm_model *model,
			     const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response,
			     const struct sm_response_release *release, struct sm_map_writer *writer,
			     struct sm_rejections *rejections);

/*
 * For an agent that stops, from any thread and without the model's lock: a split under way (a response
 * that did not fit as one batch, applied in runs, each compiling the authorization tables) ends before its
 * next run, and no split starts after this; sm_model_apply then returns -ECANCELED. The runs taken stand,
 * written (the maps equal the model's image); the rest of the response is not applied (the versions the
 * model holds say which were taken). A response that fits as one batch is applied as before. Why: a
 * split of thousands of policies that overflow takes minutes, longer than a pod's grace period to stop.
 */
void sm_model_stop_splits(struct sm_model *model);

/*
 * Called before each run of a split, on the thread that applies and with the model's lock still held by
 * it: the runs taken so far are committed, and the model reads as it would between two responses. The
 * caller may let other threads read the model there (the agent lets those that wait for its lock in), as
 * a split of thousands of policies holds the model for minutes; nothing may change it meanwhile. NULL
 * (the default): nothing is called.
 */
typedef void (*sm_model_between_runs_fn)(void *ctx);
void sm_model_set_between_runs(struct sm_model *model, sm_model_between_runs_fn fn, void *ctx);

/* The image the model holds the maps to be in. */
const struct sm_image *sm_model_image(const struct sm_model *model);

/* Builds, from nothing, the image the model's current state maps to (with its current ids). */
int sm_model_build_image(const struct sm_model *model, struct sm_image **out);

/* Resource versions held for a type URL, for initial_resource_versions; stops when fn returns non-zero. */
int sm_model_for_each_version(const struct sm_model *model, const char *type_url,
			      int (*fn)(void *ctx, const char *name, const char *version), void *ctx);

struct sm_model_stats {
	size_t workloads;
	size_t services;
	size_t authorizations;
	size_t map_entries[SM_MAP_COUNT];
	size_t map_capacity[SM_MAP_COUNT];
	uint64_t map_overflows[SM_MAP_COUNT]; /* resources rejected because this map was full */
};

void sm_model_stats(const struct sm_model *model, struct sm_model_stats *stats);

/* The local locality in use (fields NULL when unknown). */
void sm_model_local_locality(const struct sm_model *model, struct sm_locality *out);

/* Calls fn with each address (16 bytes, IPv4 mapped) of the workloads on this node; stops on non-zero. */
int sm_model_for_each_local_address(const struct sm_model *model, int (*fn)(void *ctx, const uint8_t addr[16]),
				    void *ctx);
/* A counter of batches that added, changed or removed a workload of this node: equal values, the same
 * local addresses. */
uint64_t sm_model_local_generation(const struct sm_model *model);

/* The service and backend ids of a name (service "ns/hostname" or workload uid); 0 when it has none. */
uint32_t sm_model_service_id(const struct sm_model *model, const char *key);
uint32_t sm_model_backend_id(const struct sm_model *model, const char *uid);

/* ---- Lookups by address (telemetry): hash lookups, strings point into the model until its next apply ---- */

/* What names a workload in Istio's telemetry; NULL fields are unknown. */
struct sm_workload_labels {
	const char *uid;
	const char *workload_name; /* the controller (Deployment), istio's *_workload label */
	const char *name;	   /* the pod */
	const char *namespace;
	const char *canonical_name, *canonical_revision;
	const char *cluster_id;
	const char *trust_domain, *service_account; /* never NULL: "cluster.local" and "default" when not given */
	const char *region, *zone;
};

/* The workload holding addr (16 bytes, IPv4 mapped), one on this node first; false when none does. */
bool sm_model_workload_at(const struct sm_model *model, const uint8_t addr[16], struct sm_workload_labels *out);

/* The service whose VIP addr is: hostname, name, namespace; false when it is no service's. */
struct sm_service_labels {
	const char *hostname, *name, *namespace;
};
bool sm_model_service_at(const struct sm_model *model, const uint8_t addr[16], struct sm_service_labels *out);
/* A service the workload holding addr backs on its port (host order), ztunnel's guess for a connection
 * that named no VIP: the first of its services with a port whose target is port; false when none. */
bool sm_model_service_of_port(const struct sm_model *model, const uint8_t addr[16], uint16_t port,
			      struct sm_service_labels *out);

/* A counter of the model's changes (every apply, each run of a split, and adopt, whatever their outcome),
 * never 0: while it stays the same, every lookup above gives the same answer, with the same pointers to the
 * same strings. */
uint64_t sm_model_generation(const struct sm_model *model);

/* Whether a workload of this uid is defined. */
bool sm_model_workload_exists(const struct sm_model *model, const char *uid);

/* ---- L4 authorization: what authz/'s compiler needs from the model ---- */

struct sm_authz_compile_input;
struct sm_authz_policy;

/*
 * The compiler's input for the model's current state: every address of a workload on this node that
 * policies apply to, with those policies (every GLOBAL policy, every NAMESPACE policy of its namespace, and those its
 * Workload lists that have arrived, each once), and every workload address of the mesh with its identity
 * (trust domain "cluster.local" and service account "default" when the workload gives none), after
 * node_addresses (the node's own, exempt); no sources when no destination is guarded. Listed policies that have not arrived are skipped
 * (as ztunnel does) and named in unknown ("workload-uid: ns/name"). Policies point into the model:
 * valid until its next apply.
 */
struct sm_model_authz {
	struct sm_authz_compile_input *input;
	char **unknown;
	size_t n_unknown;
	void *lists; /* where input's policy lists live */
};
int sm_model_authz_build(const struct sm_model *model, const uint8_t (*node_addresses)[16], size_t n_node,
			 struct sm_model_authz **out);
void sm_model_authz_free(struct sm_model_authz *authz);

/*
 * Called by sm_model_apply after a batch that changed the authorization state has been planned and before
 * its maps are written: non-zero rejects the batch with reason (split and retried item by item as for a
 * full map, so only what does not fit is rejected). The agent compiles there: a policy, or a workload,
 * whose tables would not fit is NACKed by name and nothing of it is applied.
 */
typedef int (*sm_model_authz_check_fn)(void *ctx, const struct sm_model *model, char *reason, size_t reason_size);
void sm_model_set_authz_check(struct sm_model *model, sm_model_authz_check_fn fn, void *ctx);
/* A counter of authorization-state changes: equal values, equal compiler input. */
uint64_t sm_model_authz_generation(const struct sm_model *model);
/* A counter of the changes to the destinations' side of that input: a policy, or the authorization state
 * of a workload of this node. During a batch (in the admission check) it counts that batch if it makes
 * one. Equal values: the same destinations with the same policies; only sources may differ
 * (sm_authz_update_sources). */
uint64_t sm_model_authz_destinations_generation(const struct sm_model *model);
/* A counter of the policies' changes alone (a policy came, changed or went), counted like the one above.
 * Equal values with the destinations' count moved: only this node's workloads changed
 * (sm_model_authz_update with destinations). */
uint64_t sm_model_authz_policies_generation(const struct sm_model *model);

/*
 * What sm_authz_update_idents needs to bring tables compiled from the input of sm_model_authz_generation
 * `since`, with the node's addresses was_node, to the input now with node: each address whose identity as
 * a source may have changed since (in committed batches and the one being applied; the node's addresses of
 * either list), in *set as the input now gives it (the node's, or a workload's identity) or in *unset when
 * nothing holds it; an address may come more than once, alike. -ESTALE when the model no longer lists
 * them all (a batch of thousands, such as a full push, or memory short): build the whole input. *set and
 * *unset are malloc'ed.
 */
int sm_model_authz_source_changes(const struct sm_model *model, uint64_t since, const uint8_t (*was_node)[16],
				  size_t n_was, const uint8_t (*node)[16], size_t n_node, struct sm_authz_source **set,
				  size_t *n_set, uint8_t (**unset)[16], size_t *n_unset);
/* The tables prev, compiled or updated for the input of `since` with the node's addresses was_node,
 * brought to the input now with node by those changes (sm_authz_update_idents); with destinations (only
 * when the policies are those of `since`: sm_model_authz_policies_generation), this node's changed addresses
 * too (sm_authz_update_destinations). -ESTALE (not listed) or -ESRCH (a source of a class, or a destination
 * of a set, prev's compilation did not make; an address that several workloads of this node hold, or that
 * lists a policy not arrived): build the whole input; -ENOMEM. */
int sm_model_authz_update(const struct sm_model *model, const struct sm_authz_tables *prev, uint64_t since,
			  const uint8_t (*was_node)[16], size_t n_was, const uint8_t (*node)[16], size_t n_node,
			  bool destinations, struct sm_authz_tables **out, char *reason, size_t reason_size);

/* The policies that apply to the workload holding addr on this node (NULL, 0 when none does), in the order
 * sm_model_authz_build gives them; *policies is malloc'ed. */
int sm_model_authz_policies_for(const struct sm_model *model, const uint8_t addr[16],
				const struct sm_authz_policy ***policies, size_t *n, bool *local);
/* The identity of the workload holding addr; false when none does. Strings point into the model. */
bool sm_model_authz_identity(const struct sm_model *model, const uint8_t addr[16], struct sm_authz_identity *out);

/*
 * What connect4/6 does with dst:port (host order), from the image the maps hold: {"outcome": "untouched",
 * "why"} or "workload" (a pod with a waypoint) or "service" with "service", "lb_mode", "waypoint"
 * ({address, port, tlv}) and "priorities" [{priority, endpoints [{workload, address, port, weight,
 * waypoint}]}]. NULL when out of memory.
 */
json_t *sm_model_explain_connect(const struct sm_model *model, const uint8_t dst[16], uint16_t port);

/*
 * The model in the shape of ztunnel's config dump: workloads keyed by "network/ip", services keyed by
 * "network/vip" with their endpoints, policies, each workload with the policies that select it.
 * Returns a new reference or NULL when out of memory.
 */
json_t *sm_model_config_dump(const struct sm_model *model);

#endif
