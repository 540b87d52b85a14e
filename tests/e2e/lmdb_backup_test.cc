// `eventstore backup` on a server that is serving: the real binary runs the
// backup while appenders keep a real server busy, a second server is started
// on the copy, and the copy must hold positions 1..N without a gap, N at
// least the head acknowledged before the backup began, every event equal to
// the original's at its position. A non-empty output directory is refused.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/e2e_client.h"

namespace es_e2e {
namespace {

// Runs `eventstore backup ARGS`; its exit code and its stdout and stderr.
int RunBackup(const std::vector<std::string> &args, std::string *output) {
  std::string cmd = ServerProcess::BinaryPath() + " backup";
  for (const auto &a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  FILE *p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  output->clear();
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) output->append(buf, n);
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(LmdbBackup, CopyMadeUnderLoadServesEveryEventUpToTheCopy) {
  std::string dir = TempDir("backup_src"), out = TempDir("backup_out") + "/copy";
  auto server = StartServer({"--backend", "lmdb", "--data-dir", dir});
  ASSERT_NE(nullptr, server);
  Client client(Connect(server->Address()));
  for (int i = 0; i < 100; i++) client.MustAppend(MakeAppend("pre-" + std::to_string(i % 9), 2));

  // Appenders: each acknowledged last position raises `acked`.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> acked{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 6; w++) {
    writers.emplace_back([&, w] {
      Client c(Connect(server->Address()));
      for (int i = 0; !stop.load(); i++) {
        v1::AppendResponse resp;
        grpc::Status s = c.Append(
            MakeAppend("w" + std::to_string(w) + "-" + std::to_string(i % 5), 1 + i % 3), &resp);
        if (!s.ok()) {
          failures++;
          continue;
        }
        uint64_t last = resp.last_global_position(), cur = acked.load();
        while (last > cur && !acked.compare_exchange_weak(cur, last)) {
        }
      }
    });
  }
  while (acked.load() < 1000 && failures.load() == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  uint64_t before = acked.load();
  std::string output;
  int code = RunBackup({"--data-dir", dir, "--out", out}, &output);
  uint64_t after = acked.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // appends go on
  stop = true;
  for (auto &t : writers) t.join();
  EXPECT_EQ(0, failures.load());
  ASSERT_EQ(0, code) << output;
  unsigned long long n = 0;
  const char *range = strstr(output.c_str(), "events 1..");
  ASSERT_NE(nullptr, range) << output;
  ASSERT_EQ(1, sscanf(range, "events 1..%llu", &n)) << output;
  printf("acknowledged before the backup %llu, copied %llu, acknowledged during it %llu\n",
         (unsigned long long)before, n, (unsigned long long)after);
  EXPECT_GE(n, before);
  EXPECT_GT(acked.load(), n) << "appends went on after the copy";

  std::vector<v1::RecordedEvent> original = client.ReadWholeLog();
  ASSERT_GE(original.size(), n);
  auto copy_server = StartServer({"--backend", "lmdb", "--data-dir", out});
  ASSERT_NE(nullptr, copy_server);
  Client copy(Connect(copy_server->Address()));
  EXPECT_EQ(n, copy.Head());
  std::vector<v1::RecordedEvent> copied = copy.ReadWholeLog();
  ASSERT_EQ(n, copied.size());
  for (size_t i = 0; i < copied.size(); i++) {
    ASSERT_EQ(i + 1, copied[i].global_position());
    ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(original[i], copied[i]))
        << "position " << i + 1 << "\noriginal: " << original[i].ShortDebugString()
        << "\ncopy: " << copied[i].ShortDebugString();
  }
  // The copy is a store of its own: it goes on from N, the source is untouched.
  v1::AppendResponse resp = copy.MustAppend(MakeAppend("after-restore", 1));
  EXPECT_EQ(n + 1, resp.first_global_position());
  EXPECT_EQ(original.size(), client.ReadWholeLog().size());
  StopServerExpectClean(copy_server.get());
  StopServerExpectClean(server.get());
}

TEST(LmdbBackup, ANonEmptyOutputDirectoryIsRefused) {
  std::string dir = TempDir("backup_src"), out = TempDir("backup_out");
  auto server = StartServer({"--backend", "lmdb", "--data-dir", dir});
  ASSERT_NE(nullptr, server);
  Client client(Connect(server->Address()));
  client.MustAppend(MakeAppend("s", 3));
  std::ofstream(out + "/keep.txt") << "mine\n";
  std::string output;
  EXPECT_EQ(1, RunBackup({"--data-dir", dir, "--out", out}, &output));
  EXPECT_NE(std::string::npos, output.find("not empty")) << output;
  EXPECT_NE(std::string::npos, output.find(out)) << output;
  struct stat st;
  EXPECT_NE(0, stat((out + "/data.mdb").c_str(), &st)) << "nothing is written into it";
  // An empty directory is taken; without --out the command is a usage error.
  std::string empty = TempDir("backup_empty");
  EXPECT_EQ(0, RunBackup({"--data-dir", dir, "--out", empty}, &output)) << output;
  EXPECT_NE(std::string::npos, output.find("events 1..3")) << output;
  EXPECT_EQ(2, RunBackup({"--data-dir", dir}, &output)) << output;
  EXPECT_NE(std::string::npos, output.find("--out")) << output;
  // No store in the source directory: a clear error, nothing created.
  std::string none = TempDir("backup_none"), out2 = TempDir("backup_out2") + "/x";
  EXPECT_EQ(1, RunBackup({"--data-dir", none, "--out", out2}, &output));
  EXPECT_NE(std::string::npos, output.find("holds no store")) << output;
  StopServerExpectClean(server.get());
}

}  // namespace
}  // namespace es_e2e
