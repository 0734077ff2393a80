/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local-config mode: the file is the whole desired state. Each (re)load is read and checked first
 * (the reader's strict checks, then a dry run through a scratch model), so a bad file is rejected
 * whole and the old state keeps serving; a good one is applied as the delta from what the model holds,
 * with removals for what the file no longer names, through the same sm_model_apply as istiod's responses.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "agent/authz.h"
#include "agent/local_config.h"
#include "agent/log.h"

/* How long the directory must stay quiet after a change before the reload: an editor's save or a
 * ConfigMap swap is several events. */
#define QUIET_MS 200

struct local_state {
	struct local_config applied; /* the last config applied: an unchanged file is not applied again */
	bool watching;
	pthread_t watcher;
	int inotify_fd;
	int stop_fd;
	char name[NAME_MAX + 1]; /* the file's name in its directory */
	unsigned retry_ms;     /* after a reload that ran out of memory: the back-off (0: none waiting) */
	uint64_t retry_at_ms; /* when the next try is due (CLOCK_MONOTONIC) */
};

static struct local_state *state_of(struct agent *agent)
{
	if (!agent->local) {
		agent->local = calloc(1, sizeof(*agent->local));
		if (agent->local)
			agent->local->inotify_fd = agent->local->stop_fd = -1;
	}
	return agent->local;
}

void local_config_free(struct local_config *config)
{
	free(config->address);
	free(config->authorization);
	*config = (struct local_config){ 0 };
}

static double seconds_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int decode(const uint8_t *bytes, size_t len, Envoy__Service__Discovery__V3__DeltaDiscoveryResponse **out)
{
	char err[512];
	int ret = sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len,
			       (ProtobufCMessage **)out, err, sizeof(err));

	if (ret)
		log_msg(LOG_ERROR, "local config: %s", err);
	return ret;
}

static void log_rejections(const char *path, const char *what, const struct sm_rejections *rejections)
{
	for (size_t i = 0; i < rejections->count; i++)
		log_msg(LOG_ERROR, "local config %s: %s %s: %s", path, what, rejections->items[i].name,
			rejections->items[i].reason);
}

/* Every resource passes the model's checks and fits the maps: applied to a model of its own. */
static int dry_run(const char *path, const struct local_config *config, const uint32_t capacity[SM_MAP_COUNT],
		   const char *node_name, struct agent_authz *authz)
{
	struct sm_model_options options = { .node_name = node_name };
	struct sm_rejections rejections = { 0 };
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *responses[2] = { NULL, NULL };
	struct sm_image_writer writer;
	struct sm_image *image = NULL;
	struct sm_model *model = NULL;
	int ret;

	memcpy(options.capacity, capacity, sizeof(options.capacity));
	ret = decode(config->address, config->address_len, &responses[0]);
	if (!ret)
		ret = decode(config->authorization, config->authorization_len, &responses[1]);
	if (!ret)
		ret = sm_image_new(&image);
	if (!ret)
		ret = sm_model_new(&options, &model);
	if (!ret)
		sm_image_writer_init(&writer, image);
	if (!ret && authz)
		sm_model_set_authz_check(model, agent_authz_check_only, authz); /* policies that fit the tables */
	for (int i = 0; i < 2 && !ret; i++)
		ret = sm_model_apply(model, responses[i], &writer.writer, &rejections);
	if (ret)
		log_msg(LOG_ERROR, "local config %s: checking: %s", path, strerror(-ret));
	else if (rejections.count) {
		log_rejections(path, "refuses", &rejections);
		ret = -EINVAL;
	}
	sm_rejections_clear(&rejections);
	sm_model_free(model);
	sm_image_free(image);
	for (int i = 0; i < 2; i++)
		if (responses[i])
			protobuf_c_message_free_unpacked(&responses[i]->base, NULL);
	return ret;
}

int local_config_read(const char *path, const uint32_t capacity[SM_MAP_COUNT], const char *node_name,
		      struct agent_authz *authz, struct local_config *out)
{
	char err[512];
	int ret;

