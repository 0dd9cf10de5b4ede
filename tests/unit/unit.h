/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Small helpers shared by the CUnit programs: t_* like liburing's tests. */
#ifndef KTLSH_TESTS_UNIT_H
#define KTLSH_TESTS_UNIT_H

#include <stdio.h>
#include <stdint.h>
#include <stddef.h>
#include <CUnit/Basic.h>

struct t_case {
	const char *name;
	void (*fn)(void);
};

static inline int t_unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t i, n = 0;
	unsigned v;

	for (i = 0; hex[i] && hex[i + 1] && n < cap; i += 2) {
		if (sscanf(hex + i, "%2x", &v) != 1)
			return -1;
		out[n++] = (uint8_t)v;
	}
	return (int)n;
}

/* One suite per program; exit status is the number of failures (capped). */
static inline int t_run(const char *suite_name, const struct t_case *cases)
{
	CU_pSuite suite;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	suite = CU_add_suite(suite_name, NULL, NULL);
	if (!suite)
		return 2;
	for (; cases->name; cases++)
		if (!CU_add_test(suite, cases->name, cases->fn))
			return 2;
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}

#endif
