/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kubernetes API client: in-cluster configuration, the bearer token (re-read after a 401: kubelet
 * rotates projected tokens), one request with libcurl that a watcher can interrupt, and the annotation
 * merge-PATCH. The watcher is in watch.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s/internal.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void k8s_set_err(char *err, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (!err || !size)
		return;
	va_start(ap, fmt);
	vsnprintf(err, size, fmt, ap);
	va_end(ap);
}

/* The in-cluster address; an IPv6 service host needs brackets. */
static int in_cluster_url(char **out, char *err, size_t size)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");

	if (!host || !*host || !port || !*port) {
		k8s_set_err(err, size, "no API URL given and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are unset "
			    "(not running in a pod?)");
		return -ENOENT;
	}
	if (asprintf(out, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port) < 0)
		return -ENOMEM;
	return 0;
}

int sm_k8s_client_new(const struct sm_k8s_options *options, struct sm_k8s_client **out, char *err, size_t size)
{
	static const struct sm_k8s_options defaults;
	const struct sm_k8s_options *o = options ? options : &defaults;
	struct sm_k8s_client *c;
	int rc;

	pthread_once(&curl_once, curl_init);
	if (curl_init_result != CURLE_OK) {
		k8s_set_err(err, size, "libcurl: %s", curl_easy_strerror(curl_init_result));
		return -EIO;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	c->backoff_initial_ms = o->backoff_initial_ms ? o->backoff_initial_ms : 500;
	c->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : 30000;
	if (c->backoff_max_ms < c->backoff_initial_ms)
		c->backoff_max_ms = c->backoff_initial_ms;
	if (o->api_url && *o->api_url) {
		size_t n = strlen(o->api_url);

		c->url = strdup(o->api_url);
		/* The paths we append start with a slash. */
		if (c->url && n > 1 && c->url[n - 1] == '/')
			c->url[n - 1] = '\0';
		rc = c->url ? 0 : -ENOMEM;
	} else {
		rc = in_cluster_url(&c->url, err, size);
	}
	if (rc)
		goto fail;
	c->token_file = strdup(o->token_file ? o->token_file : SM_K8S_DEFAULT_TOKEN_FILE);
	/* The default CA only makes sense for https: a plain-http test server has none. */
	if (o->ca_file)
		c->ca_file = strdup(o->ca_file);
	else
		c->ca_file = strdup(strncmp(c->url, "https:", 6) ? "" : SM_K8S_DEFAULT_CA_FILE);
	if (!c->token_file || !c->ca_file) {
		rc = -ENOMEM;
		goto fail;
	}
	*out = c;
	return 0;
fail:
	sm_k8s_client_free(c);
	return rc;
}

void sm_k8s_client_free(struct sm_k8s_client *c)
{
	if (!c)
		return;
	free(c->url);
	free(c->token_file);
	free(c->ca_file);
	free(c->token);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

const char *sm_k8s_client_url(const struct sm_k8s_client *c)
{
	return c->url;
}

/* Reads the token file into the cache, trimming the trailing newline. */
int k8s_reload_token(struct sm_k8s_client *c, char *err, size_t size)
{
	char buf[16384];
	size_t n = 0;
	FILE *f;
	int rc = 0;

	if (!*c->token_file)
		return 0;
	f = fopen(c->token_file, "re");
	if (!f) {
		rc = -errno;
		k8s_set_err(err, size, "reading the token %s: %s", c->token_file, strerror(-rc));
		return rc;
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	if (ferror(f) || !feof(f)) {
		rc = ferror(f) ? -EIO : -EFBIG;
		k8s_set_err(err, size, "reading the token %s: %s", c->token_file,
			    rc == -EIO ? "read error" : "larger than 16 KiB");
	}
	fclose(f);
	if (rc)
		return rc;
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	pthread_mutex_lock(&c->lock);
	free(c->token);
	c->token = strdup(buf);
	rc = c->token ? 0 : -ENOMEM;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* The Authorization header for the next request (read from the file on first use), or NULL without one. */
static int auth_header(struct sm_k8s_client *c, struct curl_slist **headers, char *err, size_t size)
{
	struct curl_slist *added;
	char *line = NULL;
	int rc;

	if (!*c->token_file)
		return 0;
	pthread_mutex_lock(&c->lock);
	rc = c->token ? 0 : 1;
	pthread_mutex_unlock(&c->lock);
	if (rc && (rc = k8s_reload_token(c, err, size)))
		return rc;
	pthread_mutex_lock(&c->lock);
	rc = asprintf(&line, "Authorization: Bearer %s", c->token) < 0 ? -ENOMEM : 0;
	pthread_mutex_unlock(&c->lock);
	if (rc)
		return rc;
	added = curl_slist_append(*headers, line);
	free(line);
	if (!added)
		return -ENOMEM;
	*headers = added;
	return 0;
}

int k8s_easy_setup(struct sm_k8s_client *c, CURL *easy, const char *url, struct curl_slist **headers,
		   char *err, size_t size)
{
	struct curl_slist *added;
	int rc = auth_header(c, headers, err, size);

	if (rc)
		return rc;
	added = curl_slist_append(*headers, "Accept: application/json");
	if (!added)
		return -ENOMEM;
	*headers = added;
	if (curl_easy_setopt(easy, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, *headers) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L) != CURLE_OK ||
	    /* A watch is idle between events: keepalive finds a dead API server connection. */
	    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_TCP_KEEPIDLE, 30L) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_TCP_KEEPINTVL, 10L) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK) {
		k8s_set_err(err, size, "setting up a request to %s", url);
		return -EINVAL;
	}
	if (*c->ca_file && curl_easy_setopt(easy, CURLOPT_CAINFO, c->ca_file) != CURLE_OK) {
		k8s_set_err(err, size, "using the CA file %s", c->ca_file);
		return -EINVAL;
	}
	return 0;
}

int k8s_curl_errno(CURLcode code)
{
	switch (code) {
	case CURLE_OK:
		return 0;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CONNECT_ERROR:
		return -EPROTO;
	default:
		return -EIO;
	}
}

int k8s_status_errno(long status)
{
	if (status >= 200 && status < 300)
		return 0;
	switch (status) {
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 410:
		return -ESTALE;
	case 429:
		return -EAGAIN;
	default:
		return -EIO;
	}
}

static size_t discard(char *data, size_t size, size_t n, void *ctx)
{
	(void)data;
	(void)ctx;
	return size * n;
}

/* One PATCH with the cached token; *status is the HTTP status (0 when none came). */
static int patch_once(struct sm_k8s_client *c, const char *url, const char *body, long *status, char *err,
		      size_t size)
{
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/merge-patch+json");
	char curl_err[CURL_ERROR_SIZE] = "";
	CURL *easy = curl_easy_init();
	CURLcode code;
	int rc;

	*status = 0;
	if (!easy || !headers) {
		rc = -ENOMEM;
		goto out;
	}
	rc = k8s_easy_setup(c, easy, url, &headers, err, size);
	if (rc)
		goto out;
	curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "PATCH");
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_err);
	code = curl_easy_perform(easy);
	if (code != CURLE_OK) {
		rc = k8s_curl_errno(code);
		k8s_set_err(err, size, "PATCH %s: %s", url, *curl_err ? curl_err : curl_easy_strerror(code));
		goto out;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, status);
	rc = k8s_status_errno(*status);
	if (rc)
		k8s_set_err(err, size, "PATCH %s: HTTP status %ld", url, *status);
