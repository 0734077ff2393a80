/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A policy written as istiod writes it in its golden files (test/fixtures/istio-authz/NAME.yaml): YAML with
 * istio's Go names (groups → rules → matches, camelCase fields, addresses in base64), read into the wire
 * message sockmesh receives. One convenience for hand-written tests: an Address may be {cidr: "10.0.0.0/8"}.
 */
#ifndef SOCKMESH_TEST_AUTHZ_FIXTURE_H
#define SOCKMESH_TEST_AUTHZ_FIXTURE_H

#include <stddef.h>

#include "proto/proto.h"

/* The policy in text (a YAML document), or NULL when there is none (an empty file: istiod sent nothing).
 * Fails the test, naming what, on anything it does not know. Free with authz_fixture_free. */
Istio__Security__Authorization *authz_fixture_read(const char *text, const char *what);
/* The same from test/fixtures/istio-authz/NAME.yaml. */
Istio__Security__Authorization *authz_fixture_load(const char *name);
void authz_fixture_free(Istio__Security__Authorization *msg);

#endif
