/* SPDX-License-Identifier: Apache-2.0 */
/* What the benchmarks report of their rotated rounds: medians and the per-round spread. */
#ifndef SOCKMESH_BENCH_ROUNDS_H
#define SOCKMESH_BENCH_ROUNDS_H

/* qsort's order of doubles, ascending. */
int compare_doubles(const void *a, const void *b);
/* The median of n > 0 values (they stay in their order). */
double median(const double *values, int n);
/* The value at percent (0..99) of n sorted values; 0 for none. */
double percentile(const double *sorted, int n, int percent);
/* The least and the greatest of n > 0 values. */
void spread(const double *values, int n, double *lo, double *hi);

#endif
