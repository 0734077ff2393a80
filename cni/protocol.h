/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What sockmesh-cni says to the agent, the one contract between the plugin and cniserver/ (the plugin
 * links nothing of the agent). A SOCK_SEQPACKET unix socket; per pod event the plugin connects, sends
 * one message and reads one answer:
 *
 *   request: a JSON object {"command": "ADD"|"DEL", "uid": ..., "namespace": ..., "name": ...,
 *            "containerId": ...}, with the pod's network namespace fd in SCM_RIGHTS on ADD (and on DEL
 *            when CNI_NETNS still names one). Absent CNI_ARGS keys are empty strings.
 *   answer:  {"ok": true} or {"ok": false, "error": "why"}.
 */
#ifndef SOCKMESH_CNI_PROTOCOL_H
#define SOCKMESH_CNI_PROTOCOL_H

#define SM_CNI_DEFAULT_SOCKET "/var/run/sockmesh/cni.sock"
/* A request or an answer is one datagram of at most this many bytes. */
#define SM_CNI_MAX_MESSAGE 4096
/* How long the plugin waits for the agent's answer before it lets the pod start anyway. */
#define SM_CNI_ANSWER_TIMEOUT_MS 2000

#endif
