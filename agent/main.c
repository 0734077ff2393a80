/* SPDX-License-Identifier: Apache-2.0 */
/* sockmesh: the node agent's command line. Each subcommand lives in its own file. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "agent/commands.h"

static const struct command commands[] = {
	{ "run", "run the node agent (xDS or local config into the eBPF datapath)", cmd_run },
	{ "dump", "show what the pinned datapath maps hold", cmd_dump },
	{ "explain", "explain what the datapath does with a connection, authorization included", cmd_explain },
	{ "enroll", "steer the connections made in a network namespace", cmd_enroll },
	{ "unenroll", "stop steering the connections made in a network namespace", cmd_unenroll },
	{ "replay", "apply a recorded xDS stream and show each response's ACK or NACK", cmd_replay },
	{ "uninstall", "detach and unpin the datapath", cmd_uninstall },
	{ "convert", "turn ztunnel's local config or config dump into a recorded xDS stream", cmd_convert },
	{ "print", "decode a recorded xDS stream and print it as JSON", cmd_print },
	{ "version", "print the version", cmd_version },
};

static void usage(FILE *out)
{
	fprintf(out, "Usage: sockmesh COMMAND [OPTIONS]\n\n"
		     "sockmesh is an Istio ambient node agent that programs an eBPF datapath.\n\n"
		     "Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\nRun 'sockmesh COMMAND --help' for a command's options; 'sockmesh --version' prints the\n"
		     "version.\n");
}

/*
 * Runs a command with argv[0] "sockmesh CMD": getopt prefixes its messages with argv[0], so every
 * command's option errors read "sockmesh CMD: unrecognized option ..." without each one saying so.
 */
static int run_command(const struct command *command, int argc, char **argv)
{
	char name[64];

	snprintf(name, sizeof(name), "sockmesh %s", command->name);
	argv[0] = name;
	return command->run(argc, argv);
}

/*
 * One malloc arena for every thread. The xDS client's thread builds the model of a full push (hundreds
 * of MB of small allocations at scale); in a thread arena glibc grows the heap with an mprotect call per
 * step (about 11,000 in a 100k-workload push, each a VMA split on a 2-CPU VM), where the main arena
 * grows with brk. The agent's threads seldom allocate at once, so sharing the arena costs nothing seen.
 */
static void malloc_setup(void)
{
	mallopt(M_ARENA_MAX, 1);
}

int main(int argc, char **argv)
{
	malloc_setup();
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0)
		return cmd_version(1, (char *[]){ "sockmesh version", NULL });
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name) == 0)
			return run_command(&commands[i], argc - 1, argv + 1);
	}
	fprintf(stderr, "sockmesh: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return 2;
}
