/* SPDX-License-Identifier: Apache-2.0 */
/* sockmesh uninstall: detaches every pinned link and unpins every map; with --cni-conf-dir, sockmesh-cni too. */
#include <getopt.h>
#include <stdio.h>

#include "agent/cni_install.h"
#include "agent/commands.h"
#include "datapath/datapath.h"

static void uninstall_usage(FILE *out)
{
	fprintf(out, "Usage: sockmesh uninstall [--pin-dir PATH] [--cni-conf-dir DIR [--cni-bin-dir DIR]]\n\n"
		     "Detaches the datapath's programs from their cgroup and unpins its maps: traffic is no\n"
		     "longer steered. Refused while an agent runs on the pin directory (stop it first) and for\n"
		     "a path that is not a sockmesh pin directory on bpffs. With --cni-conf-dir, first takes\n"
		     "sockmesh-cni's entry out of the CNI config there, then its binary out of --cni-bin-dir.\n\n"
		     "  --pin-dir PATH      where the datapath is pinned (default " SM_DEFAULT_PIN_DIR ")\n"
		     "  --cni-conf-dir DIR  the CNI config directory sockmesh run --cni-conf-dir installed into\n"
		     "  --cni-bin-dir DIR   where sockmesh-cni's binary is (default " CNI_DEFAULT_BIN_DIR ")\n");
}

int cmd_uninstall(int argc, char **argv)
{
	static const struct option options[] = {
		{ "pin-dir", required_argument, NULL, 'p' },
		{ "cni-conf-dir", required_argument, NULL, 'C' },
		{ "cni-bin-dir", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *pin_dir = SM_DEFAULT_PIN_DIR, *cni_conf_dir = NULL, *cni_bin_dir = NULL;
	struct sm_pin_lock *lock = NULL;
	char err[512];
	int opt;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'p': pin_dir = optarg; break;
		case 'C': cni_conf_dir = optarg; break;
		case 'B': cni_bin_dir = optarg; break;
		case 'h': uninstall_usage(stdout); return 0;
		default: uninstall_usage(stderr); return 2;
		}
	}
	if (optind != argc || (cni_bin_dir && !cni_conf_dir)) {
		if (cni_bin_dir && !cni_conf_dir)
			fprintf(stderr, "sockmesh uninstall: --cni-bin-dir needs --cni-conf-dir\n\n");
		uninstall_usage(stderr);
		return 2;
	}
	/* The lock first: an agent serving this pin directory would attach again; stop it instead. */
	int ret = sm_pin_dir_lock(pin_dir, &lock, err, sizeof(err));
	/* sockmesh-cni first: new pods stop calling the plugin before the datapath goes */
	if (!ret && cni_conf_dir) {
		ret = cni_uninstall(cni_conf_dir, cni_bin_dir ? cni_bin_dir : CNI_DEFAULT_BIN_DIR, err, sizeof(err));
		if (!ret)
			printf("sockmesh: sockmesh-cni's entry and binary removed\n");
	}
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
