/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The input as a DeltaDiscoveryResponse, read by the agent's in-place reader and by protobuf-c: when
 * the reader decodes it, protobuf-c must decode the same fields; when the reader refuses it (-EBADMSG),
 * protobuf-c must refuse it too. Forms the reader leaves to protobuf-c (-ENOTSUP) claim nothing. The
 * reader must never read outside the input or write anywhere but its own copy (ASan).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../response_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char diff[512];

	diff_decode(data, size, diff, sizeof(diff));
	if (diff[0]) {
		fprintf(stderr, "fuzz_xds_response: %s\n", diff);
		__builtin_trap();
	}
	return 0;
}
