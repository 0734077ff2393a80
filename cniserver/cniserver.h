/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's end of sockmesh-cni (cni/protocol.h): listens on a unix socket, receives each pod event
 * with its network namespace fd, reads the namespace's cookie, hands both to a callback and answers the
 * plugin with the callback's verdict. Whether a pod is enrolled is the callback's decision (the
 * enroller's), not this server's. It never logs: failures go to the callback (cookie_error) or back to
 * the plugin as the answer's error.
 */
#ifndef SOCKMESH_CNISERVER_CNISERVER_H
#define SOCKMESH_CNISERVER_CNISERVER_H

#include <stddef.h>
#include <stdint.h>

struct sm_cni_event {
	const char *command; /* "ADD" or "DEL" */
	const char *uid, *namespace, *name, *container_id; /* "" when the runtime gave none */
	int netns_fd;	       /* -1 when none came; owned by the server, closed after the callback */
	uint64_t netns_cookie; /* valid when cookie_error is 0 */
	int cookie_error;      /* 0, or -errno: no fd came (-ENOENT), or reading its cookie failed */
};

/*
 * Called on the server's thread, one event at a time; returns 0 or -errno with the reason in err, which
 * is what the plugin logs. It must return quickly: the plugin waits at most SM_CNI_ANSWER_TIMEOUT_MS.
 */
typedef int (*sm_cni_handler)(void *ctx, const struct sm_cni_event *event, char *err, size_t err_size);

struct sm_cni_server;

/*
 * Binds path (mode 0600, its parent directory made 0755 when missing) and serves on a thread of its
 * own. A stale socket file is replaced; one that a live server answers on is -EADDRINUSE, and a path
 * that is not a socket -EEXIST.
 */
int sm_cni_server_start(const char *path, sm_cni_handler handler, void *ctx, struct sm_cni_server **out,
			char *err, size_t err_size);
/* Stops the thread, closes the socket and removes its file. NULL is a no-op. */
void sm_cni_server_stop(struct sm_cni_server *server);

#endif
