/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The /proc resolver (podns/podns.h) without privileges: every cgroup-line form kubelet, containerd,
 * CRI-O and cgroup namespaces produce, and fake procfs trees built in this program's temporary
 * directory. Their processes' ns/net are symlinks to this test's own network namespace (entered
 * without setns), to its mount namespace (not a network one), or to a regular file standing for the
 * host's; the pod IP is an address this namespace really holds. test_podns_live.c enters real ones.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "podns/podns.h"
#include "test_tmpdir.h"

#define U "2c48913c-b29f-11e7-9350-020968147796"
#define U_ "2c48913c_b29f_11e7_9350_020968147796"
#define V "72f7f152-440c-66ac-9084-e0fc1d8a910c"

/* ---- cgroup lines ---- */

struct line_case {
	const char *what, *text, *uid; /* uid NULL: expect ret */
	int ret;
};

static const struct line_case line_cases[] = {
	{"v2, systemd driver, containerd, burstable",
	 "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" U_ ".slice/cri-containerd-9bca8d63d5fa.scope\n",
	 U, 0},
	{"v2, systemd driver, CRI-O, besteffort",
	 "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" U_ ".slice/crio-45490e76e087.scope\n", U, 0},
	{"v2, systemd driver, guaranteed", "0::/kubepods.slice/kubepods-pod" U_ ".slice/cri-containerd-abc.scope", U, 0},
	{"v2, a process in the pod's own slice", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" U_ ".slice\n",
	 U, 0},
	{"v2, cgroupfs driver, burstable", "0::/kubepods/burstable/pod" U "/9bca8d63d5fa610783847915bcff0ecac12\n", U, 0},
	{"v2, cgroupfs driver, guaranteed", "0::/kubepods/pod" U "/9bca8d63\n", U, 0},
	{"v2, cgroupfs driver, nested in docker (kind)", "0::/docker/8d461fa57657/kubepods/besteffort/pod" U "/aff34703e5e1\n",
	 U, 0},
	{"v1, cgroupfs driver, every hierarchy",
	 "12:memory:/kubepods/besteffort/pod" U "/aff34703\n11:cpu,cpuacct:/kubepods/besteffort/pod" U
	 "/aff34703\n1:name=systemd:/kubepods/besteffort/pod" U "/aff34703\n0::/\n",
	 U, 0},
	{"v1, systemd driver, containerd's colon form",
	 "4:pids:/kubepods-besteffort-pod" U_ ".slice:cri-containerd:b2a102854b49\n1:name=systemd:/kubepods-besteffort-pod" U_
	 ".slice:cri-containerd:b2a102854b49\n",
	 U, 0},
	{"cgroup namespace, relative path", "0::/../../pod" U "/9bca8d63d5fa\n", U, 0},
	{"cgroup namespace rooted at the container", "0::/\n", NULL, -ENOENT},
	{"CRI-O scope without a pod (kubeedge)", "0::/../crio-45490e76e087.scope\n", NULL, -ENOENT},
	{"the pod's cgroupfs folder itself, no container", "0::/kubepods/burstable/pod" U "\n", NULL, -ENOENT},
	{"a UID without separators", "0::/kubepods/pod2c48913cb29f11e79350020968147796/abc\n", U, 0},
	{"upper-case hex", "0::/kubepods/pod2C48913C-B29F-11E7-9350-020968147796/abc\n", U, 0},
	{"a host session", "0::/user.slice/user-0.slice/session-1.scope\n", NULL, -ENOENT},
	{"a service named pod...", "0::/system.slice/podman.service\n", NULL, -ENOENT},
	{"a UID one digit short", "0::/kubepods/pod2c48913c-b29f-11e7-9350-02096814779/abc\n", NULL, -ENOENT},
	{"two punctuation characters in the tail", "0::/kubepods/pod" U "//abc\n", NULL, -ENOENT},
	{"two pods", "5:cpu:/kubepods/pod" U "/abc\n0::/kubepods/pod" V "/abc\n", NULL, -EINVAL},
	{"two containers of one pod", "5:cpu:/kubepods/pod" U "/abc\n0::/kubepods/pod" U "/def\n", NULL, -EINVAL},
	{"a line without two colons", "0::/kubepods/pod" U "/abc\ngarbage\n", NULL, -EINVAL},
	{"empty", "", NULL, -ENOENT},
};

