/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A throwaway world for one datapath test case: a child process in a new network namespace (lo up,
 * the IPv6 VIPs fd00:10::1 and fd00:10::2 added to lo), its own cgroup on the cgroup2 mount (found in
 * /proc/self/mountinfo, or mounted for the run: test/cgroup2.h) and its own pin directory, with the datapath attached to that cgroup and the child inside it. The parent
 * removes whatever the child leaves behind, also when it crashes. Nothing is attached elsewhere and no
 * packet leaves the namespace.
 */
#ifndef SOCKMESH_TEST_DATAPATH_ENV_H
#define SOCKMESH_TEST_DATAPATH_ENV_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "builders.h"
#include "cgroup2.h"
#include "datapath/datapath.h"
#include "workload/workload.h"

#define CASE_TIMEOUT_SECONDS 60

struct env {
	pid_t case_pid; /* the case's own process: a helper it forks exits on a failed CHECK instead */
	char cgroup[PATH_MAX];
	char pin_dir[128];
	struct sm_datapath *dp;
	struct sm_model *model;
	jmp_buf fail;
};

/* In a case's child: report and unwind to its cleanup. */
#define CHECK(cond, ...)                                                                                     \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);             \
			fprintf(stderr, __VA_ARGS__);                                                        \
			fprintf(stderr, "\n");                                                               \
			if (getpid() != current_env->case_pid)                                               \
				_exit(2);                                                                    \
			longjmp(current_env->fail, 1);                                                       \
		}                                                                                            \
	} while (0)

static struct env *current_env;

/* Found (or mounted) once by the test program, before the first case forks; released at its exit. */
static struct cgroup2 env_cgroup2;

static inline void env_cgroup2_close(void)
{
	cgroup2_close(&env_cgroup2);
}

static inline int env_cgroup2_open(void)
{
	int ret;

	if (env_cgroup2.path[0])
		return 0;
	ret = cgroup2_open(&env_cgroup2);
	if (ret) {
		fprintf(stderr, "finding or mounting cgroup2: %s (run as root)\n", strerror(-ret));
		env_cgroup2.path[0] = '\0';
		return ret;
	}
	atexit(env_cgroup2_close);
	return 0;
}

static inline void env_paths(struct env *env, pid_t pid)
{
	snprintf(env->cgroup, sizeof(env->cgroup), "%s/sockmesh-test-%d", env_cgroup2.path, (int)pid);
	snprintf(env->pin_dir, sizeof(env->pin_dir), "/sys/fs/bpf/sockmesh-test-%d", (int)pid);
}

static inline int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static inline int join_cgroup(const char *cgroup)
{
	char path[PATH_MAX + 16], pid[16];

	snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	return write_file(path, pid);
}

static inline int lo_up(void)
{
	struct ifreq ifr = { .ifr_name = "lo" };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret = 0;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr))
			ret = -errno;
	} else {
		ret = -errno;
	}
	close(fd);
	return ret;
}

static inline struct sm_config env_default_config(void)
{
	return (struct sm_config){ .flags = SM_CONFIG_ENROLL_ALL };
}

/* Undoes what the case set up: unpin, remove the cgroup (once no process is in it). Safe to repeat. */
static inline void env_cleanup(struct env *env)
{
	char err[256];

	if (env->model)
		sm_model_free(env->model);
	if (env->dp)
		sm_datapath_close(env->dp);
	env->model = NULL;
	env->dp = NULL;
	sm_datapath_uninstall(env->pin_dir, err, sizeof(err));
	rmdir(env->cgroup);
}

static inline int env_open_datapath(struct env *env)
{
	struct sm_datapath_options options = { .pin_dir = env->pin_dir, .cgroup = env->cgroup };
	char err[512];
	int ret = sm_datapath_open(&options, &env->dp, err, sizeof(err));

	if (ret)
		fprintf(stderr, "opening the datapath: %s\n", err);
	return ret;
}

static inline int env_setup(struct env *env)
{
	struct sm_config config = env_default_config();

	if (unshare(CLONE_NEWNET) || lo_up()) {
		fprintf(stderr, "a new network namespace: %s (run as root)\n", strerror(errno));
		return -1;
	}
	/* one by one: unlike 127/8, an IPv6 prefix on lo does not make all of it local */
	if (system("ip -6 addr add fd00:10::1/128 dev lo nodad && ip -6 addr add fd00:10::2/128 dev lo nodad") != 0) {
		fprintf(stderr, "adding the IPv6 VIPs to lo failed\n");
		return -1;
	}
	if (mkdir(env->cgroup, 0755)) {
		fprintf(stderr, "creating %s: %s\n", env->cgroup, strerror(errno));
		return -1;
	}
	if (env_open_datapath(env) || sm_datapath_set_config(env->dp, &config) || join_cgroup(env->cgroup))
		return -1;
	if (sm_model_new(&(struct sm_model_options){ .node_name = "node-a" }, &env->model))
		return -1;
	return 0;
}

