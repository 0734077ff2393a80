/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The input as an istio.workload.Address, read by the Address reader and by protobuf-c: when the reader
 * takes it, protobuf-c must decode the same fields; what the reader leaves (-ENOTSUP) claims nothing, and
 * sm_pb_decode_in must give protobuf-c's verdict either way. The reader must never read outside the
 * input (ASan).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../address_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char diff[512];

	diff_address(data, size, diff, sizeof(diff));
	if (diff[0]) {
		fprintf(stderr, "fuzz_address: %s\n", diff);
		__builtin_trap();
	}
	return 0;
}
