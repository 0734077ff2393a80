/* SPDX-License-Identifier: Apache-2.0 */
/* sockmesh convert: ztunnel's local config (or a ztunnel config dump) into a recorded xDS stream. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/commands.h"
#include "xds/xds.h"

static void convert_usage(FILE *out)
{
	fprintf(out, "Usage: sockmesh convert CONFIG OUT\n\n"
		     "Reads CONFIG, ztunnel's local config (the LOCAL_XDS_PATH YAML: workloads, services,\n"
		     "policies) or a ztunnel config dump (JSON), and writes OUT, a recorded stream of two\n"
		     "DeltaDiscoveryResponses (Address, then Authorization) as istiod would send them, for\n"
		     "'sockmesh replay', the mock server and tests.\n");
}

int cmd_convert(int argc, char **argv)
{
	static const struct option options[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
	uint8_t *address = NULL, *authorization = NULL;
	size_t address_len, authorization_len;
	char err[512];
	int opt, fd, status = 1;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (opt == 'h') {
			convert_usage(stdout);
			return 0;
		}
		convert_usage(stderr);
		return 2;
	}
	if (optind != argc - 2) {
		convert_usage(stderr);
		return 2;
	}
	if (sm_local_config_read(argv[optind], &address, &address_len, &authorization, &authorization_len, err,
				 sizeof(err))) {
		fprintf(stderr, "sockmesh convert: %s\n", err);
		return 1;
	}
	fd = open(argv[optind + 1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "sockmesh convert: %s: %s\n", argv[optind + 1], strerror(errno));
	} else if (sm_stream_append(fd, address, address_len) || sm_stream_append(fd, authorization, authorization_len)) {
		fprintf(stderr, "sockmesh convert: writing %s: %s\n", argv[optind + 1], strerror(errno));
	} else {
		status = 0;
	}
	if (fd >= 0)
		close(fd);
	free(address);
	free(authorization);
	return status;
}
