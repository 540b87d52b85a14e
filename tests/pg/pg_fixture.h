// A throwaway PostgreSQL server for tests: no mocks, the real thing.
//
// PgServer creates a cluster with initdb in a fresh directory under /tmp and
// runs `postgres` on a free loopback port as a child process of the test, with
// fsync and synchronous_commit on (the durability the backend promises is the
// durability it is tested with). When the test runs as root, initdb and
// postgres run as the `postgres` user (PostgreSQL refuses root); the
// directory is handed to that user first. The binaries come from
// $ES_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin (Debian's
// `postgresql` package).
//
// Cleanup is unconditional: the destructor stops the server (SIGINT: fast
// shutdown, then SIGKILL after a grace period) and removes the directory, and
// the postmaster carries PR_SET_PDEATHSIG=SIGKILL, so a crashed or timed-out
// test binary does not leave a server behind (its backends exit when the
// postmaster dies). Stop()/Start()/Restart() let a test take the database
// away and bring it back on the same port and data.
//
// SharedPgServer() is one server per test process, started on first use and
// stopped at exit; tests that share it isolate themselves with a schema of
// their own (UniqueSchema). If $ES_TEST_DATABASE_URL is set, it is used
// instead of starting a server (Stop/Start are then unavailable).
//
// Threading: a PgServer is driven from one thread, the one that started it
// (PDEATHSIG fires when the forking thread exits): the test's main thread.
#ifndef ES_TESTS_PG_PG_FIXTURE_H
#define ES_TESTS_PG_PG_FIXTURE_H

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace es_pg_test {

class PgServer {
 public:
  PgServer() = default;
  ~PgServer();
  PgServer(const PgServer &) = delete;
  PgServer &operator=(const PgServer &) = delete;

  // initdb + start. False with a description (and the server log) on failure.
  bool Init(std::string *error);
  // Starts the server again (same port, same data) after Stop().
  bool Start(std::string *error);
  // Fast shutdown (SIGINT), SIGKILL after 10 s. Returns when it has exited.
  void Stop();
  // SIGKILL of the postmaster: a crash (its backends exit on their own).
  void Crash();
  bool Restart(std::string *error) {
    Stop();
    return Start(error);
  }
  bool Running() const { return pid_ > 0; }

  int Port() const { return port_; }
  // postgresql://postgres@127.0.0.1:PORT/DB
  std::string Url(const std::string &db = "postgres") const;
  std::string Dir() const { return dir_; }
  std::string LogTail(size_t max_bytes = 4000) const;

 private:
  bool Run(const std::string &what, const std::vector<std::string> &argv, std::string *error);
  pid_t Spawn(const std::vector<std::string> &argv, const std::string &log_path);

  std::string bindir_;
  std::string dir_;  // the temporary directory: data/, postgres.log, socket
  int port_ = 0;
  pid_t pid_ = -1;
  uid_t uid_ = 0;  // the user that runs PostgreSQL (postgres when we are root)
  gid_t gid_ = 0;
  bool as_other_user_ = false;
};

// The process-wide server (or $ES_TEST_DATABASE_URL); nullptr with *error
// set when none can be had. *url is where to connect.
bool SharedPgUrl(std::string *url, std::string *error);

// A schema name unique in this process and run: prefix_<pid>_<counter>.
std::string UniqueSchema(const std::string &prefix);

// Runs SQL (no result wanted) on url. False with PostgreSQL's message.
bool PgExec(const std::string &url, const std::string &sql, std::string *error);

// Runs a query and returns the first column of the first row as text ("" if
// none). False on failure.
bool PgQueryValue(const std::string &url, const std::string &sql, std::string *value,
                  std::string *error);

}  // namespace es_pg_test

#endif  // ES_TESTS_PG_PG_FIXTURE_H