static void every_cgroup_line_form(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(line_cases) / sizeof(line_cases[0]); i++) {
		const struct line_case *c = &line_cases[i];
		char uid[PODNS_UID_LEN] = "";
		int ret = podns_cgroup_pod_uid(c->text, uid);

		if (ret != c->ret || (c->uid && strcmp(uid, c->uid) != 0))
			fail_msg("%s: got %d '%s', want %d '%s'", c->what, ret, uid, c->ret, c->uid ? c->uid : "");
	}
}

/* ---- fake procfs trees ---- */

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f || fputs(text, f) < 0 || fclose(f))
		fail_msg("writing %s: %s", path, strerror(errno));
}

/* root/<pid>/{cgroup,stat,ns/net}: ns_target is what ns/net points at. */
static void fake_process(const char *root, int pid, const char *cgroup, unsigned long long start, const char *ns_target)
{
	char dir[512], path[600], stat_text[512];

	snprintf(dir, sizeof(dir), "%s/%d", root, pid);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/ns", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/ns/net", dir);
	assert_int_equal(symlink(ns_target, path), 0);
	snprintf(path, sizeof(path), "%s/cgroup", dir);
	write_file(path, cgroup);
	/* the command holds ") (" and spaces: the fields are counted from its last ')' */
	snprintf(stat_text, sizeof(stat_text),
		 "%d (a) (b c) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 %llu 1000 10 1844674407\n", pid, start);
	snprintf(path, sizeof(path), "%s/stat", dir);
	write_file(path, stat_text);
}

struct tree {
	char root[256], own_netns[64], own_mntns[64], host[300];
	char ip[INET6_ADDRSTRLEN]; /* an address this test's namespace holds */
};

static void tree_init(struct tree *t)
{
	struct ifaddrs *list;

	temp_path(t->root, sizeof(t->root), "proc");
	assert_int_equal(mkdir(t->root, 0755), 0);
	snprintf(t->own_netns, sizeof(t->own_netns), "/proc/%d/ns/net", (int)getpid());
	snprintf(t->own_mntns, sizeof(t->own_mntns), "/proc/%d/ns/mnt", (int)getpid());
	/* pid 1 stands for the host: its ns/net is a file no pod's process points at */
	snprintf(t->host, sizeof(t->host), "%s/host-netns", t->root);
	write_file(t->host, "");
	fake_process(t->root, 1, "0::/init.scope\n", 1, t->host);
	t->ip[0] = '\0';
	assert_int_equal(getifaddrs(&list), 0);
	for (struct ifaddrs *ifa = list; ifa && !t->ip[0]; ifa = ifa->ifa_next)
		if (ifa->ifa_addr && ifa->ifa_addr->sa_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)ifa->ifa_addr)->sin_addr, t->ip, sizeof(t->ip));
	freeifaddrs(list);
	if (!t->ip[0])
		fail_msg("this network namespace holds no IPv4 address to stand for a pod IP");
}

static void assert_same_netns(int fd, const char *path)
{
	struct stat a, b;

	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(stat(path, &b), 0);
	assert_true(a.st_dev == b.st_dev && a.st_ino == b.st_ino);
}

