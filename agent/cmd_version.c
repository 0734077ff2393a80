/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "agent/commands.h"

int cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("sockmesh %s\n", SOCKMESH_VERSION);
	return 0;
}
