/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netns/netns.h"

struct cookie_job {
	int netns_fd;
	uint64_t cookie;
	int ret;
};

int sm_netns_cookie_here(uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret = 0;

	if (fd < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len))
		ret = -errno;
	close(fd);
	return ret;
}

/*
 * Runs on its own thread: setns() changes only the calling thread's network namespace, and this thread
 * ends right after, so no other thread of the process ever runs inside the target namespace.
 */
static void *read_cookie(void *arg)
{
	struct cookie_job *job = arg;

	job->ret = setns(job->netns_fd, CLONE_NEWNET) ? -errno : sm_netns_cookie_here(&job->cookie);
	return NULL;
}

int sm_netns_cookie_of(int netns_fd, uint64_t *cookie)
{
	struct cookie_job job = { .netns_fd = netns_fd, .ret = -EIO };
	pthread_t thread;
	int ret;

	if ((ret = pthread_create(&thread, NULL, read_cookie, &job)))
		return -ret;
	pthread_join(thread, NULL);
	if (job.ret == 0)
		*cookie = job.cookie;
	return job.ret;
}

int sm_netns_cookie_at(const char *path, uint64_t *cookie)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = sm_netns_cookie_of(fd, cookie);
	close(fd);
	return ret;
}
