/* SPDX-License-Identifier: Apache-2.0 */
/* sockmesh dump's names: the running agent's /config_dump over HTTP, indexed by the model's name hash. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <xxhash.h>

#include "agent/agent.h"
#include "agent/dump_names.h"

#define FETCH_TIMEOUT_S 3
#define FETCH_MAX_BYTES (512u << 20) /* a dump of full maps is a few hundred MiB at most */

/* The model's name hash (workload/model.c); test_dump_names checks that the two agree. */
static uint64_t name_hash(const char *name)
{
	return XXH3_64bits(name, strlen(name));
}

static int connect_admin(const char *address, char *err, size_t err_size)
{
	struct timeval timeout = { .tv_sec = FETCH_TIMEOUT_S };
	struct sockaddr_storage addr;
	int fd;

	if (parse_ip_port(address, &addr)) {
		snprintf(err, err_size, "'%s' is not IP:PORT", address);
		return -EINVAL;
	}
	fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, err_size, "socket: %s", strerror(errno));
		return -errno;
	}
	/* On Linux the send timeout bounds connect() too. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) ||
	    connect(fd, (struct sockaddr *)&addr, addr.ss_family == AF_INET ? sizeof(struct sockaddr_in)
									   : sizeof(struct sockaddr_in6))) {
		int ret = -errno;
		snprintf(err, err_size, "%s: %s", address, strerror(errno));
		close(fd);
		return ret;
	}
	return fd;
}

/* Reads until the peer closes (HTTP/1.0: the body ends with the connection). */
static int read_all(int fd, char **out, size_t *len, char *err, size_t err_size)
{
	size_t size = 0, used = 0;
	char *buf = NULL;

	for (;;) {
		if (used + 1 >= size) {
			size_t grown = size ? size * 2 : 65536;
			char *bigger = grown <= FETCH_MAX_BYTES ? realloc(buf, grown) : NULL;
			if (!bigger) {
				snprintf(err, err_size, "the response is larger than %u bytes or memory ran out",
					 FETCH_MAX_BYTES);
				free(buf);
				return -ENOMEM;
			}
			buf = bigger;
			size = grown;
		}
		ssize_t n = read(fd, buf + used, size - used - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int ret = -errno;
			snprintf(err, err_size, "reading the response: %s", strerror(errno));
			free(buf);
			return ret;
		}
		if (n == 0)
			break;
		used += (size_t)n;
	}
	buf[used] = '\0';
	*out = buf;
	*len = used;
	return 0;
}

int admin_get_json(const char *address, const char *path, json_t **out, char *err, size_t err_size)
{
	char request[2048], *response = NULL;
	size_t len = 0;
	json_error_t error;
	int fd, ret;

	fd = connect_admin(address, err, err_size);
	if (fd < 0)
		return fd;
	int n = snprintf(request, sizeof(request), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, address);
	if (n < 0 || (size_t)n >= sizeof(request) || send(fd, request, (size_t)n, MSG_NOSIGNAL) != n) {
		snprintf(err, err_size, "%s: sending the request failed", address);
		ret = -EIO;
		goto out;
	}
	if ((ret = read_all(fd, &response, &len, err, err_size)))
		goto out;
	const char *body = strstr(response, "\r\n\r\n");
	if (strncmp(response, "HTTP/1.", 7) != 0 || strlen(response) < 12 || strncmp(response + 8, " 200", 4) != 0 ||
	    !body) {
		snprintf(err, err_size, "%s%.*s answered '%.*s'%s%.200s", address, (int)strcspn(path, "?"), path,
			 (int)strcspn(response, "\r\n"), response, body ? ": " : "", body ? body + 4 : "");
		ret = -EPROTO;
		goto out;
	}
	body += 4;
	*out = json_loadb(body, len - (size_t)(body - response), 0, &error);
	if (!*out) {
		snprintf(err, err_size, "%s%.*s is not JSON: %s", address, (int)strcspn(path, "?"), path, error.text);
		ret = -EPROTO;
	}
out:
	free(response);
	close(fd);
	return ret;
}

int dump_names_fetch(const char *address, json_t **config_dump, char *err, size_t err_size)
{
	return admin_get_json(address, "/config_dump", config_dump, err, err_size);
}

static int by_hash(const void *a, const void *b)
{
	uint64_t x = ((const struct dump_name *)a)->hash, y = ((const struct dump_name *)b)->hash;

	return x < y ? -1 : x > y;
}

/* "A/B" of two string members of object into *out (NULL when either is missing). 0 or -ENOMEM. */
static int join(const json_t *object, const char *a, const char *b, char **out)
{
	const char *x = json_string_value(json_object_get(object, a));
	const char *y = json_string_value(json_object_get(object, b));

	*out = NULL;
	if (!x || !y)
		return 0;
	return asprintf(out, "%s/%s", x, y) < 0 ? (*out = NULL, -ENOMEM) : 0;
}

/*
 * One entry per member of the dump's object that has the names (services appear once per VIP: the
 * duplicates are harmless). Services hash "namespace/hostname"; workloads hash their uid and show
 * "namespace/name".
 */
static int index_members(const json_t *object, bool services, struct dump_name **out, size_t *n_out)
{
	size_t n = 0, capacity = json_object_size(object);
	struct dump_name *entries = calloc(capacity ? capacity : 1, sizeof(*entries));
	const char *member;
	json_t *value;

	if (!entries)
		return -ENOMEM;
	*out = entries;
	json_object_foreach((json_t *)object, member, value) {
		const char *uid = json_string_value(json_object_get(value, "uid"));
		char *name;
		int ret = join(value, "namespace", services ? "hostname" : "name", &name);
		if (ret) {
			*n_out = n; /* for dump_names_clear */
			return ret;
		}
		if (!name || (!services && !uid)) {
			free(name);
			continue;
		}
		entries[n++] = (struct dump_name){ .hash = name_hash(services ? name : uid), .name = name };
	}
	qsort(entries, n, sizeof(*entries), by_hash);
	*n_out = n;
	return 0;
}

int dump_names_index(const json_t *config_dump, struct dump_names *names)
{
	int ret;

	*names = (struct dump_names){ 0 };
	ret = index_members(json_object_get(config_dump, "services"), true, &names->services, &names->n_services);
	if (!ret)
		ret = index_members(json_object_get(config_dump, "workloads"), false, &names->workloads,
				    &names->n_workloads);
	if (ret)
		dump_names_clear(names);
	return ret;
}

static const char *find(const struct dump_name *entries, size_t n, uint64_t hash)
{
	const struct dump_name probe = { .hash = hash };
	const struct dump_name *found = n ? bsearch(&probe, entries, n, sizeof(*entries), by_hash) : NULL;

	return found ? found->name : NULL;
}

const char *dump_names_service(const struct dump_names *names, uint64_t hash)
{
	return find(names->services, names->n_services, hash);
}

const char *dump_names_workload(const struct dump_names *names, uint64_t hash)
{
	return find(names->workloads, names->n_workloads, hash);
}

static void free_entries(struct dump_name *entries, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(entries[i].name);
	free(entries);
}

void dump_names_clear(struct dump_names *names)
{
	free_entries(names->services, names->n_services);
	free_entries(names->workloads, names->n_workloads);
	*names = (struct dump_names){ 0 };
}
