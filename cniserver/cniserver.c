/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "cni/protocol.h"
#include "cniserver/cniserver.h"
#include "netns/netns.h"

/* A client that connects and says nothing must not stall the pods behind it for longer than this. */
#define REQUEST_TIMEOUT_MS 1000

struct sm_cni_server {
	int listen_fd;
	int stop_fd; /* an eventfd: written once to end the thread */
	pthread_t thread;
	sm_cni_handler handler;
	void *ctx;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

/* Receives one request and the fd that came with it (-1 when none); closes any extra fds. */
static ssize_t receive(int conn, char *buf, size_t size, int *fd)
{
	struct iovec iov = { .iov_base = buf, .iov_len = size };
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			      .msg_controllen = sizeof(control.buf) };
	ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);

	*fd = -1;
	if (n < 0)
		return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int received;
			memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*fd < 0)
				*fd = received;
			else
				close(received);
		}
	}
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		return -EMSGSIZE;
	return n;
}

static const char *field(json_t *request, const char *key)
{
	const char *value = json_string_value(json_object_get(request, key));

	return value ? value : "";
}

/* Decodes the request, reads the cookie and asks the handler: *ret and err are the answer. */
static void handle(struct sm_cni_server *server, const char *text, int fd, char *err, size_t err_size, int *ret)
{
	json_t *request = json_loads(text, 0, NULL);
	const char *command = field(request, "command");
	struct sm_cni_event event = {
		.command = command, .uid = field(request, "uid"), .namespace = field(request, "namespace"),
		.name = field(request, "name"), .container_id = field(request, "containerId"), .netns_fd = fd,
		.cookie_error = -ENOENT,
	};

	if (!json_is_object(request)) {
		snprintf(err, err_size, "%s", "the request is not a JSON object");
		*ret = -EINVAL;
	} else if (strcmp(command, "ADD") && strcmp(command, "DEL")) {
		snprintf(err, err_size, "unknown command '%s'", command);
		*ret = -EINVAL;
	} else {
		if (fd >= 0)
			event.cookie_error = sm_netns_cookie_of(fd, &event.netns_cookie);
		*ret = server->handler(server->ctx, &event, err, err_size);
	}
	json_decref(request);
}

static void serve_one(struct sm_cni_server *server, int conn)
{
	char text[SM_CNI_MAX_MESSAGE + 1], err[512] = "";
	struct pollfd pfd = { .fd = conn, .events = POLLIN };
	int fd = -1, ret;
	ssize_t n;

	if (poll(&pfd, 1, REQUEST_TIMEOUT_MS) != 1)
		return;
	n = receive(conn, text, sizeof(text) - 1, &fd);
	if (n == -EMSGSIZE) {
		snprintf(err, sizeof(err), "the request is larger than %d bytes", SM_CNI_MAX_MESSAGE);
		ret = -EMSGSIZE;
	} else if (n <= 0) {
		if (fd >= 0)
			close(fd);
		return;
	} else {
		text[n] = '\0';
		handle(server, text, fd, err, sizeof(err), &ret);
	}
	if (fd >= 0)
		close(fd);
	if (ret && !err[0])
		snprintf(err, sizeof(err), "%s", strerror(-ret));
	json_t *answer = ret ? json_pack("{s:b, s:s}", "ok", 0, "error", err) : json_pack("{s:b}", "ok", 1);
	char *reply = json_dumps(answer, JSON_COMPACT);
	if (reply)
		send(conn, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
	free(reply);
	json_decref(answer);
}

static void *serve(void *arg)
{
	struct sm_cni_server *server = arg;
	struct pollfd pfds[2] = { { .fd = server->listen_fd, .events = POLLIN }, { .fd = server->stop_fd, .events = POLLIN } };

	for (;;) {
		if (poll(pfds, 2, -1) < 0 && errno != EINTR)
			break;
		if (pfds[1].revents)
			break;
		if (!(pfds[0].revents & POLLIN))
			continue;
		int conn = accept4(server->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			continue;
		serve_one(server, conn);
		close(conn);
	}
	return NULL;
}

/*
 * -EADDRINUSE when a server answers on path; -EEXIST when path is something other than a socket (never
 * removed: a wrong --cni-socket must not delete a file); else a stale socket file is removed.
 */
static int claim_path(const struct sockaddr_un *addr, char *err, size_t err_size)
{
	struct stat st;
	int probe, ret = 0;

	if (lstat(addr->sun_path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		snprintf(err, err_size, "%s: exists and is not a socket", addr->sun_path);
		return -EEXIST;
	}
	probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe < 0)
		return -errno;
	if (connect(probe, (const struct sockaddr *)addr, sizeof(*addr)) == 0 || errno == EAGAIN) {
		snprintf(err, err_size, "%s: another server listens there", addr->sun_path);
		ret = -EADDRINUSE;
	} else if (unlink(addr->sun_path) && errno != ENOENT) {
		ret = -errno;
		snprintf(err, err_size, "%s: cannot remove the stale socket: %s", addr->sun_path, strerror(-ret));
	}
	close(probe);
	return ret;
}

static int make_parent(const char *path, char *err, size_t err_size)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0755) && errno != EEXIST) {
		int ret = -errno;
		snprintf(err, err_size, "%s: cannot make the socket's directory: %s", dir, strerror(-ret));
		return ret;
	}
	return 0;
}

