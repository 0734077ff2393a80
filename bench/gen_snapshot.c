/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes the benchmarks' generated mesh (bench/snapshot.h) as a recorded stream: one Address response
 * with WORKLOADS workloads and SERVICES services, then an empty Authorization response.
 * Usage: gen_snapshot OUT WORKLOADS SERVICES
 */
#include <string.h>

#include "bench/snapshot.h"

int main(int argc, char **argv)
{
	int err;

	if (argc != 4) {
		fprintf(stderr, "usage: gen_snapshot OUT WORKLOADS SERVICES\n");
		return 2;
	}
	err = write_snapshot_stream(argv[1], atoi(argv[2]), atoi(argv[3]), 0);
	if (err) {
		fprintf(stderr, "gen_snapshot: writing %s: %s\n", argv[1], strerror(-err));
		return 1;
	}
	return 0;
}
