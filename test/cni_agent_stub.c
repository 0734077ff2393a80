/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's end of sockmesh-cni for the tests: cniserver/ on SOCKET, each event appended to EVENTS as
 * one JSON line (with the cookie the server read from the fd), until SIGTERM or SIGINT. --refuse makes
 * the handler refuse every event, to see the plugin fail open.
 * Usage: cni_agent_stub SOCKET EVENTS [--refuse]
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cniserver/cniserver.h"

struct stub {
	FILE *events;
	bool refuse;
};

static int on_event(void *ctx, const struct sm_cni_event *event, char *err, size_t err_size)
{
	struct stub *stub = ctx;
	json_t *line = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:i}", "command", event->command, "uid",
				 event->uid, "namespace", event->namespace, "name", event->name, "containerId",
				 event->container_id, "fd", event->netns_fd >= 0, "cookie",
				 (json_int_t)event->netns_cookie, "cookieError", event->cookie_error);

	json_dumpf(line, stub->events, JSON_COMPACT);
	fputc('\n', stub->events);
	fflush(stub->events);
	json_decref(line);
	if (stub->refuse) {
		snprintf(err, err_size, "%s", "refused by the test");
		return -EPERM;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct stub stub = { .refuse = argc == 4 && strcmp(argv[3], "--refuse") == 0 };
	struct sm_cni_server *server;
	sigset_t stop;
	char err[512];
	int sig;

	if (argc < 3 || (argc == 4 && !stub.refuse) || argc > 4) {
		fprintf(stderr, "usage: cni_agent_stub SOCKET EVENTS [--refuse]\n");
		return 2;
	}
	stub.events = fopen(argv[2], "ae");
	if (!stub.events) {
		fprintf(stderr, "cni_agent_stub: %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	/* blocked before the server's thread starts, so that only sigwait below takes them */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	if (sm_cni_server_start(argv[1], on_event, &stub, &server, err, sizeof(err))) {
		fprintf(stderr, "cni_agent_stub: %s\n", err);
		fclose(stub.events);
		return 1;
	}
	printf("listening\n");
	fflush(stdout);
	sigwait(&stop, &sig);
	sm_cni_server_stop(server);
	fclose(stub.events);
	return 0;
}