static void oldest_process_with_the_ip_wins(void **state)
{
	(void)state;
	struct tree t;
	struct podns_result r;

	tree_init(&t);
	/* the pause process (oldest, higher pid), a container, another pod, and a host-netns process of the pod */
	fake_process(t.root, 4000, "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" U_
				  ".slice/cri-containerd-aaa.scope\n", 500, t.own_netns);
	fake_process(t.root, 300, "0::/kubepods/burstable/pod" U "/bbb\n", 900, t.own_netns);
	fake_process(t.root, 200, "0::/kubepods/pod" V "/ccc\n", 100, t.own_netns);
	fake_process(t.root, 100, "0::/kubepods/burstable/pod" U "/ddd\n", 50, t.host);

	const char *ips[] = {"fd00::1", t.ip};
	assert_int_equal(podns_find(t.root, U, ips, 2, &r), 0);
	assert_int_equal(r.outcome, PODNS_FOUND);
	assert_int_equal(r.pid, 4000);
	assert_int_equal(r.start_time, 500);
	assert_same_netns(r.netns_fd, t.own_netns);
	close(r.netns_fd);

	/* the UID in the systemd form names the same pod */
	assert_int_equal(podns_find(t.root, U_, ips + 1, 1, &r), 0);
	assert_int_equal(r.outcome, PODNS_FOUND);
	assert_int_equal(r.pid, 4000);
	close(r.netns_fd);

	/* the other pod */
	assert_int_equal(podns_find(t.root, V, ips + 1, 1, &r), 0);
	assert_int_equal(r.pid, 200);
	close(r.netns_fd);
}

static void refusals_say_why(void **state)
{
	(void)state;
	struct tree t;
	struct podns_result r;
	const char *absent[] = {"192.0.2.77"}, *present[] = {NULL};

	tree_init(&t);
	present[0] = t.ip;
	fake_process(t.root, 10, "0::/kubepods/pod" U "/aaa\n", 700, t.own_netns);
	fake_process(t.root, 11, "0::/kubepods/pod" U "/bbb\n", 600, t.own_netns);
	fake_process(t.root, 20, "0::/kubepods/pod" V "/aaa\n", 10, t.host);
	fake_process(t.root, 30, "0::/kubepods/pod9b2e9a4b-0a1c-4d3e-8f00-123456789abc/aaa\n", 10, t.own_mntns);
	fake_process(t.root, 40, "0::/\n", 10, t.own_netns);

	/* the namespace lacks every IP of the pod: refused, naming the oldest candidate */
	assert_int_equal(podns_find(t.root, U, absent, 1, &r), 0);
	assert_int_equal(r.outcome, PODNS_IP_MISSING);
	assert_int_equal(r.netns_fd, -1);
	assert_int_equal(r.pid, 11);
	assert_string_not_equal(podns_outcome_name(r.outcome), "unknown");

	/* only in the host's namespace (hostNetwork) */
	assert_int_equal(podns_find(t.root, V, present, 1, &r), 0);
	assert_int_equal(r.outcome, PODNS_NO_PROCESS);
	assert_int_equal(r.netns_fd, -1);

	/* ns/net is not a network namespace */
	assert_int_equal(podns_find(t.root, "9b2e9a4b-0a1c-4d3e-8f00-123456789abc", present, 1, &r), 0);
	assert_int_equal(r.outcome, PODNS_NOT_NETNS);

	/* a pod no process names */
	assert_int_equal(podns_find(t.root, "11111111-2222-3333-4444-555555555555", present, 1, &r), 0);
	assert_int_equal(r.outcome, PODNS_NO_PROCESS);
}

static void bad_arguments(void **state)
{
	(void)state;
	struct tree t;
	struct podns_result r;
	const char *ip[] = {"10.0.0.1"}, *bad_ip[] = {"10.0.0.300"};
	char missing[300];

	tree_init(&t);
	assert_int_equal(podns_find(t.root, "", ip, 1, &r), -EINVAL);
	assert_int_equal(podns_find(t.root, U "0", ip, 1, &r), -EINVAL);
	assert_int_equal(podns_find(t.root, "pod" U, ip, 1, &r), -EINVAL);
	assert_int_equal(podns_find(t.root, U, ip, 0, &r), -EINVAL);
	assert_int_equal(podns_find(t.root, U, bad_ip, 1, &r), -EINVAL);
	assert_int_equal(r.netns_fd, -1);
	snprintf(missing, sizeof(missing), "%s/none", t.root);
	assert_int_equal(podns_find(missing, U, ip, 1, &r), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_cgroup_line_form),
		cmocka_unit_test(oldest_process_with_the_ip_wins),
		cmocka_unit_test(refusals_say_why),
		cmocka_unit_test(bad_arguments),
	};

	return cmocka_run_group_tests_name("podns", tests, NULL, NULL);
}
