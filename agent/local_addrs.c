/* SPDX-License-Identifier: Apache-2.0 */
/* sm_local_addrs in step with the model (agent/local_addrs.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/local_addrs.h"
#include "datapath/datapath.h"
#include "workload/workload.h"

struct addresses {
	struct sm_frontend_key *items;
	size_t n, capacity;
};

static int collect_address(void *ctx, const uint8_t addr[16])
{
	struct addresses *list = ctx;

	if (list->n == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 16;
		void *items = realloc(list->items, capacity * sizeof(*list->items));
		if (!items)
			return -ENOMEM;
		list->items = items;
		list->capacity = capacity;
	}
	memcpy(list->items[list->n++].addr, addr, 16);
	return 0;
}

int local_addrs_sync(struct local_addrs *la, const struct sm_model *model, struct sm_datapath *dp, uint64_t now_ms)
{
	uint64_t generation = sm_model_local_generation(model);
	struct addresses local = { 0 };
	int ret;

	if (la->written && la->generation == generation)
		return 0;
	ret = sm_model_for_each_local_address(model, collect_address, &local);
	if (!ret)
		ret = sm_datapath_set_local_addresses(dp, local.items, local.n);
	free(local.items);
	la->written = !ret;
	la->generation = generation;
	la->retry_ms = ret ? agent_next_retry_ms(la->retry_ms) : 0;
	la->retry_at_ms = ret ? now_ms + la->retry_ms : 0;
	la->failures = ret ? la->failures + 1 : 0;
	return ret;
}

unsigned local_addrs_retry_in_ms(const struct local_addrs *la, uint64_t now_ms)
{
	if (!la->retry_ms)
		return 0;
	return la->retry_at_ms > now_ms ? (unsigned)(la->retry_at_ms - now_ms) : 1;
}

bool local_addrs_retry_due(const struct local_addrs *la, uint64_t now_ms)
{
	return la->retry_ms && now_ms >= la->retry_at_ms;
}
