/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The /proc resolver (podns.h). The cgroup rules follow istio-cni's (cni/pkg/nodeagent/
 * podcgroupns_linux.go, itself from SPIRE): a path names a pod when, after a trailing ".scope" is
 * trimmed, it holds "pod" after a punctuation character, then the UID's 32 hex digits (a punctuation
 * character allowed between its five groups: '-' for cgroupfs, '_' for systemd), then a punctuation
 * character and one or more words separated by single punctuation characters, the last of them the
 * container ID. The path need not start at a kubepods folder: inside a cgroup namespace it is relative
 * ("/../../pod<uid>/<id>") or just "/", which names nothing.
 */
#include "podns/podns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/nsfs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define CGROUP_FILE_MAX (64 * 1024) /* a cgroup v1 host lists ~15 lines; far more is not a cgroup file */
#define CONTAINER_ID_MAX 256

struct pod_ip {
	int family;
	unsigned char addr[16];
};

struct ns_seen {
	dev_t dev;
	ino_t ino;
	int holds; /* 1, 0, or -errno of the failed check */
};

static bool is_punct(char c)
{
	return ispunct((unsigned char)c);
}

/* Parses a UID at s into canonical form; returns the characters used, 0 when s holds none. */
static size_t parse_uid(const char *s, char *uid)
{
	static const int groups[] = {8, 4, 4, 4, 12};
	size_t used = 0, out = 0;

	for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
		if (g > 0) {
			if (is_punct(s[used]))
				used++;
			uid[out++] = '-';
		}
		for (int i = 0; i < groups[g]; i++, used++) {
			if (!isxdigit((unsigned char)s[used]))
				return 0;
			uid[out++] = (char)tolower((unsigned char)s[used]);
		}
	}
	uid[out] = '\0';
	return used;
}

/* What follows the UID: a punctuation character, then words separated by single punctuation characters. */
static bool tail_ok(const char *t, size_t len)
{
	if (len < 2 || !is_punct(t[0]) || is_punct(t[1]) || is_punct(t[len - 1]))
		return false;
	for (size_t i = 2; i < len; i++)
		if (is_punct(t[i]) && is_punct(t[i - 1]))
			return false;
	return true;
}

/* The pod UID and container ID one cgroup path names: true when it names one. */
static bool path_pod(const char *path, size_t len, char *uid, char *container, size_t container_size)
{
	static const char scope[] = ".scope";
	const size_t scope_len = sizeof(scope) - 1;

	if (len >= scope_len && memcmp(path + len - scope_len, scope, scope_len) == 0)
		len -= scope_len;
	for (size_t i = 1; i + 3 < len; i++) {
		if (!is_punct(path[i - 1]) || memcmp(path + i, "pod", 3) != 0)
			continue;
		char candidate[PODNS_UID_LEN + 1];
		/* parse_uid stops at the path's end at the latest: the path is NUL-terminated by the caller */
		size_t used = parse_uid(path + i + 3, candidate);
		size_t tail = i + 3 + used;
		if (!used || tail > len || !tail_ok(path + tail, len - tail))
			continue;
		size_t id = len;
		while (id > tail && !is_punct(path[id - 1]))
			id--;
		if (len - id >= container_size)
			return false;
		memcpy(container, path + id, len - id);
		container[len - id] = '\0';
		memcpy(uid, candidate, PODNS_UID_LEN);
		return true;
	}
	return false;
}

int podns_cgroup_pod_uid(const char *cgroup_text, char *uid)
{
	char container[CONTAINER_ID_MAX] = "", line_uid[PODNS_UID_LEN], line_container[CONTAINER_ID_MAX];
	char path[4096]; /* a cgroup path is at most PATH_MAX */
	bool found = false;

	for (const char *line = cgroup_text; *line;) {
		const char *end = strchrnul(line, '\n');
		/* hierarchy-ID:controller-list:path; the path may itself hold colons */
		const char *first = memchr(line, ':', (size_t)(end - line));
		const char *second = first ? memchr(first + 1, ':', (size_t)(end - first - 1)) : NULL;
		size_t len = second ? (size_t)(end - second - 1) : 0;

		if (end == line) {
			line = *end ? end + 1 : end;
			continue;
		}
		if (!second || len >= sizeof(path))
			return -EINVAL;
		memcpy(path, second + 1, len);
		path[len] = '\0';
		if (path_pod(path, len, line_uid, line_container, sizeof(line_container))) {
			if (found && (strcmp(line_uid, uid) != 0 || strcmp(line_container, container) != 0))
				return -EINVAL;
			if (!found)
				memcpy(uid, line_uid, PODNS_UID_LEN);
			strcpy(container, line_container);
			found = true;
		}
		line = *end ? end + 1 : end;
	}
	return found ? 0 : -ENOENT;
}

