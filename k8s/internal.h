/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by k8s/'s own files only. */
#ifndef SOCKMESH_K8S_INTERNAL_H
#define SOCKMESH_K8S_INTERNAL_H

#include <curl/curl.h>
#include <pthread.h>

#include "k8s/k8s.h"

struct sm_k8s_client {
	char *url;
	char *token_file; /* "" for no token */
	char *ca_file;    /* "" for the system CAs */
	unsigned backoff_initial_ms;
	unsigned backoff_max_ms;
	pthread_mutex_t lock; /* guards token: the watchers and PATCH callers share it */
	char *token;          /* NULL until first read */
};

void k8s_set_err(char *err, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int k8s_reload_token(struct sm_k8s_client *c, char *err, size_t size);
/* URL, token, CA, timeouts; appends to *headers, which the caller frees after the request. */
int k8s_easy_setup(struct sm_k8s_client *c, CURL *easy, const char *url, struct curl_slist **headers,
		   char *err, size_t size);
int k8s_curl_errno(CURLcode code);
/* 0 for 2xx; -EACCES 401/403, -ENOENT 404, -ESTALE 410, -EAGAIN 429, else -EIO. */
int k8s_status_errno(long status);

#endif
