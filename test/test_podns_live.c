/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The /proc resolver against the real /proc, as root: processes moved into a throwaway cgroup named
 * as kubelet's systemd driver names a burstable pod's slice, each in a throwaway network namespace.
 * The "pod" process holds the pod IP on its namespace's loopback (10.213.7.5, only inside it: no
 * traffic leaves); an older process of the pod sits in a namespace without it (passing through), a
 * younger one in this test's namespace. The resolver must pick the pod's process, enter its namespace
 * to see the IP, and refuse the pairing when the pod's IP is one no namespace holds. The children,
 * their namespaces and the cgroups go away in the teardown, also when a check fails.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup2.h"
#include "helpers.h"
#include "podns/podns.h"

#define POD_UID "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
#define POD_SLICE "kubepods-burstable-pod5f0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b.slice"
#define POD_IP "10.213.7.5"

enum { TRANSIT, POD, HOST, N_CHILDREN };

static struct {
	struct cgroup2 cgroup2;
	char parent[PATH_MAX + 32], pod[PATH_MAX + 128];
	pid_t child[N_CHILDREN];
	int hold[2]; /* the children live until its write end closes */
} live = {.hold = {-1, -1}};

/* In the child: a namespace of its own whose loopback is up and holds ip (NULL: none added). */
static int own_netns(const char *ip)
{
	struct ifreq ifr = {0};
	int fd, ret = -1;

	if (unshare(CLONE_NEWNET))
		return -1;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	strcpy(ifr.ifr_name, "lo");
	if (ip) {
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&ifr.ifr_addr;
		sin->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &sin->sin_addr);
		if (ioctl(fd, SIOCSIFADDR, &ifr))
			goto out;
	}
	if (ioctl(fd, SIOCGIFFLAGS, &ifr))
		goto out;
	ifr.ifr_flags |= IFF_UP;
	ret = ioctl(fd, SIOCSIFFLAGS, &ifr);
out:
	close(fd);
	return ret;
}

/* Starts a child (own namespace unless 'stay'), moves it into the pod's cgroup once it is ready. */
static pid_t start_child(bool stay, const char *ip)
{
	int ready[2];
	char byte = 0;
	pid_t pid;

	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(ready[0]);
		close(live.hold[1]);
		byte = stay || own_netns(ip) == 0 ? 'y' : 'n';
		if (write(ready[1], &byte, 1) != 1)
			_exit(1);
		(void)!read(live.hold[0], &byte, 1); /* returns at EOF: the test is over */
		_exit(0);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &byte, 1), 1);
	close(ready[0]);
	assert_int_equal(byte, 'y');

	char procs[PATH_MAX + 160], text[32];
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", live.pod);
	snprintf(text, sizeof(text), "%d\n", (int)pid);
	int fd = open(procs, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return pid;
}

static int teardown(void **state);

static int setup(void **state)
{
	if (cgroup2_open(&live.cgroup2)) {
		fprintf(stderr, "no cgroup2: %m\n");
		return -1;
	}
	snprintf(live.parent, sizeof(live.parent), "%s/sm-podns-%d", live.cgroup2.path, (int)getpid());
	snprintf(live.pod, sizeof(live.pod), "%s/%s", live.parent, POD_SLICE);
	if (mkdir(live.parent, 0755) || mkdir(live.pod, 0755) || pipe2(live.hold, O_CLOEXEC)) {
		fprintf(stderr, "making %s: %m\n", live.pod);
		teardown(state);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (live.hold[1] >= 0)
		close(live.hold[1]);
	for (int i = 0; i < N_CHILDREN; i++) {
		if (live.child[i] > 0) {
			kill(live.child[i], SIGKILL);
			waitpid(live.child[i], NULL, 0);
		}
	}
	if (live.hold[0] >= 0)
		close(live.hold[0]);
	/* an emptied cgroup can take a moment to be removable */
	for (int i = 0; i < 50 && rmdir(live.pod) && errno == EBUSY; i++)
		usleep(20000);
	rmdir(live.parent);
	cgroup2_close(&live.cgroup2);
	return 0;
}

static void resolves_the_pod_and_refuses_a_missing_ip(void **state)
{
	(void)state;
	struct podns_result r;
	struct stat want, got;
	char path[64];

	/* start times count clock ticks: 30 ms apart keeps TRANSIT older than POD */
	live.child[TRANSIT] = start_child(false, NULL);
	usleep(30000);
	live.child[POD] = start_child(false, POD_IP);
	live.child[HOST] = start_child(true, NULL);

	const char *ips[] = {"fd00:213::5", POD_IP};
	assert_int_equal(podns_find("/proc", POD_UID, ips, 2, &r), 0);
	assert_string_equal(podns_outcome_name(r.outcome), podns_outcome_name(PODNS_FOUND));
	assert_int_equal(r.pid, live.child[POD]);
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)live.child[POD]);
	assert_int_equal(stat(path, &want), 0);
	assert_int_equal(fstat(r.netns_fd, &got), 0);
	assert_true(want.st_dev == got.st_dev && want.st_ino == got.st_ino);
	close(r.netns_fd);

	/* no namespace holds this IP: refused, naming the oldest process of the pod */
	const char *absent[] = {"10.213.7.6"};
	assert_int_equal(podns_find("/proc", POD_UID, absent, 1, &r), 0);
	assert_string_equal(podns_outcome_name(r.outcome), podns_outcome_name(PODNS_IP_MISSING));
	assert_int_equal(r.netns_fd, -1);
	assert_int_equal(r.pid, live.child[TRANSIT]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(resolves_the_pod_and_refuses_a_missing_ip),
	};

	return cmocka_run_group_tests_name("podns-live", tests, setup, teardown);
}
