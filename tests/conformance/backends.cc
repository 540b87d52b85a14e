// The factory list of the conformance suite (see backends.h).
#include "backends.h"

#include <stdlib.h>

#include <map>
#include <mutex>
#include <string>

#include "es/backend_lmdb.h"
#include "es/backend_memory.h"
#include "tests/pg/pg_factory.h"

namespace {

void CloseBackend(es_backend_t *b) {
  es_backend_close(b);
}

// The LMDB store of each open backend lives in a fresh directory of its own
// (under TEST_TMPDIR), removed when the backend is closed.
std::mutex lmdb_dirs_mu;
std::map<es_backend_t *, std::string> lmdb_dirs;

int LmdbOpen(es_backend_t **out, es_err_t *err) {
  const char *tmp = getenv("TEST_TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/lmdb_conformance.XXXXXX";
  if (!mkdtemp(&templ[0])) return es_err_set(err, ES_EUNAVAIL, "mkdtemp %s failed", templ.c_str());
  int rc = es_lmdb_open(templ.c_str(), nullptr, out, err);
  if (rc != ES_OK) return rc;
  std::lock_guard<std::mutex> lock(lmdb_dirs_mu);
  lmdb_dirs[*out] = templ;
  return ES_OK;
}

void LmdbClose(es_backend_t *b) {
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(lmdb_dirs_mu);
    dir = lmdb_dirs[b];
    lmdb_dirs.erase(b);
  }
  es_backend_close(b);
  if (!dir.empty()) {
    std::string cmd = "rm -rf '" + dir + "'";
    if (system(cmd.c_str()) != 0) {
      // Left behind under TEST_TMPDIR, which Bazel removes.
    }
  }
}

}  // namespace

const std::vector<BackendFactory> &ConformanceBackends() {
  static const std::vector<BackendFactory> kBackends = {
      {"memory", es_mem_open, CloseBackend},
      {"postgres", PgConformanceOpen, PgConformanceClose},
      {"lmdb", LmdbOpen, LmdbClose},
  };
  return kBackends;
}
