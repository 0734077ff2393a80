/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which pods sockmesh enrolls: Kmesh's rule (k8s-enrollment note §1) with the label value "sockmesh",
 * plus the exclusions of §8. Exclusions come first so that no label can enroll a pod sockmesh must not
 * touch; then the pod's own label wins over its namespace's.
 */
#include <string.h>
#include <strings.h>

#include "k8s/k8s.h"

static const char *string_of(json_t *object, const char *key)
{
	return object ? json_string_value(json_object_get(object, key)) : NULL;
}

static bool has_key(json_t *object, const char *key)
{
	return object && json_object_get(object, key);
}

/* Which exclusion, if any, applies to the pod whatever its labels say. */
static bool excluded(const struct sm_k8s_pod *pod, const struct sm_k8s_policy *policy, enum sm_k8s_reason *why)
{
	const char *ns = pod->namespace ? pod->namespace : "";

	if (!policy->system_namespaces && policy->agent_namespace && !strcmp(ns, policy->agent_namespace))
		*why = SM_K8S_SKIP_AGENT_NAMESPACE;
	else if (!policy->system_namespaces && !strcmp(ns, "kube-system"))
		*why = SM_K8S_SKIP_KUBE_SYSTEM;
	else if (pod->host_network)
		*why = SM_K8S_SKIP_HOST_NETWORK;
	else if (pod->deleting)
		*why = SM_K8S_SKIP_DELETING;
	else if (pod->phase && (!strcmp(pod->phase, "Succeeded") || !strcmp(pod->phase, "Failed")))
		*why = SM_K8S_SKIP_FINISHED;
	else if (has_key(pod->annotations, "sidecar.istio.io/status"))
		*why = SM_K8S_SKIP_SIDECAR;
	/* Istio labels its waypoints and gateways gateway.istio.io/managed=istio.io-mesh-controller. */
	else if (has_key(pod->labels, "gateway.istio.io/managed"))
		*why = SM_K8S_SKIP_GATEWAY;
	else if (has_key(pod->annotations, "ambient.istio.io/redirection"))
		*why = SM_K8S_SKIP_ISTIO_CNI;
	else if (pod->n_pod_ips == 0)
		*why = SM_K8S_SKIP_NO_IP;
	else
		return false;
	return true;
}

bool sm_k8s_should_enroll(const struct sm_k8s_pod *pod, const struct sm_k8s_namespace *ns,
			  const struct sm_k8s_policy *policy, enum sm_k8s_reason *reason)
{
	static const struct sm_k8s_policy defaults;
	enum sm_k8s_reason why;
	const char *mode;

	if (!policy)
		policy = &defaults;
	if (excluded(pod, policy, &why))
		goto out;
	/* Compared without case, as Kmesh does, so "Sockmesh" works too. */
	mode = string_of(pod->labels, SM_K8S_DATAPLANE_LABEL);
	if (mode)
		why = strcasecmp(mode, SM_K8S_DATAPLANE_VALUE) ? SM_K8S_SKIP_POD_OPTED_OUT : SM_K8S_ENROLL_POD_LABEL;
	else if ((mode = string_of(ns ? ns->labels : NULL, SM_K8S_DATAPLANE_LABEL)) &&
		 !strcasecmp(mode, SM_K8S_DATAPLANE_VALUE))
		why = SM_K8S_ENROLL_NS_LABEL;
	else
		why = SM_K8S_SKIP_NOT_LABELLED;
out:
	if (reason)
		*reason = why;
	return why == SM_K8S_ENROLL_POD_LABEL || why == SM_K8S_ENROLL_NS_LABEL;
}

const char *sm_k8s_reason_str(enum sm_k8s_reason reason)
{
	switch (reason) {
	case SM_K8S_ENROLL_POD_LABEL:
		return "pod label " SM_K8S_DATAPLANE_LABEL "=" SM_K8S_DATAPLANE_VALUE;
	case SM_K8S_ENROLL_NS_LABEL:
		return "namespace label " SM_K8S_DATAPLANE_LABEL "=" SM_K8S_DATAPLANE_VALUE;
	case SM_K8S_SKIP_NOT_LABELLED:
		return "neither pod nor namespace labelled " SM_K8S_DATAPLANE_LABEL "=" SM_K8S_DATAPLANE_VALUE;
	case SM_K8S_SKIP_POD_OPTED_OUT:
		return "pod label " SM_K8S_DATAPLANE_LABEL " has another value";
	case SM_K8S_SKIP_HOST_NETWORK:
		return "hostNetwork pod";
	case SM_K8S_SKIP_SIDECAR:
		return "has a sidecar (sidecar.istio.io/status)";
	case SM_K8S_SKIP_GATEWAY:
		return "waypoint or gateway (gateway.istio.io/managed)";
	case SM_K8S_SKIP_ISTIO_CNI:
		return "captured by istio-cni (ambient.istio.io/redirection)";
	case SM_K8S_SKIP_AGENT_NAMESPACE:
		return "in the agent's own namespace";
	case SM_K8S_SKIP_KUBE_SYSTEM:
		return "in kube-system";
	case SM_K8S_SKIP_DELETING:
		return "being deleted";
	case SM_K8S_SKIP_FINISHED:
		return "finished (Succeeded or Failed)";
	case SM_K8S_SKIP_NO_IP:
		return "no pod IP yet";
	}
	return "unknown reason";
}
