/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where cgroup v2 is, for the tests and the benchmarks (scripts/lib/cgroup2.sh is the shell twin).
 * Never a fixed path: a stock systemd host mounts cgroup2 at /sys/fs/cgroup, a hybrid one at
 * /sys/fs/cgroup/unified, a container anywhere. cgroup2_find reads the first cgroup2 mount point
 * from /proc/self/mountinfo; with none mounted, cgroup2_open mounts one (as the kernel selftests'
 * setup_cgroup_environment() does) at a fresh $TMPDIR/sm-cgroup2-XXXXXX (TMPDIR defaults to /tmp),
 * and cgroup2_close unmounts and removes it again. Every hierarchy mounted is the same one, so
 * programs attached through the private mount steer the same processes.
 */
#ifndef SOCKMESH_TEST_CGROUP2_H
#define SOCKMESH_TEST_CGROUP2_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

struct cgroup2 {
	char path[PATH_MAX];
	pid_t mounted_by; /* the process that mounted path itself (0: found mounted) */
};

/* mountinfo writes a space, tab, newline or backslash in a path as \ooo. */
static inline int cgroup2_unescape(const char *in, char *out, size_t size)
{
	size_t n = 0;

	for (; *in; in++) {
		char c = *in;
		if (c == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' && in[2] <= '7' && in[3] >= '0' &&
		    in[3] <= '7') {
			c = (char)((in[1] - '0') << 6 | (in[2] - '0') << 3 | (in[3] - '0'));
			in += 3;
		}
		if (n + 1 >= size)
			return -ENAMETOOLONG;
		out[n++] = c;
	}
	out[n] = '\0';
	return 0;
}

/* The mount point of the first cgroup2 file system in this mount namespace: 0, -ENOENT when none. */
static inline int cgroup2_find(char *out, size_t size)
{
	FILE *mountinfo = fopen("/proc/self/mountinfo", "re");
	char line[PATH_MAX * 5], mount_point[PATH_MAX * 4];
	int ret = -ENOENT;

	if (!mountinfo)
		return -errno;
	/* ID PARENT MAJOR:MINOR ROOT MOUNT-POINT OPTIONS [OPTIONAL-FIELDS...] - FSTYPE SOURCE SUPER-OPTIONS */
	while (ret == -ENOENT && fgets(line, sizeof(line), mountinfo)) {
		const char *separator = strstr(line, " - ");
		if (!separator || strncmp(separator + 3, "cgroup2 ", 8) != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %16383s", mount_point) == 1)
			ret = cgroup2_unescape(mount_point, out, size);
	}
	fclose(mountinfo);
	return ret;
}

/* Finds cgroup2, or mounts a private one when none is mounted. 0 or -errno. */
static inline int cgroup2_open(struct cgroup2 *cgroup2)
{
	const char *tmp = getenv("TMPDIR");
	int ret = cgroup2_find(cgroup2->path, sizeof(cgroup2->path));

	cgroup2->mounted_by = 0;
	if (ret != -ENOENT)
		return ret;
	snprintf(cgroup2->path, sizeof(cgroup2->path), "%s/sm-cgroup2-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(cgroup2->path))
		return -errno;
	if (mount("cgroup2", cgroup2->path, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) {
		ret = -errno;
		rmdir(cgroup2->path);
		return ret;
	}
	cgroup2->mounted_by = getpid();
	return 0;
}

/* Unmounts and removes what cgroup2_open mounted (only in the process that mounted it). */
static inline void cgroup2_close(struct cgroup2 *cgroup2)
{
	if (cgroup2->mounted_by && cgroup2->mounted_by == getpid()) {
		umount2(cgroup2->path, MNT_DETACH);
		rmdir(cgroup2->path);
		cgroup2->mounted_by = 0;
	}
}

#endif