	*out = (struct local_config){ 0 };
	ret = sm_local_config_read(path, &out->address, &out->address_len, &out->authorization, &out->authorization_len,
				   err, sizeof(err));
	if (ret) {
		log_msg(LOG_ERROR, "local config: %s", err);
		return ret;
	}
	ret = dry_run(path, out, capacity, node_name, authz);
	if (ret)
		local_config_free(out);
	return ret;
}

/* ---- applying ---- */

struct names {
	char **items;
	size_t n, capacity;
	const char **keep; /* the new response's names, sorted: not to collect */
	size_t n_keep;
};

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The response's names, sorted, into names->keep: each of the model's found in log n (a scan of them per name
 * took 20 s under the model lock for a file of 100,000 workloads that all changed). */
static int keep_names(struct names *names, const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response)
{
	names->keep = malloc((response->n_resources + 1) * sizeof(*names->keep));
	if (!names->keep)
		return -ENOMEM;
	for (size_t i = 0; i < response->n_resources; i++)
		names->keep[i] = response->resources[i]->name;
	names->n_keep = response->n_resources;
	qsort(names->keep, names->n_keep, sizeof(*names->keep), cmp_name);
	return 0;
}

/* A name the model holds that the new response does not list: to be removed. */
static int collect_removal(void *ctx, const char *name, const char *version)
{
	struct names *names = ctx;

	(void)version;
	if (bsearch(&name, names->keep, names->n_keep, sizeof(*names->keep), cmp_name))
		return 0;
	if (names->n == names->capacity) {
		size_t capacity = names->capacity ? names->capacity * 2 : 16;
		char **items = realloc(names->items, capacity * sizeof(*items));
		if (!items)
			return -ENOMEM;
		names->items = items;
		names->capacity = capacity;
	}
	names->items[names->n] = strdup(name);
	return names->items[names->n++] ? 0 : -ENOMEM;
}

static void names_free(struct names *names)
{
	for (size_t i = 0; i < names->n; i++)
		free(names->items[i]);
	free(names->items);
	free(names->keep);
}

/* One response as the whole state of its type (under the model lock): its resources, and the removal
 * of every name of the type the model holds and it does not list. */
static int apply_full_state(struct agent *agent, Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response,
			    struct sm_rejections *rejections)
{
	struct names removed = { 0 };
	int ret = keep_names(&removed, response);

	if (!ret)
		ret = sm_model_for_each_version(agent->model, response->type_url, collect_removal, &removed);

	if (!ret) {
		response->removed_resources = removed.items;
		response->n_removed_resources = removed.n;
		ret = sm_model_apply(agent->model, response, sm_datapath_writer(agent->dp), rejections);
		/* ours, not the decoder's: freed here */
		response->removed_resources = NULL;
		response->n_removed_resources = 0;
	}
	if (!ret && removed.n)
		log_msg(LOG_INFO, "local config: %zu %s resources no longer in the file removed", removed.n,
			strcmp(response->type_url, SM_TYPE_URL_ADDRESS) == 0 ? "address" : "authorization");
	names_free(&removed);
	return ret;
}

int local_config_apply(struct agent *agent, struct local_config *config)
{
	const char *path = agent->options.local_config;
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *responses[2] = { NULL, NULL };
	struct sm_rejections rejections = { 0 };
	struct local_state *state = state_of(agent);
	double start = seconds_now();
	int ret = state ? 0 : -ENOMEM;

	if (!ret)
		ret = decode(config->address, config->address_len, &responses[0]);
	if (!ret)
		ret = decode(config->authorization, config->authorization_len, &responses[1]);
	pthread_mutex_lock(&agent->model_gate.lock);
	for (int i = 0; i < 2 && !ret; i++) {
		ret = apply_full_state(agent, responses[i], &rejections);
		if (!ret)
			agent_after_apply(agent, responses[i]->type_url);
		else
			agent_apply_failed(agent, ret);
	}
	agent->local_apply_failures += ret != 0;
	pthread_mutex_unlock(&agent->model_gate.lock);
	sm_latency_record(&agent->local_apply, seconds_now() - start);
	if (ret)
		log_msg(LOG_ERROR, "local config %s: applying: %s", path, strerror(-ret));
	log_rejections(path, "rejected", &rejections);
	if (!ret && rejections.count)
		ret = -EINVAL;
	sm_rejections_clear(&rejections);
	for (int i = 0; i < 2; i++)
		if (responses[i])
			protobuf_c_message_free_unpacked(&responses[i]->base, NULL);
	if (state) {
		/* what was applied, even in part: the same file again is tried again only if it failed */
		local_config_free(&state->applied);
		if (!ret)
			state->applied = *config;
		else
			local_config_free(config);
	} else
		local_config_free(config);
	*config = (struct local_config){ 0 };
	return ret;
}

