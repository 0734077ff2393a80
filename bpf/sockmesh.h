/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The contract between the BPF programs and userspace: every map's key and value, and the constants
 * both sides must agree on. Included by the bpf/ programs (after vmlinux.h) and by userspace (workload/,
 * datapath/). Fixed-width types, explicit padding, a static assertion on every size: a change here is
 * a change of SM_LAYOUT_VERSION, which tells an agent whether it may adopt maps pinned by another.
 *
 * Addresses are stored as 16 bytes; IPv4 as the IPv4-mapped IPv6 address ::ffff:a.b.c.d, so one map
 * serves both families. Ports and addresses are in network byte order, as the hooks see them.
 */
#ifndef SOCKMESH_BPF_CONTRACT_H
#define SOCKMESH_BPF_CONTRACT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define SM_LAYOUT_VERSION 1

/* Limits a resource is checked against before it reaches the maps. */
#define SM_MAX_PORTS 16		/* service ports per service */
#define SM_MAX_PRIORITIES 8	/* locality priorities: 0 (all scopes match) .. 6 (none of 6) */
#define SM_MAX_SLOTS 65535	/* endpoint slots per service and priority */
#define SM_MAX_WEIGHT 64	/* slots per endpoint: Workload.capacity is clamped to this */

/* Default capacities (max_entries); the agent may size the maps otherwise at creation. */
#define SM_DEFAULT_MAX_FRONTENDS 262144
#define SM_DEFAULT_MAX_SERVICES 65536
#define SM_DEFAULT_MAX_ENDPOINTS 1048576
#define SM_DEFAULT_MAX_BACKENDS 262144

enum sm_frontend_kind {
	SM_FRONTEND_SERVICE = 1,  /* id is a service id: load-balance */
	SM_FRONTEND_WORKLOAD = 2, /* id is a backend id: a pod address whose workload has a waypoint */
};

enum sm_lb_mode {
	SM_LB_RANDOM = 0,	/* weighted random over priority 0 (which then holds every endpoint) */
	SM_LB_STRICT = 1,	/* priority 0 only; none → the connect is left alone */
	SM_LB_FAILOVER = 2,	/* the first priority with endpoints */
	SM_LB_PASSTHROUGH = 3,	/* never rewritten */
};

enum sm_family_flags {
	SM_HAS_V4 = 1 << 0,
	SM_HAS_V6 = 1 << 1,
};

enum sm_waypoint_flags {
	SM_WAYPOINT_V4 = 1 << 0,	 /* addr4 is set */
	SM_WAYPOINT_V6 = 1 << 1,	 /* addr6 is set */
	SM_WAYPOINT_UNRESOLVED = 1 << 2, /* names a service that has no VIP yet: fail closed */
};

/* A waypoint: where traffic goes instead, with the port it listens on (hbone_mtls_port). */
struct sm_waypoint {
	__be32 addr4;
	__u8 addr6[16];
	__be16 port;
	__u8 flags; /* enum sm_waypoint_flags; 0: no waypoint */
	__u8 pad;
};
_Static_assert(sizeof(struct sm_waypoint) == 24, "sm_waypoint layout");

/* sm_frontends: a service VIP, or a pod address that has a waypoint. */
struct sm_frontend_key {
	__u8 addr[16];
};
_Static_assert(sizeof(struct sm_frontend_key) == 16, "sm_frontend_key layout");

struct sm_frontend_value {
	__u32 id;
	__u8 kind; /* enum sm_frontend_kind */
	__u8 pad[3];
};
_Static_assert(sizeof(struct sm_frontend_value) == 8, "sm_frontend_value layout");

/* sm_services: keyed by service id (__u32, never 0). */
struct sm_service_value {
	__u64 name_hash; /* of "namespace/hostname": lets a restarted agent keep the id */
	struct sm_waypoint waypoint;
	__be16 ports[SM_MAX_PORTS]; /* service ports; index i matches target_ports[i] of each endpoint */
	__u16 endpoint_counts[SM_MAX_PRIORITIES];
	__u8 n_ports;
	__u8 lb_mode; /* enum sm_lb_mode */
	__u8 pad[6];
};
_Static_assert(sizeof(struct sm_service_value) == 88, "sm_service_value layout");

/* sm_endpoints: slot index of a priority of a service → the backend and its target ports. */
struct sm_endpoint_key {
	__u32 service_id;
	__u8 priority;
	__u8 pad[3];
	__u32 index;
};
_Static_assert(sizeof(struct sm_endpoint_key) == 12, "sm_endpoint_key layout");

struct sm_endpoint_value {
	__u32 backend_id;
	__be16 target_ports[SM_MAX_PORTS]; /* per service port; this workload's own when it has them */
};
_Static_assert(sizeof(struct sm_endpoint_value) == 36, "sm_endpoint_value layout");

/* sm_backends: keyed by backend id (__u32, never 0); one per workload. */
struct sm_backend_value {
	__u64 name_hash; /* of the workload uid */
	__be32 addr4;
	__u8 addr6[16];
	__u8 families; /* enum sm_family_flags */
	__u8 pad[3];
	struct sm_waypoint waypoint;
};
_Static_assert(sizeof(struct sm_backend_value) == 56, "sm_backend_value layout");

#endif
