/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "bench/rounds.h"

int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double median(const double *values, int n)
{
	double *sorted = malloc((size_t)n * sizeof(double));

	memcpy(sorted, values, (size_t)n * sizeof(double));
	qsort(sorted, (size_t)n, sizeof(double), compare_doubles);
	double m = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
	free(sorted);
	return m;
}

double percentile(const double *sorted, int n, int percent)
{
	return n > 0 ? sorted[n * percent / 100] : 0.0;
}

void spread(const double *values, int n, double *lo, double *hi)
{
	*lo = *hi = values[0];
	for (int i = 1; i < n; i++) {
		*lo = values[i] < *lo ? values[i] : *lo;
		*hi = values[i] > *hi ? values[i] : *hi;
	}
}
