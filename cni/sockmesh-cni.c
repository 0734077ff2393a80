/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockmesh-cni: a chained CNI plugin that hands each new pod's network namespace to the sockmesh agent
 * (cni/protocol.h), so the agent can enroll the pod before its first process runs. It decides nothing
 * and changes nothing in the pod: ADD prints prevResult unchanged, and when the agent is down or slow
 * it logs and lets the pod start anyway (fail open: the agent's watcher enrolls the pod moments later;
 * failing closed would keep every pod, the agent's own included, from starting during an upgrade).
 * DEL notifies the agent (best effort) and always succeeds; CHECK succeeds.
 *
 * Config keys of its own (all optional): "socketPath" (default SM_CNI_DEFAULT_SOCKET) and "logFile" (a
 * file that gets the log lines too; they always go to stderr, which runtimes keep in their logs).
 * Errors follow the CNI spec: a JSON error object on stdout and exit status 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cni/protocol.h"

/* The spec's well-known error codes that this plugin uses. */
enum cni_error {
	CNI_ERR_INCOMPATIBLE_VERSION = 1,
	CNI_ERR_INVALID_ENV = 4,
	CNI_ERR_DECODING = 6,
	CNI_ERR_INVALID_CONFIG = 7,
};

/* Up to the spec versions whose commands are ADD, DEL, CHECK and VERSION (1.1.0 adds GC and STATUS). */
static const char *const supported_versions[] = { "0.3.0", "0.3.1", "0.4.0", "1.0.0" };

struct pod {
	char uid[256], namespace[256], name[256];
};

static const char *log_file;

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "sockmesh-cni: %s\n", line);
	if (log_file) {
		FILE *f = fopen(log_file, "ae");
		if (f) {
			fprintf(f, "%ld sockmesh-cni[%d]: %s\n", (long)time(NULL), (int)getpid(), line);
			fclose(f);
		}
	}
}

/* A CNI error result on stdout; the exit status the caller returns is 1. */
static int cni_fail(const char *version, enum cni_error code, const char *msg, const char *details)
{
	json_t *error = json_pack("{s:s, s:i, s:s, s:s}", "cniVersion", version ? version : "1.0.0", "code", code,
				  "msg", msg, "details", details ? details : "");

	json_dumpf(error, stdout, JSON_COMPACT);
	putchar('\n');
	json_decref(error);
	log_line("%s%s%s", msg, details && *details ? ": " : "", details ? details : "");
	return 1;
}

static bool supported(const char *version)
{
	for (size_t i = 0; i < sizeof(supported_versions) / sizeof(supported_versions[0]); i++) {
		if (strcmp(version, supported_versions[i]) == 0)
			return true;
	}
	return false;
}

static int print_version(void)
{
	json_t *versions = json_array();

	for (size_t i = 0; i < sizeof(supported_versions) / sizeof(supported_versions[0]); i++)
		json_array_append_new(versions, json_string(supported_versions[i]));
	json_t *out = json_pack("{s:s, s:o}", "cniVersion", "1.0.0", "supportedVersions", versions);
	json_dumpf(out, stdout, JSON_COMPACT);
	putchar('\n');
	json_decref(out);
	return 0;
}

