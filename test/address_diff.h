/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Address reader (sm_pb_read_address) against protobuf-c, for its differential test and fuzzer:
 * both decode the same bytes. The reader's -ENOTSUP claims nothing (those forms go to protobuf-c); 0
 * claims that protobuf-c decodes the bytes to the same fields, which the two messages packed again
 * show (every field of ours, and that the reader kept no unknown one).
 */
#ifndef SOCKMESH_TEST_ADDRESS_DIFF_H
#define SOCKMESH_TEST_ADDRESS_DIFF_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

/* Whether a and b pack to the same bytes; else diff says where they part. */
static inline void diff_packed(const ProtobufCMessage *a, const ProtobufCMessage *b, char *diff, size_t size)
{
	size_t len_a = protobuf_c_message_get_packed_size(a), len_b = protobuf_c_message_get_packed_size(b);
	uint8_t *bytes_a = malloc(len_a + 1), *bytes_b = malloc(len_b + 1);

	if (!bytes_a || !bytes_b) {
		snprintf(diff, size, "out of memory");
	} else if (len_a != len_b) {
		snprintf(diff, size, "packed again: %zu bytes against protobuf-c's %zu", len_a, len_b);
	} else {
		protobuf_c_message_pack(a, bytes_a);
		protobuf_c_message_pack(b, bytes_b);
		for (size_t i = 0; i < len_a; i++) {
			if (bytes_a[i] != bytes_b[i]) {
				snprintf(diff, size, "packed again: byte %zu is 0x%02x against protobuf-c's 0x%02x", i,
					 bytes_a[i], bytes_b[i]);
				break;
			}
		}
	}
	free(bytes_a);
	free(bytes_b);
}

/*
 * Decodes bytes with the reader and with protobuf-c, and what sm_pb_decode_in makes of them, which
 * must be protobuf-c's verdict whatever the reader says. Returns the reader's result; diff names a
 * disagreement (empty when there is none). The reader gets an exact copy, so that ASan sees a read past
 * the end.
 */
static inline int diff_address(const uint8_t *bytes, size_t len, char *diff, size_t size)
{
	const ProtobufCMessageDescriptor *desc = &istio__workload__address__descriptor;
	struct sm_pb_arena arena;
	Istio__Workload__Address *got = NULL;
	ProtobufCMessage *decoded = NULL;
	char err[256];
	uint8_t *copy = malloc(len ? len : 1);

	diff[0] = '\0';
	if (!copy) {
		snprintf(diff, size, "out of memory");
		return -ENOMEM;
	}
	memcpy(copy, bytes, len);
	sm_pb_arena_init(&arena);
	int ret = sm_pb_read_address(&arena, copy, len, &got);
	ProtobufCMessage *expected = protobuf_c_message_unpack(desc, NULL, len, bytes);

	if (ret == 0 && !expected)
		snprintf(diff, size, "the reader took what protobuf-c refuses");
	else if (ret == 0)
		diff_packed(&got->base, expected, diff, size);
	else if (ret != -ENOTSUP)
		snprintf(diff, size, "the reader returned %d", ret);
	if (!diff[0]) {
		int dispatched = sm_pb_decode_in(&arena, desc, copy, len, &decoded, err, sizeof(err));
		if ((dispatched == 0) != (expected != NULL))
			snprintf(diff, size, "sm_pb_decode_in returned %d where protobuf-c %s", dispatched,
				 expected ? "decodes" : "refuses");
		else if (expected)
			diff_packed(decoded, expected, diff, size);
	}
	protobuf_c_message_free_unpacked(expected, NULL);
	sm_pb_arena_release(&arena);
	free(copy);
	return ret;
}

#endif
