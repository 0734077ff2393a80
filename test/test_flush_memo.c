/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which enrolled namespaces telemetry's flush skips (agent/flush_memo.h), as rounds of steps: a namespace
 * is walked until a walk found nothing followed with a count to compare; then skipped while its count stays;
 * walked again when the count moves, when it has no count, and while a walk finds followed sockets; forgotten
 * when a round does not name it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "agent/flush_memo.h"

enum step_kind { WALK, END_ROUND };

struct step {
	enum step_kind kind;
	uint64_t cookie;
	bool counted;
	uint64_t started;
	size_t followed; /* what the walk finds, when it is due */
	bool due;	 /* expected */
};

#define W(cookie, counted, started, followed, due) { WALK, cookie, counted, started, followed, due }
#define END { END_ROUND, 0, false, 0, 0, false }

static const struct step steps[] = {
	/* a new namespace: walked, its first count made on the way (none to compare yet) */
	W(1, false, 0, 0, true), W(2, true, 0, 3, true), END,
	/* 1 has a count now: walked once more to have one to compare; 2 still has followed sockets */
	W(1, true, 0, 0, true), W(2, true, 0, 1, true), END,
	/* 1: nothing started, nothing found: skipped; 2's last walk found one */
	W(1, true, 0, 0, false), W(2, true, 0, 0, true), END,
	/* both quiet now */
	W(1, true, 0, 0, false), W(2, true, 0, 0, false), END,
	/* 1 starts a connection: walked (it finds it); 2 lost its count (a full map): walked */
	W(1, true, 1, 1, true), W(2, false, 0, 0, true), END,
	/* 1's connection is still open: walked; 2 has its count back: walked, to have one to compare */
	W(1, true, 1, 0, true), W(2, true, 5, 0, true), END,
	/* 1's connection closed at the last walk and nothing started since: skipped; so is 2 */
	W(1, true, 1, 0, false), W(2, true, 5, 0, false), END,
	/* a round that does not name 2 (no longer enrolled) forgets it: it is walked when it comes back */
	W(1, true, 1, 0, false), END,
	W(1, true, 1, 0, false), W(2, true, 5, 0, true), END,
	/* a count that moved back (removed and made again) is a change too */
	W(1, true, 0, 0, true), END,
	W(1, true, 0, 0, false), END,
};

static void rounds_of_steps(void **state)
{
	(void)state;
	struct flush_memo *m;

	assert_int_equal(flush_memo_new(&m), 0);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		const struct step *s = &steps[i];

		if (s->kind == END_ROUND) {
			flush_memo_end_round(m);
			continue;
		}
		bool due = flush_memo_due(m, s->cookie, s->counted, s->started);
		if (due != s->due)
			fail_msg("step %zu (namespace %llu): due %d, expected %d", i, (unsigned long long)s->cookie, due,
				 s->due);
		if (due)
			assert_int_equal(flush_memo_walked(m, s->cookie, s->counted, s->started, s->followed), 0);
	}
	flush_memo_free(m);
}

/* What a round forgets, and what the agent's sweep of the kernel's counts then keeps. */
static void a_round_forgets_what_it_did_not_name(void **state)
{
	(void)state;
	struct flush_memo *m;

	assert_int_equal(flush_memo_new(&m), 0);
	assert_int_equal(flush_memo_walked(m, 7, true, 0, 0), 0);
	assert_int_equal(flush_memo_walked(m, 8, true, 0, 0), 0);
	assert_int_equal(flush_memo_end_round(m), 0);
	assert_true(flush_memo_knows(m, 7) && flush_memo_knows(m, 8));
	assert_false(flush_memo_due(m, 7, true, 0)); /* named, skipped */
	assert_int_equal(flush_memo_end_round(m), 1); /* 8 was not named */
	assert_true(flush_memo_knows(m, 7));
	assert_false(flush_memo_knows(m, 8));
	assert_true(flush_memo_due(m, 8, true, 0));
	assert_false(flush_memo_knows(m, 9));
	flush_memo_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rounds_of_steps),
		cmocka_unit_test(a_round_forgets_what_it_did_not_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
