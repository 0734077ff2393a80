/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loading and keeping the datapath. Maps are pinned by name under <pin dir>/maps (libbpf reuses what is
 * pinned there), the cgroup programs through links pinned under <pin dir>/links, the sk_msg program on
 * the pinned sockhash. An agent that exits leaves all of it serving; the next one adopts the maps and
 * swaps its programs into the pinned links atomically, so traffic never sees a detached hook.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>

#include "datapath/datapath.h"
#include "datapath/internal.h"
#include "probe.skel.h"

static const char *const dp_map_names[SM_DP_MAP_COUNT] = {
	[SM_MAP_FRONTENDS] = "sm_frontends",	 [SM_MAP_SERVICES] = "sm_services",
	[SM_MAP_ENDPOINTS] = "sm_endpoints",	 [SM_MAP_BACKENDS] = "sm_backends",
	[SM_DP_MAP_CONFIG] = "sm_config",	 [SM_DP_MAP_COUNTERS] = "sm_counters",
	[SM_DP_MAP_ENROLLED] = "sm_enrolled",	 [SM_DP_MAP_LOCAL_ADDRS] = "sm_local_addrs",
	[SM_DP_MAP_META] = "sm_meta",		 [SM_DP_MAP_SOCKHASH] = "sm_sockhash",
	[SM_DP_MAP_SOCK_STATE] = "sm_sock_state",
	[SM_DP_MAP_AUTHZ_STATE] = "sm_authz_state",
	[SM_DP_MAP_AUTHZ_IDENTS] = "sm_authz_idents",
	[SM_DP_MAP_AUTHZ_DESTS] = "sm_authz_dests",
	[SM_DP_MAP_AUTHZ_CIDRS] = "sm_authz_cidrs",
	[SM_DP_MAP_AUTHZ_SOURCES] = "sm_authz_sources",
	[SM_DP_MAP_AUTHZ_VERDICTS] = "sm_authz_verdicts",
	[SM_DP_MAP_AUTHZ_POLICY_COUNTERS] = "sm_authz_policy_counters",
	[SM_DP_MAP_AUTHZ_EVENTS] = "sm_authz_events",
	[SM_DP_MAP_CONN_STATS] = "sm_conn_stats",
	[SM_DP_MAP_CONN_EVENTS] = "sm_conn_events",
	[SM_DP_MAP_CONN_RECEIVED] = "sm_conn_received",
	[SM_DP_MAP_CONN_STARTED] = "sm_conn_started",
	[SM_DP_MAP_ORIG_SLOTS] = "sm_orig_slots",
	[SM_DP_MAP_TLV_PORTS] = "sm_tlv_ports",
};

const char *sm_dp_map_name(int map)
{
	return dp_map_names[map];
}

/* ---- checks before loading ---- */

static int check_fs(const char *path, long magic, const char *what, char *err, size_t size)
{
	struct statfs st;

	if (statfs(path, &st))
		return fail(err, size, -errno, "%s: %s", path, strerror(errno));
	if ((long)st.f_type != magic)
		return fail(err, size, -EINVAL, "%s is not on %s", path, what);
	return 0;
}

/* Maps live in a directory per layout version, so that a new layout can be filled beside the old. */
static void maps_dir(char *out, size_t size, const char *pin_dir, uint32_t version)
{
	snprintf(out, size, "%s/maps-v%u", pin_dir, version);
}

/* mkdir that says whether it made the directory; an existing one is fine. */
static int make_dir(const char *path, bool *created, char *err, size_t size)
{
	if (mkdir(path, 0700) == 0) {
		*created = true;
		return 0;
	}
	if (errno == EEXIST)
		return 0;
	return fail(err, size, -errno, "cannot create %s: %s", path, strerror(errno));
}

/* The pin directory, or the one it would be made in, must be on bpffs: nothing is made elsewhere. */
static int check_pin_fs(const char *pin_dir, char *err, size_t size)
{
	static const char *const bpffs = "a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)";
	char parent[PIN_DIR_MAX];
	char *slash;

	if (!pin_dir[0])
		return fail(err, size, -EINVAL, "the pin directory is ''");
	if (access(pin_dir, F_OK) == 0)
		return check_fs(pin_dir, BPF_FS_MAGIC, bpffs, err, size);
	snprintf(parent, sizeof(parent), "%s", pin_dir);
	slash = strrchr(parent, '/');
	if (!slash)
		snprintf(parent, sizeof(parent), ".");
	else if (slash == parent)
		parent[1] = '\0';
	else
		*slash = '\0';
	int ret = check_fs(parent, BPF_FS_MAGIC, bpffs, err, size);
	if (ret)
		return ret == -ENOENT ? fail(err, size, ret, "cannot create the pin directory %s: %s does not exist",
					     pin_dir, parent) : ret;
	return 0;
}

static int make_dirs(struct sm_datapath *dp, char *err, size_t size)
{
	char path[PATH_MAX];
	int ret = check_pin_fs(dp->pin_dir, err, size);

	if (!ret)
		ret = make_dir(dp->pin_dir, &dp->created_dirs[0], err, size);
	snprintf(path, sizeof(path), "%s/links", dp->pin_dir);
	if (!ret)
		ret = make_dir(path, &dp->created_dirs[1], err, size);
	maps_dir(path, sizeof(path), dp->pin_dir, SM_LAYOUT_VERSION);
	if (!ret)
		ret = make_dir(path, &dp->created_dirs[2], err, size);
	return ret;
}

/* Another layout version's maps directory under pin_dir, if one is there. */
static bool find_other_layout(const char *pin_dir, char *out, size_t size, uint32_t *version)
{
	DIR *d = opendir(pin_dir);
	struct dirent *entry;
	bool found = false;

	while (d && !found && (entry = readdir(d))) {
		unsigned int v;
		char tail;
		if (sscanf(entry->d_name, "maps-v%u%c", &v, &tail) == 1 && v != SM_LAYOUT_VERSION) {
			snprintf(out, size, "%s/%s", pin_dir, entry->d_name);
			*version = v;
			found = true;
		}
	}
	if (d)
		closedir(d);
	return found;
}

