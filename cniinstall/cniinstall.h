/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Installing sockmesh-cni on a node: its binary in the CNI bin directory, and its entry
 * {"type": "sockmesh-cni", "socketPath": ...} as the last plugin of the node's primary CNI config (the
 * file the runtime loads: by name the first *.conf, *.conflist or *.json of the conf directory, as
 * containerd and CRI-O pick it). A single-plugin *.conf or *.json becomes a *.conflist of the same base
 * name holding it then ours, as istio-cni does. Every write is a temporary file in the same directory,
 * fsynced, then renamed over, so the runtime never reads half a file. A watch re-inserts the entry when
 * the primary CNI rewrites or replaces its file. Never logs: results go to the caller.
 */
#ifndef SOCKMESH_CNIINSTALL_CNIINSTALL_H
#define SOCKMESH_CNIINSTALL_CNIINSTALL_H

#include <stdbool.h>
#include <stddef.h>

#define SM_CNI_PLUGIN_TYPE "sockmesh-cni"

/* 0 when dir is a directory this process may write into, else -errno with the reason in err. */
int sm_cni_check_dir(const char *dir, char *err, size_t err_size);

/* Copies the plugin binary at plugin to bin_dir/sockmesh-cni (mode 0755), replacing it atomically. */
int sm_cni_install_binary(const char *plugin, const char *bin_dir, char *err, size_t err_size);
/* Removes bin_dir/sockmesh-cni; 0 also when it is not there. */
int sm_cni_remove_binary(const char *bin_dir, char *err, size_t err_size);

/*
 * Makes our entry the last plugin of the primary config, once (an entry found elsewhere in the list,
 * or with another socketPath, is replaced), keeping every other key and its order. socket_path NULL:
 * no socketPath key (the plugin's default). *changed (may be NULL) says whether a file was written.
 * -ENOENT: no config in conf_dir yet; -EINVAL: the primary config is not valid JSON, has no plugin
 * list or no plugin but ours, and is left as it was; -EAGAIN: another writer kept changing it. A file
 * that changes between our read and our rename is read again, never overwritten.
 */
int sm_cni_conf_insert(const char *conf_dir, const char *socket_path, bool *changed, char *err, size_t err_size);
/* Takes every entry of ours out of the primary config; 0 also when there is none or no config. */
int sm_cni_conf_remove(const char *conf_dir, bool *changed, char *err, size_t err_size);

/*
 * Called on the watch's thread after each re-insertion attempt that wrote a file or failed: ret is 0
 * (entry put back) or -errno with the reason in err; -ENOENT once more when conf_dir itself goes away
 * (the watch then ends).
 */
typedef void (*sm_cni_watch_report)(void *ctx, int ret, const char *err);

struct sm_cni_watch;

/*
 * Watches conf_dir (inotify) and, once changes have been quiet for debounce_ms, runs
 * sm_cni_conf_insert(conf_dir, socket_path) on a thread of its own. Strings are copied.
 */
int sm_cni_watch_start(const char *conf_dir, const char *socket_path, int debounce_ms, sm_cni_watch_report report,
		       void *ctx, struct sm_cni_watch **out, char *err, size_t err_size);
/* Stops the thread (promptly: it is woken, not polled) and frees the watch. NULL is a no-op. */
void sm_cni_watch_stop(struct sm_cni_watch *watch);

#endif