/* libbpf's informational lines (maps reused, links opened) only clutter a test's log. */
static inline int print_libbpf_warnings(enum libbpf_print_level level, const char *fmt, va_list args)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, args) : 0;
}

/*
 * Runs fn in a fresh world; returns its exit status (0 when every CHECK held). The parent removes
 * leftovers whatever happened to the child.
 */
static inline int run_case(void (*fn)(struct env *env, const void *arg), const void *arg)
{
	struct env env = { 0 };
	int status = 1;
	pid_t pid;

	if (env_cgroup2_open())
		return 1;
	pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		alarm(CASE_TIMEOUT_SECONDS);
		libbpf_set_print(print_libbpf_warnings);
		env_paths(&env, getpid());
		env.case_pid = getpid();
		current_env = &env;
		if (setjmp(env.fail) == 0) {
			if (env_setup(&env) == 0) {
				fn(&env, arg);
				status = 0;
			}
		}
		join_cgroup(env_cgroup2.path); /* out of the case's cgroup, so that it can be removed */
		env_cleanup(&env);
		fflush(stderr);
		_exit(status);
	}
	if (pid < 0)
		return -1;
	waitpid(pid, &status, 0);
	kill(-pid, SIGKILL); /* helpers the case forked, if any are left */
	while (waitpid(-pid, NULL, 0) > 0)
		;
	env_paths(&env, pid);
	env_cleanup(&env);
	if (access(env.cgroup, F_OK) == 0 || access(env.pin_dir, F_OK) == 0) {
		fprintf(stderr, "the case left %s or %s behind\n", env.cgroup, env.pin_dir);
		return 3;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- configuration through the real model ---- */

static inline void env_apply(struct env *env, struct response *r)
{
	struct sm_rejections rejections = { 0 };
	int ret = sm_model_apply(env->model, &r->msg, sm_datapath_writer(env->dp), &rejections);
	char *text = sm_rejections_format(&rejections);

	response_free(r);
	CHECK(ret == 0 && rejections.count == 0, "applying resources: %d, rejections: %s", ret, text);
	free(text);
	sm_rejections_clear(&rejections);
}

static inline void env_config(struct env *env, void (*change)(struct sm_config *config))
{
	struct sm_config config;

	CHECK(sm_datapath_get_config(env->dp, &config) == 0, "reading the config");
	change(&config);
	CHECK(sm_datapath_set_config(env->dp, &config) == 0, "writing the config");
}

static inline uint64_t env_counter(struct env *env, enum sm_counter counter)
{
	uint64_t counters[SM_COUNTER_MAX];

	CHECK(sm_datapath_counters(env->dp, counters) == 0, "reading counters");
	return counters[counter];
}

/* ---- sockets ---- */

union sockaddr_any {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* Parses "127.0.0.1" or "::1" (or "::ffff:127.0.0.1") and a port; returns the address length. */
static inline socklen_t make_addr(const char *text, uint16_t port, union sockaddr_any *out)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, text, &out->in.sin_addr) == 1) {
		out->in.sin_family = AF_INET;
		out->in.sin_port = htons(port);
		return sizeof(out->in);
	}
	CHECK(inet_pton(AF_INET6, text, &out->in6.sin6_addr) == 1, "bad address %s", text);
	out->in6.sin6_family = AF_INET6;
	out->in6.sin6_port = htons(port);
	return sizeof(out->in6);
}

static inline void format_addr(const union sockaddr_any *addr, char *out, size_t size)
{
	char text[INET6_ADDRSTRLEN];

	if (addr->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &addr->in.sin_addr, text, sizeof(text));
		snprintf(out, size, "%s:%u", text, ntohs(addr->in.sin_port));
	} else {
		inet_ntop(AF_INET6, &addr->in6.sin6_addr, text, sizeof(text));
		snprintf(out, size, "[%s]:%u", text, ntohs(addr->in6.sin6_port));
	}
}

static inline int listen_on(int type, const char *addr, uint16_t port)
{
	union sockaddr_any sa;
	socklen_t len = make_addr(addr, port, &sa);
	int fd = socket(sa.sa.sa_family, type | SOCK_CLOEXEC, 0), one = 1;

	CHECK(fd >= 0, "socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	CHECK(bind(fd, &sa.sa, len) == 0, "bind %s:%u: %s", addr, port, strerror(errno));
	if (type == SOCK_STREAM)
		CHECK(listen(fd, 4096) == 0, "listen: %s", strerror(errno));
	return fd;
}

/* Connects a TCP socket of family to addr:port; returns the fd or -errno. */
static inline int connect_to(int family, const char *addr, uint16_t port)
{
	union sockaddr_any sa;
	socklen_t len = make_addr(addr, port, &sa);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0, "socket: %s", strerror(errno));
	if (family == AF_INET6 && sa.sa.sa_family == AF_INET)
		CHECK(0, "an IPv4 address for an IPv6 socket: write it as ::ffff:%s", addr);
	if (connect(fd, &sa.sa, len)) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* Accepts one connection within a second; -1 when none came. */
static inline int accept_within(int listener, int ms)
{
	struct pollfd pfd = { .fd = listener, .events = POLLIN };

	if (poll(&pfd, 1, ms) != 1)
		return -1;
	return accept4(listener, NULL, NULL, SOCK_CLOEXEC);
}

/* Reads exactly n bytes (or fails the case). */
static inline void read_exactly(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		CHECK(poll(&pfd, 1, 5000) == 1, "timed out after %zu of %zu bytes", got, n);
		ssize_t r = read(fd, (char *)buf + got, n - got);
		CHECK(r > 0, "read after %zu of %zu bytes: %s", got, n, r ? strerror(errno) : "end of stream");
		got += (size_t)r;
	}
}

