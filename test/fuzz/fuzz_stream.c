/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The input as a recorded stream (what `sockmesh replay` and `sockmesh print` read): framing must tell a
 * clean end from a cut or corrupt frame, never hand out bytes past the stream, and each framed message
 * must decode and print, or say why it does not.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto/proto.h"

#define ERR_SIZE 256

static void decode_and_print(const uint8_t *msg, size_t len)
{
	ProtobufCMessage *response = NULL;
	char err[ERR_SIZE] = "";

	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, msg, len, &response,
			 err, sizeof(err))) {
		if (!err[0] || response)
			__builtin_trap();
		return;
	}
	json_t *json = sm_pb_to_json(response);
	if (!json)
		__builtin_trap(); /* NULL means out of memory, which the fuzzer never is */
	char *text = json_dumps(json, JSON_COMPACT);
	if (!text)
		__builtin_trap();
	free(text);
	json_decref(json);
	protobuf_c_message_free_unpacked(response, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sm_stream_reader reader;
	size_t frames = 0;

	sm_stream_init(&reader, data, size);
	for (;;) {
		const uint8_t *msg = (const uint8_t *)"";
		size_t len = 1, before = reader.offset;
		char err[ERR_SIZE] = "";

		if (sm_stream_next(&reader, &msg, &len, err, sizeof(err))) {
			if (!err[0])
				__builtin_trap();
			break;
		}
		if (!msg) {
			/* a clean end is the end of the data, and nothing else */
			if (len || reader.offset != size)
				__builtin_trap();
			break;
		}
		/* each frame lies inside the stream, after the previous one, and moves the reader on */
		if (msg < data + before || len > (size_t)(data + size - msg) || reader.offset <= before ||
		    reader.index != ++frames)
			__builtin_trap();
		decode_and_print(msg, len);
	}
	sm_stream_close(&reader);
	return 0;
}
