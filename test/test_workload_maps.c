/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The workload model writing real kernel maps (hash maps of the contract's types, created here and
 * never pinned or attached): what the kernel holds equals the model's image, a write the kernel refuses
 * is undone, an adopting model rewrites nothing, and batches cut the number of bpf() calls.
 */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "builders.h"
#include "datapath/datapath.h"
#include "helpers.h"
#include "model_harness.h"
#include "workload/workload.h"

struct kernel_maps {
	int fds[SM_MAP_COUNT];
	struct sm_bpf_writer writer;
};

static void maps_open(struct kernel_maps *maps, const uint32_t max_entries[SM_MAP_COUNT])
{
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_NO_PREALLOC);

	for (int map = 0; map < SM_MAP_COUNT; map++) {
		char name[16];
		snprintf(name, sizeof(name), "smtest_%.6s", sm_map_name(map));
		maps->fds[map] = bpf_map_create(BPF_MAP_TYPE_HASH, name, (__u32)sm_map_key_size(map),
						(__u32)sm_map_value_size(map), max_entries[map], &opts);
		if (maps->fds[map] < 0)
			fail_msg("creating the %s map: %s (run as root)", sm_map_name(map), strerror(errno));
	}
	sm_bpf_writer_init(&maps->writer, maps->fds);
}

static void maps_close(struct kernel_maps *maps)
{
	sm_bpf_writer_release(&maps->writer);
	for (int map = 0; map < SM_MAP_COUNT; map++)
		close(maps->fds[map]);
}

struct read_ctx {
	struct sm_image *image;
	enum sm_map_id map;
};

static int read_entry(void *ctx, const void *key, const void *value)
{
	struct read_ctx *read = ctx;

	return sm_image_set(read->image, read->map, key, value);
}

static struct sm_image *read_kernel(const struct kernel_maps *maps)
{
	struct sm_image *image;

	assert_int_equal(sm_image_new(&image), 0);
	for (int map = 0; map < SM_MAP_COUNT; map++) {
		struct read_ctx ctx = { .image = image, .map = map };
		assert_int_equal(sm_map_for_each(maps->fds[map], read_entry, &ctx), 0);
	}
	return image;
}

static void assert_kernel_is_model(const struct kernel_maps *maps, const struct sm_model *model)
{
	struct sm_image *kernel = read_kernel(maps);
	char diff[256], err[256];

	if (!sm_image_equivalent(kernel, sm_model_image(model), diff, sizeof(diff)))
		fail_msg("kernel maps and the model differ: %s", diff);
	if (sm_image_check(kernel, err, sizeof(err)))
		fail_msg("kernel maps: %s", err);
	sm_image_free(kernel);
}

static const uint32_t roomy[SM_MAP_COUNT] = { 1024, 1024, 8192, 4096 };

static void apply_response(struct sm_model *model, struct kernel_maps *maps, const void *response,
			   struct sm_rejections *rejections)
{
	sm_rejections_clear(rejections);
	assert_int_equal(sm_model_apply(model, response, &maps->writer.writer, rejections), 0);
	assert_kernel_is_model(maps, model);
}

static void fixture_stream_on_kernel_maps(void **state)
{
	(void)state;
	struct kernel_maps maps;
	struct sm_model *model, *restarted;
	struct sm_rejections rejections = { 0 };
	ProtobufCMessage *responses[3];

	fixture_responses("wire/stream.xds", responses, 3);
	maps_open(&maps, roomy);
	assert_int_equal(sm_model_new(&(struct sm_model_options){ .node_name = "worker-2" }, &model), 0);
	apply_response(model, &maps, responses[0], &rejections);
	apply_response(model, &maps, responses[1], &rejections);
	assert_int_equal(rejections.count, 0);
	assert_int_equal(sm_image_count(sm_model_image(model), SM_MAP_ENDPOINTS), 3);

	/* A restarted agent adopts the kernel's maps; the same config rewrites nothing. */
	struct sm_image *kernel = read_kernel(&maps);
	assert_int_equal(sm_model_new(&(struct sm_model_options){ .node_name = "worker-2" }, &restarted), 0);
	assert_int_equal(sm_model_adopt(restarted, kernel), 0);
	sm_image_free(kernel);
	size_t calls = maps.writer.calls;
	apply_response(restarted, &maps, responses[0], &rejections);
	assert_int_equal(maps.writer.calls, calls);
	assert_int_not_equal(sm_model_service_id(model, "bookinfo/reviews.bookinfo.svc.cluster.local"), 0);
	assert_int_equal(sm_model_service_id(restarted, "bookinfo/reviews.bookinfo.svc.cluster.local"),
			 sm_model_service_id(model, "bookinfo/reviews.bookinfo.svc.cluster.local"));

	apply_response(restarted, &maps, responses[2], &rejections);
	for (int map = 0; map < SM_MAP_COUNT; map++)
		assert_int_equal(sm_image_count(sm_model_image(restarted), map), 0);

	sm_rejections_clear(&rejections);
	sm_model_free(restarted);
	sm_model_free(model);
	for (int i = 0; i < 3; i++)
		protobuf_c_message_free_unpacked(responses[i], NULL);
	maps_close(&maps);
}