const char *podns_outcome_name(enum podns_outcome outcome)
{
	switch (outcome) {
	case PODNS_FOUND:
		return "found";
	case PODNS_NO_PROCESS:
		return "no process of the pod outside the host's network namespace";
	case PODNS_IP_MISSING:
		return "no namespace of the pod's processes holds one of its IPs";
	case PODNS_NOT_NETNS:
		return "the pod's processes have no network namespace that can be opened and entered";
	}
	return "unknown";
}

/* Reads a small file of the procfs into buf (NUL-terminated): bytes read or -errno. */
static ssize_t read_small(int dirfd, const char *path, char *buf, size_t size)
{
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	size_t used = 0;
	ssize_t n = 0;

	if (fd < 0)
		return -errno;
	while (used + 1 < size && (n = read(fd, buf + used, size - 1 - used)) > 0)
		used += (size_t)n;
	int err = n < 0 ? -errno : 0;
	close(fd);
	buf[used] = '\0';
	if (!err && used + 1 >= size)
		err = -EFBIG;
	return err ? err : (ssize_t)used;
}

/* Field 22 of /proc/<pid>/stat, counted after the command's closing parenthesis (it may hold spaces). */
static int start_time(int dirfd, const char *pid, unsigned long long *out)
{
	char path[300], buf[4096];
	snprintf(path, sizeof(path), "%s/stat", pid);
	ssize_t n = read_small(dirfd, path, buf, sizeof(buf));

	if (n < 0)
		return (int)n;
	const char *p = strrchr(buf, ')');
	if (!p)
		return -EINVAL;
	p++;
	for (int field = 3; field < 22; field++) {
		p += strspn(p, " ");
		p += strcspn(p, " ");
	}
	char *end;
	errno = 0;
	*out = strtoull(p, &end, 10);
	return errno || end == p ? -EINVAL : 0;
}

struct ip_check {
	int netns_fd;
	const struct pod_ip *ips;
	size_t n_ips;
	int ret;
};

/* 1 when an address of the current thread's network namespace is one of the pod's, 0 if not, or -errno. */
static int holds_ip(const struct pod_ip *ips, size_t n_ips)
{
	struct ifaddrs *list;
	int ret = 0;

	if (getifaddrs(&list))
		return -errno;
	for (struct ifaddrs *ifa = list; ifa && !ret; ifa = ifa->ifa_next) {
		if (!ifa->ifa_addr)
			continue;
		for (size_t i = 0; i < n_ips && !ret; i++) {
			if (ifa->ifa_addr->sa_family != ips[i].family)
				continue;
			if (ips[i].family == AF_INET)
				ret = memcmp(&((struct sockaddr_in *)(void *)ifa->ifa_addr)->sin_addr, ips[i].addr, 4) == 0;
			else
				ret = memcmp(&((struct sockaddr_in6 *)(void *)ifa->ifa_addr)->sin6_addr, ips[i].addr,
					     16) == 0;
		}
	}
	freeifaddrs(list);
	return ret;
}

/* A thread of its own enters the namespace, so the caller's threads never change namespace. */
static void *ip_check_thread(void *arg)
{
	struct ip_check *check = arg;

	check->ret = setns(check->netns_fd, CLONE_NEWNET) ? -errno : holds_ip(check->ips, check->n_ips);
	return NULL;
}

static int netns_holds_ip(int netns_fd, const struct stat *st, const struct pod_ip *ips, size_t n_ips)
{
	struct ip_check check = {netns_fd, ips, n_ips, 0};
	struct stat own;
	pthread_t thread;

	/* the caller's own namespace needs no setns (nor CAP_SYS_ADMIN) */
	if (stat("/proc/thread-self/ns/net", &own) == 0 && own.st_dev == st->st_dev && own.st_ino == st->st_ino)
		return holds_ip(ips, n_ips);
	int err = pthread_create(&thread, NULL, ip_check_thread, &check);
	if (err)
		return -err;
	pthread_join(thread, NULL);
	return check.ret;
}

static int parse_ips(const char *const *texts, size_t n, struct pod_ip *ips)
{
	for (size_t i = 0; i < n; i++) {
		if (!texts[i])
			return -EINVAL;
		if (inet_pton(AF_INET, texts[i], ips[i].addr) == 1)
			ips[i].family = AF_INET;
		else if (inet_pton(AF_INET6, texts[i], ips[i].addr) == 1)
			ips[i].family = AF_INET6;
		else
			return -EINVAL;
	}
	return 0;
}

struct walk {
	int root;
	char uid[PODNS_UID_LEN];
	const struct pod_ip *ips;
	size_t n_ips;
	bool have_host;
	struct stat host;
	struct ns_seen *seen;
	size_t n_seen;
	/* the best candidate so far per outcome */
	struct podns_result found, refused;
	bool saw_unreadable;
};

static bool older(unsigned long long start, pid_t pid, const struct podns_result *than)
{
	return than->pid == 0 || start < than->start_time || (start == than->start_time && pid < than->pid);
}

