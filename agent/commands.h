/* SPDX-License-Identifier: Apache-2.0 */
/* The subcommands of the sockmesh binary: each takes its own argv (argv[0] is its name). */
#ifndef SOCKMESH_AGENT_COMMANDS_H
#define SOCKMESH_AGENT_COMMANDS_H

/* Where 'sockmesh run' serves its admin endpoint unless told otherwise, and where 'sockmesh dump' asks. */
#define DEFAULT_ADMIN_ADDRESS "127.0.0.1:15000"

struct command {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
};

int cmd_convert(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_enroll(int argc, char **argv);
int cmd_explain(int argc, char **argv);
int cmd_print(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_uninstall(int argc, char **argv);
int cmd_unenroll(int argc, char **argv);
int cmd_version(int argc, char **argv);

#endif