static void kernel_refusal_is_undone(void **state)
{
	(void)state;
	/* The model believes in room the kernel's endpoint map (2 entries) does not have. */
	static const uint32_t tight[SM_MAP_COUNT] = { 1024, 1024, 2, 4096 };
	struct kernel_maps maps;
	struct sm_model *model;
	struct sm_rejections rejections = { 0 };
	struct response r;
	struct service_spec svc = { .namespace = "ns", .hostname = "h", .vips = { "10.96.0.1" }, .ports = { { 80 } } };
	struct workload_spec heavy = { .uid = "w/heavy", .addresses = { "10.0.0.1" }, .capacity = 3, .services = { { "ns/h" } } };
	struct workload_spec light = { .uid = "w/light", .addresses = { "10.0.0.2" }, .services = { { "ns/h" } } };

	maps_open(&maps, tight);
	assert_int_equal(sm_model_new(&(struct sm_model_options){ 0 }, &model), 0);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &svc, "v1");
	response_add_workload(&r, &heavy, "v1");
	response_add_workload(&r, &light, "v1");
	apply_response(model, &maps, &r.msg, &rejections);
	response_free(&r);

	assert_int_equal(rejections.count, 1);
	assert_string_equal(rejections.items[0].name, "w/heavy");
	assert_non_null(strstr(rejections.items[0].reason, "the kernel's endpoints map is full"));
	assert_int_equal(sm_image_count(sm_model_image(model), SM_MAP_ENDPOINTS), 1);
	assert_int_equal(sm_model_backend_id(model, "w/heavy"), 0);

	sm_rejections_clear(&rejections);
	sm_model_free(model);
	maps_close(&maps);
}

/* Maps full to their capacity take a change that swaps every entry: the kernel has room for both. */
static void a_full_map_takes_a_swap(void **state)
{
	(void)state;
	uint32_t capacity[SM_MAP_COUNT] = { 1, 1, 1, 1 }, kernel_entries[SM_MAP_COUNT];
	struct kernel_maps maps;
	struct sm_model *model;
	struct sm_rejections rejections = { 0 };
	struct response r;

	for (int map = 0; map < SM_MAP_COUNT; map++)
		kernel_entries[map] = SM_MAP_KERNEL_ENTRIES(capacity[map]);
	maps_open(&maps, kernel_entries);
	assert_int_equal(sm_model_new(&(struct sm_model_options){ .capacity = { 1, 1, 1, 1 } }, &model), 0);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &(struct service_spec){ .namespace = "ns", .hostname = "a", .vips = { "10.96.0.1" },
							 .ports = { { 80 } } }, "v1");
	response_add_workload(&r, &(struct workload_spec){ .uid = "w/a", .addresses = { "10.0.0.1" },
							   .services = { { "ns/a" } } }, "v1");
	apply_response(model, &maps, &r.msg, &rejections);
	response_free(&r);
	assert_int_equal(rejections.count, 0);

	/* every map swaps its one entry for another in one response */
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_remove(&r, "ns/a");
	response_remove(&r, "w/a");
	response_add_service(&r, &(struct service_spec){ .namespace = "ns", .hostname = "b", .vips = { "10.96.0.2" },
							 .ports = { { 80 } } }, "v1");
	response_add_workload(&r, &(struct workload_spec){ .uid = "w/b", .addresses = { "10.0.0.2" },
							   .services = { { "ns/b" } } }, "v1");
	apply_response(model, &maps, &r.msg, &rejections);
	response_free(&r);
	if (rejections.count)
		fail_msg("%s: %s", rejections.items[0].name, rejections.items[0].reason);
	assert_int_not_equal(sm_model_service_id(model, "ns/b"), 0);
	assert_int_not_equal(sm_model_backend_id(model, "w/b"), 0);
	for (int map = 0; map < SM_MAP_COUNT; map++)
		assert_int_equal(sm_image_count(sm_model_image(model), map), 1);

	sm_rejections_clear(&rejections);
	sm_model_free(model);
	maps_close(&maps);
}

