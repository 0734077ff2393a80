/* SPDX-License-Identifier: Apache-2.0 */
#include "cniinstall/cniinstall.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* Our temporary files: hidden and without a config extension, so no runtime ever loads one. */
#define TMP_PREFIX ".sockmesh-cni.tmp."

static int fail(int ret, char *err, size_t size, const char *fmt, const char *what, const char *reason)
{
	snprintf(err, size, fmt, what, reason);
	return ret;
}

int sm_cni_check_dir(const char *dir, char *err, size_t err_size)
{
	struct stat st;

	if (stat(dir, &st))
		return fail(-errno, err, err_size, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail(-ENOTDIR, err, err_size, "%s: %s", dir, "not a directory");
	if (access(dir, W_OK | X_OK))
		return fail(-errno, err, err_size, "%s: not writable: %s", dir, strerror(errno));
	return 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		ret = -errno;
	close(fd);
	return ret;
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Whether the file at path is still the one read (same inode, size and modification time). */
static bool unchanged(const char *path, const struct stat *read)
{
	struct stat now;

	return !stat(path, &now) && now.st_ino == read->st_ino && now.st_dev == read->st_dev &&
	       now.st_size == read->st_size && now.st_mtim.tv_sec == read->st_mtim.tv_sec &&
	       now.st_mtim.tv_nsec == read->st_mtim.tv_nsec;
}

/*
 * Writes data (or the contents of the open file src_fd when data is NULL) to dir/name atomically:
 * a temporary file beside it, fsynced, renamed over, the directory fsynced. With read_path, -EAGAIN
 * instead when the file there changed since it was read (read_st), so that an edit never overwrites
 * what another writer just wrote; the window left is the rename itself.
 */
static int atomic_write(const char *dir, const char *name, const char *data, size_t len, int src_fd, mode_t mode,
			const char *read_path, const struct stat *read_st, char *err, size_t size)
{
	char tmp[4096], path[4096];
	int fd, ret = 0;

	if (snprintf(tmp, sizeof(tmp), "%s/" TMP_PREFIX "XXXXXX", dir) >= (int)sizeof(tmp) ||
	    snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return fail(-ENAMETOOLONG, err, size, "%s: %s", dir, "path too long");
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return fail(-errno, err, size, "%s: cannot make a temporary file: %s", dir, strerror(errno));
	if (data) {
		ret = write_all(fd, data, len);
	} else {
		char buf[65536];
		ssize_t n;
		while (!ret && (n = read(src_fd, buf, sizeof(buf))) != 0)
			ret = n < 0 ? (errno == EINTR ? 0 : -errno) : write_all(fd, buf, (size_t)n);
	}
	if (!ret && fchmod(fd, mode))
		ret = -errno;
	if (!ret && fsync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	if (!ret && read_path && !unchanged(read_path, read_st)) {
		unlink(tmp);
		return fail(-EAGAIN, err, size, "%s: %s", read_path, "changed while being edited");
	}
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (ret) {
		unlink(tmp);
		return fail(ret, err, size, "%s: cannot write: %s", path, strerror(-ret));
	}
	fsync_dir(dir); /* the rename is done; only its durability across a crash depends on this */
	return 0;
}

int sm_cni_install_binary(const char *plugin, const char *bin_dir, char *err, size_t err_size)
{
	int fd = open(plugin, O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0)
		return fail(-errno, err, err_size, "the CNI plugin %s: %s", plugin, strerror(errno));
	ret = atomic_write(bin_dir, SM_CNI_PLUGIN_TYPE, NULL, 0, fd, 0755, NULL, NULL, err, err_size);
	close(fd);
	return ret;
}

int sm_cni_remove_binary(const char *bin_dir, char *err, size_t err_size)
{
	char path[4096];

	if (snprintf(path, sizeof(path), "%s/" SM_CNI_PLUGIN_TYPE, bin_dir) >= (int)sizeof(path))
		return fail(-ENAMETOOLONG, err, err_size, "%s: %s", bin_dir, "path too long");
	if (unlink(path) && errno != ENOENT)
		return fail(-errno, err, err_size, "%s: %s", path, strerror(errno));
	return 0;
}

/* ---- the primary config ---- */

static bool config_name(const char *name)
{
	const char *dot = strrchr(name, '.');

	return name[0] != '.' && dot &&
	       (strcmp(dot, ".conf") == 0 || strcmp(dot, ".conflist") == 0 || strcmp(dot, ".json") == 0);
}

/* The name of the config the runtime loads: by byte order the first config file (libcni's ConfFiles). */
static int primary_config(const char *conf_dir, char *name, size_t size, char *err, size_t err_size)
{
	DIR *dir = opendir(conf_dir);
	struct dirent *entry;

	if (!dir)
		return fail(-errno, err, err_size, "%s: %s", conf_dir, strerror(errno));
	name[0] = '\0';
	while ((entry = readdir(dir))) {
		if (entry->d_type != DT_REG && entry->d_type != DT_LNK && entry->d_type != DT_UNKNOWN)
			continue;
		if (config_name(entry->d_name) && strlen(entry->d_name) < size &&
		    (!name[0] || strcmp(entry->d_name, name) < 0))
			snprintf(name, size, "%s", entry->d_name);
	}
	closedir(dir);
	if (!name[0])
		return fail(-ENOENT, err, err_size, "%s: %s", conf_dir, "no CNI config (*.conf, *.conflist, *.json) yet");
	return 0;
}

static bool is_ours(json_t *plugin)
{
	const char *type = json_string_value(json_object_get(plugin, "type"));

	return type && strcmp(type, SM_CNI_PLUGIN_TYPE) == 0;
}

/* Takes our entries out of plugins; says whether there were any. */
static bool drop_ours(json_t *plugins)
{
	bool dropped = false;

	for (size_t i = json_array_size(plugins); i-- > 0;) {
		if (is_ours(json_array_get(plugins, i))) {
			json_array_remove(plugins, i);
			dropped = true;
		}
	}
	return dropped;
}

static json_t *our_entry(const char *socket_path)
{
	json_t *entry = json_pack("{s:s}", "type", SM_CNI_PLUGIN_TYPE);

	if (entry && socket_path && json_object_set_new(entry, "socketPath", json_string(socket_path))) {
		json_decref(entry);
		return NULL;
	}
	return entry;
}

/* A single-plugin config as a conflist holding it, as libcni's ConfListFromConf does. */
static json_t *as_conflist(json_t *conf)
{
	json_t *list = json_object(), *plugins = json_array();
	json_t *version = json_object_get(conf, "cniVersion"), *name = json_object_get(conf, "name");

	if (!list || !plugins || (version && json_object_set(list, "cniVersion", version)) ||
	    (name && json_object_set(list, "name", name)) || json_array_append(plugins, conf) ||
	    json_object_set(list, "plugins", plugins)) {
		json_decref(list);
		json_decref(plugins);
		return NULL;
	}
	json_decref(plugins);
	return list;
}

static size_t count_ours(json_t *plugins)
{
	size_t n = 0;

	for (size_t i = 0; i < json_array_size(plugins); i++)
		n += is_ours(json_array_get(plugins, i));
	return n;
}

/* The desired entry is in place when it is the one entry of ours, last, with this socketPath. */
static bool entry_in_place(json_t *plugins, const char *socket_path)
{
	size_t n = json_array_size(plugins);
	json_t *last = n ? json_array_get(plugins, n - 1) : NULL;

	if (count_ours(plugins) != 1 || !is_ours(last))
		return false;
	const char *have = json_string_value(json_object_get(last, "socketPath"));
	return socket_path ? have && strcmp(have, socket_path) == 0 : !json_object_get(last, "socketPath");
}

/* insert or remove our entry in the primary config */
static int edit_config(const char *conf_dir, bool insert, const char *socket_path, bool *changed, char *err,
		      size_t size)
{
	char name[256], path[4096], new_name[256];
	json_t *root = NULL, *list = NULL, *entry = NULL;
	json_error_t jerr;
	char *text = NULL;
	struct stat st;
	bool edit = false;
	int ret;

	if (changed)
		*changed = false;
	ret = primary_config(conf_dir, name, sizeof(name), err, size);
	if (ret)
		return ret == -ENOENT && !insert ? 0 : ret;
	snprintf(path, sizeof(path), "%s/%s", conf_dir, name);
	snprintf(new_name, sizeof(new_name), "%s", name);
	if (stat(path, &st))
		return fail(-errno, err, size, "%s: %s", path, strerror(errno));
	root = json_load_file(path, 0, &jerr); /* duplicate keys: the last wins, as in libcni */
	if (!json_is_object(root)) {
		ret = fail(-EINVAL, err, size, "%s: %s", path, root ? "not a JSON object" : jerr.text);
		goto out;
	}
	json_t *plugins = json_object_get(root, "plugins");
	bool conflist = strcmp(strrchr(name, '.'), ".conflist") == 0;
	if (conflist && !json_is_array(plugins)) {
		ret = fail(-EINVAL, err, size, "%s: %s", path, "a .conflist without a \"plugins\" list");
		goto out;
	}
	/* sockmesh-cni alone would refuse every pod (it only runs chained) */
	if (conflist && insert && json_array_size(plugins) == count_ours(plugins)) {
		ret = fail(-EINVAL, err, size, "%s: %s", path, "no plugin of the primary CNI to chain after");
		goto out;
	}
	if (!conflist && insert) {
		/* the runtime reads a .conf or .json as one plugin: ours can only follow it in a .conflist */
		if (plugins || !json_object_get(root, "type")) {
			ret = fail(-EINVAL, err, size, "%s: %s", path, "not a single-plugin config (a \"type\", no \"plugins\")");
			goto out;
		}
		list = as_conflist(root);
		if (!list) {
			ret = fail(-ENOMEM, err, size, "%s: %s", path, "out of memory");
			goto out;
		}
		snprintf(new_name, sizeof(new_name), "%.*s.conflist", (int)(strrchr(name, '.') - name), name);
		plugins = json_object_get(list, "plugins");
		edit = true;
	} else {
		list = json_incref(root);
	}
	if (!conflist && !insert)
		goto out; /* a single plugin: never ours */
	if (insert) {
		if (!edit && entry_in_place(plugins, socket_path))
			goto out;
		drop_ours(plugins);
		entry = our_entry(socket_path);
		if (!entry || json_array_append(plugins, entry)) {
			ret = fail(-ENOMEM, err, size, "%s: %s", path, "out of memory");
			goto out;
		}
		edit = true;
	} else {
		edit = drop_ours(plugins);
	}
	if (!edit)
		goto out;
	text = json_dumps(list, JSON_INDENT(2));
	if (!text) {
		ret = fail(-ENOMEM, err, size, "%s: %s", path, "out of memory");
		goto out;
	}
	size_t len = strlen(text);
	text[len] = '\n'; /* json_dumps's NUL becomes the file's final newline; len + 1 bytes written */
	ret = atomic_write(conf_dir, new_name, text, len + 1, -1, st.st_mode & 07777, path, &st, err, size);
	/* the converted .conf goes: the runtime would load it (it sorts first) and never see our entry */
	if (!ret && strcmp(new_name, name) != 0 && unlink(path) && errno != ENOENT)
		ret = fail(-errno, err, size, "%s: cannot remove it after writing its .conflist: %s", path, strerror(errno));
	if (!ret && changed)
		*changed = true;
out:
	free(text);
	json_decref(entry);
	json_decref(list);
	json_decref(root);
	return ret;
}

/* A few tries: another writer changing the file between our read and our rename makes us read again. */
#define EDIT_TRIES 5

int sm_cni_conf_insert(const char *conf_dir, const char *socket_path, bool *changed, char *err, size_t err_size)
{
	int ret = -EAGAIN;

	for (int i = 0; i < EDIT_TRIES && ret == -EAGAIN; i++)
		ret = edit_config(conf_dir, true, socket_path, changed, err, err_size);
	return ret;
}

int sm_cni_conf_remove(const char *conf_dir, bool *changed, char *err, size_t err_size)
{
	int ret = -EAGAIN;

	for (int i = 0; i < EDIT_TRIES && ret == -EAGAIN; i++)
		ret = edit_config(conf_dir, false, NULL, changed, err, err_size);
	return ret;
}

/* ---- the watch ---- */

struct sm_cni_watch {
	char *conf_dir, *socket_path;
	int debounce_ms, inotify_fd, stop_fd;
	sm_cni_watch_report report;
	void *ctx;
	pthread_t thread;
};

/*
 * Reads every pending event; says whether one was about a file other than our temporary ones. *gone
 * is set when the directory itself went away (the watch then sees nothing more).
 */
static bool drain(int fd, bool *gone)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool relevant = false;
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			if (ev->mask & (IN_DELETE_SELF | IN_IGNORED))
				*gone = true;
			else if (!ev->len || strncmp(ev->name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0)
				relevant = true;
			p += sizeof(*ev) + ev->len;
		}
	}
	return relevant;
}

/* Waits for the inotify fd or the stop fd; returns 1 on an event, 0 on timeout, -1 when stopped. */
static int wait_event(struct sm_cni_watch *w, int timeout_ms)
{
	struct pollfd fds[2] = { { .fd = w->inotify_fd, .events = POLLIN }, { .fd = w->stop_fd, .events = POLLIN } };
	int n = poll(fds, 2, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -1;
	if (fds[1].revents)
		return -1;
	return n > 0;
}

static void *watch_thread(void *arg)
{
	struct sm_cni_watch *w = arg;
	bool gone = false;
	char err[512];
	int got;

	while (!gone && (got = wait_event(w, -1)) >= 0) {
		if (!got || !drain(w->inotify_fd, &gone))
			continue;
		/*
		 * debounce: a primary CNI writing its file in steps is read once it has finished; at most ten
		 * quiet periods, so that one rewriting it without pause still gets the entry back
		 */
		for (int rounds = 0; rounds < 10 && (got = wait_event(w, w->debounce_ms)) > 0; rounds++)
			drain(w->inotify_fd, &gone);
		if (got < 0 || gone)
			break;
		bool changed = false;
		int ret = sm_cni_conf_insert(w->conf_dir, w->socket_path, &changed, err, sizeof(err));
		if ((ret || changed) && w->report)
			w->report(w->ctx, ret, ret ? err : "");
	}
	if (gone && w->report) {
		snprintf(err, sizeof(err), "%s: removed or unmounted; no longer watched", w->conf_dir);
		w->report(w->ctx, -ENOENT, err);
	}
	return NULL;
}

int sm_cni_watch_start(const char *conf_dir, const char *socket_path, int debounce_ms, sm_cni_watch_report report,
		       void *ctx, struct sm_cni_watch **out, char *err, size_t err_size)
{
	struct sm_cni_watch *w = calloc(1, sizeof(*w));
	int ret = 0;

	*out = NULL;
	if (!w)
		return fail(-ENOMEM, err, err_size, "%s: %s", conf_dir, "out of memory");
	*w = (struct sm_cni_watch){ .debounce_ms = debounce_ms, .inotify_fd = -1, .stop_fd = -1, .report = report,
				    .ctx = ctx };
	w->conf_dir = strdup(conf_dir);
	w->socket_path = socket_path ? strdup(socket_path) : NULL;
	if (!w->conf_dir || (socket_path && !w->socket_path)) {
		ret = fail(-ENOMEM, err, err_size, "%s: %s", conf_dir, "out of memory");
		goto out;
	}
	w->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	w->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (w->inotify_fd < 0 || w->stop_fd < 0) {
		ret = fail(-errno, err, err_size, "%s: cannot watch: %s", conf_dir, strerror(errno));
		goto out;
	}
	if (inotify_add_watch(w->inotify_fd, conf_dir,
			      IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_ONLYDIR) < 0) {
		ret = fail(-errno, err, err_size, "%s: cannot watch: %s", conf_dir, strerror(errno));
		goto out;
	}
	ret = -pthread_create(&w->thread, NULL, watch_thread, w);
	if (ret)
		fail(ret, err, err_size, "%s: cannot start the watch thread: %s", conf_dir, strerror(-ret));
out:
	if (ret) {
		if (w->inotify_fd >= 0)
			close(w->inotify_fd);
		if (w->stop_fd >= 0)
			close(w->stop_fd);
		free(w->conf_dir);
		free(w->socket_path);
		free(w);
		return ret;
	}
	*out = w;
	return 0;
}

void sm_cni_watch_stop(struct sm_cni_watch *w)
{
	uint64_t one = 1;

	if (!w)
		return;
	if (write(w->stop_fd, &one, sizeof(one)) != sizeof(one))
		pthread_cancel(w->thread); /* cannot happen with a fresh eventfd; never leave the join hanging */
	pthread_join(w->thread, NULL);
	close(w->inotify_fd);
	close(w->stop_fd);
	free(w->conf_dir);
	free(w->socket_path);
	free(w);
}
