/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cniinstall/: sockmesh-cni's binary and conflist entry, in directories made in this program's
 * temporary directory (never the node's /etc/cni or /opt/cni). Configs of several shapes, the first
 * config by name, refusals that leave the file as it was, and the watch putting the entry back after
 * "the primary CNI" rewrites its file in place or renames a new one over it.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cniinstall/cniinstall.h"
#include "helpers.h"
#include "test_tmpdir.h"

#define SOCK "/var/run/sockmesh/cni.sock"

static const char bridge_conflist[] =
	"{\"cniVersion\": \"1.0.0\", \"name\": \"bridge-net\", \"disableCheck\": true, \"plugins\": [\n"
	"  {\"type\": \"bridge\", \"bridge\": \"cni0\", \"isGateway\": true,\n"
	"   \"ipam\": {\"type\": \"host-local\", \"ranges\": [[{\"subnet\": \"10.88.0.0/16\"}]]}},\n"
	"  {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}]}\n";

static const char bridge_conf[] =
	"{\"cniVersion\": \"0.4.0\", \"name\": \"mynet\", \"type\": \"bridge\", \"bridge\": \"cni0\",\n"
	" \"ipam\": {\"type\": \"host-local\", \"subnet\": \"10.22.0.0/16\"}}\n";

static void make_dir(char *out, size_t size)
{
	temp_path(out, size, "cni");
	assert_int_equal(mkdir(out, 0755), 0);
}

static void put(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static char *slurp(const char *dir, const char *name)
{
	char path[512], *text = NULL;
	size_t size = 0;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	FILE *mem = open_memstream(&text, &size);
	int c;
	while ((c = fgetc(f)) != EOF)
		fputc(c, mem);
	fclose(mem);
	fclose(f);
	return text;
}

static json_t *load(const char *dir, const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	json_t *root = json_load_file(path, 0, NULL);
	assert_non_null(root);
	return root;
}

static size_t count_ours(json_t *plugins)
{
	size_t n = 0;
	for (size_t i = 0; i < json_array_size(plugins); i++) {
		const char *type = json_string_value(json_object_get(json_array_get(plugins, i), "type"));
		n += type && strcmp(type, SM_CNI_PLUGIN_TYPE) == 0;
	}
	return n;
}

/* Our entry is there once, last, with socket_path; the plugins before it are expected's plugins. */
static bool entry_last(const char *dir, const char *name, const char *socket_path, json_t *expected_plugins)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	json_t *root = json_load_file(path, 0, NULL);
	json_t *plugins = json_object_get(root, "plugins");
	size_t n = json_array_size(plugins);
	bool ok = n && count_ours(plugins) == 1;
	if (ok) {
		json_t *last = json_array_get(plugins, n - 1);
		const char *have = json_string_value(json_object_get(last, "socketPath"));
		ok = count_ours(plugins) == 1 && have && strcmp(have, socket_path) == 0 &&
		     strcmp(json_string_value(json_object_get(last, "type")), SM_CNI_PLUGIN_TYPE) == 0;
		if (ok && expected_plugins) {
			json_t *before = json_deep_copy(plugins);
			json_array_remove(before, n - 1);
			ok = json_equal(before, expected_plugins);
			json_decref(before);
		}
	}
	json_decref(root);
	return ok;
}

static size_t files_in(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;
	assert_non_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.' || strncmp(e->d_name, ".sockmesh", 9) == 0;
	closedir(d);
	return n;
}

static void bridge_conflist_round_trip(void **state)
{
	(void)state;
	char dir[256], err[512];
	bool changed;
	make_dir(dir, sizeof(dir));
	put(dir, "10-bridge.conflist", bridge_conflist);
	json_t *original = load(dir, "10-bridge.conflist");

	assert_int_equal(sm_cni_conf_insert(dir, SOCK, &changed, err, sizeof(err)), 0);
	assert_true(changed);
	assert_true(entry_last(dir, "10-bridge.conflist", SOCK, json_object_get(original, "plugins")));
	/* every other key kept, in its order */
	json_t *now = load(dir, "10-bridge.conflist");
	const char *want[] = { "cniVersion", "name", "disableCheck", "plugins" };
	size_t i = 0;
	const char *key;
	json_t *value;
	json_object_foreach(now, key, value) {
		assert_true(i < 4);
		assert_string_equal(key, want[i++]);
		if (strcmp(key, "plugins"))
			assert_true(json_equal(value, json_object_get(original, key)));
	}
	json_decref(now);

	/* idempotent: nothing written the second time */
	char *before = slurp(dir, "10-bridge.conflist");
	assert_int_equal(sm_cni_conf_insert(dir, SOCK, &changed, err, sizeof(err)), 0);
	assert_false(changed);
	char *after = slurp(dir, "10-bridge.conflist");
	assert_string_equal(before, after);
	free(before);
	free(after);

	assert_int_equal(sm_cni_conf_remove(dir, &changed, err, sizeof(err)), 0);
	assert_true(changed);
	now = load(dir, "10-bridge.conflist");
	assert_true(json_equal(now, original));
	json_decref(now);
	assert_int_equal(sm_cni_conf_remove(dir, &changed, err, sizeof(err)), 0);
	assert_false(changed);
	assert_int_equal(files_in(dir), 1); /* no temporary file left */
	json_decref(original);
}

static void conf_becomes_conflist(void **state)
{
	(void)state;
	char dir[256], err[512];
	bool changed;
	make_dir(dir, sizeof(dir));
	put(dir, "10-mynet.conf", bridge_conf);
	json_t *conf = load(dir, "10-mynet.conf");

	assert_int_equal(sm_cni_conf_insert(dir, NULL, &changed, err, sizeof(err)), 0);
	assert_true(changed);
	char path[512];
	snprintf(path, sizeof(path), "%s/10-mynet.conf", dir);
	assert_int_equal(access(path, F_OK), -1); /* the runtime would load it first and never see the entry */
	json_t *list = load(dir, "10-mynet.conflist");
	assert_string_equal(json_string_value(json_object_get(list, "cniVersion")), "0.4.0");
	assert_string_equal(json_string_value(json_object_get(list, "name")), "mynet");
	json_t *plugins = json_object_get(list, "plugins");
	assert_int_equal(json_array_size(plugins), 2);
	assert_true(json_equal(json_array_get(plugins, 0), conf));
	/* socket_path NULL: the plugin's default, no socketPath key */
	assert_string_equal(json_string_value(json_object_get(json_array_get(plugins, 1), "type")), SM_CNI_PLUGIN_TYPE);
	assert_null(json_object_get(json_array_get(plugins, 1), "socketPath"));
	json_decref(list);

	assert_int_equal(sm_cni_conf_remove(dir, &changed, err, sizeof(err)), 0);
	assert_true(changed);
	list = load(dir, "10-mynet.conflist");
	assert_int_equal(json_array_size(json_object_get(list, "plugins")), 1);
	json_decref(list);
	json_decref(conf);
}

static void entry_already_there(void **state)
{
	(void)state;
	char dir[256], err[512];
	bool changed;
	make_dir(dir, sizeof(dir));
	/* two stale entries: one in the middle, one last with another socket */
	put(dir, "10-x.conflist",
	    "{\"cniVersion\": \"1.0.0\", \"name\": \"x\", \"plugins\": [{\"type\": \"ptp\"},"
	    " {\"type\": \"sockmesh-cni\"}, {\"type\": \"portmap\"}, {\"type\": \"sockmesh-cni\", \"socketPath\": \"/old\"}]}");
	json_t *want = json_pack("[{s:s},{s:s}]", "type", "ptp", "type", "portmap");

	assert_int_equal(sm_cni_conf_insert(dir, SOCK, &changed, err, sizeof(err)), 0);
	assert_true(changed);
	assert_true(entry_last(dir, "10-x.conflist", SOCK, want));
	json_decref(want);
}

static void refused_and_untouched(const char *name, const char *text)
{
	char dir[256], err[512] = "";
	bool changed = true;
	make_dir(dir, sizeof(dir));
	put(dir, name, text);

	assert_int_equal(sm_cni_conf_insert(dir, SOCK, &changed, err, sizeof(err)), -EINVAL);
	assert_false(changed);
	assert_non_null(strstr(err, name)); /* the error names the file */
	char *now = slurp(dir, name);
	assert_string_equal(now, text);
	free(now);
	assert_int_equal(files_in(dir), 1);
}

static void malformed_is_refused(void **state)
{
	(void)state;
	refused_and_untouched("10-bad.conflist", "{\"cniVersion\": \"1.0.0\", \"plugins\": [{\"type\": \"bridge\"}\n");
	refused_and_untouched("10-bad.conflist", "{\"cniVersion\": \"1.0.0\", \"name\": \"n\"}\n");
	refused_and_untouched("10-bad.conflist", "[1, 2]\n");
	refused_and_untouched("10-bad.conf", "{\"name\": \"no type\"}\n");
	/* sockmesh-cni alone would refuse every pod */
	refused_and_untouched("10-bad.conflist", "{\"cniVersion\": \"1.0.0\", \"name\": \"n\", \"plugins\": []}\n");
	refused_and_untouched("10-bad.conflist", "{\"name\": \"n\", \"plugins\": [{\"type\": \"sockmesh-cni\"}]}\n");
}

/* Go's encoding/json, which libcni uses, takes the last of duplicate keys: so do we, not a refusal */
static void duplicate_keys_as_libcni(void **state)
{
	(void)state;
	char dir[256], err[512];
	make_dir(dir, sizeof(dir));
	put(dir, "10-d.conflist", "{\"name\": \"old\", \"name\": \"n\", \"plugins\": [{\"type\": \"ptp\"}]}");
	assert_int_equal(sm_cni_conf_insert(dir, SOCK, NULL, err, sizeof(err)), 0);
	json_t *root = load(dir, "10-d.conflist");
	assert_string_equal(json_string_value(json_object_get(root, "name")), "n");
	json_decref(root);
	assert_true(entry_last(dir, "10-d.conflist", SOCK, NULL));
}

static void first_by_name(void **state)
{
	(void)state;
	char dir[256], err[512];
	bool changed;
	make_dir(dir, sizeof(dir));
	put(dir, "20-b.conflist", bridge_conflist);
	put(dir, "10-a.conflist", bridge_conflist);
	put(dir, "99-z.conf", bridge_conf);
	put(dir, "00-notes.txt", "not a config");
	put(dir, ".00-hidden.conflist", bridge_conflist);

	assert_int_equal(sm_cni_conf_insert(dir, SOCK, &changed, err, sizeof(err)), 0);
	assert_true(entry_last(dir, "10-a.conflist", SOCK, NULL));
	const char *untouched[][2] = { { "20-b.conflist", bridge_conflist }, { "99-z.conf", bridge_conf },
				       { ".00-hidden.conflist", bridge_conflist } };
	for (size_t i = 0; i < 3; i++) {
		char *now = slurp(dir, untouched[i][0]);
		assert_string_equal(now, untouched[i][1]);
		free(now);
	}
}

static void no_config_yet(void **state)
{
	(void)state;
	char dir[256], err[512];
	bool changed;
	make_dir(dir, sizeof(dir));
	assert_int_equal(sm_cni_conf_insert(dir, SOCK, &changed, err, sizeof(err)), -ENOENT);
	assert_int_equal(sm_cni_conf_remove(dir, &changed, err, sizeof(err)), 0);
	assert_int_equal(sm_cni_conf_insert("/nonexistent-sm-dir", SOCK, &changed, err, sizeof(err)), -ENOENT);
	assert_int_equal(sm_cni_check_dir(dir, err, sizeof(err)), 0);
	assert_int_equal(sm_cni_check_dir("/nonexistent-sm-dir", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent-sm-dir"));
}

static void binary_install_and_remove(void **state)
{
	(void)state;
	char bin[256], src[256], err[512];
	struct stat st;
	make_dir(bin, sizeof(bin));
	make_dir(src, sizeof(src));
	put(src, "plugin", "#!/bin/sh\necho plugin\n");
	char plugin[512];
	snprintf(plugin, sizeof(plugin), "%s/plugin", src);

	assert_int_equal(sm_cni_install_binary(plugin, bin, err, sizeof(err)), 0);
	put(src, "plugin", "#!/bin/sh\necho newer\n");
	assert_int_equal(sm_cni_install_binary(plugin, bin, err, sizeof(err)), 0); /* replaces */
	char *now = slurp(bin, SM_CNI_PLUGIN_TYPE);
	assert_string_equal(now, "#!/bin/sh\necho newer\n");
	free(now);
	char path[512];
	snprintf(path, sizeof(path), "%s/" SM_CNI_PLUGIN_TYPE, bin);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_int_equal(files_in(bin), 1);
	assert_int_equal(sm_cni_install_binary("/nonexistent-sm-plugin", bin, err, sizeof(err)), -ENOENT);
	assert_int_equal(sm_cni_remove_binary(bin, err, sizeof(err)), 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(sm_cni_remove_binary(bin, err, sizeof(err)), 0);
}

/* ---- the watch ---- */

struct reports {
	pthread_mutex_t lock;
	int ok, failed;
};

static void on_report(void *ctx, int ret, const char *err)
{
	struct reports *r = ctx;
	(void)err;
	pthread_mutex_lock(&r->lock);
	if (ret)
		r->failed++;
	else
		r->ok++;
	pthread_mutex_unlock(&r->lock);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Seconds until the entry is back (polled every 10 ms), or -1 after 3 s. */
static double back_within(const char *dir, const char *name)
{
	double start = now_s();
	while (now_s() - start < 3) {
		if (entry_last(dir, name, SOCK, NULL))
			return now_s() - start;
		usleep(10000);
	}
	return -1;
}

static void watch_puts_entry_back(void **state)
{
	(void)state;
	char dir[256], err[512], tmp[512], path[512];
	struct reports reports = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct sm_cni_watch *watch;
	make_dir(dir, sizeof(dir));
	put(dir, "10-bridge.conflist", bridge_conflist);
	assert_int_equal(sm_cni_conf_insert(dir, SOCK, NULL, err, sizeof(err)), 0);
	assert_int_equal(sm_cni_watch_start(dir, SOCK, 100, on_report, &reports, &watch, err, sizeof(err)), 0);

	/* the primary CNI renames a fresh file over its config */
	put(dir, "new.tmp", bridge_conflist);
	snprintf(tmp, sizeof(tmp), "%s/new.tmp", dir);
	snprintf(path, sizeof(path), "%s/10-bridge.conflist", dir);
	assert_int_equal(rename(tmp, path), 0);
	double took = back_within(dir, "10-bridge.conflist");
	assert_true(took >= 0 && took < 1);

	/* ... rewrites it in place, in two steps (half a file first: refused, then the whole) */
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(bridge_conflist, 1, 40, f), 40);
	fflush(f);
	usleep(20000);
	fputs(bridge_conflist + 40, f);
	fclose(f);
	took = back_within(dir, "10-bridge.conflist");
	assert_true(took >= 0 && took < 1);

	/* ... or replaces it by another config that sorts first */
	put(dir, "05-other.conflist", bridge_conflist);
	took = back_within(dir, "05-other.conflist");
	assert_true(took >= 0 && took < 1);
	usleep(300000); /* the watch's own writes settle: no loop */
	pthread_mutex_lock(&reports.lock);
	assert_true(reports.ok >= 3 && reports.ok <= 4);
	pthread_mutex_unlock(&reports.lock);

	double start = now_s();
	sm_cni_watch_stop(watch);
	assert_true(now_s() - start < 0.2);
	sm_cni_watch_stop(NULL);
}

/* The conf dir removed (or unmounted): the watch says so once, then ends; stopping it still works. */
static void watch_reports_dir_gone(void **state)
{
	(void)state;
	char dir[256], err[512];
	struct reports reports = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct sm_cni_watch *watch;
	make_dir(dir, sizeof(dir));
	assert_int_equal(sm_cni_watch_start(dir, SOCK, 20, on_report, &reports, &watch, err, sizeof(err)), 0);
	assert_int_equal(rmdir(dir), 0);
	int failed = 0;
	for (int i = 0; i < 100 && !failed; i++) {
		usleep(10000);
		pthread_mutex_lock(&reports.lock);
		failed = reports.failed;
		pthread_mutex_unlock(&reports.lock);
	}
	assert_int_equal(failed, 1);
	sm_cni_watch_stop(watch);
	assert_int_equal(sm_cni_watch_start("/nonexistent-sm-dir", SOCK, 20, on_report, &reports, &watch, err,
					    sizeof(err)), -ENOENT);
	assert_null(watch);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bridge_conflist_round_trip),
		cmocka_unit_test(conf_becomes_conflist),
		cmocka_unit_test(entry_already_there),
		cmocka_unit_test(malformed_is_refused),
		cmocka_unit_test(first_by_name),
		cmocka_unit_test(no_config_yet),
		cmocka_unit_test(binary_install_and_remove),
		cmocka_unit_test(duplicate_keys_as_libcni),
		cmocka_unit_test(watch_puts_entry_back),
		cmocka_unit_test(watch_reports_dir_gone),
	};
	return cmocka_run_group_tests_name("cniinstall", tests, NULL, NULL);
}