/* What a kernel without a probe's program lacks: everything, or one optional part. */
enum probe_kind {
	PROBE_REQUIRED,
	PROBE_REAPER,	    /* closing established connections a change denies (bpf_sock_destroy, 6.5) */
	PROBE_SLOT_RELEASE, /* freeing a slot at a socket's release (bpf_rdonly_cast, 6.2) */
};

struct probe_need {
	const char *program;
	const char *need;
	enum probe_kind kind;
};

/* What each probe program stands for, in the words of an operator's error message. */
static const struct probe_need probe_needs[] = {
	{ "probe_connect4", "cgroup/connect4 programs with socket storage and netns cookies (Linux 5.10 or later)", PROBE_REQUIRED },
	{ "probe_connect6", "cgroup/connect6 programs with socket storage and netns cookies (Linux 5.10 or later)", PROBE_REQUIRED },
	{ "probe_sendmsg4", "cgroup/sendmsg4 programs (Linux 5.10 or later)", PROBE_REQUIRED },
	{ "probe_sendmsg6", "cgroup/sendmsg6 programs (Linux 5.10 or later)", PROBE_REQUIRED },
	{ "probe_getpeername4", "cgroup/getpeername programs (Linux 5.8 or later)", PROBE_REQUIRED },
	{ "probe_getpeername6", "cgroup/getpeername programs (Linux 5.8 or later)", PROBE_REQUIRED },
	{ "probe_recvmsg4", "cgroup/recvmsg programs (Linux 5.8 or later)", PROBE_REQUIRED },
	{ "probe_recvmsg6", "cgroup/recvmsg programs (Linux 5.8 or later)", PROBE_REQUIRED },
	{ "probe_sockops", "sockops programs with sockhash updates and netns cookies (Linux 5.15 or later)", PROBE_REQUIRED },
	{ "probe_sock_release", "cgroup/sock_release programs that read a socket's cookie (Linux 6.2 or later)",
	  PROBE_SLOT_RELEASE },
	{ "probe_sk_msg", "sk_msg programs with message push and pull, socket storage and netns cookies (Linux 5.15 or later)", PROBE_REQUIRED },
	{ "probe_sk_lookup", "sk_lookup programs with ring buffers (Linux 5.9 or later)", PROBE_REQUIRED },
	{ "probe_iter_tcp", "TCP socket iterators that close sockets (the bpf_sock_destroy kfunc, Linux 6.5 or later)",
	  PROBE_REAPER },
};

/* Loads one probe program alone; returns 0 when the kernel takes it. */
static int probe_one(const char *name)
{
	struct sm_probe *probe = sm_probe__open();
	struct bpf_program *prog;
	int err;

	if (!probe)
		return -errno;
	bpf_object__for_each_program(prog, probe->obj)
		bpf_program__set_autoload(prog, strcmp(bpf_program__name(prog), name) == 0);
	err = sm_probe__load(probe);
	sm_probe__destroy(probe);
	return err;
}

/*
 * 0 when the kernel takes every program the datapath needs; *can_reap and *can_release: and the optional
 * ones'. Without the reaper (Linux 6.5) the datapath serves all else and sm_datapath_authz_reap says why it
 * cannot; without the slot release (6.2) a translated socket keeps its original destination in a slot only
 * while telemetry follows it (its close frees it), else in socket storage.
 */
static int probe_programs(char *err, size_t size, bool *can_reap, bool *can_release)
{
	struct sm_probe *probe = sm_probe__open_and_load();
	struct utsname uts;

	*can_reap = *can_release = true;
	if (probe) {
		sm_probe__destroy(probe);
		return 0;
	}
	int ret = -errno;
	uname(&uts);
	for (size_t i = 0; i < sizeof(probe_needs) / sizeof(probe_needs[0]); i++) {
		if (!probe_one(probe_needs[i].program))
			continue;
		switch (probe_needs[i].kind) {
		case PROBE_REQUIRED:
			return fail(err, size, ret, "this kernel (%s) cannot load %s", uts.release, probe_needs[i].need);
		case PROBE_REAPER:
			*can_reap = false;
			break;
		case PROBE_SLOT_RELEASE:
			*can_release = false;
			break;
		}
	}
	if (!*can_reap || !*can_release)
		return 0;
	return fail(err, size, ret, "this kernel (%s) cannot create the sockhash or socket-storage maps: %s (is this root?)",
		    uts.release, strerror(-ret));
}

/* What probe_programs() found on this boot's kernel before, remembered at memo (*probed false), or probes it. */
static int probe_kernel(const char *memo, char *err, size_t size, bool *can_reap, bool *can_release, bool *probed)
{
	*probed = !probe_memo_read(memo, can_reap, can_release);
	return *probed ? probe_programs(err, size, can_reap, can_release) : 0;
}

int sm_datapath_probe(char *err, size_t size)
{
	bool can_reap, can_release;

	return probe_programs(err, size, &can_reap, &can_release);
}

static int remove_pins(const char *dir, bool links, char *err, size_t size);

/* ---- pinned maps ---- */

static void link_path(char *out, size_t size, const char *pin_dir, const char *name)
{
	snprintf(out, size, "%s/links/%s", pin_dir, name);
}

static void map_path(char *out, size_t size, const char *pin_dir, const char *name)
{
	char dir[PIN_DIR_MAX + 32];

	maps_dir(dir, sizeof(dir), pin_dir, SM_LAYOUT_VERSION);
	snprintf(out, size, "%s/%s", dir, name);
}

