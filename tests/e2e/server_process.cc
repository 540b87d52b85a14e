// See server_process.h. Everything between fork() and execve() in the child is
// async-signal-safe: the argument vector and the log file are prepared before
// forking, because the parent is multi-threaded (gRPC) and the child may only
// call such functions.
#include "tests/e2e/server_process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace es_e2e {
namespace {

std::string ReadFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string TempBase() {
  const char *t = getenv("TEST_TMPDIR");
  return (t != nullptr && t[0] != '\0') ? t : "/tmp";
}

void RemoveTree(const std::string &dir) {
  if (dir.empty()) return;
  // Only the two files we create live there.
  unlink((dir + "/port").c_str());
  unlink((dir + "/port.tmp").c_str());
  unlink((dir + "/server.log").c_str());
  rmdir(dir.c_str());
}

}  // namespace

ServerProcess::ServerProcess(std::vector<std::string> extra_args)
    : extra_args_(std::move(extra_args)) {}

ServerProcess::~ServerProcess() {
  Stop(std::chrono::seconds(5));
  const char *out = getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  if (out != nullptr && !log_path_.empty() && pid_ > 0) {
    std::ofstream copy(std::string(out) + "/server-" + std::to_string(pid_) + ".log",
                       std::ios::binary);
    copy << Log();
  }
  RemoveTree(dir_);
}

std::string ServerProcess::BinaryPath() {
  const char *over = getenv("ES_E2E_SERVER");
  if (over != nullptr && over[0] != '\0') return over;
  const char *srcdir = getenv("TEST_SRCDIR");
  std::string base = srcdir != nullptr ? srcdir : ".";
  return base + "/eventstore/server/eventstore";
}

void ServerProcess::SetEnv(const std::string &name, const std::string &value) {
  for (auto &kv : env_overrides_) {
    if (kv.first == name) {
      kv.second = value;
      return;
    }
  }
  env_overrides_.emplace_back(name, value);
}

std::string ServerProcess::Address() const {
  return "127.0.0.1:" + std::to_string(port_);
}