/* CNI_ARGS is "K=V;K=V": takes the K8S_POD_ keys and ignores the rest (runtimes add IgnoreUnknown=1). */
static void parse_cni_args(const char *args, struct pod *pod)
{
	static const struct {
		const char *key;
		size_t offset;
	} keys[] = {
		{ "K8S_POD_UID", offsetof(struct pod, uid) },
		{ "K8S_POD_NAMESPACE", offsetof(struct pod, namespace) },
		{ "K8S_POD_NAME", offsetof(struct pod, name) },
	};

	while (args && *args) {
		const char *end = strchr(args, ';'), *eq = memchr(args, '=', end ? (size_t)(end - args) : strlen(args));
		size_t len = end ? (size_t)(end - args) : strlen(args);
		for (size_t k = 0; eq && k < sizeof(keys) / sizeof(keys[0]); k++) {
			size_t key_len = strlen(keys[k].key), value_len = len - (size_t)(eq + 1 - args);
			if ((size_t)(eq - args) == key_len && memcmp(args, keys[k].key, key_len) == 0 &&
			    value_len < sizeof(pod->uid)) {
				/* the last of a repeated key wins, whole */
				memcpy((char *)pod + keys[k].offset, eq + 1, value_len);
				((char *)pod + keys[k].offset)[value_len] = '\0';
			}
		}
		args = end ? end + 1 : NULL;
	}
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_for(int fd, short events, long deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	long left;

	while ((left = deadline - now_ms()) > 0) {
		int n = poll(&pfd, 1, (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
	return -ETIMEDOUT;
}

static int send_request(int sock, const char *request, int netns_fd)
{
	struct iovec iov = { .iov_base = (void *)request, .iov_len = strlen(request) };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control = { 0 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (netns_fd >= 0) {
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof(control.buf);
		struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cmsg), &netns_fd, sizeof(int));
	}
	return sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/*
 * Sends one request and waits for its answer, all within SM_CNI_ANSWER_TIMEOUT_MS. 0 when the agent
 * answered ok; else -errno, with the agent's own refusal in why.
 */
static int notify(const char *path, const char *request, int netns_fd, char *why, size_t why_size)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	long deadline = now_ms() + SM_CNI_ANSWER_TIMEOUT_MS;
	char answer[SM_CNI_MAX_MESSAGE + 1];
	int sock = -1, ret;
	ssize_t n;

	snprintf(why, why_size, "%s", "");
	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, path, strlen(path));
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	/* non-blocking: a listener whose backlog is full must not hold the pod's creation */
	if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) == 0 || errno == EAGAIN || errno == EINPROGRESS)
		ret = wait_for(sock, POLLOUT, deadline);
	else
		ret = -errno;
	if (!ret)
		ret = send_request(sock, request, netns_fd);
	if (!ret)
		ret = wait_for(sock, POLLIN, deadline);
	if (!ret) {
		n = recv(sock, answer, sizeof(answer) - 1, 0);
		ret = n < 0 ? -errno : n == 0 ? -ECONNRESET : 0;
		if (!ret) {
			answer[n] = '\0';
			json_t *reply = json_loads(answer, 0, NULL);
			if (!json_is_true(json_object_get(reply, "ok"))) {
				const char *error = json_string_value(json_object_get(reply, "error"));
				snprintf(why, why_size, "%s", error ? error : "an answer that is not {\"ok\": true}");
				ret = -EPROTO;
			}
			json_decref(reply);
		}
	}
	close(sock);
	return ret;
}

/* Tells the agent about the pod; logs what went wrong and never fails (fail open). */
static void tell_agent(const char *command, const char *socket_path, const char *netns_path)
{
	const char *container_id = getenv("CNI_CONTAINERID");
	struct pod pod = { 0 };
	char why[512];
	int netns_fd = -1, ret;

	parse_cni_args(getenv("CNI_ARGS"), &pod);
	if (netns_path && *netns_path) {
		netns_fd = open(netns_path, O_RDONLY | O_CLOEXEC);
		if (netns_fd < 0 && strcmp(command, "ADD") == 0) {
			log_line("ADD %s/%s: cannot open the network namespace %s (%s): the agent is not told", pod.namespace,
			      pod.name, netns_path, strerror(errno));
			return;
		}
	}
	json_t *request = json_pack("{s:s, s:s, s:s, s:s, s:s}", "command", command, "uid", pod.uid, "namespace",
				    pod.namespace, "name", pod.name, "containerId", container_id ? container_id : "");
	char *text = request ? json_dumps(request, JSON_COMPACT) : NULL;
	if (!request)
		ret = -EILSEQ; /* jansson takes UTF-8 only: a CNI_ARGS value that is not */
	else if (!text)
		ret = -ENOMEM;
	else if (strlen(text) > SM_CNI_MAX_MESSAGE)
		ret = -EMSGSIZE;
	else
		ret = notify(socket_path, text, netns_fd, why, sizeof(why));
	if (ret == -EPROTO)
		log_line("%s %s/%s: the agent at %s refused: %s", command, pod.namespace, pod.name, socket_path, why);
	else if (ret)
		log_line("%s %s/%s: the agent at %s was not told (%s); the pod goes on without it", command, pod.namespace,
		      pod.name, socket_path, strerror(-ret));
	free(text);
	json_decref(request);
	if (netns_fd >= 0)
		close(netns_fd);
}

