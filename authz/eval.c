/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder: replaced by the eval implementation. */
#include "authz/authz.h"
