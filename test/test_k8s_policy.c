/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The enrollment decision as a table: every rule and exclusion of issue 13's "Which pods", relabels of
 * the pod and of its namespace both ways, deletion and finished pods, with the reason each gives.
 */
#include <string.h>

#include "helpers.h"
#include "k8s/k8s.h"

/* One row: the pod and namespace, written compactly, and the expected reason. */
struct row {
	const char *what;
	const char *ns;         /* the pod's namespace */
	const char *pod_label;  /* istio.io/dataplane-mode on the pod, NULL for none */
	const char *ns_label;   /* the same on the namespace, NULL for none */
	bool ns_unknown;        /* the namespace has not been seen (yet) */
	const char *extra_label; /* one more pod label key (value "x") */
	const char *annotation;  /* one pod annotation key (value "x") */
	bool host_network;
	bool deleting;
	const char *phase;
	bool no_ip;
	const char *agent_ns;
	bool system_namespaces;
	enum sm_k8s_reason want;
};

static const struct row rows[] = {
	{ "pod label", .pod_label = "sockmesh", .want = SM_K8S_ENROLL_POD_LABEL },
	{ "pod label, any case", .pod_label = "SockMesh", .want = SM_K8S_ENROLL_POD_LABEL },
	{ "namespace label", .ns_label = "sockmesh", .want = SM_K8S_ENROLL_NS_LABEL },
	{ "nothing labelled", .want = SM_K8S_SKIP_NOT_LABELLED },
	{ "namespace unknown yet", .ns_unknown = true, .want = SM_K8S_SKIP_NOT_LABELLED },
	{ "namespace unknown, pod label", .ns_unknown = true, .pod_label = "sockmesh", .want = SM_K8S_ENROLL_POD_LABEL },
	{ "namespace labelled for istio ambient", .ns_label = "ambient", .want = SM_K8S_SKIP_NOT_LABELLED },
	{ "pod none opts out of a labelled namespace", .pod_label = "none", .ns_label = "sockmesh",
	  .want = SM_K8S_SKIP_POD_OPTED_OUT },
	{ "pod ambient opts out of a labelled namespace", .pod_label = "ambient", .ns_label = "sockmesh",
	  .want = SM_K8S_SKIP_POD_OPTED_OUT },
	{ "pod empty value opts out", .pod_label = "", .ns_label = "sockmesh", .want = SM_K8S_SKIP_POD_OPTED_OUT },
	{ "pod label wins over namespace none", .pod_label = "sockmesh", .ns_label = "none",
	  .want = SM_K8S_ENROLL_POD_LABEL },
	{ "hostNetwork", .pod_label = "sockmesh", .host_network = true, .want = SM_K8S_SKIP_HOST_NETWORK },
	{ "hostNetwork, namespace label", .ns_label = "sockmesh", .host_network = true,
	  .want = SM_K8S_SKIP_HOST_NETWORK },
	{ "sidecar", .pod_label = "sockmesh", .annotation = "sidecar.istio.io/status", .want = SM_K8S_SKIP_SIDECAR },
	{ "waypoint or gateway", .ns_label = "sockmesh", .extra_label = "gateway.istio.io/managed",
	  .want = SM_K8S_SKIP_GATEWAY },
	{ "gateway key as an annotation does not count", .ns_label = "sockmesh",
	  .annotation = "gateway.istio.io/managed", .want = SM_K8S_ENROLL_NS_LABEL },
	{ "captured by istio-cni", .pod_label = "sockmesh", .annotation = "ambient.istio.io/redirection",
	  .want = SM_K8S_SKIP_ISTIO_CNI },
	{ "our own status annotation is no obstacle", .pod_label = "sockmesh", .annotation = SM_K8S_STATUS_ANNOTATION,
	  .want = SM_K8S_ENROLL_POD_LABEL },
	{ "kube-system", .ns = "kube-system", .pod_label = "sockmesh", .want = SM_K8S_SKIP_KUBE_SYSTEM },
	{ "kube-system when asked", .ns = "kube-system", .pod_label = "sockmesh", .system_namespaces = true,
	  .want = SM_K8S_ENROLL_POD_LABEL },
	{ "agent's namespace", .ns = "sockmesh-system", .agent_ns = "sockmesh-system", .ns_label = "sockmesh",
	  .want = SM_K8S_SKIP_AGENT_NAMESPACE },
	{ "agent's namespace when asked", .ns = "sockmesh-system", .agent_ns = "sockmesh-system", .ns_label = "sockmesh",
	  .system_namespaces = true, .want = SM_K8S_ENROLL_NS_LABEL },
	{ "another namespace than the agent's", .agent_ns = "sockmesh-system", .ns_label = "sockmesh",
	  .want = SM_K8S_ENROLL_NS_LABEL },
	{ "being deleted", .pod_label = "sockmesh", .deleting = true, .want = SM_K8S_SKIP_DELETING },
	{ "succeeded", .pod_label = "sockmesh", .phase = "Succeeded", .want = SM_K8S_SKIP_FINISHED },
	{ "failed", .ns_label = "sockmesh", .phase = "Failed", .want = SM_K8S_SKIP_FINISHED },
	{ "pending with an IP", .pod_label = "sockmesh", .phase = "Pending", .want = SM_K8S_ENROLL_POD_LABEL },
	{ "no IP yet", .pod_label = "sockmesh", .phase = "Pending", .no_ip = true, .want = SM_K8S_SKIP_NO_IP },
};

