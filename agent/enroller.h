/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The enroller: which pods of this node sockmesh steers, kept in sm_enrolled. It watches the node's
 * pods and the namespaces (k8s/), decides with sm_k8s_should_enroll, finds each enrolled pod's network
 * namespace from the CNI plugin's fd (cniserver/) or from /proc (podns/), and writes its cookie into the
 * datapath. With it running the agent owns sm_enrolled: cookies no enrolled pod owns are swept.
 */
#ifndef SOCKMESH_AGENT_ENROLLER_H
#define SOCKMESH_AGENT_ENROLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "datapath/datapath.h"

struct enroller_options {
	const char *api_url;	 /* NULL: in-cluster (KUBERNETES_SERVICE_HOST) */
	const char *token_file;	 /* NULL: the service account's */
	const char *ca_file;	 /* NULL: the service account's */
	const char *node_name;	 /* required */
	const char *agent_namespace; /* POD_NAMESPACE, may be NULL */
	const char *cni_socket;	 /* required */
	const char *proc_root;	 /* required */
	bool system_namespaces;
	unsigned sweep_interval_ms; /* 0: 60 s */
};

struct enroller;

/* Starts the watchers, the CNI server and the periodic pass; 0 or -errno with the reason in err. */
int enroller_start(const struct enroller_options *options, struct sm_datapath *dp, struct enroller **out, char *err,
		   size_t size);
/* Stops every thread (the watchers, the CNI server, the periodic pass) and frees. NULL is a no-op. */
void enroller_stop(struct enroller *enroller);
/* The network namespace of a pod with this cookie, opened anew (the caller closes *fd); -ENOENT when no
 * pod has it at hand. */
int enroller_open_netns(struct enroller *enroller, uint64_t cookie, int *fd);
/* Whether the pod whose namespace has this cookie holds one of addrs among its IPs: 1 it does, 0 it
 * holds none, -ENOENT when no pod with known IPs has it. */
int enroller_netns_holds(struct enroller *enroller, uint64_t cookie, const struct sm_frontend_key *addrs, size_t n);
/* Pods whose cookie is in sm_enrolled now. */
size_t enroller_enrolled_pods(struct enroller *enroller);

#endif
