// SPDX-License-Identifier: Apache-2.0
/*
 * bench/run's floor: attaches a pinned sk_lookup program to the calling process's network namespace
 * and pins the link, as the agent guards a namespace (bpftool attaches cgroup programs, not these).
 * Removing the link's pin detaches it.
 *
 *   netns_link PROGRAM_PIN LINK_PIN   (run inside the namespace, e.g. with nsenter --net)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

int main(int argc, char **argv)
{
	int prog = -1, netns = -1, link = -1, ret = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: netns_link PROGRAM_PIN LINK_PIN\n");
		return 2;
	}
	prog = bpf_obj_get(argv[1]);
	if (prog < 0) {
		fprintf(stderr, "netns_link: %s: %s\n", argv[1], strerror(errno));
		goto out;
	}
	netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (netns < 0) {
		fprintf(stderr, "netns_link: this network namespace: %s\n", strerror(errno));
		goto out;
	}
	link = bpf_link_create(prog, netns, BPF_SK_LOOKUP, NULL);
	if (link < 0) {
		fprintf(stderr, "netns_link: attaching %s to this network namespace: %s\n", argv[1], strerror(errno));
		goto out;
	}
	if (bpf_obj_pin(link, argv[2])) {
		fprintf(stderr, "netns_link: pinning %s: %s\n", argv[2], strerror(errno)); /* closing detaches it */
		goto out;
	}
	ret = 0;
out:
	if (link >= 0)
		close(link);
	if (netns >= 0)
		close(netns);
	if (prog >= 0)
		close(prog);
	return ret;
}