/* The layout version recorded in a maps directory's sm_meta. */
static int layout_of(const char *dir, uint32_t *version)
{
	char path[PATH_MAX];
	struct sm_meta meta;
	__u32 key = 0;
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, dp_map_names[SM_DP_MAP_META]);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return -errno;
	if (bpf_map_lookup_elem(fd, &key, &meta))
		err = -errno;
	else
		*version = meta.layout_version;
	close(fd);
	return err;
}

/* A pinned map keeps its size: the skeleton must ask for the same, or libbpf will not reuse it. */
static int match_pinned_sizes(struct sm_datapath *dp, const uint32_t capacity[SM_MAP_COUNT])
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, dp->skel->obj) {
		char path[PATH_MAX];
		struct bpf_map_info info = {};
		__u32 len = sizeof(info);

		map_path(path, sizeof(path), dp->pin_dir, bpf_map__name(map));
		int fd = bpf_obj_get(path);
		if (fd >= 0) {
			int err = bpf_obj_get_info_by_fd(fd, &info, &len) ? -errno : 0;
			close(fd);
			if (err)
				return err;
			dp->adopted = true;
			if (bpf_map__type(map) != BPF_MAP_TYPE_SK_STORAGE)
				bpf_map__set_max_entries(map, info.max_entries);
			continue;
		}
		for (int m = 0; m < SM_MAP_COUNT; m++) {
			if (capacity[m] && strcmp(bpf_map__name(map), dp_map_names[m]) == 0)
				bpf_map__set_max_entries(map, SM_MAP_KERNEL_ENTRIES(capacity[m]));
		}
	}
	return 0;
}

static int write_meta(struct sm_datapath *dp)
{
	struct sm_meta meta = { .layout_version = SM_LAYOUT_VERSION };
	__u32 key = 0;

	return bpf_map_update_elem(dp->fds[SM_DP_MAP_META], &key, &meta, BPF_ANY) ? -errno : 0;
}

/* ---- links ---- */

static struct bpf_program *cgroup_program(struct sm_sockmesh *skel, int hook)
{
	/* Attached in this order: what reads a socket's state before what writes it, so that no socket
	 * is redirected while the programs that give back its address are missing, and the release that
	 * frees a slot before the connects that claim them. */
	struct bpf_program *const programs[SM_CGROUP_HOOKS] = {
		skel->progs.sm_getpeername4, skel->progs.sm_getpeername6, skel->progs.sm_recvmsg4,
		skel->progs.sm_recvmsg6,     skel->progs.sm_sockops,	  skel->progs.sm_sock_release,
		skel->progs.sm_connect4,     skel->progs.sm_connect6,	  skel->progs.sm_sendmsg4,
		skel->progs.sm_sendmsg6,
	};
	return programs[hook];
}

static int link_cgroup_id(struct bpf_link *link, __u64 *id)
{
	struct bpf_link_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len))
		return -errno;
	*id = info.cgroup.cgroup_id;
	return 0;
}

/* Whether an earlier agent attached sm_sock_release: its slots need it still. */
static bool release_pinned(const struct sm_datapath *dp)
{
	char path[PATH_MAX];

	link_path(path, sizeof(path), dp->pin_dir, "sm_sock_release");
	return access(path, F_OK) == 0;
}

/* Detaches and unpins a link an earlier agent pinned (NULL: none), and closes our handle of it. */
static void drop_pinned_link(struct bpf_link *link)
{
	if (!link)
		return;
	bpf_link__detach(link);
	bpf_link__unpin(link);
	bpf_link__destroy(link);
}

/*
 * A pinned link on the same cgroup gets the new program in one step (no window without the hook);
 * a link on another cgroup is detached first; otherwise a new link is made and pinned.
 */
static int attach_hook(struct sm_datapath *dp, int hook, int cgroup_fd, __u64 cgroup_id, char *err, size_t size)
{
	struct bpf_program *prog = cgroup_program(dp->skel, hook);
	const char *name = bpf_program__name(prog);
	char path[PATH_MAX];
	struct bpf_link *link;
	__u64 linked_cgroup = 0;

	link_path(path, sizeof(path), dp->pin_dir, name);
	link = access(path, F_OK) == 0 ? bpf_link__open(path) : NULL;
	if (!bpf_program__autoload(prog)) { /* not loaded (the kernel lacks it): an earlier agent's link goes */
		drop_pinned_link(link);
		return 0;
	}
	if (link && !link_cgroup_id(link, &linked_cgroup) && linked_cgroup == cgroup_id) {
		if (bpf_link__update_program(link, prog)) {
			int ret = -errno;
			bpf_link__destroy(link);
			return fail(err, size, ret, "replacing the program of the pinned link %s: %s", path, strerror(-ret));
		}
		bpf_link__destroy(dp->links[hook]); /* a retried commit: our handle of an earlier attempt */
		dp->links[hook] = link;
		return 0;
	}
	drop_pinned_link(link); /* on another cgroup */
	link = bpf_program__attach_cgroup(prog, cgroup_fd);
	if (!link)
		return fail(err, size, -errno, "attaching %s to the cgroup: %s", name, strerror(errno));
	if (bpf_link__pin(link, path)) {
		int ret = -errno;
		bpf_link__destroy(link); /* not pinned: closing the only fd detaches it */
		return fail(err, size, ret, "pinning %s: %s", path, strerror(-ret));
	}
	bpf_link__destroy(dp->links[hook]);
	dp->links[hook] = link;
	dp->created_links[hook] = true;
	return 0;
}