/* The capacities the datapath's maps were made with (the model holds them), for the dry run. */
static void map_capacities(struct agent *agent, uint32_t capacity[SM_MAP_COUNT])
{
	struct sm_model_stats stats;

	model_gate_lock(&agent->model_gate);
	sm_model_stats(agent->model, &stats);
	model_gate_unlock(&agent->model_gate);
	for (int map = 0; map < SM_MAP_COUNT; map++)
		capacity[map] = (uint32_t)stats.map_capacity[map];
}

int local_config_load(struct agent *agent, struct local_config *config)
{
	struct local_config read_now;
	uint32_t capacity[SM_MAP_COUNT];
	int ret = 0;

	if (!config) {
		map_capacities(agent, capacity);
		ret = local_config_read(agent->options.local_config, capacity, agent->node.node_name, agent->authz,
					&read_now);
		config = &read_now;
	}
	if (!ret)
		ret = local_config_apply(agent, config);
	if (!ret) {
		agent->local_config_applied = true;
		log_msg(LOG_INFO, "local config %s applied", agent->options.local_config);
	}
	return ret;
}

static bool same_bytes(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
	return a && b && a_len == b_len && memcmp(a, b, a_len) == 0;
}

/* A reload that ran out of memory is tried again after a back-off: no change or SIGHUP may come. */
static int memory_short(struct agent *agent, const char *doing)
{
	struct local_state *state = state_of(agent);

	if (state) {
		state->retry_ms = agent_next_retry_ms(state->retry_ms);
		state->retry_at_ms = agent_monotonic_ms() + state->retry_ms;
	}
	log_msg(LOG_ERROR, "local config %s: out of memory %s it; the config applied before keeps serving%s",
		agent->options.local_config, doing, state ? ", and the file is read again after a back-off" : "");
	return -ENOMEM;
}

unsigned local_config_retry_ms(struct agent *agent)
{
	uint64_t now = agent_monotonic_ms();

	if (!agent->local || !agent->local->retry_ms)
		return 0;
	return agent->local->retry_at_ms > now ? (unsigned)(agent->local->retry_at_ms - now) : 1;
}

bool local_config_retry_due(struct agent *agent)
{
	return agent->local && agent->local->retry_ms && agent_monotonic_ms() >= agent->local->retry_at_ms;
}

static int reload(struct agent *agent)
{
	const char *path = agent->options.local_config;
	struct local_state *state = state_of(agent);
	struct local_config config;
	uint32_t capacity[SM_MAP_COUNT];
	int ret;

	map_capacities(agent, capacity);
	ret = local_config_read(path, capacity, agent->node.node_name, agent->authz, &config);
	if (ret == -ENOMEM)
		return memory_short(agent, "reading");
	if (ret) {
		log_msg(LOG_ERROR, "local config %s: the new file is rejected; the config applied before keeps serving",
			path);
		return ret;
	}
	if (state && same_bytes(config.address, config.address_len, state->applied.address, state->applied.address_len) &&
	    same_bytes(config.authorization, config.authorization_len, state->applied.authorization,
		       state->applied.authorization_len)) {
		log_msg(LOG_DEBUG, "local config %s: unchanged", path);
		local_config_free(&config);
		return 0;
	}
	ret = local_config_apply(agent, &config);
	if (ret == -ENOMEM)
		return memory_short(agent, "applying");
	if (ret)
		log_msg(LOG_ERROR, "local config %s: reloaded in part (see above); the rejected resources keep their old state",
			path);
	else {
		agent->local_config_applied = true;
		log_msg(LOG_INFO, "local config %s reloaded", path);
	}
	return ret;
}

