/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The input as a DeltaDiscoveryResponse from istiod: decoding, the JSON printer and each resource's Any
 * must never crash, leak or read out of bounds, and a message that does not decode must say why (the
 * reason goes into the NACK, so an empty one leaves istiod's operators blind).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto/proto.h"

#define ERR_SIZE 256

/* The printer returns NULL only when out of memory, which the fuzzer's allocator never is. */
static void print_json(const ProtobufCMessage *msg)
{
	json_t *json = sm_pb_to_json(msg);

	if (!json)
		__builtin_trap();
	char *text = json_dumps(json, JSON_COMPACT);
	if (!text)
		__builtin_trap();
	free(text);
	json_decref(json);
}

/* Decodes bytes as desc; on success prints it, on failure insists on a reason. */
static void decode_and_print(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t size)
{
	ProtobufCMessage *msg = NULL;
	char err[ERR_SIZE] = "";

	if (sm_pb_decode(desc, data, size, &msg, err, sizeof(err))) {
		if (!err[0] || msg)
			__builtin_trap();
		return;
	}
	print_json(msg);
	protobuf_c_message_free_unpacked(msg, NULL);
}

static void decode_resources(const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response)
{
	for (size_t i = 0; i < response->n_resources; i++) {
		const Google__Protobuf__Any *any = response->resources[i]->resource;
		const ProtobufCMessageDescriptor *desc;

		if (!any)
			continue;
		desc = sm_pb_find_type(any->type_url);
		if (desc)
			decode_and_print(desc, any->value.data, any->value.len);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ProtobufCMessage *msg = NULL;
	char err[ERR_SIZE] = "";

	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, data, size, &msg,
			 err, sizeof(err))) {
		if (!err[0] || msg)
			__builtin_trap();
		return 0;
	}
	print_json(msg);
	decode_resources((const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *)msg);
	protobuf_c_message_free_unpacked(msg, NULL);
	return 0;
}