static int attach_all(struct sm_datapath *dp, const char *cgroup, char *err, size_t size)
{
	struct stat st;
	int cgroup_fd, ret = 0;

	ret = check_fs(cgroup, CGROUP2_SUPER_MAGIC, "a cgroup v2 hierarchy", err, size);
	if (ret)
		return ret;
	cgroup_fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgroup_fd < 0 || fstat(cgroup_fd, &st)) {
		ret = fail(err, size, -errno, "cannot open the cgroup %s: %s", cgroup, strerror(errno));
		goto out;
	}
	/* sk_msg first: a socket gets the sockhash's program when sockops adds it, not later */
	if (bpf_prog_attach(bpf_program__fd(dp->skel->progs.sm_sk_msg), dp->fds[SM_DP_MAP_SOCKHASH],
			    BPF_SK_MSG_VERDICT, 0))
		ret = fail(err, size, -errno, "attaching sm_sk_msg to the sockhash: %s", strerror(errno));
	dp->cgroup_id = (__u64)st.st_ino;
	for (int hook = 0; hook < SM_CGROUP_HOOKS && !ret; hook++)
		ret = attach_hook(dp, hook, cgroup_fd, dp->cgroup_id, err, size);
out:
	if (cgroup_fd >= 0)
		close(cgroup_fd);
	return ret;
}

/* ---- opening ---- */

static int collect_fds(struct sm_datapath *dp, char *err, size_t size)
{
	for (int m = 0; m < SM_DP_MAP_COUNT; m++) {
		dp->fds[m] = bpf_object__find_map_fd_by_name(dp->skel->obj, dp_map_names[m]);
		if (dp->fds[m] < 0)
			return fail(err, size, dp->fds[m], "the loaded BPF object has no map %s: %s", dp_map_names[m],
				    strerror(-dp->fds[m]));
	}
	sm_bpf_writer_init(&dp->writer, dp->fds);
	return 0;
}

static struct sm_datapath *datapath_new(const char *pin_dir)
{
	struct sm_datapath *dp;

	if (pin_dir && strlen(pin_dir) >= PIN_DIR_MAX) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	dp = calloc(1, sizeof(*dp));
	if (!dp)
		return NULL;
	for (int m = 0; m < SM_DP_MAP_COUNT; m++)
		dp->fds[m] = -1;
	snprintf(dp->pin_dir, sizeof(dp->pin_dir), "%s", pin_dir ? pin_dir : SM_DEFAULT_PIN_DIR);
	return dp;
}

/*
 * The datapath's own state (knobs, enrolled namespaces, local addresses) goes from an older layout's
 * maps to the new ones, where the entry sizes still agree; the model's maps are filled by its sync.
 */
static int carry_over(struct sm_datapath *dp, char *err, size_t size)
{
	static const int carried[] = { SM_DP_MAP_CONFIG, SM_DP_MAP_ENROLLED, SM_DP_MAP_LOCAL_ADDRS };
	uint8_t key[64], next[64], value[64];
	int ret = 0;

	for (size_t i = 0; i < sizeof(carried) / sizeof(carried[0]) && !ret; i++) {
		char path[PATH_MAX];
		struct bpf_map_info old_info = {}, new_info = {};
		__u32 len = sizeof(old_info);
		int m = carried[i];

		snprintf(path, sizeof(path), "%s/%s", dp->old_maps, dp_map_names[m]);
		int fd = bpf_obj_get(path);
		if (fd < 0)
			continue; /* the older layout had no such map: nothing to carry */
		bool same = !bpf_obj_get_info_by_fd(fd, &old_info, &len) &&
			    !bpf_obj_get_info_by_fd(dp->fds[m], &new_info, &(__u32){ sizeof(new_info) }) &&
			    old_info.key_size == new_info.key_size && old_info.value_size == new_info.value_size &&
			    old_info.key_size <= sizeof(key) && old_info.value_size <= sizeof(value);
		void *previous = NULL;
		while (same && !ret && bpf_map_get_next_key(fd, previous, next) == 0) {
			memcpy(key, next, old_info.key_size);
			previous = key;
			if (bpf_map_lookup_elem(fd, key, value))
				continue; /* deleted since the walk found it */
			if (bpf_map_update_elem(dp->fds[m], key, value, BPF_ANY))
				ret = fail(err, size, -errno, "carrying %s over to the new layout: %s", path, strerror(errno));
		}
		close(fd);
	}
	return ret;
}

/*
 * Undoes what this open made, never what an earlier agent left: the links it pinned (detached), the
 * maps when none was pinned before (all are then this open's), and the directories it created.
 */
static void undo_open(struct sm_datapath *dp)
{
	char path[PATH_MAX];

	for (int hook = 0; hook < SM_CGROUP_HOOKS; hook++) {
		if (!dp->created_links[hook] || !dp->links[hook])
			continue;
		bpf_link__detach(dp->links[hook]);
		bpf_link__unpin(dp->links[hook]);
	}
	if (dp->skel && !dp->adopted) {
		bpf_object__unpin_maps(dp->skel->obj, NULL); /* sm_sk_msg goes with the sockhash's last fd */
	}
	maps_dir(path, sizeof(path), dp->pin_dir, SM_LAYOUT_VERSION);
	if (dp->created_dirs[2])
		rmdir(path);
	snprintf(path, sizeof(path), "%s/links", dp->pin_dir);
	if (dp->created_dirs[1])
		rmdir(path);
	if (dp->created_dirs[0])
		rmdir(dp->pin_dir);
	if (dp->wrote_probe_memo) {
		sm_datapath_probe_memo_path(dp->pin_dir, path, sizeof(path));
		unlink(path);
	}
}

void sm_datapath_abandon(struct sm_datapath *dp)
{
	if (!dp)
		return;
	undo_open(dp);
	sm_datapath_close(dp);
}