int local_config_reload(struct agent *agent)
{
	int ret = reload(agent);

	if (ret != -ENOMEM && agent->local)
		agent->local->retry_ms = 0;
	return ret;
}

/* ---- watching the file ---- */

/* An event about the file itself, or a name Kubernetes swaps under a ConfigMap mount ("..data"). */
static bool relevant(const struct local_state *state, const struct inotify_event *event)
{
	return event->len && (strcmp(event->name, state->name) == 0 || strncmp(event->name, "..", 2) == 0);
}

/* Reads what is queued; true when one of the events is relevant. false also on a read error. */
static bool drain(const struct local_state *state, bool *failed)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool any = false;
	ssize_t n = read(state->inotify_fd, buf, sizeof(buf));

	if (n <= 0) {
		*failed = n < 0 && errno != EAGAIN && errno != EINTR;
		return false;
	}
	for (char *p = buf; p < buf + n;) {
		const struct inotify_event *event = (const struct inotify_event *)p;
		any |= relevant(state, event);
		if (event->mask & IN_Q_OVERFLOW)
			any = true;
		p += sizeof(*event) + event->len;
	}
	return any;
}

static void *watch(void *arg)
{
	struct local_state *state = arg;
	struct pollfd fds[2] = { { .fd = state->stop_fd, .events = POLLIN }, { .fd = state->inotify_fd, .events = POLLIN } };
	bool pending = false, failed = false;

	while (!failed) {
		int n = poll(fds, 2, pending ? QUIET_MS : -1);
		if (n < 0 && errno != EINTR)
			break;
		if (fds[0].revents)
			break;
		if (n > 0 && fds[1].revents) {
			pending |= drain(state, &failed);
			continue;
		}
		if (n == 0 && pending) {
			pending = false;
			kill(getpid(), SIGHUP); /* the signal-waiting thread is the one that writes the model */
		}
	}
	if (failed)
		log_msg(LOG_WARN, "local config: watching the file failed (%s); SIGHUP still reloads it", strerror(errno));
	return NULL;
}

int local_config_watch_start(struct agent *agent)
{
	struct local_state *state = state_of(agent);
	char copy[PATH_MAX];
	const char *dir;
	int ret;

	if (!state)
		return -ENOMEM;
	snprintf(copy, sizeof(copy), "%s", agent->options.local_config);
	snprintf(state->name, sizeof(state->name), "%s", basename(copy));
	snprintf(copy, sizeof(copy), "%s", agent->options.local_config);
	dir = dirname(copy);
	state->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	state->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (state->inotify_fd < 0 || state->stop_fd < 0 ||
	    inotify_add_watch(state->inotify_fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
		ret = -errno;
		goto fail;
	}
	ret = -pthread_create(&state->watcher, NULL, watch, state);
	if (ret)
		goto fail;
	state->watching = true;
	log_msg(LOG_INFO, "local config: watching %s for changes to %s (SIGHUP reloads too)", dir, state->name);
	return 0;
fail:
	log_msg(LOG_WARN, "local config: cannot watch %s: %s; SIGHUP reloads the file", dir, strerror(-ret));
	if (state->inotify_fd >= 0)
		close(state->inotify_fd);
	if (state->stop_fd >= 0)
		close(state->stop_fd);
	state->inotify_fd = state->stop_fd = -1;
	return ret;
}

void local_config_stop(struct agent *agent)
{
	struct local_state *state = agent->local;
	uint64_t one = 1;

	if (!state)
		return;
	if (state->watching) {
		if (write(state->stop_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
			log_msg(LOG_WARN, "local config: stopping the watcher: %s", strerror(errno));
		pthread_join(state->watcher, NULL);
	}
	if (state->inotify_fd >= 0)
		close(state->inotify_fd);
	if (state->stop_fd >= 0)
		close(state->stop_fd);
	local_config_free(&state->applied);
	free(state);
	agent->local = NULL;
}
