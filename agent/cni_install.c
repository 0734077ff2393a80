/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/cni_install.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/log.h"
#include "cni/protocol.h"
#include "cniinstall/cniinstall.h"

/* Long enough for a primary CNI that writes its file in a few steps; short against a pod start. */
#define WATCH_DEBOUNCE_MS 100

/*
 * The socketPath of the entry: what the plugin, running on the host, connects to. The DaemonSet mounts
 * the host's /var/run/sockmesh into the agent's container, so the path is the same on both sides.
 */
#define ENTRY_SOCKET SM_CNI_DEFAULT_SOCKET

/* sockmesh-cni beside this program (both are installed into the same bin directory) */
static int plugin_beside_self(char *out, size_t size, char *err, size_t err_size)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n < 0) {
		snprintf(err, err_size, "/proc/self/exe: %s (give --cni-plugin)", strerror(errno));
		return -errno;
	}
	self[n] = '\0';
	if (snprintf(out, size, "%s/" SM_CNI_PLUGIN_TYPE, dirname(self)) >= (int)size) {
		snprintf(err, err_size, "%s: path too long", self);
		return -ENAMETOOLONG;
	}
	return 0;
}

int cni_install_check(struct agent *agent, char *err, size_t err_size)
{
	const struct run_options *o = &agent->options;
	char reason[512];
	int ret = 0;

	if (!o->cni_conf_dir)
		return 0;
	if (!(ret = sm_cni_check_dir(o->cni_conf_dir, reason, sizeof(reason))))
		ret = sm_cni_check_dir(o->cni_bin_dir, reason, sizeof(reason));
	if (ret) {
		snprintf(err, err_size, "CNI directory %s", reason);
		return ret;
	}
	if (o->cni_plugin)
		snprintf(agent->cni_plugin, sizeof(agent->cni_plugin), "%s", o->cni_plugin);
	else if ((ret = plugin_beside_self(agent->cni_plugin, sizeof(agent->cni_plugin), err, err_size)))
		return ret;
	if (access(agent->cni_plugin, R_OK)) {
		ret = -errno;
		snprintf(err, err_size, "the CNI plugin %s: %s%s", agent->cni_plugin, strerror(errno),
			 o->cni_plugin ? "" : " (not beside sockmesh: give --cni-plugin)");
	}
	return ret;
}

static void on_watch(void *ctx, int ret, const char *err)
{
	const struct agent *agent = ctx;

	if (ret)
		log_msg(LOG_WARN, "CNI config changed; sockmesh-cni's entry not put back: %s", err);
	else
		log_msg(LOG_INFO, "CNI config in %s rewritten; sockmesh-cni's entry put back", agent->options.cni_conf_dir);
}

int cni_install_start(struct agent *agent)
{
	const struct run_options *o = &agent->options;
	char err[512];
	bool changed = false;
	int ret;

	if (!o->cni_conf_dir)
		return 0;
	ret = sm_cni_install_binary(agent->cni_plugin, o->cni_bin_dir, err, sizeof(err));
	if (ret) {
		log_msg(LOG_ERROR, "installing sockmesh-cni: %s", err);
		return ret;
	}
	/*
	 * The binary before anything can insert the entry: a runtime told to call a missing plugin fails
	 * the pod. A start failing after this leaves only the copied binary, which nothing calls unless an
	 * entry already did (an earlier agent's).
	 */
	ret = sm_cni_watch_start(o->cni_conf_dir, ENTRY_SOCKET, WATCH_DEBOUNCE_MS, on_watch, agent, &agent->cni_watch,
				 err, sizeof(err));
	if (ret) {
		log_msg(LOG_ERROR, "watching the CNI config: %s", err);
		return ret;
	}
	ret = sm_cni_conf_insert(o->cni_conf_dir, ENTRY_SOCKET, &changed, err, sizeof(err));
	if (ret)
		log_msg(LOG_WARN, "sockmesh-cni's entry not inserted yet (it will be when the config changes): %s", err);
	else
		log_msg(LOG_INFO, "sockmesh-cni installed in %s; its entry %s the CNI config in %s", o->cni_bin_dir,
			changed ? "added to" : "already in", o->cni_conf_dir);
	return 0;
}

void cni_install_stop(struct agent *agent)
{
	sm_cni_watch_stop(agent->cni_watch);
	agent->cni_watch = NULL;
}

int cni_uninstall(const char *conf_dir, const char *bin_dir, char *err, size_t err_size)
{
	/* the entry first: a runtime must never be told to call a binary that is gone */
	int ret = sm_cni_conf_remove(conf_dir, NULL, err, err_size);

	return ret ? ret : sm_cni_remove_binary(bin_dir, err, err_size);
}