int sm_datapath_check_options(const struct sm_datapath_options *options, char *err, size_t size)
{
	const char *pin_dir = options->pin_dir ? options->pin_dir : SM_DEFAULT_PIN_DIR;
	int ret;

	if (strlen(pin_dir) >= PIN_DIR_MAX)
		return fail(err, size, -ENAMETOOLONG, "the pin directory %.64s... is longer than %d", pin_dir,
			    PIN_DIR_MAX - 1);
	for (int m = 0; options->capacity && m < SM_MAP_COUNT; m++) {
		if (options->capacity[m] > SM_DATAPATH_MAX_CAPACITY)
			return fail(err, size, -E2BIG, "the %s map's capacity %u is beyond the kernel's %u", sm_map_name(m),
				    options->capacity[m], SM_DATAPATH_MAX_CAPACITY);
	}
	ret = check_fs(options->cgroup ? options->cgroup : "", CGROUP2_SUPER_MAGIC, "a cgroup v2 hierarchy", err, size);
	return ret ? ret : check_pin_fs(pin_dir, err, size);
}

int sm_datapath_open(const struct sm_datapath_options *options, struct sm_datapath **out, char *err, size_t size)
{
	static const uint32_t no_capacity[SM_MAP_COUNT];
	struct sm_datapath *dp = datapath_new(options->pin_dir);
	char maps[PATH_MAX];
	uint32_t version;
	int ret;

	if (!dp)
		return fail(err, size, -errno, "the pin directory: %s", strerror(errno));
	snprintf(dp->cgroup, sizeof(dp->cgroup), "%s", options->cgroup ? options->cgroup : "");
	/* before anything is pinned: a wrong cgroup must leave nothing behind */
	ret = sm_datapath_check_options(options, err, size);
	struct stat st;
	if (!ret && stat(dp->cgroup, &st))
		ret = fail(err, size, -errno, "%s: %s", dp->cgroup, strerror(errno));
	dp->cgroup_id = ret ? 0 : (__u64)st.st_ino;
	char memo[PATH_MAX];
	bool probed = false;
	sm_datapath_probe_memo_path(dp->pin_dir, memo, sizeof(memo));
	if (!ret)
		ret = probe_kernel(memo, err, size, &dp->can_reap, &dp->can_release, &probed);
	bool kernel_can_release = dp->can_release; /* what is remembered: the kernel's, not this open's choice */
	dp->can_release = dp->can_release && (options->release_slots || release_pinned(dp));
	if (!ret)
		ret = make_dirs(dp, err, size);
	if (ret)
		goto fail;
	maps_dir(maps, sizeof(maps), dp->pin_dir, SM_LAYOUT_VERSION);
	if (layout_of(maps, &version) == 0 && version != SM_LAYOUT_VERSION) {
		ret = fail(err, size, -EPROTO, "%s holds maps of layout version %u", maps, version);
		goto fail;
	}
	/* An older (or newer) agent's maps keep serving until this one's are filled: see commit. */
	dp->migrating = find_other_layout(dp->pin_dir, dp->old_maps, sizeof(dp->old_maps), &version);

	LIBBPF_OPTS(bpf_object_open_opts, open_opts, .pin_root_path = maps);
	dp->skel = sm_sockmesh__open_opts(&open_opts);
	if (!dp->skel) {
		ret = fail(err, size, -errno, "opening the BPF object: %s", strerror(errno));
		goto fail;
	}
	bpf_program__set_autoload(dp->skel->progs.sm_authz_reap, dp->can_reap);
	bpf_program__set_autoload(dp->skel->progs.sm_sock_release, dp->can_release);
	dp->skel->rodata->release_frees_slots = dp->can_release;
	ret = match_pinned_sizes(dp, options->capacity ? options->capacity : no_capacity);
	if (ret) {
		fail(err, size, ret, "reading the maps pinned under %s: %s", maps, strerror(-ret));
		goto fail;
	}
	if (sm_sockmesh__load(dp->skel)) {
		ret = fail(err, size, -errno, "loading the datapath programs: %s (libbpf's messages above say more)",
			   strerror(errno));
		goto fail;
	}
	ret = collect_fds(dp, err, size);
	if (ret)
		goto fail;
	ret = write_meta(dp);
	if (ret) {
		fail(err, size, ret, "writing the layout version: %s", strerror(-ret));
		goto fail;
	}
	ret = dp->migrating ? carry_over(dp, err, size) : attach_all(dp, dp->cgroup, err, size);
	if (!ret && !dp->migrating)
		ret = sm_datapath_relink_guards(dp, err, size);
	if (ret)
		goto fail;
	/* remembered once the open has succeeded: a failed one leaves nothing behind */
	dp->wrote_probe_memo = probed && probe_memo_write(memo, dp->can_reap, kernel_can_release);
	*out = dp;
	return 0;
fail:
	sm_datapath_abandon(dp);
	return ret;
}

bool sm_datapath_migrating(const struct sm_datapath *dp)
{
	return dp->migrating;
}

int sm_datapath_commit(struct sm_datapath *dp, char *err, size_t size)
{
	int ret;

	if (!dp->migrating)
		return 0;
	ret = attach_all(dp, dp->cgroup, err, size);
	if (!ret)
		ret = sm_datapath_relink_guards(dp, err, size);
	if (ret)
		return ret;
	dp->migrating = false;
	return remove_pins(dp->old_maps, false, err, size);
}

