/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runs an iter/tcp program over the TCP sockets of one network namespace: the reaper's and telemetry's
 * flush. The iterator walks the namespace of the thread that creates it, so a short-lived thread enters
 * the namespace, runs it and ends: no other thread of the process ever runs inside it. The reaper may ask
 * it to walk only a namespace where one of some addresses is local (one bind each, against a walk of the
 * namespace's whole TCP table).
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "datapath/internal.h"

struct iter_job {
	int link_fd;
	int netns_fd;
	const struct sm_frontend_key *only_if_local; /* NULL: run it */
	size_t n_only;
	bool ran;
	size_t output;
	int ret;
	const char *what;
	char *err;
	size_t size;
};

/*
 * Whether addr (IPv4 mapped) may be an address of this thread's namespace: a socket can be bound to it.
 * That is the kernel's own test of a local address (assigned, or a local route); what cannot be told (no
 * socket of that family, an error other than "not available") counts as local.
 */
static bool may_be_local(const uint8_t addr[16])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	bool v4 = !memcmp(addr, mapped, sizeof(mapped));
	struct sockaddr_in in = { .sin_family = AF_INET };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
	int fd = socket(v4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret;

	if (fd < 0)
		return true;
	memcpy(&in.sin_addr, addr + 12, 4);
	memcpy(&in6.sin6_addr, addr, 16);
	ret = v4 ? bind(fd, (struct sockaddr *)&in, sizeof(in)) : bind(fd, (struct sockaddr *)&in6, sizeof(in6));
	ret = ret ? errno : 0;
	close(fd);
	return ret != EADDRNOTAVAIL;
}

static bool any_local(const struct sm_frontend_key *addrs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (may_be_local(addrs[i].addr))
			return true;
	return false;
}

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
	if (job->only_if_local && !any_local(job->only_if_local, job->n_only))
		return;
	job->ran = true;
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

int sm_dp_run_tcp_iter(struct bpf_program *prog, int netns_fd, const struct sm_frontend_key *only_if_local,
		       size_t n_only, bool *ran, size_t *output, char *err, size_t size)
{
	struct iter_job job = { .netns_fd = netns_fd, .only_if_local = only_if_local, .n_only = n_only,
				.what = bpf_program__name(prog), .err = err, .size = size };
	struct bpf_link *link = bpf_program__attach_iter(prog, NULL);
	pthread_t thread;
	int ret;

	*output = 0;
	if (ran)
		*ran = false;
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
	if (ran)
		*ran = job.ran;
	return job.ret;
}
