/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes the benchmarks' generated mesh (bench/snapshot.h) as a recorded stream: one Address response
 * with WORKLOADS workloads and SERVICES services, then an empty Authorization response.
 * Usage: gen_snapshot OUT WORKLOADS SERVICES
 */
#include <fcntl.h>
#include <unistd.h>

#include "bench/snapshot.h"

int main(int argc, char **argv)
{
	struct response authz;
	size_t len, authz_len;

	if (argc != 4) {
		fprintf(stderr, "usage: gen_snapshot OUT WORKLOADS SERVICES\n");
		return 2;
	}
	uint8_t *snapshot = make_snapshot(atoi(argv[2]), atoi(argv[3]), &len);
	response_init(&authz, SM_TYPE_URL_AUTHORIZATION);
	uint8_t *authz_bytes = pack_response(&authz, &authz_len);
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || sm_stream_append(fd, snapshot, len) || sm_stream_append(fd, authz_bytes, authz_len)) {
		perror("gen_snapshot");
		return 1;
	}
	close(fd);
	response_free(&authz);
	free(snapshot);
	free(authz_bytes);
	return 0;
}