/* Whether the namespace at fd holds one of the pod's IPs, checked once per namespace: 1, 0 or -errno. */
static int seen_holds(struct walk *w, int fd, const struct stat *st)
{
	for (size_t i = 0; i < w->n_seen; i++)
		if (w->seen[i].dev == st->st_dev && w->seen[i].ino == st->st_ino)
			return w->seen[i].holds;
	int holds = ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET ? netns_holds_ip(fd, st, w->ips, w->n_ips) : -EINVAL;
	struct ns_seen *more = realloc(w->seen, (w->n_seen + 1) * sizeof(*more));
	if (!more)
		return -ENOMEM;
	w->seen = more;
	w->seen[w->n_seen++] = (struct ns_seen){st->st_dev, st->st_ino, holds};
	return holds;
}

/* One /proc/<pid>: 0 (considered or not the pod's), or -ENOMEM. Vanished processes are skipped. */
static int visit(struct walk *w, const char *pid_text)
{
	char path[300], uid[PODNS_UID_LEN]; /* d_name is at most 255 bytes */
	char *text = malloc(CGROUP_FILE_MAX);
	unsigned long long start = 0;
	struct stat st;
	int fd = -1, ret = 0;

	if (!text)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/cgroup", pid_text);
	if (read_small(w->root, path, text, CGROUP_FILE_MAX) < 0 || podns_cgroup_pod_uid(text, uid) ||
	    strcmp(uid, w->uid) != 0 || start_time(w->root, pid_text, &start))
		goto out;
	pid_t pid = (pid_t)strtol(pid_text, NULL, 10);
	snprintf(path, sizeof(path), "%s/ns/net", pid_text);
	fd = openat(w->root, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		w->saw_unreadable = true;
		goto out;
	}
	if (w->have_host && st.st_dev == w->host.st_dev && st.st_ino == w->host.st_ino)
		goto out; /* a process of the pod in the host's namespace: hostNetwork, or passing through */
	int holds = seen_holds(w, fd, &st);
	if (holds == -ENOMEM) {
		ret = holds;
	} else if (holds < 0) {
		w->saw_unreadable = true;
	} else if (holds && older(start, pid, &w->found)) {
		if (w->found.netns_fd >= 0)
			close(w->found.netns_fd);
		w->found = (struct podns_result){PODNS_FOUND, fd, pid, start};
		fd = -1;
	} else if (!holds && older(start, pid, &w->refused)) {
		w->refused = (struct podns_result){PODNS_IP_MISSING, -1, pid, start};
	}
out:
	if (fd >= 0)
		close(fd);
	free(text);
	return ret;
}

static bool all_digits(const char *s)
{
	return *s && strspn(s, "0123456789") == strlen(s);
}

int podns_find(const char *proc_root, const char *pod_uid, const char *const *ips, size_t n_ips,
	       struct podns_result *result)
{
	struct walk w = {.root = -1, .found = {PODNS_FOUND, -1, 0, 0}, .refused = {PODNS_IP_MISSING, -1, 0, 0}};
	struct pod_ip *parsed = NULL;
	DIR *dir = NULL;
	int ret;

	*result = (struct podns_result){PODNS_NO_PROCESS, -1, 0, 0};
	if (!pod_uid || !*pod_uid || parse_uid(pod_uid, w.uid) != strlen(pod_uid) || n_ips == 0 || !ips)
		return -EINVAL;
	parsed = calloc(n_ips, sizeof(*parsed));
	if (!parsed)
		return -ENOMEM;
	ret = parse_ips(ips, n_ips, parsed);
	if (ret)
		goto out;
	w.ips = parsed;
	w.n_ips = n_ips;
	w.root = open(proc_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w.root < 0) {
		ret = -errno;
		goto out;
	}
	w.have_host = fstatat(w.root, "1/ns/net", &w.host, 0) == 0;
	int walk_fd = dup(w.root);
	dir = walk_fd >= 0 ? fdopendir(walk_fd) : NULL;
	if (!dir) {
		ret = -errno;
		if (walk_fd >= 0)
			close(walk_fd);
		goto out;
	}
	for (struct dirent *entry; !ret && (errno = 0, entry = readdir(dir));)
		if (all_digits(entry->d_name))
			ret = visit(&w, entry->d_name);
	if (!ret && errno)
		ret = -errno;
	if (ret)
		goto out;
	if (w.found.pid) {
		*result = w.found;
		w.found.netns_fd = -1;
	} else if (w.refused.pid) {
		*result = w.refused;
	} else if (w.saw_unreadable) {
		result->outcome = PODNS_NOT_NETNS;
	}
out:
	if (w.found.netns_fd >= 0)
		close(w.found.netns_fd);
	if (dir)
		closedir(dir);
	if (w.root >= 0)
		close(w.root);
	free(w.seen);
	free(parsed);
	return ret;
}