static void decide(const struct row *r, bool *enrolled, enum sm_k8s_reason *reason)
{
	json_t *pod_labels = json_object(), *annotations = json_object(), *ns_labels = json_object();
	struct sm_k8s_pod pod = {
		.uid = "u1", .namespace = r->ns ? r->ns : "demo", .name = "p",
		.labels = pod_labels, .annotations = annotations, .host_network = r->host_network,
		.phase = r->phase ? r->phase : "Running", .deleting = r->deleting,
		.pod_ips = { "10.1.0.1" }, .n_pod_ips = r->no_ip ? 0 : 1,
	};
	struct sm_k8s_namespace ns = { .name = pod.namespace, .labels = ns_labels };
	struct sm_k8s_policy policy = { .agent_namespace = r->agent_ns, .system_namespaces = r->system_namespaces };

	if (r->pod_label)
		json_object_set_new(pod_labels, SM_K8S_DATAPLANE_LABEL, json_string(r->pod_label));
	if (r->extra_label)
		json_object_set_new(pod_labels, r->extra_label, json_string("istio.io-mesh-controller"));
	if (r->annotation)
		json_object_set_new(annotations, r->annotation, json_string("x"));
	if (r->ns_label)
		json_object_set_new(ns_labels, SM_K8S_DATAPLANE_LABEL, json_string(r->ns_label));
	*enrolled = sm_k8s_should_enroll(&pod, r->ns_unknown ? NULL : &ns, &policy, reason);
	json_decref(pod_labels);
	json_decref(annotations);
	json_decref(ns_labels);
}

static void table(void **state)
{
	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(rows); i++) {
		const struct row *r = &rows[i];
		enum sm_k8s_reason reason;
		bool enrolled;

		decide(r, &enrolled, &reason);
		if (reason != r->want)
			fail_msg("%s: got \"%s\", want \"%s\"", r->what, sm_k8s_reason_str(reason),
				 sm_k8s_reason_str(r->want));
		assert_int_equal(enrolled, r->want == SM_K8S_ENROLL_POD_LABEL || r->want == SM_K8S_ENROLL_NS_LABEL);
		assert_string_not_equal(sm_k8s_reason_str(reason), "unknown reason");
	}
}

/* A pod followed through relabels of itself and of its namespace, both ways. */
static void relabels(void **state)
{
	static const struct {
		const char *pod_label, *ns_label;
		bool enrolled;
	} steps[] = {
		{ NULL, NULL, false },              /* unlabelled */
		{ NULL, "sockmesh", true },         /* namespace labelled */
		{ "none", "sockmesh", false },      /* pod opts out */
		{ NULL, "sockmesh", true },         /* opt-out removed */
		{ NULL, NULL, false },              /* namespace unlabelled */
		{ "sockmesh", NULL, true },         /* pod labelled */
		{ "sockmesh", "ambient", true },    /* namespace moved to istio ambient: the pod's label wins */
		{ NULL, "ambient", false },         /* pod unlabelled */
	};

	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(steps); i++) {
		struct row r = { .what = "relabel", .pod_label = steps[i].pod_label, .ns_label = steps[i].ns_label };
		enum sm_k8s_reason reason;
		bool enrolled;

		decide(&r, &enrolled, &reason);
		if (enrolled != steps[i].enrolled)
			fail_msg("step %zu: enrolled %d, want %d (%s)", i, enrolled, steps[i].enrolled,
				 sm_k8s_reason_str(reason));
	}
}

/* No policy given: kube-system excluded, no agent namespace known; a NULL reason is allowed. */
static void defaults(void **state)
{
	json_t *labels = json_pack("{s:s}", SM_K8S_DATAPLANE_LABEL, "sockmesh"), *none = json_object();
	struct sm_k8s_pod pod = { .uid = "u", .namespace = "kube-system", .name = "p", .labels = labels,
				  .annotations = none, .phase = "", .pod_ips = { "10.0.0.1" }, .n_pod_ips = 1 };

	(void)state;
	assert_false(sm_k8s_should_enroll(&pod, NULL, NULL, NULL));
	pod.namespace = "demo";
	assert_true(sm_k8s_should_enroll(&pod, NULL, NULL, NULL));
	json_decref(labels);
	json_decref(none);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(table),
		cmocka_unit_test(relabels),
		cmocka_unit_test(defaults),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