static json_t *read_config(char *err, size_t err_size)
{
	json_error_t error;
	json_t *config = json_loadf(stdin, JSON_REJECT_DUPLICATES, &error);

	if (!config)
		snprintf(err, err_size, "line %d: %s", error.line, error.text);
	else if (!json_is_object(config))
		snprintf(err, err_size, "%s", "the network configuration is not a JSON object");
	else
		return config;
	json_decref(config);
	return NULL;
}

/* A config string, or fallback when absent; NULL (with err set) when present but not a string. */
static const char *config_string(json_t *config, const char *key, const char *fallback, char *err, size_t err_size)
{
	json_t *value = json_object_get(config, key);

	if (!value)
		return fallback;
	if (!json_is_string(value)) {
		snprintf(err, err_size, "\"%s\" must be a string", key);
		return NULL;
	}
	return json_string_value(value);
}

/* The plugin's own keys: socketPath (else the default) and logFile (sets log_file). */
static int read_options(json_t *config, const char **socket_path, char *err, size_t err_size)
{
	const char *log = config_string(config, "logFile", NULL, err, err_size);

	*socket_path = config_string(config, "socketPath", SM_CNI_DEFAULT_SOCKET, err, err_size);
	if (!*socket_path || (!log && json_object_get(config, "logFile")))
		return -EINVAL;
	log_file = log;
	return 0;
}

static int add(json_t *config, const char *version, const char *socket_path)
{
	const char *netns = getenv("CNI_NETNS"), *container = getenv("CNI_CONTAINERID");
	json_t *prev = json_object_get(config, "prevResult");

	if (!json_is_object(prev))
		return cni_fail(version, CNI_ERR_INVALID_CONFIG, "sockmesh-cni cannot be used standalone",
				"the network configuration has no prevResult: list sockmesh-cni after the primary "
				"plugin in a conflist");
	if (!netns || !*netns || !container || !*container)
		return cni_fail(version, CNI_ERR_INVALID_ENV, "CNI_NETNS and CNI_CONTAINERID are required for ADD", NULL);
	tell_agent("ADD", socket_path, netns);
	json_dumpf(prev, stdout, JSON_COMPACT);
	putchar('\n');
	return 0;
}

int main(void)
{
	const char *command = getenv("CNI_COMMAND"), *version, *socket_path;
	char err[512] = "";
	json_t *config;
	int status;

	if (!command)
		return cni_fail(NULL, CNI_ERR_INVALID_ENV, "CNI_COMMAND is not set", NULL);
	if (strcmp(command, "VERSION") == 0)
		return print_version();
	config = read_config(err, sizeof(err));
	if (strcmp(command, "DEL") == 0) {
		/* DEL always succeeds: a pod must be deletable whatever its config or the agent say. With a
		 * config we cannot read, we do not know which agent to tell, and the watcher cleans up. */
		if (!config || read_options(config, &socket_path, err, sizeof(err)))
			log_line("DEL: the agent is not told: invalid network configuration: %s", err);
		else
			tell_agent("DEL", socket_path, getenv("CNI_NETNS"));
		json_decref(config);
		return 0;
	}
	if (!config)
		return cni_fail(NULL, CNI_ERR_DECODING, "cannot decode the network configuration", err);
	version = json_string_value(json_object_get(config, "cniVersion"));
	if (!version)
		status = cni_fail(NULL, CNI_ERR_INVALID_CONFIG, "the network configuration has no cniVersion", NULL);
	else if (!supported(version))
		status = cni_fail(version, CNI_ERR_INCOMPATIBLE_VERSION, "unsupported cniVersion",
				  "sockmesh-cni supports 0.3.0, 0.3.1, 0.4.0 and 1.0.0");
	else if (read_options(config, &socket_path, err, sizeof(err)))
		status = cni_fail(version, CNI_ERR_INVALID_CONFIG, "invalid sockmesh-cni configuration", err);
	else if (strcmp(command, "ADD") == 0)
		status = add(config, version, socket_path);
	else if (strcmp(command, "CHECK") == 0)
		status = 0; /* nothing of the pod's network is ours to check */
	else
		status = cni_fail(version, CNI_ERR_INVALID_ENV, "unknown CNI_COMMAND", command);
	json_decref(config);
	return status;
}
