// The real server binary as a child process of a test.
//
// An end-to-end test must exercise what users run: //server:eventstore, started
// with its real command line, on an ephemeral loopback port. ServerProcess
// fork/execs the binary with `--bind 127.0.0.1:0 --port-file DIR/port` plus the
// test's own flags, sends its stdout and stderr to DIR/server.log, and waits
// (at most 10 s) for the port file the server writes once it is serving.
//
// Cleanup is unconditional: Stop() (also run by the destructor) sends SIGTERM,
// waits a grace period, then SIGKILLs and reaps the child. The child also
// carries PR_SET_PDEATHSIG=SIGKILL, so a crashed or killed test binary does not
// leave a server behind. When Bazel gives the test an undeclared-outputs
// directory, the server's log is copied there on destruction, so a failing run
// leaves the evidence in bazel-testlogs/.../test.outputs/.
//
// Threading: a ServerProcess is used from one thread (the test's main thread,
// which is also the thread that forked: PDEATHSIG fires when that thread exits).
// Pid(), RssKb() and Log() are safe from any thread.
#ifndef ES_TESTS_E2E_SERVER_PROCESS_H
#define ES_TESTS_E2E_SERVER_PROCESS_H

#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace es_e2e {

class ServerProcess {
 public:
  // extra_args are appended to `--bind 127.0.0.1:0 --port-file PATH`, then
  // the words of $ES_E2E_SERVER_ARGS (for debugging, e.g. "--log-level debug").
  explicit ServerProcess(std::vector<std::string> extra_args = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess &) = delete;
  ServerProcess &operator=(const ServerProcess &) = delete;

  // Where the binary is: $ES_E2E_SERVER if set, else the Bazel runfiles path
  // $TEST_SRCDIR/eventstore/server/eventstore.
  static std::string BinaryPath();

  // Sets NAME=VALUE in the server's environment (the test's own environment
  // otherwise, unchanged). Call before Start(). The test process itself is
  // left alone: setenv() in a process with gRPC threads running is unsafe.
  void SetEnv(const std::string &name, const std::string &value);

  // Starts the server and waits up to `timeout` for its port file. On failure
  // returns false with a description (including the log) in *error, and the
  // child, if any, is killed and reaped.
  bool Start(std::string *error, std::chrono::milliseconds timeout = std::chrono::seconds(10));

  int Port() const { return port_; }
  std::string Address() const;  // "127.0.0.1:PORT"
  pid_t Pid() const { return pid_; }
  const std::vector<std::string> &Argv() const { return argv_; }

  // Sends a signal to the child if it has not been reaped yet.
  bool Signal(int sig);
  // Waits up to `timeout` for the child to exit; true once it has been reaped.
  bool WaitExit(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL and reap. Returns true when the
  // child exited by itself within the grace period (or had already exited).
  bool Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

  bool Exited() const { return exited_; }
  int WaitStatus() const { return wait_status_; }  // raw waitpid() status
  bool ExitedCleanly() const;                      // exited by itself with code 0
  std::string DescribeExit() const;                // "exit code 0", "signal 9", "running"
  // Time from the first SIGTERM/SIGINT sent by Signal()/Stop() to the reap.
  std::chrono::milliseconds ShutdownLatency() const;

  // Contents of the server's stderr/stdout log so far, or its last bytes.
  std::string Log() const;
  std::string LogTail(size_t max_bytes = 6000) const;
  // VmRSS of the child in KiB from /proc/PID/status; -1 if unavailable.
  long RssKb() const;

 private:
  void Reap(int status);
  void KillAndReap();

  std::vector<std::string> extra_args_;
  std::vector<std::pair<std::string, std::string>> env_overrides_;
  std::vector<std::string> argv_;
  std::string dir_;
  std::string log_path_;
  std::string port_path_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool exited_ = false;
  int wait_status_ = 0;
  bool term_sent_ = false;
  std::chrono::steady_clock::time_point term_time_;
  std::chrono::steady_clock::time_point exit_time_;
};

}  // namespace es_e2e

#endif  // ES_TESTS_E2E_SERVER_PROCESS_H
