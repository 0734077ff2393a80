/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The feature probe (bpf/probe.bpf.c) calls every helper the datapath's programs call, per section, so
 * that a kernel the probe passes cannot then refuse the real programs. Read from the objects' code: a
 * helper call is BPF_JMP|BPF_CALL with src_reg 0 and the helper's id in imm.
 */
#include <errno.h>
#include <string.h>

#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "helpers.h"

#define MAX_HELPER 512

static void helpers_of(const struct bpf_program *prog, bool used[MAX_HELPER])
{
	const struct bpf_insn *insn = bpf_program__insns(prog);
	size_t n = bpf_program__insn_cnt(prog);

	memset(used, 0, MAX_HELPER * sizeof(bool));
	for (size_t i = 0; i < n; i++) {
		if (insn[i].code == (BPF_JMP | BPF_CALL) && insn[i].src_reg == 0) {
			assert_true(insn[i].imm > 0 && insn[i].imm < MAX_HELPER);
			used[insn[i].imm] = true;
		}
	}
}

static struct bpf_object *open_object(const char *path)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);

	if (!obj)
		fail_msg("opening %s: %s", path, strerror(errno));
	return obj;
}

static void probe_calls_every_helper_of_the_datapath(void **state)
{
	(void)state;
	struct bpf_object *datapath = open_object(SM_DATAPATH_OBJECT), *probe = open_object(SM_PROBE_OBJECT);
	struct bpf_program *prog, *probe_prog;
	bool needed[MAX_HELPER], probed[MAX_HELPER];
	int programs = 0;

	bpf_object__for_each_program(prog, datapath) {
		const char *section = bpf_program__section_name(prog);
		bool found = false;

		helpers_of(prog, needed);
		bpf_object__for_each_program(probe_prog, probe) {
			if (strcmp(bpf_program__section_name(probe_prog), section) != 0)
				continue;
			found = true;
			helpers_of(probe_prog, probed);
			for (int id = 0; id < MAX_HELPER; id++) {
				if (needed[id] && !probed[id])
					fail_msg("%s (%s) calls helper %d (include/uapi/linux/bpf.h), which the probe's %s does "
						 "not: add it to bpf/probe.bpf.c", bpf_program__name(prog), section, id,
						 bpf_program__name(probe_prog));
			}
		}
		if (!found)
			fail_msg("bpf/probe.bpf.c has no %s program for the datapath's %s: add one (and its line in "
				 "datapath.c's probe_needs)", section, bpf_program__name(prog));
		programs++;
	}
	assert_true(programs >= 10);
	bpf_object__close(datapath);
	bpf_object__close(probe);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(probe_calls_every_helper_of_the_datapath),
	};

	return cmocka_run_group_tests_name("probe-covers", tests, NULL, NULL);
}
