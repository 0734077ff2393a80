/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/enroller.h"
#include "agent/netns_open.h"
#include "netns/netns.h"

#define REMEMBERED 256 /* namespaces whose path is kept; a node runs at most a few hundred pods */

struct found {
	uint64_t cookie;
	ino_t ino; /* the namespace's inode: the path still leads to it when it matches */
	char path[300];
};

/* held while the enroller is asked: once agent_netns_set_enroller(NULL) returns, nobody uses the old one */
static pthread_mutex_t enroller_lock = PTHREAD_MUTEX_INITIALIZER;
static struct enroller *enroller_in_use;
static pthread_mutex_t found_lock = PTHREAD_MUTEX_INITIALIZER;
static struct found found[REMEMBERED];
static size_t n_found, next_slot;

void agent_netns_set_enroller(struct enroller *enroller)
{
	pthread_mutex_lock(&enroller_lock);
	enroller_in_use = enroller;
	pthread_mutex_unlock(&enroller_lock);
}

/* Opens path when it is the network namespace with this cookie (each namespace tried once: seen). */
static int try_netns(const char *path, uint64_t cookie, ino_t *seen, size_t *n_seen, size_t max_seen, int *fd_out,
		     ino_t *ino)
{
	struct stat st;
	uint64_t at;

	if (stat(path, &st))
		return -ENOENT;
	for (size_t i = 0; i < *n_seen; i++) {
		if (seen[i] == st.st_ino)
			return -ENOENT;
	}
	if (*n_seen < max_seen)
		seen[(*n_seen)++] = st.st_ino;
	if (sm_netns_cookie_at(path, &at) || at != cookie)
		return -ENOENT;
	*fd_out = open(path, O_RDONLY | O_CLOEXEC);
	*ino = st.st_ino;
	return *fd_out < 0 ? -errno : 0;
}

/* Through its /run/netns name or a process in it: each namespace's cookie read once (a thread each). */
static int scan(uint64_t cookie, int *fd_out, char *path, size_t size, ino_t *ino)
{
	static const char *const dirs[] = { "/run/netns", "/proc" };
	ino_t seen[1024];
	size_t n_seen = 0;
	int ret = -ENOENT;

	for (size_t d = 0; d < 2 && ret == -ENOENT; d++) {
		DIR *dir = opendir(dirs[d]);
		struct dirent *entry;
		while (dir && ret == -ENOENT && (entry = readdir(dir))) {
			if (entry->d_name[0] == '.' || (d == 1 && (entry->d_name[0] < '1' || entry->d_name[0] > '9')))
				continue;
			snprintf(path, size, d == 1 ? "%s/%s/ns/net" : "%s/%s", dirs[d], entry->d_name);
			ret = try_netns(path, cookie, seen, &n_seen, sizeof(seen) / sizeof(seen[0]), fd_out, ino);
		}
		if (dir)
			closedir(dir);
	}
	return ret;
}

/* Where it was found last, if that still leads to it. */
static int open_remembered(uint64_t cookie, int *fd_out)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&found_lock);
	for (size_t i = 0; i < n_found; i++) {
		struct stat st;
		int fd;
		if (found[i].cookie != cookie)
			continue;
		fd = open(found[i].path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0 && !fstat(fd, &st) && st.st_ino == found[i].ino) {
			*fd_out = fd;
			ret = 0;
		} else {
			if (fd >= 0)
				close(fd);
			found[i] = found[--n_found]; /* gone, or the process is another now */
		}
		break;
	}
	pthread_mutex_unlock(&found_lock);
	return ret;
}

static void remember(uint64_t cookie, const char *path, ino_t ino)
{
	size_t slot;

	pthread_mutex_lock(&found_lock);
	slot = n_found < REMEMBERED ? n_found++ : next_slot++ % REMEMBERED;
	found[slot].cookie = cookie;
	found[slot].ino = ino;
	snprintf(found[slot].path, sizeof(found[slot].path), "%s", path);
	pthread_mutex_unlock(&found_lock);
}

int agent_netns_holds(uint64_t cookie, const struct sm_frontend_key *addrs, size_t n)
{
	int ret;

	pthread_mutex_lock(&enroller_lock);
	ret = enroller_netns_holds(enroller_in_use, cookie, addrs, n);
	pthread_mutex_unlock(&enroller_lock);
	return ret;
}

int agent_netns_open(uint64_t cookie, int *fd)
{
	char path[300];
	ino_t ino;
	int ret;

	pthread_mutex_lock(&enroller_lock);
	ret = enroller_open_netns(enroller_in_use, cookie, fd);
	pthread_mutex_unlock(&enroller_lock);
	if (ret != -ENOENT || !(ret = open_remembered(cookie, fd)))
		return ret;
	ret = scan(cookie, fd, path, sizeof(path), &ino);
	if (!ret)
		remember(cookie, path, ino);
	return ret;
}
