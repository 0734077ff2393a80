/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The input as ztunnel's local config or config dump (YAML or JSON, LOCAL_XDS_PATH): reading it must
 * never crash or leak; a file it refuses must come with a reason; a file it accepts must give two
 * responses that decode, since the agent applies them as if istiod had sent them, and that name each
 * resource once (the file is the whole state: a second definition would silently replace the first).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "xds/xds.h"

#define ERR_SIZE 512

/* One memory file for the whole run, rewritten for each input: no disk, nothing left behind. */
static int config_fd = -1;
static char config_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	config_fd = memfd_create("fuzz-localconfig", MFD_CLOEXEC);
	if (config_fd < 0) {
		perror("memfd_create");
		abort();
	}
	snprintf(config_path, sizeof(config_path), "/proc/self/fd/%d", config_fd);
	return 0;
}

static void write_config(const uint8_t *data, size_t size)
{
	size_t done = 0;

	if (ftruncate(config_fd, 0))
		abort();
	while (done < size) {
		ssize_t n = pwrite(config_fd, data + done, size - done, (off_t)done);
		if (n <= 0)
			abort();
		done += (size_t)n;
	}
}

/* A response the reader packed itself must decode, and name each resource once. */
static void check_decodes(const uint8_t *bytes, size_t len)
{
	ProtobufCMessage *msg = NULL;
	char err[ERR_SIZE] = "";

	if (!bytes)
		__builtin_trap();
	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len, &msg, err,
			 sizeof(err))) {
		fprintf(stderr, "a packed response does not decode: %s\n", err);
		__builtin_trap();
	}
	const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response = (const void *)msg;
	for (size_t i = 0; i < response->n_resources; i++) {
		for (size_t j = 0; j < i; j++) {
			if (strcmp(response->resources[i]->name, response->resources[j]->name) == 0) {
				fprintf(stderr, "'%s' is in the response twice\n", response->resources[i]->name);
				__builtin_trap();
			}
		}
	}
	protobuf_c_message_free_unpacked(msg, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *address = NULL, *authorization = NULL;
	size_t address_len = 0, authorization_len = 0;
	char err[ERR_SIZE] = "";

	write_config(data, size);
	if (sm_local_config_read(config_path, &address, &address_len, &authorization, &authorization_len, err,
				 sizeof(err))) {
		if (!err[0])
			__builtin_trap();
	} else {
		check_decodes(address, address_len);
		check_decodes(authorization, authorization_len);
	}
	free(address);
	free(authorization);
	return 0;
}
