/* SPDX-License-Identifier: Apache-2.0 */
/* sockmesh version (also 'sockmesh --version'). */
#include <getopt.h>
#include <stdio.h>

#include "agent/commands.h"

static void version_usage(FILE *out)
{
	fprintf(out, "Usage: sockmesh version\n\n"
		     "Prints the version of sockmesh ('sockmesh --version' does the same).\n");
}

int cmd_version(int argc, char **argv)
{
	static const struct option options[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
	int opt;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (opt == 'h') {
			version_usage(stdout);
			return 0;
		}
		version_usage(stderr);
		return 2;
	}
	if (optind != argc) {
		version_usage(stderr);
		return 2;
	}
	printf("sockmesh %s\n", SOCKMESH_VERSION);
	return 0;
}
