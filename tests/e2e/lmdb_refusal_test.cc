// Data directories the LMDB backend must refuse, through the real server:
// one that another server is using, and damaged ones (a data file that is not
// an LMDB file, a truncated one, a directory the server may not read). Each
// refusal is an exit with a non-zero status and a message that names the
// path, before the server listens: never a crash (the log is checked for
// sanitizer reports too, since an ASan build exits 1 after one), never a
// server that serves an empty or half store in place of the damaged one, and
// nothing in the directory rewritten.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <random>
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

void WriteFile(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

off_t FileSize(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

std::vector<std::string> LmdbArgs(const std::string &dir) {
  return {"--backend", "lmdb", "--data-dir", dir};
}

// How a server that should refuse to start ended.
struct Refusal {
  bool serving = false;  // it wrote its port file: it did not refuse
  int status = 0;        // waitpid status
  std::string log;       // its stdout and stderr
};

// Runs the server with `args` until it exits or starts serving (then it is
// killed), at most 20 s. With `without_dac`, the server runs without the
// capabilities that let root read and write past file permissions
// (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER dropped from the bounding
// set before exec), so that a mode of 000 refuses it whoever runs the test.
// The server is forked here rather than through ServerProcess, which reports
// a failed start as an error: here a failed start is the expected outcome.
// Without `server`, `args` are the whole command line (a subcommand).
Refusal RunCommand(const std::vector<std::string> &args, bool without_dac, bool server) {
  Refusal r;
  std::string dir = TempDir("refusal_run");
  std::string log_path = dir + "/server.log", port_path = dir + "/port";
  std::vector<std::string> argv = {ServerProcess::BinaryPath()};
  if (server) argv.insert(argv.end(), {"--bind", "127.0.0.1:0", "--port-file", port_path});
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char *> cargv;
  for (auto &a : argv) cargv.push_back(&a[0]);
  cargv.push_back(nullptr);
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  EXPECT_GE(log_fd, 0);
  pid_t pid = fork();
  if (pid == 0) {  // async-signal-safe calls only: the parent has gRPC threads
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    if (without_dac) {
      // Fails (harmlessly) without CAP_SETPCAP, i.e. when not root: then the
      // permissions apply anyway.
      prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0);
      prctl(PR_CAPBSET_DROP, CAP_DAC_READ_SEARCH, 0, 0, 0);
      prctl(PR_CAPBSET_DROP, CAP_FOWNER, 0, 0, 0);
    }
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  close(log_fd);
  EXPECT_GT(pid, 0);
  if (pid <= 0) return r;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (;;) {
    if (waitpid(pid, &r.status, WNOHANG) == pid) break;
    if (FileSize(port_path) > 0 || std::chrono::steady_clock::now() > deadline) {
      r.serving = FileSize(port_path) > 0;
      kill(pid, SIGKILL);
      waitpid(pid, &r.status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.log = ReadFile(log_path);
  return r;
}

Refusal RunExpectingRefusal(const std::vector<std::string> &args, bool without_dac = false) {
  return RunCommand(args, without_dac, /*server=*/true);
}

// The server refused: it exited by itself, non-zero, without a crash or a
// sanitizer report, with a message naming `path` and containing `why`.
void ExpectRefused(const Refusal &r, const std::string &path, const std::string &why) {
  EXPECT_FALSE(r.serving) << "the server started serving\n" << r.log;
  ASSERT_TRUE(WIFEXITED(r.status)) << "the server did not exit by itself (signal "
                                   << (WIFSIGNALED(r.status) ? WTERMSIG(r.status) : 0) << ")\n"
                                   << r.log;
  EXPECT_NE(0, WEXITSTATUS(r.status)) << r.log;
  EXPECT_EQ(std::string::npos, r.log.find("Sanitizer")) << r.log;
  EXPECT_EQ(std::string::npos, r.log.find("runtime error")) << r.log;
  EXPECT_NE(std::string::npos, r.log.find(path)) << "the message does not name " << path << "\n"
                                                 << r.log;
  EXPECT_NE(std::string::npos, r.log.find(why)) << r.log;
}

// A store of `events` events of 1 KiB written by a real server, stopped
// cleanly; returns the data directory.
std::string MakeStore(int events) {
  std::string dir = TempDir("store");
  auto server = StartServer(LmdbArgs(dir));
  if (server == nullptr) return dir;
  Client client(Connect(server->Address()));
  for (int i = 0; i < events; i += 50) {
    v1::AppendRequest req;
    req.set_stream_id("s-" + std::to_string(i % 7));
    for (int e = 0; e < 50 && i + e < events; e++)
      *req.add_events() = MakeEvent("Filled", std::string(1024, static_cast<char>('a' + e % 26)));
    client.MustAppend(req);
  }
  EXPECT_EQ(static_cast<uint64_t>(events), client.Head());
  StopServerExpectClean(server.get());
  return dir;
}

TEST(LmdbRefusal, ASecondServerOnTheSameDirectoryIsRefusedAndTheFirstServesOn) {
  std::string dir = TempDir("shared");
  auto first = StartServer(LmdbArgs(dir));
  ASSERT_NE(nullptr, first);
  Client client(Connect(first->Address()));
  client.MustAppend(MakeAppend("before", 3));

  Refusal second = RunExpectingRefusal(LmdbArgs(dir));
  ExpectRefused(second, dir, "in use");

  // The first is untouched: it serves, appends and reads as before.
  EXPECT_TRUE(client.Serving());
  v1::AppendResponse resp = client.MustAppend(MakeAppend("after", 2));
  EXPECT_EQ(4u, resp.first_global_position());
  EXPECT_EQ(5u, client.ReadWholeLog().size());
  StopServerExpectClean(first.get());

  // Once the first has stopped, a server opens the directory, events and all.
  auto next = StartServer(LmdbArgs(dir));
  ASSERT_NE(nullptr, next);
  Client again(Connect(next->Address()));
  EXPECT_EQ(5u, again.Head());
  StopServerExpectClean(next.get());
}

TEST(LmdbRefusal, ADataFileThatIsNotAnLmdbFileIsRefused) {
  std::string dir = TempDir("garbage");
  std::mt19937 rng(42);
  std::string garbage(64 * 1024, '\0');
  for (auto &c : garbage) c = static_cast<char>(rng());
  WriteFile(dir + "/data.mdb", garbage);
  ExpectRefused(RunExpectingRefusal(LmdbArgs(dir)), dir, "not an LMDB file");
  EXPECT_EQ(garbage, ReadFile(dir + "/data.mdb")) << "the refused file was rewritten";
  // Text, as a wrong file copied into place would be.
  WriteFile(dir + "/data.mdb", std::string("{\"events\": []}\n") + std::string(20000, ' '));
  ExpectRefused(RunExpectingRefusal(LmdbArgs(dir)), dir, "not an LMDB file");
}

TEST(LmdbRefusal, ATruncatedDataFileIsRefused) {
  std::string dir = MakeStore(3000);
  off_t size = FileSize(dir + "/data.mdb");
  ASSERT_GT(size, 3000 * 1024);
  // Cut inside the first meta page: no valid meta page is left.
  ASSERT_EQ(0, truncate((dir + "/data.mdb").c_str(), 100));
  ExpectRefused(RunExpectingRefusal(LmdbArgs(dir)), dir, "not an LMDB file");
  EXPECT_EQ(100, FileSize(dir + "/data.mdb"));
}

TEST(LmdbRefusal, ATruncatedDataFileWithItsMetaPagesIsRefused) {
  // The meta pages survive, the pages they point to are gone: a store that
  // would fault (SIGBUS) on the first read of a missing page.
  std::string dir = MakeStore(3000);
  off_t size = FileSize(dir + "/data.mdb");
  ASSERT_EQ(0, truncate((dir + "/data.mdb").c_str(), size / 2));
  ExpectRefused(RunExpectingRefusal(LmdbArgs(dir)), dir, "truncated");
  EXPECT_EQ(size / 2, FileSize(dir + "/data.mdb"));
  // `eventstore backup` reads the same pages: it refuses the store too.
  std::string out = TempDir("backup_of_truncated") + "/copy";
  Refusal backup = RunCommand({"backup", "--data-dir", dir, "--out", out}, false, false);
  ExpectRefused(backup, dir, "truncated");
  EXPECT_EQ(-1, FileSize(out + "/data.mdb"));
}

TEST(LmdbRefusal, ADirectoryTheServerMayNotReadIsRefused) {
  std::string dir = MakeStore(10);
  ASSERT_EQ(0, chmod(dir.c_str(), 0));
  Refusal r = RunExpectingRefusal(LmdbArgs(dir), /*without_dac=*/true);
  chmod(dir.c_str(), 0700);
  ExpectRefused(r, dir, "Permission denied");
  // The data file alone unreadable.
  ASSERT_EQ(0, chmod((dir + "/data.mdb").c_str(), 0));
  r = RunExpectingRefusal(LmdbArgs(dir), /*without_dac=*/true);
  chmod((dir + "/data.mdb").c_str(), 0600);
  ExpectRefused(r, dir, "Permission denied");
  // Readable again: the store is whole.
  auto server = StartServer(LmdbArgs(dir));
  ASSERT_NE(nullptr, server);
  Client client(Connect(server->Address()));
  EXPECT_EQ(10u, client.Head());
  StopServerExpectClean(server.get());
}

TEST(LmdbRefusal, ADataDirectoryThatIsAFileIsRefused) {
  std::string dir = TempDir("notadir");
  WriteFile(dir + "/file", "x");
  ExpectRefused(RunExpectingRefusal(LmdbArgs(dir + "/file")), dir + "/file", "");
  // data.mdb a directory.
  ASSERT_EQ(0, mkdir((dir + "/d").c_str(), 0700));
  ASSERT_EQ(0, mkdir((dir + "/d/data.mdb").c_str(), 0700));
  ExpectRefused(RunExpectingRefusal(LmdbArgs(dir + "/d")), dir + "/d", "");
}

}  // namespace
}  // namespace es_e2e