static void batches_cut_the_calls(void **state)
{
	(void)state;
	enum { WORKLOADS = 2000 };
	struct kernel_maps maps;
	struct sm_model *model;
	struct sm_rejections rejections = { 0 };
	struct response r;
	struct service_spec svc = { .namespace = "ns", .hostname = "big", .vips = { "10.96.0.1" }, .ports = { { 80 } } };
	static char uids[WORKLOADS][24], ips[WORKLOADS][20];

	maps_open(&maps, roomy);
	assert_int_equal(sm_model_new(&(struct sm_model_options){ 0 }, &model), 0);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, &svc, "v1");
	for (int i = 0; i < WORKLOADS; i++) {
		snprintf(uids[i], sizeof(uids[i]), "w/%d", i);
		snprintf(ips[i], sizeof(ips[i]), "10.1.%d.%d", i / 250, i % 250 + 1);
		struct workload_spec w = { .uid = uids[i], .addresses = { ips[i] }, .services = { { "ns/big" } } };
		response_add_workload(&r, &w, "v1");
	}
	apply_response(model, &maps, &r.msg, &rejections);
	response_free(&r);
	assert_int_equal(rejections.count, 0);
	assert_int_equal(sm_image_count(sm_model_image(model), SM_MAP_ENDPOINTS), WORKLOADS);
	/* 4,002 writes (2,000 backends, 2,000 slots, a service, a frontend) in a handful of calls. */
	assert_true(maps.writer.calls <= 10);
	print_message("# %d workloads written in %zu bpf() calls\n", WORKLOADS, maps.writer.calls);

	sm_rejections_clear(&rejections);
	sm_model_free(model);
	maps_close(&maps);
}

struct count_ctx {
	uint8_t seen[3001];
	int wrong_values;
};

static int count_entry(void *ctx, const void *key, const void *value)
{
	struct count_ctx *count = ctx;
	uint32_t id = *(const uint32_t *)key;
	const struct sm_backend_value *backend = value;

	if (id == 0 || id > 3000)
		return -ERANGE;
	count->seen[id]++;
	count->wrong_values += backend->name_hash != id * 7919u;
	return 0;
}

static int stop_at_1500(void *ctx, const void *key, const void *value)
{
	(void)key;
	(void)value;
	return ++*(int *)ctx == 1500 ? -ECANCELED : 0;
}

/* A restart reads its pinned maps whole: 3,000 entries (three batches, the last one short), each once. */
static void a_map_is_read_whole_across_batches(void **state)
{
	(void)state;
	struct kernel_maps maps;
	struct count_ctx count = { 0 };

	maps_open(&maps, (const uint32_t[SM_MAP_COUNT]){ 16, 16, 16, 4096 });
	for (uint32_t id = 1; id <= 3000; id++) {
		struct sm_backend_value value = { .name_hash = id * 7919u };
		assert_int_equal(bpf_map_update_elem(maps.fds[SM_MAP_BACKENDS], &id, &value, BPF_NOEXIST), 0);
	}
	assert_int_equal(sm_map_for_each(maps.fds[SM_MAP_BACKENDS], count_entry, &count), 0);
	for (uint32_t id = 1; id <= 3000; id++)
		assert_int_equal(count.seen[id], 1);
	assert_int_equal(count.wrong_values, 0);
	/* an empty map: no entry, no error */
	assert_int_equal(sm_map_for_each(maps.fds[SM_MAP_SERVICES], count_entry, &count), 0);
	/* fn's error stops the walk, in the middle of a batch, and is returned */
	int calls = 0;
	assert_int_equal(sm_map_for_each(maps.fds[SM_MAP_BACKENDS], stop_at_1500, &calls), -ECANCELED);
	assert_int_equal(calls, 1500);
	maps_close(&maps);
}

