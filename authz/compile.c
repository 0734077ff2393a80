/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder: replaced by the compile implementation. */
#include "authz/authz.h"