int sm_datapath_open_pinned(const char *pin_dir, struct sm_datapath **out, char *err, size_t size)
{
	struct sm_datapath *dp = datapath_new(pin_dir);
	uint32_t version;
	int ret;

	if (!dp)
		return fail(err, size, -errno, "the pin directory: %s", strerror(errno));
	char maps[PATH_MAX], other[PATH_MAX];
	maps_dir(maps, sizeof(maps), dp->pin_dir, SM_LAYOUT_VERSION);
	ret = layout_of(maps, &version);
	if (ret && find_other_layout(dp->pin_dir, other, sizeof(other), &version)) {
		ret = fail(err, size, -EPROTO, "the maps pinned under %s have layout version %u, this sockmesh reads %u",
			   dp->pin_dir, version, SM_LAYOUT_VERSION);
		goto fail;
	}
	if (ret) {
		fail(err, size, ret, "no sockmesh datapath is pinned under %s (%s)", dp->pin_dir, strerror(-ret));
		goto fail;
	}
	for (int m = 0; m < SM_DP_MAP_COUNT; m++) {
		char path[PATH_MAX];
		map_path(path, sizeof(path), dp->pin_dir, dp_map_names[m]);
		dp->fds[m] = bpf_obj_get(path);
		if (dp->fds[m] < 0) {
			ret = fail(err, size, -errno, "opening %s: %s", path, strerror(errno));
			goto fail;
		}
	}
	sm_bpf_writer_init(&dp->writer, dp->fds);
	dp->adopted = true;
	*out = dp;
	return 0;
fail:
	sm_datapath_close(dp);
	return ret;
}

void sm_datapath_close(struct sm_datapath *dp)
{
	if (!dp)
		return;
	for (int hook = 0; hook < SM_CGROUP_HOOKS; hook++)
		bpf_link__destroy(dp->links[hook]); /* closes our fd; the pinned link stays attached */
	sm_bpf_writer_release(&dp->writer);
	if (dp->skel) {
		sm_sockmesh__destroy(dp->skel);
	} else {
		for (int m = 0; m < SM_DP_MAP_COUNT; m++) {
			if (dp->fds[m] >= 0)
				close(dp->fds[m]);
		}
	}
	free(dp->authz_idents);
	free(dp);
}

/* ---- uninstalling ---- */

static int remove_pins(const char *dir, bool links, char *err, size_t size)
{
	DIR *d = opendir(dir);
	struct dirent *entry;
	int ret = 0;

	if (!d)
		return errno == ENOENT ? 0 : fail(err, size, -errno, "%s: %s", dir, strerror(errno));
	while ((entry = readdir(d))) {
		char path[PATH_MAX];
		if (entry->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, entry->d_name);
		if (links) {
			int fd = bpf_obj_get(path);
			if (fd >= 0) {
				bpf_link_detach(fd); /* detached now, whoever else still holds it */
				close(fd);
			}
		}
		if (unlink(path) && !ret)
			ret = fail(err, size, -errno, "cannot unpin %s: %s", path, strerror(errno));
	}
	closedir(d);
	if (rmdir(dir) && errno != ENOENT && !ret)
		ret = fail(err, size, -errno, "cannot remove %s: %s", dir, strerror(errno));
	return ret;
}

/* Whether an entry of a pin directory is one sockmesh makes there: links/ or maps-vN/. */
static bool sockmesh_entry(const char *name)
{
	unsigned int version;
	char tail;

	return strcmp(name, "links") == 0 || sscanf(name, "maps-v%u%c", &version, &tail) == 1;
}

/* Refuses what is not a sockmesh pin directory on bpffs: uninstall removes only pins. */
static int check_pin_dir(const char *pin_dir, char *err, size_t size)
{
	struct dirent *entry;
	int ret;
	DIR *d;

	if (!pin_dir[0])
		return fail(err, size, -EINVAL, "the pin directory is ''");
	ret = check_fs(pin_dir, BPF_FS_MAGIC, "a BPF filesystem: not a sockmesh pin directory", err, size);
	if (ret)
		return ret;
	d = opendir(pin_dir);
	if (!d)
		return fail(err, size, -errno, "%s: %s", pin_dir, strerror(errno));
	while (!ret && (entry = readdir(d))) {
		if (strcmp(entry->d_name, ".") && strcmp(entry->d_name, "..") && !sockmesh_entry(entry->d_name))
			ret = fail(err, size, -EINVAL, "%s is not a sockmesh pin directory: it holds %s", pin_dir,
				   entry->d_name);
	}
	closedir(d);
	return ret;
}

int sm_datapath_uninstall(const char *pin_dir, char *err, size_t size)
{
	char path[PATH_MAX];
	uint32_t version;
	int ret;

	pin_dir = pin_dir ? pin_dir : SM_DEFAULT_PIN_DIR;
	if (pin_dir[0] && access(pin_dir, F_OK) && errno == ENOENT)
		return 0; /* nothing pinned */
	ret = check_pin_dir(pin_dir, err, size);
	snprintf(path, sizeof(path), "%s/links", pin_dir);
	if (!ret)
		ret = remove_pins(path, true, err, size);
	maps_dir(path, sizeof(path), pin_dir, SM_LAYOUT_VERSION);
	if (!ret)
		ret = remove_pins(path, false, err, size);
	while (!ret && find_other_layout(pin_dir, path, sizeof(path), &version))
		ret = remove_pins(path, false, err, size);
	if (!ret && rmdir(pin_dir) && errno != ENOENT)
		ret = fail(err, size, -errno, "cannot remove %s: %s", pin_dir, strerror(errno));
	if (!ret) {
		sm_datapath_probe_memo_path(pin_dir, path, sizeof(path));
		unlink(path); /* the probe's memo */
	}
	return ret;
}

/* ---- one owner ---- */

struct sm_pin_lock {
	int fd;
	char path[PATH_MAX];
};

/* FNV-1a: the lock file's name must be unique per pin directory and fit NAME_MAX. */
static uint64_t fnv1a(const char *text)
{
	uint64_t hash = 0xcbf29ce484222325ull;

	for (; *text; text++)
		hash = (hash ^ (uint8_t)*text) * 0x100000001b3ull;
	return hash;
}

