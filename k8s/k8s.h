/* SPDX-License-Identifier: Apache-2.0 */
/*
 * k8s/: the Kubernetes API as the agent needs it (libcurl + jansson, no Go, no client library):
 * in-cluster configuration, a list-then-watch of the pods of one node and of the namespaces, a
 * merge-PATCH of one pod annotation, and the enrollment decision (which pods sockmesh steers).
 * It knows nothing of BPF or xDS. It never logs: errors come back as -errno with a message, and each
 * watcher keeps counters and its last error for the agent to log or show.
 */
#ifndef SOCKMESH_K8S_H
#define SOCKMESH_K8S_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- objects, as the decision needs them ---- */

#define SM_K8S_MAX_POD_IPS 4

/*
 * Every pointer borrows from the parsed JSON: valid only during the callback that received it, and
 * read-only (json_incref or json_deep_copy what must outlive it; the empty object may be shared).
 */
struct sm_k8s_pod {
	const char *uid;
	const char *namespace;
	const char *name;
	const char *resource_version;
	json_t *labels;      /* object of strings, never NULL (an empty object when the pod has none) */
	json_t *annotations; /* the same */
	bool host_network;
	const char *phase;   /* status.phase, "" when not reported yet */
	const char *pod_ips[SM_K8S_MAX_POD_IPS]; /* status.podIPs[].ip, else status.podIP */
	size_t n_pod_ips;
	bool deleting;       /* metadata.deletionTimestamp is set */
};

struct sm_k8s_namespace {
	const char *name;
	const char *resource_version;
	json_t *labels; /* never NULL */
};

/* ---- client: where the API is and who we are to it ---- */

/* Every field may be NULL or 0 for its default. */
struct sm_k8s_options {
	/* Default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; "http://..." is allowed (tests). */
	const char *api_url;
	/* Default /var/run/secrets/kubernetes.io/serviceaccount/token; "" sends no Authorization header. */
	const char *token_file;
	/* Default /var/run/secrets/kubernetes.io/serviceaccount/ca.crt for https; "" uses the system CAs. */
	const char *ca_file;
	unsigned backoff_initial_ms; /* default 500 */
	unsigned backoff_max_ms;     /* default 30000; each wait is jittered between half and all of it */
};

#define SM_K8S_DEFAULT_TOKEN_FILE "/var/run/secrets/kubernetes.io/serviceaccount/token"
#define SM_K8S_DEFAULT_CA_FILE "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

struct sm_k8s_client;

/* -ENOENT (with err naming the variable) when no api_url is given and the service variables are unset. */
int sm_k8s_client_new(const struct sm_k8s_options *options, struct sm_k8s_client **out, char *err, size_t size);
void sm_k8s_client_free(struct sm_k8s_client *client);
/* The API's base URL this client uses (for logs). */
const char *sm_k8s_client_url(const struct sm_k8s_client *client);

/*
 * Sets (value non-NULL) or removes (value NULL) one annotation of a pod with a JSON merge patch.
 * Refuses (-EPERM) ambient.istio.io/redirection: istiod would then advertise the pod as HBONE.
 * 0, or -ENOENT (404), -EACCES (401 after a token re-read, 403), -EIO (other status), -errno.
 */
int sm_k8s_patch_pod_annotation(struct sm_k8s_client *client, const char *namespace, const char *name,
				const char *key, const char *value, char *err, size_t size);

/* ---- watcher ---- */

enum sm_k8s_kind {
	SM_K8S_PODS,
	SM_K8S_NAMESPACES,
};

enum sm_k8s_event_type {
	/*
	 * A (re)list starts: ADDED follows for every object that exists now, then SYNC_END. At SYNC_END the
	 * consumer drops every object of this kind it did not see since SYNC_BEGIN (they vanished while the
	 * watch was broken, e.g. before a 410 Gone).
	 */
	SM_K8S_SYNC_BEGIN,
	SM_K8S_ADDED,
	SM_K8S_MODIFIED,
	SM_K8S_DELETED,
	SM_K8S_SYNC_END,
};

struct sm_k8s_event {
	enum sm_k8s_event_type type;
	enum sm_k8s_kind kind;
	const struct sm_k8s_pod *pod;             /* kind PODS, not for SYNC_* */
	const struct sm_k8s_namespace *namespace; /* kind NAMESPACES, not for SYNC_* */
};

