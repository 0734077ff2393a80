// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The datapath's decisions under BPF_PROG_TEST_RUN (test/test_translate.c): this object includes the
 * datapath's own source, with its maps pinned nowhere and its slot draws scripted, and runs decide() --
 * what connect4/6 run -- from a syscall program on a destination the test gives.
 */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

#include "test/bpf/translate_test.h"

__u32 random_values[TEST_RANDOM_MAX]; /* the slot draws, in order; then the last again */
__u32 random_next;

static __always_inline __u32 scripted_random(void)
{
	__u32 i = random_next++;

	return random_values[i < TEST_RANDOM_MAX ? i : TEST_RANDOM_MAX - 1];
}

#define SM_MAP_PINNING LIBBPF_PIN_NONE
#define sm_random() scripted_random()
#include "bpf/sockmesh.bpf.c"

SEC("syscall")
int decide_connect(struct decide_args *args)
{
	struct dest dst = {};

	for (int i = 0; i < 4; i++)
		dst.addr[i] = args->addr[i];
	dst.port = args->port;
	dst.v4 = args->v4;
	random_next = 0;
	args->outcome = decide(knobs(), &dst, args->tcp, false);
	for (int i = 0; i < 4; i++)
		args->addr[i] = dst.addr[i];
	args->port = dst.port;
	args->draws = random_next;
	return 0;
}
