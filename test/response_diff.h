/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The in-place response reader (xds/response.h) against protobuf-c, for the differential test and its
 * fuzzer: both decode the same bytes, and the outcomes must agree. The reader's -ENOTSUP claims nothing
 * (those forms go to protobuf-c); 0 claims that protobuf-c decodes the bytes to the same fields, and
 * -EBADMSG that protobuf-c refuses them.
 */
#ifndef SOCKMESH_TEST_RESPONSE_DIFF_H
#define SOCKMESH_TEST_RESPONSE_DIFF_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"
#include "xds/response.h"

typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse diff_response;

static inline bool diff_strings(const char *what, size_t i, const char *a, const char *b, char *diff, size_t size)
{
	if (strcmp(a, b) == 0)
		return true;
	snprintf(diff, size, "%s %zu: '%.60s' against '%.60s'", what, i, a, b);
	return false;
}

static inline bool diff_any(size_t i, const Google__Protobuf__Any *a, const Google__Protobuf__Any *b, char *diff,
			    size_t size)
{
	if (!a || !b) {
		if (a == b)
			return true;
		snprintf(diff, size, "resource %zu: an Any on one side only", i);
		return false;
	}
	if (!diff_strings("type_url of resource", i, a->type_url, b->type_url, diff, size))
		return false;
	if (a->value.len != b->value.len || (a->value.data == NULL) != (b->value.data == NULL) ||
	    (a->value.len && memcmp(a->value.data, b->value.data, a->value.len) != 0)) {
		snprintf(diff, size, "resource %zu: value of %zu bytes against %zu", i, a->value.len, b->value.len);
		return false;
	}
	return true;
}

static inline bool diff_resource(size_t i, const Envoy__Service__Discovery__V3__Resource *a,
				 const Envoy__Service__Discovery__V3__Resource *b, char *diff, size_t size)
{
	if (!diff_strings("version of resource", i, a->version, b->version, diff, size) ||
	    !diff_strings("name of resource", i, a->name, b->name, diff, size) || !diff_any(i, a->resource, b->resource, diff, size))
		return false;
	if (a->n_aliases != b->n_aliases || (a->ttl == NULL) != (b->ttl == NULL) ||
	    (a->cache_control == NULL) != (b->cache_control == NULL)) {
		snprintf(diff, size, "resource %zu: aliases, ttl or cache_control differ", i);
		return false;
	}
	for (size_t k = 0; k < a->n_aliases; k++)
		if (!diff_strings("an alias of resource", i, a->aliases[k], b->aliases[k], diff, size))
			return false;
	return true;
}

/* Whether a and b agree on every field; else diff names the first difference. */
static inline bool diff_responses(const diff_response *a, const diff_response *b, char *diff, size_t size)
{
	if (!diff_strings("system_version_info", 0, a->system_version_info, b->system_version_info, diff, size) ||
	    !diff_strings("type_url", 0, a->type_url, b->type_url, diff, size) ||
	    !diff_strings("nonce", 0, a->nonce, b->nonce, diff, size))
		return false;
	if (a->n_resources != b->n_resources || a->n_removed_resources != b->n_removed_resources) {
		snprintf(diff, size, "%zu resources and %zu removed against %zu and %zu", a->n_resources,
			 a->n_removed_resources, b->n_resources, b->n_removed_resources);
		return false;
	}
	for (size_t i = 0; i < a->n_resources; i++)
		if (!diff_resource(i, a->resources[i], b->resources[i], diff, size))
			return false;
	for (size_t i = 0; i < a->n_removed_resources; i++)
		if (!diff_strings("removed name", i, a->removed_resources[i], b->removed_resources[i], diff, size))
			return false;
	return true;
}

/*
 * Decodes bytes both ways (the reader on a copy: it writes into its input) and checks that the outcomes
 * agree. Returns the reader's result; diff names a disagreement (empty when there is none).
 */
static inline int diff_decode(const uint8_t *bytes, size_t len, char *diff, size_t size)
{
	struct sm_pb_arena arena;
	ProtobufCMessage *expected = NULL;
	diff_response *got = NULL;
	char err[256];
	uint8_t *copy = malloc(len ? len : 1);

	diff[0] = '\0';
	if (!copy) {
		snprintf(diff, size, "out of memory");
		return -ENOMEM;
	}
	memcpy(copy, bytes, len);
	sm_pb_arena_init(&arena);
	int ret = sm_xds_response_read(&arena, copy, len, &got);
	int pbc = sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len,
			       &expected, err, sizeof(err));

	if (ret == 0 && pbc)
		snprintf(diff, size, "the reader took what protobuf-c refuses (%s)", err);
	else if (ret == 0)
		diff_responses(got, (const diff_response *)expected, diff, size);
	else if (ret == -EBADMSG && !pbc)
		snprintf(diff, size, "the reader refused what protobuf-c decodes");
	else if (ret != -EBADMSG && ret != -ENOTSUP)
		snprintf(diff, size, "the reader returned %d", ret);
	protobuf_c_message_free_unpacked(expected, NULL);
	sm_pb_arena_release(&arena);
	free(copy);
	return ret;
}

#endif
