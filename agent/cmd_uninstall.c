/* SPDX-License-Identifier: Apache-2.0 */
/* sockmesh uninstall: detaches every pinned link and unpins every map. */
#include <getopt.h>
#include <stdio.h>

#include "agent/commands.h"
#include "datapath/datapath.h"

static void uninstall_usage(FILE *out)
{
	fprintf(out, "Usage: sockmesh uninstall [--pin-dir PATH]\n\n"
		     "Detaches the datapath's programs from their cgroup and unpins its maps: traffic is no\n"
		     "longer steered. Refused while an agent runs on the pin directory (stop it first) and for\n"
		     "a path that is not a sockmesh pin directory on bpffs.\n\n"
		     "  --pin-dir PATH  where the datapath is pinned (default " SM_DEFAULT_PIN_DIR ")\n");
}

int cmd_uninstall(int argc, char **argv)
{
	static const struct option options[] = {
		{ "pin-dir", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *pin_dir = SM_DEFAULT_PIN_DIR;
	struct sm_pin_lock *lock = NULL;
	char err[512];
	int opt;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'p': pin_dir = optarg; break;
		case 'h': uninstall_usage(stdout); return 0;
		default: uninstall_usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		uninstall_usage(stderr);
		return 2;
	}
	/* The lock first: an agent serving this pin directory would attach again; stop it instead. */
	int ret = sm_pin_dir_lock(pin_dir, &lock, err, sizeof(err));
	if (!ret)
		ret = sm_datapath_uninstall(pin_dir, err, sizeof(err));
	sm_pin_dir_unlock(lock);
	if (ret) {
		fprintf(stderr, "sockmesh uninstall: %s\n", err);
		return 1;
	}
	printf("sockmesh: detached and unpinned everything under %s\n", pin_dir);
	return 0;
}
