/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The xDS client against the mock server, over real gRPC on 127.0.0.1: starting and stopping the
 * server, reading its request log, waiting for the client.
 */
#ifndef SOCKMESH_TEST_XDS_ENV_H
#define SOCKMESH_TEST_XDS_ENV_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "builders.h"
#include "clock.h"
#include "helpers.h"
#include "test_tmpdir.h"
#include "xds/xds.h"

struct server {
	pid_t pid;
	int port;
	char log[256];
	char address[32];
};

/* Writes responses as a recorded stream at path, freeing them. */
static inline void write_stream(const char *path, struct response *responses, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(response_append(fd, &responses[i]), 0);
		response_free(&responses[i]);
	}
	close(fd);
}

/* Starts mock_xds_server with args (NULL-terminated), logging to a fresh file; waits for its port. */
static inline void server_start(struct server *server, const char *const *args)
{
	char port_file[272];
	const char *argv[32];
	int argc = 0;

	temp_path(server->log, sizeof(server->log), "xds-log");
	snprintf(port_file, sizeof(port_file), "%s.port", server->log);
	unlink(server->log);
	unlink(port_file);
	argv[argc++] = MOCK_XDS_SERVER;
	argv[argc++] = "--log";
	argv[argc++] = server->log;
	argv[argc++] = "--port-file";
	argv[argc++] = port_file;
	for (int i = 0; args[i] && argc < 30; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;

	server->pid = fork();
	if (server->pid == 0) {
		/* a test that fails (or crashes) midway must not leave servers holding meson's pipes */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		freopen("/dev/null", "w", stdout);
		execv(MOCK_XDS_SERVER, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 3000; i++) { /* 30 s: an ASan build on a loaded machine starts slowly */
		FILE *f = fopen(port_file, "r");
		if (f && fscanf(f, "%d", &server->port) == 1) {
			fclose(f);
			unlink(port_file);
			snprintf(server->address, sizeof(server->address), "127.0.0.1:%d", server->port);
			return;
		}
		if (f)
			fclose(f);
		sleep_ms(10);
	}
	fail_msg("mock_xds_server did not start");
}

static inline void server_stop(struct server *server)
{
	if (server->pid > 0) {
		kill(server->pid, SIGTERM);
		waitpid(server->pid, NULL, 0);
		server->pid = 0;
	}
}

/* The log's events of a kind ("request", "stream", "status", "sent"), in order. */
static inline json_t *server_events(const struct server *server, const char *kind)
{
	json_t *events = json_array();
	FILE *f = fopen(server->log, "r");
	char line[1 << 16];

	while (f && fgets(line, sizeof(line), f)) {
		json_t *event = json_loads(line, 0, NULL);
		if (event && strcmp(json_string_value(json_object_get(event, "event")), kind) == 0)
			json_array_append(events, event);
		json_decref(event);
	}
	if (f)
		fclose(f);
	return events;
}

/* A client writing into an image, as the agent writes into the kernel's maps. */
struct client {
	struct sm_model *model;
	struct sm_image *image;
	struct sm_image_writer writer;
	pthread_mutex_t lock;
	struct sm_xds_node node;
	struct sm_xds_client *xds;
	char error[512];
};

static inline void quiet_log(enum sm_xds_log_level level, const char *line)
{
	if (getenv("SM_TEST_VERBOSE") || level == SM_XDS_LOG_ERROR)
		fprintf(stderr, "%s\n", line);
}

static inline void client_node(struct sm_xds_node *node)
{
	static char *const env[] = { "INSTANCE_IP=10.0.0.5", "POD_NAME=ztunnel-abc", "POD_NAMESPACE=istio-system",
				     "NODE_NAME=worker-2", "CLUSTER_ID=cluster-1", "ISTIO_META_MESH_ID=mesh-1",
				     "PATH=/bin", NULL };

	assert_int_equal(sm_xds_node_from_env(node, env), 0);
}

/* Creates a client, not started yet; options may adjust everything but the model (and the writer: the image
 * writer unless options name one, which may write through &c->writer.writer). */
static inline void client_open(struct client *c, const struct sm_xds_options *base)
{
	struct sm_xds_options options = *base;

	memset(c, 0, sizeof(*c));
	assert_int_equal(sm_model_new(&(struct sm_model_options){ .node_name = "worker-2" }, &c->model), 0);
	assert_int_equal(sm_image_new(&c->image), 0);
	sm_image_writer_init(&c->writer, c->image);
	c->writer.check_each_write = true; /* no write may leave a dangling reference */
	pthread_mutex_init(&c->lock, NULL);
	client_node(&c->node);
	options.node = &c->node;
	options.model = c->model;
	options.writer = base->writer ? base->writer : &c->writer.writer;
	options.model_lock = &c->lock;
	options.log = quiet_log;
	if (sm_xds_client_new(&options, &c->xds, c->error, sizeof(c->error)))
		fail_msg("client: %s", c->error);
}

/* Creates and starts a client, as client_open. */
static inline void client_start(struct client *c, const struct sm_xds_options *base)
{
	client_open(c, base);
	assert_int_equal(sm_xds_client_start(c->xds), 0);
}

static inline void client_stop(struct client *c)
{
	sm_xds_client_free(c->xds);
	sm_model_free(c->model);
	sm_image_free(c->image);
	sm_xds_node_clear(&c->node);
	pthread_mutex_destroy(&c->lock);
}

static inline struct sm_xds_stats client_stats(struct client *c)
{
	struct sm_xds_stats stats;

	sm_xds_client_stats(c->xds, &stats);
	return stats;
}

/* Waits up to seconds for cond (an expression over stats); fails the test when it does not come. */
#define WAIT_FOR(c, seconds, cond)                                                                 \
	do {                                                                                       \
		double deadline_ = now_seconds() + (seconds);                                      \
		struct sm_xds_stats stats;                                                         \
		for (;;) {                                                                         \
			stats = client_stats(c);                                                   \
			if (cond)                                                                  \
				break;                                                             \
			if (now_seconds() > deadline_)                                             \
				fail_msg("timed out waiting for %s (responses %llu, acks %llu, nacks %llu, last error: %s)", \
					 #cond, (unsigned long long)stats.responses, (unsigned long long)stats.acks, \
					 (unsigned long long)stats.nacks, stats.last_error);       \
			sleep_ms(10);                                                              \
		}                                                                                  \
	} while (0)

static inline size_t model_count(struct client *c, enum sm_map_id map)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = sm_image_count(c->image, map);
	pthread_mutex_unlock(&c->lock);
	return n;
}

#endif
