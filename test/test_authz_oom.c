/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Memory running short in the policy compiler, at every allocation in turn, once or from there on, for
 * seeded random worlds (test/authz_random.h): sm_authz_compile, and the updates of sources and of idents
 * from a world's own tables (with sm_authz_update_denies after them), an update of idents that brings
 * new pairs for the compilation's source side to classify, and an update of destinations that brings a
 * destination for its destination side to give a set, return 0 or -ENOMEM and never exit;
 * -ENOMEM hands out no tables; tables they do hand out give the evaluator's verdict for every connection
 * tried. The library allocates through failing_alloc.h.
 */
#include "failing_alloc.h"
#include "helpers.h"
#include "authz_random.h"

#define WORLDS 40
#define CONNECTIONS 64

enum op {
	COMPILE,
	UPDATE_SOURCES, /* from w's own tables: the same sources, every pair known */
	UPDATE_IDENTS,	/* the same, every source given again */
	UPDATE_NEW_PAIRS, /* from the tables of w's first half of sources: the rest given, new pairs classified */
	UPDATE_DESTINATIONS, /* from the tables of w's destinations but the last: all given, the last a set */
};

static int run(enum op op, const struct authz_world *w, const struct sm_authz_tables *prev,
	       struct sm_authz_tables **out, char *reason, size_t size)
{
	struct sm_authz_compile_input in = { .destinations = w->destinations, .n_destinations = w->n_destinations,
					     .sources = w->sources, .n_sources = w->n_sources };
	struct sm_frontend_key *dests = NULL;
	int err;

	*out = NULL;
	if (op == COMPILE)
		return sm_authz_compile(&in, 7, out, reason, size);
	err = op == UPDATE_SOURCES ? sm_authz_update_sources(prev, &in, out, reason, size)
				   : sm_authz_update_idents(prev, w->sources, w->n_sources, NULL, 0, out, reason, size);
	if (!err && op == UPDATE_DESTINATIONS &&
	    (err = sm_authz_update_destinations(*out, w->destinations, w->n_destinations, NULL, 0, reason, size))) {
		sm_authz_tables_free(*out);
		*out = NULL;
		return err;
	}
	if (!err) { /* nothing denied that was allowed (the same sources), or memory short */
		int denies = sm_authz_update_denies(prev, *out, &dests, NULL);
		free(dests);
		if ((op == UPDATE_NEW_PAIRS || op == UPDATE_DESTINATIONS) && denies >= 0)
			denies = 0; /* new sources may be denied what no source was, a new destination what it allowed */
		if (denies) {
			sm_authz_tables_free(*out);
			*out = NULL;
			err = denies == -ENOMEM ? -ENOMEM : -EINVAL;
			snprintf(reason, size, "the same sources, yet sm_authz_update_denies gave %d", denies);
		}
	}
	return err;
}

static void check_tables(struct authz_rng *rng, const struct authz_world *w, const struct sm_authz_tables *t,
			 size_t world, long target)
{
	char why[512];

	for (int i = 0; i < CONNECTIONS; i++) {
		struct sm_authz_connection conn;
		authz_random_connection(rng, w, &conn);
		if (!authz_tables_agree(w, t, &conn, why, sizeof(why)))
			fail_msg("world %zu, allocation %ld failing: tables given out that are wrong: %s", world, target,
				 why);
	}
}

static void sweep(enum failing mode, enum op op)
{
	struct authz_rng rng = { 20261205 };
	long compiles = 0, survived = 0, classified = 0, given_sets = 0;

	for (size_t world = 0; world < WORLDS; world++) {
		struct authz_world w;
		struct sm_authz_tables *t, *prev = NULL;
		char reason[256];

		authz_random_world(&rng, &w);
		struct authz_world first_half = w, but_last = w;
		first_half.n_sources /= 2;
		but_last.n_destinations -= but_last.n_destinations > 0;
		if (op != COMPILE)
			assert_int_equal(run(COMPILE,
					     op == UPDATE_NEW_PAIRS	     ? &first_half
					     : op == UPDATE_DESTINATIONS ? &but_last
									 : &w,
					     NULL, &prev, reason, sizeof(reason)),
					 0);
		oom_arm(FAIL_NONE, 0);
		int unfailed = run(op, &w, prev, &t, reason, sizeof(reason));
		oom.armed = false;
		if ((op == UPDATE_NEW_PAIRS || op == UPDATE_DESTINATIONS) && unfailed == -ESRCH) {
			/* a new class or set, or tables that guard nothing: compiled whole, not here */
			sm_authz_tables_free(prev);
			authz_world_free(&w);
			continue;
		}
		assert_int_equal(unfailed, 0);
		classified += op == UPDATE_NEW_PAIRS && t->n_pairs > prev->n_pairs;
		given_sets += op == UPDATE_DESTINATIONS && t->n_changed_dests > 0;
		long total = oom.count;
		sm_authz_tables_free(t);
		for (long target = 0; target < total; target++) {
			oom_arm(mode, target);
			int err = run(op, &w, prev, &t, reason, sizeof(reason));
			oom.armed = false;
			compiles++;
			if (!oom.any_failed)
				fail_msg("world %zu: allocation %ld of %ld was never made", world, target, total);
			if (err != 0 && err != -ENOMEM)
				fail_msg("world %zu, allocation %ld of %ld failing: compile returned %d (%s)", world, target,
					 total, err, reason);
			if (err) {
				assert_null(t);
				continue;
			}
			survived++;
			check_tables(&rng, &w, t, world, target);
			sm_authz_tables_free(t);
		}
		sm_authz_tables_free(prev);
		authz_world_free(&w);
	}
	print_message("# %ld %s with an allocation failing, %ld of them giving tables\n", compiles,
		      op == COMPILE		 ? "compiles"
		      : op == UPDATE_SOURCES	 ? "updates of sources"
		      : op == UPDATE_IDENTS	 ? "updates of idents"
		      : op == UPDATE_NEW_PAIRS	 ? "updates of idents with new pairs"
						 : "updates of destinations",
		      survived);
	if (op == UPDATE_NEW_PAIRS) {
		print_message("# %ld worlds whose new pairs were given classes\n", classified);
		assert_true(classified > 5);
	}
	if (op == UPDATE_DESTINATIONS) {
		print_message("# %ld worlds whose new destination was given a set\n", given_sets);
		assert_true(given_sets > 5);
	}
}

static void each_allocation_failing_once(void **state)
{
	(void)state;
	for (enum op op = COMPILE; op <= UPDATE_DESTINATIONS; op++)
		sweep(FAIL_ONE, op);
}

static void every_allocation_failing_from_one_on(void **state)
{
	(void)state;
	for (enum op op = COMPILE; op <= UPDATE_DESTINATIONS; op++)
		sweep(FAIL_FROM, op);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(each_allocation_failing_once),
		cmocka_unit_test(every_allocation_failing_from_one_on),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
