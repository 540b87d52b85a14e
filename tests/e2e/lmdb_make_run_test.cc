// `make run` twice in a row: a server started the way a user starts it — no
// --backend, no --data-dir, no BACKEND or ES_DATA_DIR in its environment —
// keeps its events in ./data of the directory the command was run from, and
// the next one started the same way serves them and appends after them.
//
// Under `bazel run` (which `make run` uses) the binary runs in its runfiles
// directory and the user's directory arrives as BUILD_WORKING_DIRECTORY; run
// directly, it is the current directory. Both are started here, each from a
// directory other than the data's, so that a store created in the wrong place
// shows as an empty server.
//
// The servers are forked here rather than through ServerProcess, which gives
// every server that names no backend the memory backend (tests must not leave
// stores behind in their working directory).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/e2e_client.h"

namespace es_e2e {
namespace {

std::string ReadFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Exists(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// A server started as a user would: in `cwd`, with BUILD_WORKING_DIRECTORY
// set to `working_dir` unless it is empty.
class BareServer {
 public:
  BareServer(const std::string &cwd, const std::string &working_dir) {
    std::string run = TempDir("bare_run");
    log_path_ = run + "/server.log";
    port_path_ = run + "/port";
    std::vector<std::string> argv = {ServerProcess::BinaryPath(), "--bind", "127.0.0.1:0",
                                     "--port-file", port_path_};
    std::vector<std::string> env;
    for (char **e = environ; *e != nullptr; ++e) {
      std::string entry = *e;
      if (entry.rfind("BACKEND=", 0) == 0 || entry.rfind("ES_DATA_DIR=", 0) == 0 ||
          entry.rfind("BUILD_WORKING_DIRECTORY=", 0) == 0)
        continue;
      env.push_back(entry);
    }
    if (!working_dir.empty()) env.push_back("BUILD_WORKING_DIRECTORY=" + working_dir);
    // Everything the child needs is prepared before fork(): the parent has
    // gRPC threads, and the child may only make async-signal-safe calls.
    std::vector<char *> cargv, cenv;
    for (auto &a : argv) cargv.push_back(&a[0]);
    cargv.push_back(nullptr);
    for (auto &e : env) cenv.push_back(&e[0]);
    cenv.push_back(nullptr);
    int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(log_fd, 1);
      dup2(log_fd, 2);
      if (chdir(cwd.c_str()) != 0) _exit(126);
      execve(cargv[0], cargv.data(), cenv.data());
      _exit(127);
    }
    close(log_fd);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      std::string port = ReadFile(port_path_);
      if (!port.empty() && port.back() == '\n') {
        port_ = atoi(port.c_str());
        return;
      }
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "the server did not start\n" << ReadFile(log_path_);
  }
  ~BareServer() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool Serving() const { return port_ > 0; }
  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Log() const { return ReadFile(log_path_); }
  // SIGTERM, as Ctrl-C or `make run`'s stop would; true on exit 0 within 10 s.
  bool Stop() {
    if (pid_ <= 0) return false;
    kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 1000; i++) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

 private:
  std::string log_path_, port_path_;
  pid_t pid_ = -1;
  int port_ = 0;
};

TEST(LmdbMakeRun, TheEventsOfOneRunAreThereInTheNext) {
  const std::string project = TempDir("project"), runfiles = TempDir("runfiles");
  std::vector<v1::RecordedEvent> before;
  {
    SCOPED_TRACE("first run, as `bazel run` starts it");
    BareServer server(runfiles, project);
    ASSERT_TRUE(server.Serving());
    EXPECT_NE(std::string::npos, server.Log().find(project + "/data")) << server.Log();
    Client client(Connect(server.Address()));
    for (int i = 0; i < 5; i++) client.MustAppend(MakeAppend("order-" + std::to_string(i), 3));
    before = client.ReadWholeLog();
    ASSERT_EQ(15u, before.size());
    EXPECT_TRUE(server.Stop()) << server.Log();
  }
  EXPECT_TRUE(Exists(project + "/data/data.mdb")) << "the store is not in ./data of the project";
  EXPECT_FALSE(Exists(runfiles + "/data")) << "a store was made where the binary ran";
  {
    SCOPED_TRACE("second run, the same way");
    BareServer server(runfiles, project);
    ASSERT_TRUE(server.Serving());
    Client client(Connect(server.Address()));
    std::vector<v1::RecordedEvent> after = client.ReadWholeLog();
    ASSERT_EQ(before.size(), after.size());
    for (size_t i = 0; i < after.size(); i++)
      EXPECT_EQ(before[i].SerializeAsString(), after[i].SerializeAsString())
          << "position " << i + 1;
    EXPECT_EQ(16u, client.MustAppend(MakeAppend("order-0", 1)).first_global_position());
    EXPECT_TRUE(server.Stop()) << server.Log();
  }
  {
    SCOPED_TRACE("third run, the binary started in the project directory");
    BareServer server(project, "");
    ASSERT_TRUE(server.Serving());
    Client client(Connect(server.Address()));
    EXPECT_EQ(16u, client.Head());
    EXPECT_TRUE(server.Stop()) << server.Log();
  }
}

}  // namespace
}  // namespace es_e2e