/* The pin directory's absolute path, resolved as far as it exists (it may not yet). */
static void canonical_pin_dir(const char *pin_dir, char *out, size_t size)
{
	char parent[PATH_MAX], resolved[PATH_MAX];
	const char *slash = strrchr(pin_dir, '/');

	if (realpath(pin_dir, resolved)) {
		snprintf(out, size, "%s", resolved);
		return;
	}
	snprintf(parent, sizeof(parent), "%.*s", slash ? (int)(slash - pin_dir) : 0, pin_dir);
	if (realpath(parent[0] ? parent : (slash ? "/" : "."), resolved) &&
	    snprintf(out, size, "%s/%s", strcmp(resolved, "/") ? resolved : "", slash ? slash + 1 : pin_dir) < (int)size)
		return;
	else
		snprintf(out, size, "%s", pin_dir);
}

/* The pin directory's file under SM_LOCK_DIR with this suffix: its lock ("lock"), its probe memo ("probe"). */
static void owner_file(const char *pin_dir, const char *suffix, char *out, size_t size)
{
	char canonical[PATH_MAX], readable[64];
	size_t n = 0;

	canonical_pin_dir(pin_dir, canonical, sizeof(canonical));
	for (const char *c = canonical; *c && n < sizeof(readable) - 1; c++)
		readable[n++] = *c == '/' ? '_' : *c;
	readable[n] = '\0';
	snprintf(out, size, "%s/%s-%016llx.%s", SM_LOCK_DIR, readable, (unsigned long long)fnv1a(canonical), suffix);
}

void sm_datapath_probe_memo_path(const char *pin_dir, char *out, size_t size)
{
	owner_file(pin_dir, "probe", out, size);
}

/* The holder's pid as it wrote it, or 0. */
static long lock_holder(int fd)
{
	char text[32] = "";
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);

	return n > 0 ? strtol(text, NULL, 10) : 0;
}

int sm_pin_dir_lock(const char *pin_dir, struct sm_pin_lock **out, char *err, size_t size)
{
	struct sm_pin_lock *lock;
	struct stat held, named;
	char pid[32];
	int ret = 0;

	pin_dir = pin_dir ? pin_dir : SM_DEFAULT_PIN_DIR;
	if (!pin_dir[0])
		return fail(err, size, -EINVAL, "the pin directory is ''");
	lock = calloc(1, sizeof(*lock));
	if (!lock)
		return fail(err, size, -ENOMEM, "out of memory");
	lock->fd = -1;
	owner_file(pin_dir, "lock", lock->path, sizeof(lock->path));
	if (mkdir(SM_LOCK_DIR, 0755) && errno != EEXIST) {
		ret = fail(err, size, -errno, "cannot create %s: %s", SM_LOCK_DIR, strerror(errno));
		goto fail;
	}
	/* A holder unlinks the file as it releases it: a lock on an unlinked file is retried on the new one. */
	for (;;) {
		lock->fd = open(lock->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (lock->fd < 0) {
			ret = fail(err, size, -errno, "cannot open the lock %s: %s", lock->path, strerror(errno));
			goto fail;
		}
		if (flock(lock->fd, LOCK_EX | LOCK_NB)) {
			ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
			if (ret == -EBUSY)
				fail(err, size, ret, "%s is in use by sockmesh (pid %ld; lock %s)", pin_dir,
				     lock_holder(lock->fd), lock->path);
			else
				fail(err, size, ret, "cannot lock %s: %s", lock->path, strerror(-ret));
			goto fail;
		}
		if (fstat(lock->fd, &held) == 0 && stat(lock->path, &named) == 0 && held.st_ino == named.st_ino &&
		    held.st_dev == named.st_dev)
			break;
		close(lock->fd);
	}
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(lock->fd, 0) || pwrite(lock->fd, pid, (size_t)n, 0) != n) {
		ret = fail(err, size, -errno, "cannot write %s: %s", lock->path, strerror(errno));
		unlink(lock->path);
		goto fail;
	}
	*out = lock;
	return 0;
fail:
	if (lock->fd >= 0)
		close(lock->fd);
	free(lock);
	return ret;
}

void sm_pin_dir_unlock(struct sm_pin_lock *lock)
{
	if (!lock)
		return;
	unlink(lock->path);
	close(lock->fd);
	free(lock);
}

/* ---- using it ---- */

int sm_datapath_attached(const struct sm_datapath *dp, char *why, size_t size)
{
	if (!dp->skel)
		return fail(why, size, -EINVAL, "only the maps of %s are open", dp->pin_dir);
	for (int hook = 0; hook < SM_CGROUP_HOOKS; hook++) {
		const struct bpf_program *prog = cgroup_program(dp->skel, hook);
		const char *name = bpf_program__name(prog);
		struct bpf_link_info info = {};
		__u32 len = sizeof(info);
		char path[PATH_MAX];
		int ret = 0;

		if (!bpf_program__autoload(prog))
			continue; /* not on this kernel */
		link_path(path, sizeof(path), dp->pin_dir, name);
		int fd = bpf_obj_get(path);
		if (fd < 0)
			return fail(why, size, -errno, "the pinned link %s is gone: %s", path, strerror(errno));
		if (bpf_obj_get_info_by_fd(fd, &info, &len))
			ret = fail(why, size, -errno, "reading the link %s: %s", path, strerror(errno));
		else if (info.cgroup.cgroup_id != dp->cgroup_id)
			ret = fail(why, size, -ENOLINK, "%s is %s", path,
				   info.cgroup.cgroup_id ? "attached to another cgroup" : "detached");
		close(fd);
		if (ret)
			return ret;
	}
	return 0;
}

bool sm_datapath_adopted(const struct sm_datapath *dp)
{
	return dp->adopted;
}

struct sm_map_writer *sm_datapath_writer(struct sm_datapath *dp)
{
	return &dp->writer.writer;
}

struct sm_bpf_writer *sm_datapath_bpf_writer(struct sm_datapath *dp)
{
	return &dp->writer;
}

int sm_datapath_for_each(const struct sm_datapath *dp, enum sm_map_id map,
			 int (*fn)(void *ctx, const void *key, const void *value), void *ctx)
{
	return sm_map_for_each(dp->fds[map], fn, ctx);
}

