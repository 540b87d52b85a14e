// The PostgreSQL entry of the conformance suite (tests/conformance/backends.cc).
//
// PgConformanceOpen opens a fresh, empty store: the backend on the shared
// throwaway server (pg_fixture.h) in a schema of its own, which
// PgConformanceClose drops after closing the backend. Without a PostgreSQL to
// run, open fails with ES_EUNAVAIL and the reason.
#ifndef ES_TESTS_PG_PG_FACTORY_H
#define ES_TESTS_PG_PG_FACTORY_H

#include "es/backend.h"
#include "es/error.h"

int PgConformanceOpen(es_backend_t **out, es_err_t *err);
void PgConformanceClose(es_backend_t *b);

#endif  // ES_TESTS_PG_PG_FACTORY_H