/* ---- a long run split between two threads (datapath/writer.c) ---- */

enum { LONG_RUN = 4096 }; /* split in two halves of 2048 */

static struct sm_backend_value old_values[LONG_RUN + 1], new_values[LONG_RUN + 1];

/* An update of backend id to new_values[id], which had old_values[id] when had_it. */
static struct sm_map_op backend_update(uint32_t id, bool had_it)
{
	old_values[id] = (struct sm_backend_value){ .name_hash = id * 7919u };
	new_values[id] = (struct sm_backend_value){ .name_hash = id * 104729u };
	return (struct sm_map_op){ .map = SM_MAP_BACKENDS, .kind = SM_OP_UPDATE, .key.id = id,
				   .value = &new_values[id], .before = had_it ? &old_values[id] : NULL };
}

static void put_old_value(const struct kernel_maps *maps, uint32_t id)
{
	old_values[id] = (struct sm_backend_value){ .name_hash = id * 7919u };
	assert_int_equal(bpf_map_update_elem(maps->fds[SM_MAP_BACKENDS], &id, &old_values[id], BPF_NOEXIST), 0);
}

/* 0 when backend id is absent, else its name_hash. */
static uint32_t backend_in_kernel(const struct kernel_maps *maps, uint32_t id)
{
	struct sm_backend_value value;

	return bpf_map_lookup_elem(maps->fds[SM_MAP_BACKENDS], &id, &value) ? 0 : value.name_hash;
}

/* Two threads write a long run, whatever the machine's CPUs: three batch calls each, where one thread
 * would make five. */
static void a_long_run_is_written_by_two_threads(void **state)
{
	(void)state;
	enum { RUN = 5000 };
	static struct sm_map_op ops[RUN];
	static struct sm_backend_value values[RUN + 1];
	struct kernel_maps maps;
	size_t applied;

	maps_open(&maps, (const uint32_t[SM_MAP_COUNT]){ 16, 16, 16, 8192 });
	maps.writer.two_lanes = true;
	for (uint32_t i = 0; i < RUN; i++) {
		values[i + 1] = (struct sm_backend_value){ .name_hash = (i + 1) * 7919u };
		ops[i] = (struct sm_map_op){ .map = SM_MAP_BACKENDS, .kind = SM_OP_UPDATE, .key.id = i + 1,
					     .value = &values[i + 1] };
	}
	assert_int_equal(maps.writer.writer.apply(&maps.writer.writer, ops, RUN, &applied), 0);
	assert_int_equal(applied, RUN);
	assert_int_equal(maps.writer.calls, 6);
	for (uint32_t id = 1; id <= RUN; id++)
		assert_int_equal(backend_in_kernel(&maps, id), values[id].name_hash);

	for (uint32_t i = 0; i < RUN; i++)
		ops[i] = (struct sm_map_op){ .map = SM_MAP_BACKENDS, .kind = SM_OP_DELETE, .key.id = i + 1,
					     .before = &values[i + 1] };
	maps.writer.calls = 0;
	assert_int_equal(maps.writer.writer.apply(&maps.writer.writer, ops, RUN, &applied), 0);
	assert_int_equal(applied, RUN);
	assert_int_equal(maps.writer.calls, 6);
	for (uint32_t id = 1; id <= RUN; id++)
		assert_int_equal(backend_in_kernel(&maps, id), 0);
	maps_close(&maps);
}

/*
 * A run of LONG_RUN updates into a backends map that is full: the half named by replacing holds ids already
 * there (it replaces their values), the other inserts new ids and fails at once. The writer reports what
 * took effect as if the run were written in order, and the map holds exactly that.
 */
