// A full disk on the embedded backend, through the real server: appends fail
// with RESOURCE_EXHAUSTED naming the cause, nothing acknowledged is lost,
// reads and health keep working, and appends work again once there is room.
// The "disk" is the server process's file-size limit (prlimit on the running
// server; SIGXFSZ ignored, so the write comes up short like on a full disk).
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <string>

#include "tests/e2e/e2e_client.h"

namespace es_e2e {
namespace {

off_t FileSize(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

bool SetFileSizeLimit(pid_t pid, rlim_t bytes) {
  struct rlimit lim;
  if (prlimit(pid, RLIMIT_FSIZE, nullptr, &lim) != 0) return false;
  lim.rlim_cur = bytes;
  return prlimit(pid, RLIMIT_FSIZE, &lim, nullptr) == 0;
}

TEST(LmdbDiskFull, AppendsFailResourceExhaustedUntilThereIsRoom) {
  // Inherited by the server across exec: a write over the limit then fails
  // with EFBIG instead of killing the process.
  signal(SIGXFSZ, SIG_IGN);
  std::string dir = TempDir("diskfull");
  auto server = StartServer({"--backend", "lmdb", "--data-dir", dir});
  ASSERT_NE(nullptr, server);
  Client client(Connect(server->Address()));
  const std::string payload(1000, 'd');
  uint64_t acked = 0;
  for (int i = 0; i < 300; i++) {
    v1::AppendRequest req;
    req.set_stream_id("full-" + std::to_string(i % 7));
    *req.add_events() = MakeEvent("Filled", payload);
    acked = client.MustAppend(req).last_global_position();
  }
  off_t size = FileSize(dir + "/data.mdb");
  ASSERT_GT(size, 0);
  // Room for a few more pages, off a page boundary: the write comes up short.
  ASSERT_TRUE(SetFileSizeLimit(server->Pid(), static_cast<rlim_t>(size) + 5 * 4096 + 100));

  grpc::Status refused;
  v1::AppendRequest big;
  for (int i = 0; i < 2000 && refused.ok(); i++) {
    big.Clear();
    big.set_stream_id("full-" + std::to_string(i % 7));
    *big.add_events() = MakeEvent("Filled", payload);
    v1::AppendResponse resp;
    refused = client.Append(big, &resp);
    if (refused.ok()) acked = resp.last_global_position();
  }
  ASSERT_FALSE(refused.ok()) << "2,000 appends fitted under the limit";
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << Describe(refused);
  EXPECT_NE(refused.error_message().find("full"), std::string::npos) << refused.error_message();

  // Still full: the same append is refused again; reads and health work;
  // nothing acknowledged is missing and nothing refused is visible.
  v1::AppendResponse resp;
  grpc::Status again = client.Append(big, &resp);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << Describe(again);
  EXPECT_TRUE(client.Serving());
  std::vector<v1::RecordedEvent> log = client.ReadWholeLog();
  ASSERT_EQ(log.size(), acked);
  for (size_t i = 0; i < log.size(); i++) ASSERT_EQ(log[i].global_position(), i + 1);

  // Room again: appends go on at the next position.
  ASSERT_TRUE(SetFileSizeLimit(server->Pid(), RLIM_INFINITY));
  v1::AppendResponse stored = client.MustAppend(big);  // the refused one, now new
  EXPECT_EQ(stored.first_global_position(), acked + 1);
  EXPECT_FALSE(stored.duplicate());
  v1::AppendResponse after = client.MustAppend(MakeAppend("full-after", 3));
  EXPECT_EQ(after.first_global_position(), acked + 2);
  EXPECT_EQ(client.ReadWholeLog().size(), acked + 4);
  StopServerExpectClean(server.get());
}

}  // namespace
}  // namespace es_e2e
