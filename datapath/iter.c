/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runs an iter/tcp program over the TCP sockets of one network namespace: the reaper's and telemetry's
 * flush. The iterator walks the namespace of the thread that creates it, so a short-lived thread enters
 * the namespace, runs it and ends: no other thread of the process ever runs inside it.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "datapath/internal.h"

struct iter_job {
	int link_fd;
	int netns_fd;
	size_t output;
	int ret;
	const char *what;
	char *err;
	size_t size;
};

/* Reads the iterator to its end, adding up what it wrote. */
static void iter_here(struct iter_job *job)
{
	char buf[4096];
	ssize_t n;
	int fd;

	if (job->netns_fd >= 0 && setns(job->netns_fd, CLONE_NEWNET)) {
		job->ret = -errno;
		snprintf(job->err, job->size, "entering the network namespace to run %s: %s", job->what, strerror(errno));
		return;
	}
	fd = bpf_iter_create(job->link_fd);
	if (fd < 0) {
		job->ret = -errno;
		snprintf(job->err, job->size, "creating the %s iterator: %s", job->what, strerror(errno));
		return;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
		job->output += n > 0 ? (size_t)n : 0;
	if (n < 0) {
		job->ret = -errno;
		snprintf(job->err, job->size, "reading the %s iterator: %s", job->what, strerror(errno));
	}
	close(fd);
}

static void *iter_thread(void *arg)
{
	iter_here(arg);
	return NULL;
}

int sm_dp_run_tcp_iter(struct bpf_program *prog, int netns_fd, size_t *output, char *err, size_t size)
{
	struct iter_job job = { .netns_fd = netns_fd, .what = bpf_program__name(prog), .err = err, .size = size };
	struct bpf_link *link = bpf_program__attach_iter(prog, NULL);
	pthread_t thread;
	int ret;

	*output = 0;
	if (!link) {
		ret = -errno;
		snprintf(err, size, "attaching the %s iterator: %s", job.what, strerror(errno));
		return ret;
	}
	job.link_fd = bpf_link__fd(link);
	if (netns_fd < 0) {
		iter_here(&job);
	} else if ((ret = pthread_create(&thread, NULL, iter_thread, &job))) {
		job.ret = -ret;
		snprintf(err, size, "starting the thread that runs %s: %s", job.what, strerror(ret));
	} else {
		pthread_join(thread, NULL); /* the thread, and the namespace it entered, end here */
	}
	bpf_link__destroy(link);
	*output = job.output;
	return job.ret;
}
