// The factory list of the conformance suite (see backends.h).
#include "backends.h"

#include "es/backend_memory.h"
#include "tests/pg/pg_factory.h"

namespace {

void CloseBackend(es_backend_t *b) {
  es_backend_close(b);
}

}  // namespace

const std::vector<BackendFactory> &ConformanceBackends() {
  static const std::vector<BackendFactory> kBackends = {
      {"memory", es_mem_open, CloseBackend},
      {"postgres", PgConformanceOpen, PgConformanceClose},
  };
  return kBackends;
}
