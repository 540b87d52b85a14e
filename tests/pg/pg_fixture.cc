// See pg_fixture.h.
#include "tests/pg/pg_fixture.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace es_pg_test {
namespace {

std::string FindBindir() {
  if (const char *env = getenv("ES_PG_BINDIR"); env && *env) return env;
  std::string best;
  int best_version = -1;
  if (DIR *d = opendir("/usr/lib/postgresql")) {
    while (struct dirent *e = readdir(d)) {
      int v = atoi(e->d_name);
      std::string bin = std::string("/usr/lib/postgresql/") + e->d_name + "/bin";
      if (v > best_version && access((bin + "/postgres").c_str(), X_OK) == 0) {
        best_version = v;
        best = bin;
      }
    }
    closedir(d);
  }
  return best;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

std::string ReadFile(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Waits up to timeout for pid to exit; true once reaped.
bool WaitPid(pid_t pid, std::chrono::milliseconds timeout, int *status) {
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

PgServer::~PgServer() {
  Stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string PgServer::Url(const std::string &db) const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

std::string PgServer::LogTail(size_t max_bytes) const {
  std::string log = ReadFile(dir_ + "/postgres.log");
  if (log.size() > max_bytes) log = "..." + log.substr(log.size() - max_bytes);
  return log;
}

// Forks and execs argv as the PostgreSQL user, output to log_path. The child
// dies with this thread (PDEATHSIG, set after the user switch, which would
// clear it).
pid_t PgServer::Spawn(const std::vector<std::string> &argv, const std::string &log_path) {
  // Everything the child needs is built before fork: after it, in a threaded
  // process, only async-signal-safe calls are allowed.
  std::vector<char *> args;
  for (const auto &a : argv) args.push_back(const_cast<char *>(a.c_str()));
  args.push_back(nullptr);
  // The environment without PG* variables meant for something else.
  std::vector<std::string> env_strings = {"LC_ALL=C.UTF-8"};
  for (char **e = environ; *e; e++)
    if (strncmp(*e, "PG", 2) != 0 && strncmp(*e, "LC_ALL=", 7) != 0) env_strings.push_back(*e);
  std::vector<char *> envp;
  for (auto &e : env_strings) envp.push_back(const_cast<char *>(e.c_str()));
  envp.push_back(nullptr);
  const char *log = log_path.c_str();
  const char *dir = dir_.c_str();
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;
  if (as_other_user_) {
    if (setgroups(0, nullptr) != 0 || setgid(gid_) != 0 || setuid(uid_) != 0) _exit(126);
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(126);
  if (chdir(dir) != 0) _exit(126); /* the test's directory may be closed to that user */
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
  }
  int devnull = open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, 0);
  execve(args[0], args.data(), envp.data());
  _exit(127);
}

bool PgServer::Run(const std::string &what, const std::vector<std::string> &argv,
                   std::string *error) {
  pid_t pid = Spawn(argv, dir_ + "/postgres.log");
  if (pid < 0) {
    *error = what + ": fork failed";
    return false;
  }
  int status = 0;
  if (!WaitPid(pid, std::chrono::seconds(120), &status)) {
    kill(pid, SIGKILL);
    WaitPid(pid, std::chrono::seconds(5), &status);
    *error = what + ": timed out\n" + LogTail();
    return false;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *error = what + " failed (status " + std::to_string(status) + ")\n" + LogTail();
    return false;
  }
  return true;
}

bool PgServer::Init(std::string *error) {
  bindir_ = FindBindir();
  if (bindir_.empty()) {
    *error =
        "no PostgreSQL server binaries (install Debian's postgresql package, or set "
        "ES_PG_BINDIR)";
    return false;
  }
  char tmpl[] = "/tmp/es-pg-XXXXXX";
  if (!mkdtemp(tmpl)) {
    *error = std::string("mkdtemp: ") + strerror(errno);
    return false;
  }
  dir_ = tmpl;
  if (geteuid() == 0) {
    struct passwd *pw = getpwnam("postgres");
    if (!pw) {
      *error = "running as root and there is no 'postgres' user to run PostgreSQL as";
      return false;
    }
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    as_other_user_ = true;
    if (chown(dir_.c_str(), uid_, gid_) != 0) {
      *error = std::string("chown ") + dir_ + ": " + strerror(errno);
      return false;
    }
  }
  chmod(dir_.c_str(), 0700);
  // -N: initdb skips only its own final fsync of the fresh files (a throwaway
  // cluster); the server itself runs with fsync on.
  if (!Run("initdb",
           {bindir_ + "/initdb", "-D", dir_ + "/data", "-U", "postgres", "-A", "trust", "-E",
            "UTF8", "--locale=C.UTF-8", "-N"},
           error))
    return false;
  for (int attempt = 0; attempt < 3; attempt++) {
    port_ = FreePort();
    if (Start(error)) return true;
  }
  return false;
}

bool PgServer::Start(std::string *error) {
  if (pid_ > 0) return true;
  std::string port = std::to_string(port_);
  pid_ = Spawn({bindir_ + "/postgres",
                "-D",
                dir_ + "/data",
                "-p",
                port,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=" + dir_,
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "full_page_writes=on",
                "-c",
                "shared_buffers=32MB",
                "-c",
                "max_connections=300",
                "-c",
                "log_min_messages=warning",
                "-c",
                "log_min_error_statement=panic"},
               dir_ + "/postgres.log");
  if (pid_ < 0) {
    *error = "fork failed";
    return false;
  }
  std::string conninfo = "host=127.0.0.1 port=" + port + " user=postgres dbname=postgres";
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      *error = "postgres exited at start (status " + std::to_string(status) + ")\n" + LogTail();
      return false;
    }
    if (PQping(conninfo.c_str()) == PQPING_OK) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  *error = "postgres did not accept connections within 60 s\n" + LogTail();
  Crash();
  return false;
}

void PgServer::Stop() {
  if (pid_ <= 0) return;
  int status = 0;
  kill(pid_, SIGINT);
  if (!WaitPid(pid_, std::chrono::seconds(10), &status)) {
    kill(pid_, SIGKILL);
    WaitPid(pid_, std::chrono::seconds(10), &status);
  }
  pid_ = -1;
}

void PgServer::Crash() {
  if (pid_ <= 0) return;
  int status = 0;
  kill(pid_, SIGKILL);
  WaitPid(pid_, std::chrono::seconds(10), &status);
  pid_ = -1;
  // Its backends notice the postmaster's death by themselves (they carry a
  // death signal of their own); give them a moment to let go of the shared
  // memory before a restart.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
}

bool SharedPgUrl(std::string *url, std::string *error) {
  static std::mutex mu;
  static std::unique_ptr<PgServer> server;
  static std::string shared_error;
  static bool tried = false;
  std::lock_guard<std::mutex> lock(mu);
  if (const char *env = getenv("ES_TEST_DATABASE_URL"); env && *env) {
    *url = env;
    return true;
  }
  if (!tried) {
    tried = true;
    auto s = std::make_unique<PgServer>();
    if (s->Init(&shared_error)) {
      server = std::move(s);
      // Stopped by the static destructor at exit (and by PDEATHSIG if the
      // process dies).
    }
  }
  if (!server) {
    *error = shared_error;
    return false;
  }
  *url = server->Url();
  return true;
}

std::string UniqueSchema(const std::string &prefix) {
  static std::atomic<int> counter{0};
  return prefix + "_" + std::to_string(getpid()) + "_" + std::to_string(++counter);
}

void QuietNotices(void *, const char *) {}

bool PgExec(const std::string &url, const std::string &sql, std::string *error) {
  PGconn *c = PQconnectdb(url.c_str());
  PQsetNoticeProcessor(c, QuietNotices, nullptr);
  bool ok = false;
  if (PQstatus(c) != CONNECTION_OK) {
    *error = PQerrorMessage(c);
  } else {
    PGresult *r = PQexec(c, sql.c_str());
    ExecStatusType st = PQresultStatus(r);
    ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) *error = PQresultErrorMessage(r);
    PQclear(r);
  }
  PQfinish(c);
  return ok;
}

bool PgQueryValue(const std::string &url, const std::string &sql, std::string *value,
                  std::string *error) {
  PGconn *c = PQconnectdb(url.c_str());
  bool ok = false;
  value->clear();
  if (PQstatus(c) != CONNECTION_OK) {
    *error = PQerrorMessage(c);
  } else {
    PGresult *r = PQexec(c, sql.c_str());
    ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
      *error = PQresultErrorMessage(r);
    else if (PQntuples(r) > 0 && PQnfields(r) > 0)
      *value = PQgetvalue(r, 0, 0);
    PQclear(r);
  }
  PQfinish(c);
  return ok;
}

}  // namespace es_pg_test
