// See pg_factory.h.
#include "tests/pg/pg_factory.h"

#include <cstdio>
#include <map>
#include <mutex>
#include <string>

#include "es/backend_postgres.h"
#include "tests/pg/pg_fixture.h"

namespace {

std::mutex mu;
std::map<es_backend_t *, std::string> schemas;  // open stores -> their schema

}  // namespace

int PgConformanceOpen(es_backend_t **out, es_err_t *err) {
  std::string url, error;
  *out = nullptr;
  if (!es_pg_test::SharedPgUrl(&url, &error))
    return es_err_set(err, ES_EUNAVAIL, "cannot start PostgreSQL: %.200s", error.c_str());
  std::string schema = es_pg_test::UniqueSchema("conf");
  es_pg_options_t opts;
  es_pg_options_default(&opts);
  opts.connections = 2;
  opts.schema = schema.c_str();
  int rc = es_pg_open(url.c_str(), &opts, out, err);
  if (rc == ES_OK) {
    std::lock_guard<std::mutex> lock(mu);
    schemas[*out] = schema;
  }
  return rc;
}

void PgConformanceClose(es_backend_t *b) {
  std::string schema;
  {
    std::lock_guard<std::mutex> lock(mu);
    schema = schemas[b];
    schemas.erase(b);
  }
  es_backend_close(b);
  std::string url, error;
  if (!schema.empty() && es_pg_test::SharedPgUrl(&url, &error) &&
      !es_pg_test::PgExec(url, "DROP SCHEMA \"" + schema + "\" CASCADE", &error))
    std::fprintf(stderr, "pg_factory: dropping schema %s: %s\n", schema.c_str(), error.c_str());
}
