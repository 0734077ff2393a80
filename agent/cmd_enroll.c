/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockmesh enroll / unenroll --netns PATH: puts a network namespace's cookie into (or takes it out of)
 * the pinned sm_enrolled map, so that the datapath steers (or stops steering) the sockets made in that
 * namespace, for workloads in plain network namespaces outside Kubernetes.
 *
 * No pin-directory lock: the running agent holds it for its whole life, and enrolling must work beside
 * it (that is its use). It is safe without one: it writes one entry of a map the agent never rewrites
 * from its model (the agent only carries the map over on a layout change), and a single map update is
 * atomic in the kernel.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "agent/commands.h"
#include "datapath/datapath.h"
#include "netns/netns.h"

static void enroll_usage(FILE *out, bool enroll)
{
	fprintf(out,
		"Usage: sockmesh %s --netns PATH [--pin-dir PATH]\n\n"
		"%s\n"
		"No agent needs to run; when one does, this works beside it.\n\n"
		"  --netns PATH    the network namespace: /run/netns/NAME, /proc/PID/ns/net, ...\n"
		"  --pin-dir PATH  where the datapath is pinned (default " SM_DEFAULT_PIN_DIR ")\n",
		enroll ? "enroll" : "unenroll",
		enroll ? "Enrolls a network namespace: the datapath steers the connections made in it (its cookie\n"
			 "goes into the pinned sm_enrolled map). 'sockmesh dump' lists what is enrolled."
		       : "Unenrolls a network namespace: the datapath no longer steers the connections made in it.\n"
			 "Connections already made keep their destination.");
}

static int enroll_command(int argc, char **argv, bool enroll)
{
	static const struct option options[] = {
		{ "netns", required_argument, NULL, 'n' },
		{ "pin-dir", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *pin_dir = SM_DEFAULT_PIN_DIR, *netns = NULL, *verb = enroll ? "enroll" : "unenroll";
	struct sm_datapath *dp;
	uint64_t cookie;
	char err[512];
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'n': netns = optarg; break;
		case 'p': pin_dir = optarg; break;
		case 'h': enroll_usage(stdout, enroll); return 0;
		default: enroll_usage(stderr, enroll); return 2;
		}
	}
	if (optind != argc || !netns) {
		enroll_usage(stderr, enroll);
		return 2;
	}
	/* the cookie first: a namespace we cannot read changes nothing */
	if ((ret = sm_netns_cookie_at(netns, &cookie))) {
		fprintf(stderr, "sockmesh %s: cannot read the cookie of network namespace %s: %s\n", verb, netns,
			strerror(-ret));
		return 1;
	}
	if (sm_datapath_open_pinned(pin_dir, &dp, err, sizeof(err))) {
		fprintf(stderr, "sockmesh %s: %s\n", verb, err);
		return 1;
	}
	ret = sm_datapath_enroll(dp, cookie, enroll);
	sm_datapath_close(dp);
	if (ret) {
		fprintf(stderr, "sockmesh %s: writing cookie %llu into %s/sm_enrolled failed: %s\n", verb,
			(unsigned long long)cookie, pin_dir, strerror(-ret));
		return 1;
	}
	printf("sockmesh: %s network namespace %s (cookie %llu)\n", enroll ? "enrolled" : "unenrolled", netns,
	       (unsigned long long)cookie);
	return 0;
}

int cmd_enroll(int argc, char **argv)
{
	return enroll_command(argc, argv, true);
}

int cmd_unenroll(int argc, char **argv)
{
	return enroll_command(argc, argv, false);
}