/*
 * Called on the watcher's thread, one event at a time; it must not stop its own watcher. 0 when the
 * consumer took the event in; -errno (-ENOMEM, say) when it could not, having changed nothing for it.
 * The watcher then handles it as a broken stream: it records the error, backs off and asks again from
 * the last event taken in (a list is asked for again whole: the failed one gets no SYNC_END).
 */
typedef int (*sm_k8s_event_fn)(const struct sm_k8s_event *event, void *ctx);

struct sm_k8s_watch_stats {
	uint64_t lists;         /* successful lists (the first one and each relist) */
	uint64_t watches;       /* watch streams opened (HTTP 200) */
	uint64_t events;        /* ADDED/MODIFIED/DELETED delivered from watch streams */
	uint64_t bookmarks;
	uint64_t gone;          /* 410 Gone, from the status or an ERROR event: each forces a relist */
	uint64_t token_reloads; /* token file re-reads after a 401 */
	uint64_t errors;        /* failed requests, broken streams, events not taken in (each then backs off) */
	bool synced;            /* a list has completed */
	int last_error;         /* -errno of the last error, 0 if none */
	char last_error_msg[256];
	char resource_version[64]; /* where the next watch resumes */
};

struct sm_k8s_watch;

/*
 * Starts a thread that lists then watches pods (of node_name only: required) or namespaces (node_name
 * ignored), resumes from the last resourceVersion seen (bookmarks included), relists on 410 Gone,
 * re-reads the token on 401 and backs off on errors until stopped. The client must outlive the watcher.
 */
int sm_k8s_watch_start(struct sm_k8s_client *client, enum sm_k8s_kind kind, const char *node_name,
		       sm_k8s_event_fn fn, void *ctx, struct sm_k8s_watch **out);
/* Stops within about a tenth of a second (interrupts a request in flight and a back-off) and frees. */
void sm_k8s_watch_stop(struct sm_k8s_watch *watch);
void sm_k8s_watch_get_stats(struct sm_k8s_watch *watch, struct sm_k8s_watch_stats *out);

/* ---- which pods are enrolled (a pure function) ---- */

#define SM_K8S_DATAPLANE_LABEL "istio.io/dataplane-mode"
#define SM_K8S_DATAPLANE_VALUE "sockmesh"
/* sockmesh's own status annotation; it never sets ambient.istio.io/redirection. */
#define SM_K8S_STATUS_ANNOTATION "sockmesh.io/redirection"

enum sm_k8s_reason {
	SM_K8S_ENROLL_POD_LABEL,   /* the pod's label says sockmesh */
	SM_K8S_ENROLL_NS_LABEL,    /* no pod label, the namespace's label says sockmesh */
	SM_K8S_SKIP_NOT_LABELLED,  /* neither pod nor namespace asks for sockmesh */
	SM_K8S_SKIP_POD_OPTED_OUT, /* the pod's label has another value (none, ambient, ...) */
	SM_K8S_SKIP_HOST_NETWORK,
	SM_K8S_SKIP_SIDECAR,       /* annotation sidecar.istio.io/status */
	SM_K8S_SKIP_GATEWAY,       /* label gateway.istio.io/managed: waypoints and gateways */
	SM_K8S_SKIP_ISTIO_CNI,     /* annotation ambient.istio.io/redirection: istio-cni captured it */
	SM_K8S_SKIP_AGENT_NAMESPACE,
	SM_K8S_SKIP_KUBE_SYSTEM,
	SM_K8S_SKIP_DELETING,
	SM_K8S_SKIP_FINISHED,      /* phase Succeeded or Failed */
	SM_K8S_SKIP_NO_IP,
};

struct sm_k8s_policy {
	const char *agent_namespace; /* the agent's own namespace (POD_NAMESPACE); NULL if unknown */
	bool system_namespaces;      /* also enroll in kube-system and the agent's namespace when labelled */
};

/* Whether the pod is enrolled, and why (reason may be NULL). ns is NULL when its namespace is unknown. */
bool sm_k8s_should_enroll(const struct sm_k8s_pod *pod, const struct sm_k8s_namespace *ns,
			  const struct sm_k8s_policy *policy, enum sm_k8s_reason *reason);
/* A short phrase for logs and dumps, e.g. "namespace label istio.io/dataplane-mode=sockmesh". */
const char *sm_k8s_reason_str(enum sm_k8s_reason reason);

#endif
