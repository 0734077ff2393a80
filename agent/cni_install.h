/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's side of cniinstall/: sockmesh run --cni-conf-dir installs sockmesh-cni and keeps its
 * conflist entry in place while it runs; sockmesh uninstall --cni-conf-dir takes both out.
 */
#ifndef SOCKMESH_AGENT_CNI_INSTALL_H
#define SOCKMESH_AGENT_CNI_INSTALL_H

#include <stddef.h>

#define CNI_DEFAULT_BIN_DIR "/opt/cni/bin"

struct agent;

/*
 * Before the kernel is touched: the directories exist and are writable, and the plugin binary (given,
 * else sockmesh-cni beside this program) is readable; its path goes to agent->cni_plugin. Nothing to
 * check without --cni-conf-dir.
 */
int cni_install_check(struct agent *agent, char *err, size_t err_size);
/* Copies the binary, inserts the entry (a missing or unreadable config is only logged: the watch puts
 * the entry in when the primary CNI writes one) and starts the watch. Logs what it did. */
int cni_install_start(struct agent *agent);
/* Stops the watch. The entry and the binary stay: the plugin fails open while no agent answers. */
void cni_install_stop(struct agent *agent);
/* Takes the entry out of conf_dir's primary config, then the binary out of bin_dir. */
int cni_uninstall(const char *conf_dir, const char *bin_dir, char *err, size_t err_size);

#endif
