/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node identity istiod expects of an ambient node agent: the "ztunnel" node type in the id, and
 * metadata with string values (NAME, NAMESPACE, INSTANCE_IPS, NODE_NAME, CLUSTER_ID and ISTIO_META_*).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/struct.pb-c.h"
#include "xds/xds.h"

#define META_PREFIX "ISTIO_META_"
#define DEFAULT_CLUSTER_ID "Kubernetes"

void sm_xds_node_clear(struct sm_xds_node *node)
{
	free(node->instance_ip);
	free(node->pod_name);
	free(node->pod_namespace);
	free(node->node_name);
	free(node->cluster_id);
	for (size_t i = 0; i < node->n_extra; i++) {
		free(node->extra[i].key);
		free(node->extra[i].value);
	}
	free(node->extra);
	*node = (struct sm_xds_node){ 0 };
}

static int set_field(char **field, const char *value)
{
	char *copy = strdup(value);

	if (!copy)
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

static int add_extra(struct sm_xds_node *node, const char *key, size_t key_len, const char *value)
{
	struct sm_xds_metadata *extra = realloc(node->extra, (node->n_extra + 1) * sizeof(*extra));

	if (!extra)
		return -ENOMEM;
	node->extra = extra;
	extra[node->n_extra] = (struct sm_xds_metadata){ .key = strndup(key, key_len), .value = strdup(value) };
	if (!extra[node->n_extra].key || !extra[node->n_extra].value) {
		free(extra[node->n_extra].key);
		free(extra[node->n_extra].value);
		return -ENOMEM;
	}
	node->n_extra++;
	return 0;
}

int sm_xds_node_from_env(struct sm_xds_node *node, char *const *envp)
{
	static const struct {
		const char *name;
		size_t offset;
	} fields[] = {
		{ "INSTANCE_IP", offsetof(struct sm_xds_node, instance_ip) },
		{ "POD_NAME", offsetof(struct sm_xds_node, pod_name) },
		{ "POD_NAMESPACE", offsetof(struct sm_xds_node, pod_namespace) },
		{ "NODE_NAME", offsetof(struct sm_xds_node, node_name) },
		{ "CLUSTER_ID", offsetof(struct sm_xds_node, cluster_id) },
	};
	int err = 0;

	for (char *const *env = envp; *env && !err; env++) {
		const char *eq = strchr(*env, '=');
		if (!eq)
			continue;
		size_t name_len = (size_t)(eq - *env);
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
			if (strlen(fields[i].name) == name_len && strncmp(*env, fields[i].name, name_len) == 0)
				err = set_field((char **)((char *)node + fields[i].offset), eq + 1);
		}
		if (!err && name_len > strlen(META_PREFIX) && strncmp(*env, META_PREFIX, strlen(META_PREFIX)) == 0)
			err = add_extra(node, *env + strlen(META_PREFIX), name_len - strlen(META_PREFIX), eq + 1);
	}
	if (!err && !node->cluster_id)
		err = set_field(&node->cluster_id, DEFAULT_CLUSTER_ID);
	return err;
}

static const char *or_empty(const char *text)
{
	return text ? text : "";
}

size_t sm_xds_node_id(const struct sm_xds_node *node, char *out, size_t size)
{
	int n = snprintf(out, size, "ztunnel~%s~%s.%s~%s.svc.cluster.local", or_empty(node->instance_ip),
			 or_empty(node->pod_name), or_empty(node->pod_namespace), or_empty(node->pod_namespace));
	return n < 0 ? 0 : (size_t)n;
}

size_t sm_xds_node_missing(const struct sm_xds_node *node, char *out, size_t size)
{
	const struct {
		const char *name;
		const char *value;
	} needed[] = {
		{ "INSTANCE_IP", node->instance_ip },
		{ "POD_NAME", node->pod_name },
		{ "POD_NAMESPACE", node->pod_namespace },
		{ "NODE_NAME", node->node_name },
	};
	size_t missing = 0, used = 0;

	if (size)
		out[0] = '\0';
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (needed[i].value && needed[i].value[0])
			continue;
		if (used + 1 < size) {
			int n = snprintf(out + used, size - used, "%s%s", missing ? ", " : "", needed[i].name);
			used = n > 0 && used + (size_t)n < size ? used + (size_t)n : size - 1;
		}
		missing++;
	}
	return missing;
}

static Google__Protobuf__Struct__FieldsEntry *string_entry(const char *key, const char *value)
{
	Google__Protobuf__Struct__FieldsEntry *entry = malloc(sizeof(*entry));
	Google__Protobuf__Value *string = malloc(sizeof(*string));

	if (!entry || !string) {
		free(entry);
		free(string);
		return NULL;
	}
	google__protobuf__struct__fields_entry__init(entry);
	google__protobuf__value__init(string);
	string->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	string->string_value = strdup(value);
	entry->key = strdup(key);
	entry->value = string;
	if (!string->string_value || !entry->key) {
		free(string->string_value);
		free(entry->key);
		free(string);
		free(entry);
		return NULL;
	}
	return entry;
}

void sm_xds_node_message_free(Envoy__Service__Discovery__V3__Node *message)
{
	if (!message)
		return;
	if (message->metadata) {
		for (size_t i = 0; i < message->metadata->n_fields; i++) {
			Google__Protobuf__Struct__FieldsEntry *entry = message->metadata->fields[i];
			free(entry->value->string_value);
			free(entry->value);
			free(entry->key);
			free(entry);
		}
		free(message->metadata->fields);
		free(message->metadata);
	}
	free(message->id);
	free(message);
}

Envoy__Service__Discovery__V3__Node *sm_xds_node_message(const struct sm_xds_node *node)
{
	const char *const keys[] = { "NAME", "NAMESPACE", "INSTANCE_IPS", "NODE_NAME", "CLUSTER_ID" };
	const char *const values[] = { node->pod_name, node->pod_namespace, node->instance_ip, node->node_name,
				       node->cluster_id };
	size_t n_fixed = sizeof(keys) / sizeof(keys[0]);
	Envoy__Service__Discovery__V3__Node *message = calloc(1, sizeof(*message));
	char id[1024];

	if (!message)
		return NULL;
	envoy__service__discovery__v3__node__init(message);
	sm_xds_node_id(node, id, sizeof(id));
	message->id = strdup(id);
	message->metadata = calloc(1, sizeof(*message->metadata));
	if (!message->id || !message->metadata)
		goto fail;
	google__protobuf__struct__init(message->metadata);
	message->metadata->fields = calloc(n_fixed + node->n_extra, sizeof(void *));
	if (!message->metadata->fields)
		goto fail;
	for (size_t i = 0; i < n_fixed + node->n_extra; i++) {
		const char *key = i < n_fixed ? keys[i] : node->extra[i - n_fixed].key;
		const char *value = i < n_fixed ? values[i] : node->extra[i - n_fixed].value;
		if (i < n_fixed && !value)
			continue;
		Google__Protobuf__Struct__FieldsEntry *entry = string_entry(key, value);
		if (!entry)
			goto fail;
		message->metadata->fields[message->metadata->n_fields++] = entry;
	}
	return message;
fail:
	sm_xds_node_message_free(message);
	return NULL;
}
