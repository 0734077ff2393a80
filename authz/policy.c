/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder: replaced by the policy implementation. */
#include "authz/authz.h"
