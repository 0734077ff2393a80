/* SPDX-License-Identifier: Apache-2.0 */
/* The BPF build chain end to end: the generated skeleton loads on this kernel and unloads cleanly. */
#include <unistd.h>

#include <bpf/bpf.h>

#include "helpers.h"
#include "probe.skel.h"

static void probe_loads_and_unloads(void **state)
{
	(void)state;
	struct sm_probe *probe = sm_probe__open_and_load();

	if (!probe)
		fail_msg("the probe skeleton did not load: run as root on a kernel with BTF");
	assert_true(bpf_program__fd(probe->progs.probe_connect4) >= 0);
	assert_true(bpf_program__fd(probe->progs.probe_connect6) >= 0);
	assert_true(bpf_program__fd(probe->progs.probe_sockops) >= 0);
	assert_true(bpf_program__fd(probe->progs.probe_sk_msg) >= 0);
	assert_true(bpf_map__fd(probe->maps.probe_sockhash) >= 0);

	int prog_fd = bpf_program__fd(probe->progs.probe_connect4);
	struct bpf_prog_info info = { 0 };
	__u32 info_len = sizeof(info);
	assert_int_equal(bpf_obj_get_info_by_fd(prog_fd, &info, &info_len), 0);
	__u32 prog_id = info.id;

	sm_probe__destroy(probe);
	/* Unloaded: nothing holds the program, so its id is gone. */
	assert_true(bpf_prog_get_fd_by_id(prog_id) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(probe_loads_and_unloads),
	};

	return cmocka_run_group_tests_name("bpf-chain", tests, NULL, NULL);
}
