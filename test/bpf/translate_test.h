/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The context of translate_test.bpf.c's program, shared with test/test_translate.c. */
#ifndef SOCKMESH_TEST_TRANSLATE_H
#define SOCKMESH_TEST_TRANSLATE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define TEST_RANDOM_MAX 4 /* slot draws a case may script */

struct decide_args {
	__u32 addr[4];	 /* in: the destination asked for (IPv4 as ::ffff:a.b.c.d); out: where it goes */
	__be16 port;	 /* in and out */
	__u8 v4;	 /* in: an IPv4 destination */
	__u8 tcp;	 /* in: TCP (else UDP) */
	__s32 outcome;	 /* out: enum sm_counter */
	__u32 draws;	 /* out: slot draws made */
};

#endif