out:
	curl_slist_free_all(headers);
	curl_easy_cleanup(easy);
	return rc;
}

int sm_k8s_patch_pod_annotation(struct sm_k8s_client *c, const char *namespace, const char *name,
				const char *key, const char *value, char *err, size_t size)
{
	char *url = NULL, *body = NULL, *ns_esc = NULL, *name_esc = NULL;
	json_t *patch = NULL;
	long status;
	int rc;

	if (!namespace || !*namespace || !name || !*name || !key || !*key) {
		k8s_set_err(err, size, "patching a pod annotation: namespace, name and key are required");
		return -EINVAL;
	}
	if (!strcmp(key, "ambient.istio.io/redirection")) {
		k8s_set_err(err, size, "refusing to set ambient.istio.io/redirection on %s/%s: istiod would "
			    "advertise the pod as HBONE", namespace, name);
		return -EPERM;
	}
	/* {"metadata":{"annotations":{key:value}}}; a null value removes the key (RFC 7386). */
	patch = json_pack("{s:{s:{s:o}}}", "metadata", "annotations", key,
			  value ? json_string(value) : json_null());
	body = patch ? json_dumps(patch, JSON_COMPACT) : NULL;
	ns_esc = curl_easy_escape(NULL, namespace, 0);
	name_esc = curl_easy_escape(NULL, name, 0);
	if (!body || !ns_esc || !name_esc ||
	    asprintf(&url, "%s/api/v1/namespaces/%s/pods/%s", c->url, ns_esc, name_esc) < 0) {
		url = NULL;
		rc = -ENOMEM;
		goto out;
	}
	rc = patch_once(c, url, body, &status, err, size);
	if (status == 401) {
		/* The token rotated under us: read it again and retry once. */
		rc = k8s_reload_token(c, err, size);
		if (!rc)
			rc = patch_once(c, url, body, &status, err, size);
	}
out:
	free(url);
	free(body);
	curl_free(ns_esc);
	curl_free(name_esc);
	json_decref(patch);
	return rc;
}
