/* SPDX-License-Identifier: Apache-2.0 */
/* Adopting what is pinned: `run` and `replay --datapath` reconcile the maps instead of writing over them. */
#include "agent/agent.h"

struct adopt_ctx {
	struct sm_image *image;
	enum sm_map_id map;
};

static int adopt_entry(void *ctx, const void *key, const void *value)
{
	struct adopt_ctx *adopt = ctx;

	return sm_image_set(adopt->image, adopt->map, key, value);
}

int adopt_pinned_maps(struct sm_datapath *dp, struct sm_model *model, size_t counts[SM_MAP_COUNT])
{
	struct sm_image *image = NULL;
	int ret = sm_image_new(&image);

	for (int map = 0; map < SM_MAP_COUNT && !ret; map++) {
		struct adopt_ctx ctx = { .image = image, .map = map };
		ret = sm_datapath_for_each(dp, map, adopt_entry, &ctx);
		counts[map] = ret ? 0 : sm_image_count(image, map);
	}
	if (!ret) {
		ret = sm_model_adopt_image(model, image);
		image = NULL; /* the model's now */
	}
	sm_image_free(image);
	return ret;
}