static inline void write_all(int fd, const void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w = write(fd, (const char *)buf + done, n - done);
		CHECK(w > 0, "write after %zu of %zu bytes: %s", done, n, strerror(errno));
		done += (size_t)w;
	}
}

/* A datagram from client (connected, or sent to `to`) to server and one back; where the reply came from
 * goes in from_text. Each side waits at most 5 s. */
static inline void udp_round_trip(int client, const union sockaddr_any *to, socklen_t to_len, int server,
				  char *from_text, size_t size)
{
	union sockaddr_any peer, from;
	socklen_t peer_len = sizeof(peer), from_len = sizeof(from);
	struct pollfd server_ready = { .fd = server, .events = POLLIN }, client_ready = { .fd = client, .events = POLLIN };
	char buf[16];

	CHECK((to ? sendto(client, "ping", 4, 0, &to->sa, to_len) : send(client, "ping", 4, 0)) == 4, "send: %s",
	      strerror(errno));
	CHECK(poll(&server_ready, 1, 5000) == 1 && recvfrom(server, buf, sizeof(buf), 0, &peer.sa, &peer_len) == 4,
	      "the server got nothing");
	CHECK(sendto(server, "pong", 4, 0, &peer.sa, peer_len) == 4, "the server cannot reply: %s", strerror(errno));
	CHECK(poll(&client_ready, 1, 5000) == 1 && recvfrom(client, buf, sizeof(buf), 0, &from.sa, &from_len) == 4,
	      "no reply");
	format_addr(&from, from_text, size);
}

/* The case's pinned map of this layout, by name (an fd to close). */
static inline int env_pinned_map(struct env *env, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/maps-v%u/%s", env->pin_dir, SM_LAYOUT_VERSION, name);
	int fd = bpf_obj_get(path);
	CHECK(fd >= 0, "opening the pinned %s: %s", name, strerror(errno));
	return fd;
}

/* How many entries a pinned map keyed by struct sm_sock_key holds (sm_sockhash, sm_conn_received). */
static inline size_t env_sock_key_entries(struct env *env, const char *name)
{
	struct sm_sock_key key, next, *previous = NULL;
	int fd = env_pinned_map(env, name);
	size_t n = 0;

	while (bpf_map_get_next_key(fd, previous, &next) == 0) {
		key = next;
		previous = &key;
		n++;
	}
	close(fd);
	return n;
}

static inline uint64_t env_socket_cookie(int fd)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);

	CHECK(getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) == 0, "SO_COOKIE: %s", strerror(errno));
	return cookie;
}

/* The slot of sm_orig_slots that a socket cookie points at (held by that socket or not). */
static inline struct sm_orig_slot env_slot_of(struct env *env, uint64_t cookie)
{
	struct sm_orig_slot slot;
	__u32 index = (__u32)cookie & (SM_ORIG_SLOTS - 1);
	int map = env_pinned_map(env, "sm_orig_slots");
	int ret = bpf_map_lookup_elem(map, &index, &slot) ? -errno : 0;

	close(map);
	CHECK(ret == 0, "reading slot %u: %s", index, strerror(-ret));
	return slot;
}

/* Whether the socket fd holds its slot (its original destination and stats are there). */
static inline bool env_holds_slot(struct env *env, int fd)
{
	uint64_t cookie = env_socket_cookie(fd);

	return env_slot_of(env, cookie).cookie == cookie;
}

/* Waits (2 s at most) for the slot that cookie held to be free again (its socket's close was seen). */
static inline bool env_slot_freed(struct env *env, uint64_t cookie)
{
	for (int i = 0; i < 200; i++) {
		if (env_slot_of(env, cookie).cookie != cookie)
			return true;
		usleep(10 * 1000);
	}
	return false;
}

static inline void peer_of(int fd, char *out, size_t size)
{
	union sockaddr_any sa;
	socklen_t len = sizeof(sa);

	CHECK(getpeername(fd, &sa.sa, &len) == 0, "getpeername: %s", strerror(errno));
	format_addr(&sa, out, size);
}

#endif
