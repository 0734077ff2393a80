/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading the pinned authorization tables as sm_authz_check does (bpf/authz.bpf.h), for `sockmesh
 * explain`, and their capacities for the compiler.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include <bpf/bpf.h>

#include "datapath/internal.h"

int sm_datapath_authz_capacity(const struct sm_datapath *dp, int map, uint32_t *per_generation)
{
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);

	if (map < SM_DP_MAP_AUTHZ_STATE || map >= SM_DP_MAP_COUNT || dp->fds[map] < 0)
		return -EINVAL;
	if (bpf_obj_get_info_by_fd(dp->fds[map], &info, &len))
		return -errno;
	*per_generation = map == SM_DP_MAP_AUTHZ_IDENTS ? info.max_entries : info.max_entries / 2;
	return 0;
}

static bool lookup(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value) == 0;
}

/* The verdict fallbacks: (set, class, port), (set, class, 0), (set, 0, port), (set, 0, 0). */
static void verdict_of(const struct sm_datapath *dp, uint32_t generation, uint32_t set, uint32_t class,
		       uint16_t port, struct sm_authz_verdict *out)
{
	static const struct sm_authz_verdict no_verdict = {
		.action = SM_AUTHZ_DENY, .reason = SM_AUTHZ_NO_ALLOW_MATCHED,
		.dry_run_action = SM_AUTHZ_DENY, .dry_run_reason = SM_AUTHZ_NO_ALLOW_MATCHED,
	};
	int fd = dp->fds[SM_DP_MAP_AUTHZ_VERDICTS];
	struct sm_authz_verdict_key key = { .generation = generation, .dest_set = set };
	const uint32_t classes[2] = { class, 0 };

	for (int c = class ? 0 : 1; c < 2; c++) {
		key.source_class = classes[c];
		key.port = htons(port);
		if (lookup(fd, &key, out))
			return;
		key.port = 0;
		if (lookup(fd, &key, out))
			return;
	}
	*out = no_verdict;
}

int sm_datapath_authz_lookup(const struct sm_datapath *dp, const uint8_t src[16], const uint8_t dst[16], uint16_t port,
			     struct sm_authz_verdict *out)
{
	struct sm_authz_state state;
	struct sm_authz_ident_value ident = { .identity = SM_AUTHZ_IDENTITY_NONE };
	struct sm_authz_dest_key dest_key = { 0 };
	struct sm_authz_dest_value dest;
	struct sm_authz_cidr_key cidr_key = { .prefixlen = SM_AUTHZ_CIDR_PREFIX_BASE + 128 };
	struct sm_authz_cidr_value cidr = { 0 };
	struct sm_authz_source_key source_key = { 0 };
	struct sm_authz_source_value source = { 0 };
	__u32 zero = 0;

	if (!lookup(dp->fds[SM_DP_MAP_AUTHZ_STATE], &zero, &state) || !state.generation ||
	    state.unguarded_generation == state.generation)
		return 0;
	dest_key.generation = state.generation;
	memcpy(dest_key.addr, dst, 16);
	if (!lookup(dp->fds[SM_DP_MAP_AUTHZ_DESTS], &dest_key, &dest))
		return 0;
	lookup(dp->fds[SM_DP_MAP_AUTHZ_IDENTS], src, &ident);
	if (ident.identity == SM_AUTHZ_IDENTITY_NODE)
		return -ENOENT;
	cidr_key.generation = htonl(state.generation);
	memcpy(cidr_key.addr, src, 16);
	lookup(dp->fds[SM_DP_MAP_AUTHZ_CIDRS], &cidr_key, &cidr);
	source_key.generation = state.generation;
	source_key.cidr_class = cidr.cidr_class;
	source_key.identity = ident.identity;
	lookup(dp->fds[SM_DP_MAP_AUTHZ_SOURCES], &source_key, &source);
	verdict_of(dp, state.generation, dest.dest_set, source.source_class, port, out);
	return 1;
}