static void write_into_a_full_map(bool first_half_replaces)
{
	static struct sm_map_op ops[LONG_RUN];
	uint32_t half = LONG_RUN / 2, replaced_from = first_half_replaces ? 1 : half + 1;
	struct kernel_maps maps;
	size_t applied = 12345;

	maps_open(&maps, (const uint32_t[SM_MAP_COUNT]){ 16, 16, 16, half });
	maps.writer.two_lanes = true;
	for (uint32_t id = replaced_from; id < replaced_from + half; id++)
		put_old_value(&maps, id); /* the map is full */
	for (uint32_t id = 1; id <= LONG_RUN; id++)
		ops[id - 1] = backend_update(id, id >= replaced_from && id < replaced_from + half);
	assert_int_equal(maps.writer.writer.apply(&maps.writer.writer, ops, LONG_RUN, &applied), -E2BIG);
	/* in order, the first half's replacements took effect and the first insert failed; or nothing did */
	assert_int_equal(applied, first_half_replaces ? half : 0);
	for (uint32_t id = 1; id <= LONG_RUN; id++) {
		bool replaced = id >= replaced_from && id < replaced_from + half;
		uint32_t expected = !replaced ? 0 : first_half_replaces ? new_values[id].name_hash : old_values[id].name_hash;
		assert_int_equal(backend_in_kernel(&maps, id), expected);
	}
	maps_close(&maps);
}

/* The first half fails while the second replaces keys: the writer writes their old values back (nothing took
 * effect, as in order). Without the write-back the new values stay. */
static void a_failed_first_half_takes_back_the_second(void **state)
{
	(void)state;
	write_into_a_full_map(false);
}

/* The second half fails after the first replaced keys: those stay, and applied says so. */
static void a_failed_second_half_keeps_the_first(void **state)
{
	(void)state;
	write_into_a_full_map(true);
}

/* A push whose backends the kernel has less room for than the model believes, written by two threads that
 * both run into the full map: whatever each got done, the kernel ends as the model, which rejects the
 * workloads that did not fit. */
static void a_push_too_large_for_the_kernel_is_undone_by_both_threads(void **state)
{
	(void)state;
	enum { WORKLOADS = 6000, ROOM = 3000 };
	static char uids[WORKLOADS][24], ips[WORKLOADS][20];
	struct kernel_maps maps;
	struct sm_model *model;
	struct sm_rejections rejections = { 0 };
	struct response r;

	maps_open(&maps, (const uint32_t[SM_MAP_COUNT]){ 1024, 1024, 16384, ROOM });
	maps.writer.two_lanes = true;
	assert_int_equal(sm_model_new(&(struct sm_model_options){ 0 }, &model), 0);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (int i = 0; i < WORKLOADS; i++) {
		snprintf(uids[i], sizeof(uids[i]), "w/%d", i);
		snprintf(ips[i], sizeof(ips[i]), "10.2.%d.%d", i / 250, i % 250 + 1);
		response_add_workload(&r, &(struct workload_spec){ .uid = uids[i], .addresses = { ips[i] } }, "v1");
	}
	apply_response(model, &maps, &r.msg, &rejections); /* the kernel is the model */
	response_free(&r);
	assert_int_equal(sm_image_count(sm_model_image(model), SM_MAP_BACKENDS), ROOM);
	assert_int_equal(rejections.count, WORKLOADS - ROOM);
	for (size_t i = 0; i < rejections.count; i++)
		assert_non_null(strstr(rejections.items[i].reason, "the kernel's backends map is full"));

	sm_rejections_clear(&rejections);
	sm_model_free(model);
	maps_close(&maps);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fixture_stream_on_kernel_maps),
		cmocka_unit_test(kernel_refusal_is_undone),
		cmocka_unit_test(a_full_map_takes_a_swap),
		cmocka_unit_test(batches_cut_the_calls),
		cmocka_unit_test(a_map_is_read_whole_across_batches),
		cmocka_unit_test(a_long_run_is_written_by_two_threads),
		cmocka_unit_test(a_failed_first_half_takes_back_the_second),
		cmocka_unit_test(a_failed_second_half_keeps_the_first),
		cmocka_unit_test(a_push_too_large_for_the_kernel_is_undone_by_both_threads),
	};

	return cmocka_run_group_tests_name("workload-maps", tests, NULL, NULL);
}