int sm_datapath_capacity(const struct sm_datapath *dp, enum sm_map_id map, uint32_t *capacity)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(dp->fds[map], &info, &len))
		return -errno;
	*capacity = info.max_entries / SM_MAP_KERNEL_ENTRIES(1);
	return 0;
}

int sm_datapath_set_config(struct sm_datapath *dp, const struct sm_config *config)
{
	__u32 key = 0;

	return bpf_map_update_elem(dp->fds[SM_DP_MAP_CONFIG], &key, config, BPF_ANY) ? -errno : 0;
}

int sm_datapath_get_config(const struct sm_datapath *dp, struct sm_config *config)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(dp->fds[SM_DP_MAP_CONFIG], &key, config) ? -errno : 0;
}

int sm_datapath_enroll(struct sm_datapath *dp, uint64_t netns_cookie, bool enrolled)
{
	__u8 yes = 1;
	int fd = dp->fds[SM_DP_MAP_ENROLLED];

	if (enrolled)
		return bpf_map_update_elem(fd, &netns_cookie, &yes, BPF_ANY) ? -errno : 0;
	return bpf_map_delete_elem(fd, &netns_cookie) && errno != ENOENT ? -errno : 0;
}

int sm_datapath_for_each_enrolled(const struct sm_datapath *dp, int (*fn)(void *ctx, uint64_t netns_cookie),
				  void *ctx)
{
	int fd = dp->fds[SM_DP_MAP_ENROLLED], ret;
	__u64 key, next, *previous = NULL;

	while (bpf_map_get_next_key(fd, previous, &next) == 0) {
		key = next;
		previous = &key;
		if ((ret = fn(ctx, key)))
			return ret;
	}
	return errno == ENOENT ? 0 : -errno;
}

static bool contains(const struct sm_frontend_key *set, size_t n, const struct sm_frontend_key *key)
{
	for (size_t i = 0; i < n; i++) {
		if (memcmp(&set[i], key, sizeof(*key)) == 0)
			return true;
	}
	return false;
}

int sm_datapath_set_local_addresses(struct sm_datapath *dp, const struct sm_frontend_key *addrs, size_t n)
{
	int fd = dp->fds[SM_DP_MAP_LOCAL_ADDRS];
	struct sm_frontend_key key, next, *previous = NULL;
	__u8 yes = 1;

	/* Few entries (the pods of one node): a plain walk is simplest. */
	while (bpf_map_get_next_key(fd, previous, &next) == 0) {
		key = next;
		previous = &key;
		if (!contains(addrs, n, &key) && bpf_map_delete_elem(fd, &key) == 0)
			previous = NULL; /* restart: the walk's position is gone */
	}
	for (size_t i = 0; i < n; i++) {
		if (bpf_map_update_elem(fd, &addrs[i], &yes, BPF_ANY))
			return -errno;
	}
	return 0;
}

void *sm_dp_per_cpu_values(size_t value_size, int *cpus)
{
	void *values;

	*cpus = libbpf_num_possible_cpus();
	if (*cpus < 0)
		return NULL;
	values = calloc((size_t)*cpus, value_size);
	if (!values)
		*cpus = -ENOMEM;
	return values;
}

int sm_dp_sum_per_cpu(int fd, const void *key, __u64 *values, int cpus, uint64_t *sum)
{
	if (bpf_map_lookup_elem(fd, key, values))
		return -errno;
	*sum = 0;
	for (int cpu = 0; cpu < cpus; cpu++)
		*sum += values[cpu];
	return 0;
}

int sm_datapath_counters(const struct sm_datapath *dp, uint64_t counters[SM_COUNTER_MAX])
{
	int cpus;
	__u64 *values = sm_dp_per_cpu_values(sizeof(*values), &cpus);

	if (!values)
		return cpus;
	for (__u32 c = 0; c < SM_COUNTER_MAX; c++) {
		if (sm_dp_sum_per_cpu(dp->fds[SM_DP_MAP_COUNTERS], &c, values, cpus, &counters[c]))
			counters[c] = 0;
	}
	free(values);
	return 0;
}

const char *sm_counter_name(enum sm_counter counter)
{
	static const char *const names[SM_COUNTER_MAX] = {
		[SM_COUNTER_REDIRECTED] = "redirected",
		[SM_COUNTER_VIA_WAYPOINT] = "via_waypoint",
		[SM_COUNTER_NO_ENDPOINT] = "no_endpoint",
		[SM_COUNTER_STRICT_NO_MATCH] = "strict_no_match",
		[SM_COUNTER_UNTOUCHED] = "untouched",
		[SM_COUNTER_ACCELERATED] = "accelerated",
		[SM_COUNTER_ERRORS] = "errors",
		[SM_COUNTER_DNS] = "dns",
		[SM_COUNTER_WAYPOINT_UNRESOLVED] = "waypoint_unresolved",
		[SM_COUNTER_TLV] = "tlv",
		[SM_COUNTER_AUTHZ_ALLOWED] = "authz_allowed",
		[SM_COUNTER_AUTHZ_DENIED] = "authz_denied",
		[SM_COUNTER_AUTHZ_EXEMPT] = "authz_exempt",
		[SM_COUNTER_AUTHZ_UNGUARDED] = "authz_unguarded",
		[SM_COUNTER_AUTHZ_CLOSED] = "authz_closed",
		[SM_COUNTER_AUTHZ_EVENTS_LOST] = "authz_events_lost",
		[SM_COUNTER_CONN_EVENTS_LOST] = "conn_events_lost",
		[SM_COUNTER_ORIG_SLOT_TAKEN] = "orig_slot_taken",
	};
	return counter < SM_COUNTER_MAX ? names[counter] : "unknown";
}