bool ServerProcess::Start(std::string *error, std::chrono::milliseconds timeout) {
  if (pid_ > 0) {
    *error = "already started";
    return false;
  }
  std::string tmpl = TempBase() + "/es_e2e.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    *error = std::string("mkdtemp: ") + strerror(errno);
    return false;
  }
  dir_ = buf.data();
  log_path_ = dir_ + "/server.log";
  port_path_ = dir_ + "/port";

  argv_ = {BinaryPath(), "--bind", "127.0.0.1:0", "--port-file", port_path_};
  argv_.insert(argv_.end(), extra_args_.begin(), extra_args_.end());
  // For debugging a failing test: e.g. ES_E2E_SERVER_ARGS="--log-level debug".
  if (const char *more = getenv("ES_E2E_SERVER_ARGS")) {
    std::istringstream words(more);
    for (std::string w; words >> w;) argv_.push_back(w);
  }
  std::vector<char *> cargv;
  for (std::string &a : argv_) cargv.push_back(&a[0]);
  cargv.push_back(nullptr);
  // The environment: ours, with SetEnv()'s entries replacing or added. A test
  // that names no backend gets the memory backend (BACKEND, which --backend
  // overrides), not the durable default; any lmdb store it asks for without
  // --data-dir lives in this server's own directory, never in the test's cwd.
  auto defaulted = [this](const char *name, const std::string &value) {
    for (const auto &kv : env_overrides_)
      if (kv.first == name) return;
    if (getenv(name) == nullptr) env_overrides_.emplace_back(name, value);
  };
  defaulted("BACKEND", "memory");
  defaulted("ES_DATA_DIR", dir_ + "/data");
  std::vector<std::string> env_strings;
  for (char **e = environ; *e != nullptr; ++e) {
    std::string entry = *e;
    bool replaced = false;
    for (const auto &kv : env_overrides_) replaced |= entry.rfind(kv.first + "=", 0) == 0;
    if (!replaced) env_strings.push_back(entry);
  }
  for (const auto &kv : env_overrides_) env_strings.push_back(kv.first + "=" + kv.second);
  std::vector<char *> cenv;
  for (std::string &e : env_strings) cenv.push_back(&e[0]);
  cenv.push_back(nullptr);

  if (access(argv_[0].c_str(), X_OK) != 0) {
    *error = "server binary not executable: " + argv_[0];
    return false;
  }
  int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    *error = "open log: " + std::string(strerror(errno));
    return false;
  }
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) {
    *error = std::string("fork: ") + strerror(errno);
    close(log_fd);
    if (null_fd >= 0) close(null_fd);
    return false;
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    close_range(3, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    execve(cargv[0], cargv.data(), cenv.data());
    static const char msg[] = "e2e: execve of the server failed\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(127);
  }
  close(log_fd);
  if (null_fd >= 0) close(null_fd);
  pid_ = pid;

  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::string content = ReadFile(port_path_);
    if (!content.empty() && content.back() == '\n') {
      char *end = nullptr;
      long p = strtol(content.c_str(), &end, 10);
      if (end != nullptr && *end == '\n' && p > 0 && p < 65536) {
        port_ = static_cast<int>(p);
        return true;
      }
      *error = "port file has unexpected content: '" + content + "'";
      KillAndReap();
      *error += "\nserver log:\n" + LogTail();
      return false;
    }
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      Reap(status);
      *error = "server exited before writing its port file (" + DescribeExit() +
               ")\nserver log:\n" + LogTail();
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      KillAndReap();
      *error = "no port file after " + std::to_string(timeout.count()) + " ms\nserver log:\n" +
               LogTail();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void ServerProcess::Reap(int status) {
  exited_ = true;
  wait_status_ = status;
  exit_time_ = std::chrono::steady_clock::now();
}

bool ServerProcess::Signal(int sig) {
  if (pid_ <= 0 || exited_) return false;
  if ((sig == SIGTERM || sig == SIGINT) && !term_sent_) {
    term_sent_ = true;
    term_time_ = std::chrono::steady_clock::now();
  }
  return kill(pid_, sig) == 0;
}

bool ServerProcess::WaitExit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return false;
  if (exited_) return true;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      Reap(status);
      return true;
    }
    if (r < 0 && errno != EINTR) return false;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void ServerProcess::KillAndReap() {
  if (pid_ <= 0 || exited_) return;
  kill(pid_, SIGKILL);
  // SIGKILL cannot be ignored; the bound only guards against a zombie
  // reaped elsewhere.
  WaitExit(std::chrono::seconds(10));
}

bool ServerProcess::Stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return false;
  if (exited_) return true;
  Signal(SIGTERM);
  if (WaitExit(grace)) return true;
  KillAndReap();
  return false;
}

bool ServerProcess::ExitedCleanly() const {
  return exited_ && WIFEXITED(wait_status_) && WEXITSTATUS(wait_status_) == 0;
}

std::string ServerProcess::DescribeExit() const {
  if (pid_ <= 0) return "not started";
  if (!exited_) return "running";
  if (WIFEXITED(wait_status_)) return "exit code " + std::to_string(WEXITSTATUS(wait_status_));
  if (WIFSIGNALED(wait_status_))
    return "killed by signal " + std::to_string(WTERMSIG(wait_status_)) + " (" +
           strsignal(WTERMSIG(wait_status_)) + ")";
  return "wait status " + std::to_string(wait_status_);
}

std::chrono::milliseconds ServerProcess::ShutdownLatency() const {
  if (!term_sent_ || !exited_) return std::chrono::milliseconds(-1);
  return std::chrono::duration_cast<std::chrono::milliseconds>(exit_time_ - term_time_);
}

std::string ServerProcess::Log() const {
  return ReadFile(log_path_);
}

std::string ServerProcess::LogTail(size_t max_bytes) const {
  std::string log = Log();
  if (log.size() <= max_bytes) return log;
  return "[...]\n" + log.substr(log.size() - max_bytes);
}

long ServerProcess::RssKb() const {
  if (pid_ <= 0 || exited_) return -1;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

}  // namespace es_e2e
