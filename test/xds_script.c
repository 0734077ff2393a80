/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes a recorded stream (for mock_xds_server --stream) from a script on stdin, one line each:
 *
 *   address [NONCE]                         start an Address response
 *   authorization [NONCE]                   start an (empty) Authorization response
 *   service NS/HOST VIP PORT:TARGET [VERSION]
 *   workload UID IP NS/HOST:PORT:TARGET [VERSION]
 *   remove NAME
 *
 * Shell loops make scripts of thousands of responses (endpoint swaps, fills, floods) for the tests.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builders.h"

struct script {
	struct response response;
	bool open;
	int fd;
	unsigned line;
};

static int flush_response(struct script *s)
{
	int err;

	if (!s->open)
		return 0;
	err = response_append(s->fd, &s->response);
	response_free(&s->response);
	s->open = false;
	return err;
}

static int start_response(struct script *s, const char *type_url, const char *nonce)
{
	int err = flush_response(s);

	if (err)
		return err;
	response_init(&s->response, type_url);
	s->response.msg.nonce = response_keep(&s->response, strdup(nonce ? nonce : "n"));
	s->open = true;
	return 0;
}

static bool parse_ports(const char *text, uint32_t *port, uint32_t *target)
{
	return sscanf(text, "%u:%u", port, target) == 2 && *port && *port <= 65535 && *target && *target <= 65535;
}

static int run_line(struct script *s, char *line)
{
	char *words[6] = { 0 };
	int n = 0;

	for (char *save, *w = strtok_r(line, " \t\n", &save); w && n < 6; w = strtok_r(NULL, " \t\n", &save))
		words[n++] = w;
	if (!n || words[0][0] == '#')
		return 0;
	if (strcmp(words[0], "address") == 0)
		return start_response(s, SM_TYPE_URL_ADDRESS, words[1]);
	if (strcmp(words[0], "authorization") == 0)
		return start_response(s, SM_TYPE_URL_AUTHORIZATION, words[1]);
	if (!s->open)
		return -EINVAL;
	if (strcmp(words[0], "remove") == 0 && n == 2) {
		response_remove(&s->response, words[1]);
		return 0;
	}
	if (strcmp(words[0], "service") == 0 && n >= 4) {
		char *slash = strchr(words[1], '/');
		struct service_spec spec = { .vips = { words[2] } };
		if (!slash || !parse_ports(words[3], &spec.ports[0].service_port, &spec.ports[0].target_port))
			return -EINVAL;
		*slash = '\0';
		spec.namespace = words[1];
		spec.hostname = slash + 1;
		response_add_service(&s->response, &spec, n > 4 ? words[4] : "v1");
		return 0;
	}
	if (strcmp(words[0], "workload") == 0 && n >= 4) {
		struct workload_spec spec = { .uid = words[1], .addresses = { words[2] } };
		/* NS/HOST:PORT:TARGET: the service ends at the second colon from the end */
		char *last = strrchr(words[3], ':'), *first;
		if (!last)
			return -EINVAL;
		*last = '\0';
		first = strrchr(words[3], ':');
		*last = ':';
		if (!first)
			return -EINVAL;
		*first = '\0';
		if (!parse_ports(first + 1, &spec.services[0].ports[0].service_port,
				 &spec.services[0].ports[0].target_port))
			return -EINVAL;
		spec.services[0].service = words[3];
		response_add_workload(&s->response, &spec, n > 4 ? words[4] : "v1");
		return 0;
	}
	return -EINVAL;
}

int main(int argc, char **argv)
{
	struct script s = { .fd = -1 };
	char line[1024];
	int err = 0;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: xds_script OUTPUT.xds < SCRIPT\n");
		return 2;
	}
	s.fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (s.fd < 0) {
		fprintf(stderr, "xds_script: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	while (!err && fgets(line, sizeof(line), stdin)) {
		s.line++;
		err = run_line(&s, line);
	}
	if (!err)
		err = flush_response(&s);
	else if (s.open)
		response_free(&s.response);
	close(s.fd);
	if (err) {
		fprintf(stderr, "xds_script: line %u: %s\n", s.line, err == -EINVAL ? "not understood" : strerror(-err));
		return 1;
	}
	return 0;
}