int sm_cni_server_start(const char *path, sm_cni_handler handler, void *ctx, struct sm_cni_server **out,
			char *err, size_t err_size)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct sm_cni_server *server;
	bool bound = false;
	int ret;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(err, err_size, "%s: too long for a unix socket path", path);
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, path, strlen(path));
	server = calloc(1, sizeof(*server));
	if (!server) {
		snprintf(err, err_size, "%s: out of memory", path);
		return -ENOMEM;
	}
	*server = (struct sm_cni_server){ .listen_fd = -1, .stop_fd = -1, .handler = handler, .ctx = ctx };
	snprintf(server->path, sizeof(server->path), "%s", path);
	if ((ret = make_parent(path, err, err_size)) || (ret = claim_path(&addr, err, err_size)))
		goto fail;
	server->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	server->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (server->listen_fd < 0 || server->stop_fd < 0) {
		ret = -errno;
		snprintf(err, err_size, "%s: cannot make the socket: %s", path, strerror(-ret));
		goto fail;
	}
	/* 0600 from the start: only root (the runtime running the plugin) may hand us namespaces */
	mode_t old = umask(0177);
	ret = bind(server->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) ? -errno : 0;
	umask(old);
	if (ret) {
		snprintf(err, err_size, "%s: cannot bind: %s", path, strerror(-ret));
		goto fail;
	}
	bound = true;
	if (listen(server->listen_fd, 64)) {
		ret = -errno;
		snprintf(err, err_size, "%s: cannot listen: %s", path, strerror(-ret));
		goto fail;
	}
	if ((ret = -pthread_create(&server->thread, NULL, serve, server))) {
		snprintf(err, err_size, "%s: cannot start the server's thread: %s", path, strerror(-ret));
		goto fail;
	}
	*out = server;
	return 0;
fail:
	if (server->listen_fd >= 0)
		close(server->listen_fd);
	if (server->stop_fd >= 0)
		close(server->stop_fd);
	if (bound)
		unlink(path);
	free(server);
	return ret;
}

void sm_cni_server_stop(struct sm_cni_server *server)
{
	uint64_t one = 1;

	if (!server)
		return;
	if (write(server->stop_fd, &one, sizeof(one)) == sizeof(one))
		pthread_join(server->thread, NULL);
	close(server->listen_fd);
	close(server->stop_fd);
	unlink(server->path);
	free(server);
}
