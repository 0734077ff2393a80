/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The contract (bpf/sockmesh.h) changes only with its layout version. Its layout is read from BTF: every
 * struct's fields (offset, size, type) and every enum value and #define from bpf/contract.bpf.o, and
 * every map's type, flags, key and value from the datapath's own object. It must equal
 * test/fixtures/contract/layout-v<SM_LAYOUT_VERSION>.txt line for line.
 *
 *   test_contract --write FILE    writes the layout of this build (for a new layout version's file)
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/btf.h>

#include "bpf/sockmesh.h"
#include "helpers.h"

#define GOLDEN_DIR SM_FIXTURES_DIR "/contract"
#define MAX_LINES 1024
#define LINE_MAX_LEN 256

struct lines {
	char *line[MAX_LINES];
	size_t n;
};

static void add_line(struct lines *lines, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_line(struct lines *lines, const char *fmt, ...)
{
	char buf[LINE_MAX_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	assert_true(lines->n < MAX_LINES);
	lines->line[lines->n++] = strdup(buf);
}

static int compare_lines(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_lines(struct lines *lines)
{
	for (size_t i = 0; i < lines->n; i++)
		free(lines->line[i]);
	lines->n = 0;
}

/* A type as C spells it: "__be16", "__u8[16]", "struct sm_waypoint". */
static void type_name(const struct btf *btf, __u32 id, char *out, size_t size)
{
	const struct btf_type *t = btf__type_by_id(btf, id);
	char inner[100];

	switch (btf_kind(t)) {
	case BTF_KIND_ARRAY:
		type_name(btf, btf_array(t)->type, inner, sizeof(inner));
		snprintf(out, size, "%s[%u]", inner, btf_array(t)->nelems);
		return;
	case BTF_KIND_PTR:
		type_name(btf, t->type, inner, sizeof(inner));
		snprintf(out, size, "%s *", inner);
		return;
	case BTF_KIND_CONST:
	case BTF_KIND_VOLATILE:
		type_name(btf, t->type, out, size);
		return;
	case BTF_KIND_STRUCT:
		snprintf(out, size, "struct %s", btf__name_by_offset(btf, t->name_off));
		return;
	case BTF_KIND_UNION:
		snprintf(out, size, "union %s", btf__name_by_offset(btf, t->name_off));
		return;
	case BTF_KIND_ENUM:
		snprintf(out, size, "enum %s", btf__name_by_offset(btf, t->name_off));
		return;
	default:
		snprintf(out, size, "%s", btf__name_by_offset(btf, t->name_off));
	}
}

static void struct_lines(const struct btf *btf, const struct btf_type *t, struct lines *lines)
{
	const char *name = btf__name_by_offset(btf, t->name_off);
	const struct btf_member *m = btf_members(t);
	char type[128];

	add_line(lines, "struct %s size %u", name, t->size);
	for (int i = 0; i < btf_vlen(t); i++, m++) {
		__u32 bits = btf_member_bitfield_size(t, i), bit_offset = btf_member_bit_offset(t, i);
		type_name(btf, m->type, type, sizeof(type));
		if (bits || bit_offset % 8)
			add_line(lines, "struct %s %s bit_offset %u bits %u %s", name, btf__name_by_offset(btf, m->name_off),
				 bit_offset, bits, type);
		else
			add_line(lines, "struct %s %s offset %u size %lld %s", name, btf__name_by_offset(btf, m->name_off),
				 bit_offset / 8, (long long)btf__resolve_size(btf, m->type), type);
	}
}

static void enum_lines(const struct btf *btf, const struct btf_type *t, struct lines *lines)
{
	const char *name = btf__name_by_offset(btf, t->name_off);
	const struct btf_enum *e = btf_enum(t);

	for (int i = 0; i < btf_vlen(t); i++, e++) {
		const char *value = btf__name_by_offset(btf, e->name_off);
		if (strcmp(name, "sm_contract_defines") == 0)
			add_line(lines, "define %s %d", value + strlen("sm_define_"), e->val);
		else
			add_line(lines, "enum %s %s %d", name, value, e->val);
	}
}

static const struct btf_type *skip_modifiers(const struct btf *btf, __u32 id)
{
	const struct btf_type *t = btf__type_by_id(btf, id);

	while (btf_is_mod(t) || btf_is_typedef(t))
		t = btf__type_by_id(btf, t->type);
	return t;
}

/* A map definition's fields but max_entries (the agent sizes maps at creation). */
static void map_lines(const struct btf *btf, const struct btf_type *var, struct lines *lines)
{
	const char *name = btf__name_by_offset(btf, var->name_off);
	const struct btf_type *def = skip_modifiers(btf, var->type);
	const struct btf_member *m = btf_members(def);
	char type[128];

	for (int i = 0; i < btf_vlen(def); i++, m++) {
		const char *field = btf__name_by_offset(btf, m->name_off);
		const struct btf_type *ptr = btf__type_by_id(btf, m->type);
		if (strcmp(field, "max_entries") == 0 || !btf_is_ptr(ptr))
			continue;
		const struct btf_type *target = btf__type_by_id(btf, ptr->type);
		if (btf_is_array(target)) /* __uint(field, N) */
			add_line(lines, "map %s %s %u", name, field, btf_array(target)->nelems);
		else { /* __type(field, T) */
			type_name(btf, ptr->type, type, sizeof(type));
			add_line(lines, "map %s %s %s", name, field, type);
		}
	}
}

static struct btf *load_btf(const char *path)
{
	struct btf *btf = btf__parse_elf(path, NULL);

	if (!btf)
		fail_msg("reading the BTF of %s: %s", path, strerror(errno));
	return btf;
}

/* The layout of this build, sorted. */
static void current_layout(struct lines *lines)
{
	struct btf *contract = load_btf(SM_CONTRACT_OBJECT), *datapath = load_btf(SM_DATAPATH_OBJECT);

	for (__u32 id = 1; id < btf__type_cnt(contract); id++) {
		const struct btf_type *t = btf__type_by_id(contract, id);
		const char *name = btf__name_by_offset(contract, t->name_off);
		if (strncmp(name, "sm_", 3) != 0 || strcmp(name, "sm_contract") == 0)
			continue;
		if (btf_is_struct(t))
			struct_lines(contract, t, lines);
		else if (btf_is_enum(t))
			enum_lines(contract, t, lines);
	}
	__s32 maps = btf__find_by_name_kind(datapath, ".maps", BTF_KIND_DATASEC);
	assert_true(maps > 0);
	const struct btf_type *sec = btf__type_by_id(datapath, maps);
	const struct btf_var_secinfo *vi = btf_var_secinfos(sec);
	for (int i = 0; i < btf_vlen(sec); i++, vi++)
		map_lines(datapath, btf__type_by_id(datapath, vi->type), lines);
	btf__free(contract);
	btf__free(datapath);
	qsort(lines->line, lines->n, sizeof(lines->line[0]), compare_lines);
}

static bool has_line(const struct lines *lines, const char *line)
{
	return bsearch(&line, lines->line, lines->n, sizeof(lines->line[0]), compare_lines) != NULL;
}

/* Every struct, enum and object-like #define of the header is in contract.bpf.o's BTF. */
static void contract_object_names_everything(void **state)
{
	(void)state;
	struct btf *btf = load_btf(SM_CONTRACT_OBJECT);
	FILE *header = fopen(SM_CONTRACT_HEADER, "r");
	char line[512], name[128], define[160];
	size_t types = 0, defines = 0;
	__s32 defines_id = btf__find_by_name_kind(btf, "sm_contract_defines", BTF_KIND_ENUM);

	assert_non_null(header);
	assert_true(defines_id > 0);
	while (fgets(line, sizeof(line), header)) {
		if ((sscanf(line, "struct %127[a-z0-9_] {", name) == 1 || sscanf(line, "enum %127[a-z0-9_] {", name) == 1) &&
		    strchr(line, '{')) {
			int kind = line[0] == 's' ? BTF_KIND_STRUCT : BTF_KIND_ENUM;
			if (btf__find_by_name_kind(btf, name, kind) <= 0)
				fail_msg("bpf/sockmesh.h declares %s %s, which bpf/contract.bpf.c does not name: add it to "
					 "struct sm_contract there", kind == BTF_KIND_STRUCT ? "struct" : "enum", name);
			types++;
		} else if (sscanf(line, "#define %127[A-Z0-9_]", name) == 1 && strncmp(name, "SM_", 3) == 0 &&
			   isspace((unsigned char)line[strlen("#define ") + strlen(name)])) {
			const struct btf_type *t = btf__type_by_id(btf, defines_id);
			const struct btf_enum *e = btf_enum(t);
			bool found = false;
			snprintf(define, sizeof(define), "sm_define_%s", name);
			for (int i = 0; i < btf_vlen(t) && !found; i++)
				found = strcmp(btf__name_by_offset(btf, e[i].name_off), define) == 0;
			if (!found)
				fail_msg("bpf/sockmesh.h defines %s, which bpf/contract.bpf.c does not list: add SM_DEFINE(%s) "
					 "there", name, name);
			defines++;
		}
	}
	fclose(header);
	btf__free(btf);
	assert_true(types >= 10 && defines >= 10); /* the scan found the header's declarations */
}

/* A flag bit is one bit and has one name: a retired bit keeps its SM_..._RETIRED_... name, never reused. */
static void flag_bits_distinct(void **state)
{
	(void)state;
	struct btf *btf = load_btf(SM_CONTRACT_OBJECT);
	size_t flag_enums = 0;

	for (__u32 id = 1; id < btf__type_cnt(btf); id++) {
		const struct btf_type *t = btf__type_by_id(btf, id);
		const char *name = btf__name_by_offset(btf, t->name_off);
		size_t len = strlen(name);
		if (!btf_is_enum(t) || strncmp(name, "sm_", 3) != 0 || len < 6 || strcmp(name + len - 6, "_flags") != 0)
			continue;
		flag_enums++;
		const struct btf_enum *e = btf_enum(t);
		for (int i = 0; i < btf_vlen(t); i++) {
			__u32 bit = (__u32)e[i].val;
			if (!bit || (bit & (bit - 1)))
				fail_msg("%s %s = %#x is not one bit", name, btf__name_by_offset(btf, e[i].name_off), bit);
			for (int j = 0; j < i; j++) {
				if ((__u32)e[j].val == bit)
					fail_msg("%s: %s reuses the bit of %s", name, btf__name_by_offset(btf, e[i].name_off),
						 btf__name_by_offset(btf, e[j].name_off));
			}
		}
	}
	btf__free(btf);
	assert_true(flag_enums >= 4);
}

/* The layout equals the golden file of its version; else the header changed without a bump. */
static void layout_matches_its_version(void **state)
{
	(void)state;
	struct lines current = { 0 }, golden = { 0 };
	char path[256], line[LINE_MAX_LEN], report[4096] = "";
	size_t used = 0, differences = 0;
	FILE *f;

	current_layout(&current);
	snprintf(path, sizeof(path), GOLDEN_DIR "/layout-v%d.txt", SM_LAYOUT_VERSION);
	f = fopen(path, "r");
	if (!f)
		fail_msg("no %s: a new layout version needs its file: run test_contract --write %s", path, path);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] && line[0] != '#')
			add_line(&golden, "%s", line);
	}
	fclose(f);
	qsort(golden.line, golden.n, sizeof(golden.line[0]), compare_lines);

	for (size_t i = 0; i < golden.n; i++) {
		if (!has_line(&current, golden.line[i]) && differences++ < 20)
			used += snprintf(report + used, used < sizeof(report) ? sizeof(report) - used : 0, "\n  - %s",
					 golden.line[i]);
	}
	for (size_t i = 0; i < current.n; i++) {
		if (!has_line(&golden, current.line[i]) && differences++ < 20)
			used += snprintf(report + used, used < sizeof(report) ? sizeof(report) - used : 0, "\n  + %s",
					 current.line[i]);
	}
	if (differences)
		fail_msg("bpf/sockmesh.h changed %zu line(s) of layout version %d without a layout-version bump: "
			 "update SM_LAYOUT_VERSION and add test/fixtures/contract/layout-vN.txt (test_contract --write); "
			 "never edit the file of a version that was released:%s",
			 differences, SM_LAYOUT_VERSION, report);
	free_lines(&current);
	free_lines(&golden);
}

static int write_layout(const char *path)
{
	struct lines lines = { 0 };
	FILE *f = fopen(path, "w");

	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	current_layout(&lines);
	fprintf(f, "# bpf/sockmesh.h, layout version %d, from BTF (build/test/test_contract --write FILE). Never edit.\n",
		SM_LAYOUT_VERSION);
	for (size_t i = 0; i < lines.n; i++)
		fprintf(f, "%s\n", lines.line[i]);
	free_lines(&lines);
	return fclose(f) ? 1 : 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(contract_object_names_everything),
		cmocka_unit_test(flag_bits_distinct),
		cmocka_unit_test(layout_matches_its_version),
	};

	if (argc == 3 && strcmp(argv[1], "--write") == 0)
		return write_layout(argv[2]);
	return cmocka_run_group_tests_name("contract", tests, NULL, NULL);
}
