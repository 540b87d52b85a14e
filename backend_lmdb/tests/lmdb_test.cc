// The LMDB backend's own promises, beyond the conformance suite: every
// acknowledged event survives a close and a kill -9, positions stay 1..N
// without a gap, a second opener of a directory is refused, the map grows by
// itself, concurrent appends are committed in groups, and a failed commit
// stops writes without acknowledging anything.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "es/backend.h"
#include "es/backend_lmdb.h"
#include "es/validate.h"

namespace {

std::string TempDir() {
  const char *tmp = getenv("TEST_TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/lmdb_test.XXXXXX";
  EXPECT_NE(nullptr, mkdtemp(&templ[0]));
  return templ;
}

es_backend_t *Open(const std::string &dir, uint64_t map_size = 0) {
  es_lmdb_options_t opts;
  es_lmdb_options_default(&opts);
  if (map_size) opts.map_size = map_size;
  es_backend_t *b = nullptr;
  es_err_t err{};
  EXPECT_EQ(ES_OK, es_lmdb_open(dir.c_str(), &opts, &b, &err)) << err.msg;
  return b;
}

uint64_t Stat(es_backend_t *b, const char *name) {
  es_backend_stat_t st[32];
  size_t n = es_backend_stats(b, st, 32);
  for (size_t i = 0; i < n; i++)
    if (strcmp(st[i].name, name) == 0) return st[i].value;
  ADD_FAILURE() << "no stat " << name;
  return 0;
}

struct Appended {
  int rc;
  es_err_t err;
  es_append_result_t res;
};

// Appends n events to stream (payload "<stream>/<i>", metadata k=v on each)
// with ids given as text (or assigned when empty).
Appended Append(es_backend_t *b, const std::string &stream, size_t n,
                const std::vector<std::string> &ids = {}, size_t payload_len = 0) {
  es_limits_t limits;
  es_limits_default(&limits);
  std::vector<std::string> payloads(n);
  std::vector<es_event_data_t> evs(n);
  static const es_kv_t kv[] = {{"k", "v"}, {"trace", "abc"}};
  for (size_t i = 0; i < n; i++) {
    payloads[i] = stream + "/" + std::to_string(i);
    if (payload_len > payloads[i].size()) payloads[i].resize(payload_len, 'x');
    es_event_data_t &e = evs[i];
    std::memset(&e, 0, sizeof e);
    e.event_id = ids.empty() ? "" : ids[i].c_str();
    e.event_type = "OrderPlaced";
    e.content_type = i % 2 ? "application/json" : "";
    e.payload = reinterpret_cast<const uint8_t *>(payloads[i].data());
    e.payload_len = payloads[i].size();
    e.metadata = kv;
    e.metadata_count = 2;
    e.correlation_id = "corr";
    e.causation_id = "";
    e.occurred_at_unix_ms = 1234;
  }
  es_append_req_t req;
  std::memset(&req, 0, sizeof req);
  req.stream_id = stream.c_str();
  req.stream_type = "Order";
  req.expected_kind = ES_EXPECT_ANY;
  req.events = evs.data();
  req.event_count = n;
  Appended a{};
  a.rc = es_append_prepare(&limits, &req, &a.err);
  if (a.rc == ES_OK) a.rc = es_backend_append(b, &req, &a.res, &a.err);
  return a;
}

struct Ev {
  uint64_t position, version;
  std::string stream, id, payload, type, stream_type;
  size_t metadata;
};

// The whole log, read forward in pages of 500.
std::vector<Ev> WholeLog(es_backend_t *b) {
  std::vector<Ev> all;
  uint64_t from = 1;
  for (;;) {
    es_read_all_req_t req;
    std::memset(&req, 0, sizeof req);
    req.from_position = from;
    req.max_count = 500;
    req.direction = ES_FORWARD;
    req.max_bytes = 4 << 20;
    es_page_t page;
    std::memset(&page, 0, sizeof page);
    es_err_t err{};
    int rc = es_backend_read_all(b, &req, &page, &err);
    EXPECT_EQ(ES_OK, rc) << err.msg;
    if (rc) break;
    for (size_t i = 0; i < page.count; i++) {
      const es_recorded_t &r = page.events[i];
      all.push_back({r.global_position, r.stream_version, r.stream_id, r.event_id,
                     std::string(reinterpret_cast<const char *>(r.payload), r.payload_len),
                     r.event_type, r.stream_type, r.metadata_count});
    }
    from = page.next;
    bool end = page.is_end;
    es_page_free(&page);
    if (end) break;
  }
  return all;
}

void ExpectGapFree(const std::vector<Ev> &log, uint64_t head) {
  ASSERT_EQ(head, log.size());
  for (size_t i = 0; i < log.size(); i++) ASSERT_EQ(i + 1, log[i].position);
}

std::string Uuid(uint64_t n) {
  char buf[40];
  snprintf(buf, sizeof buf, "00000000-0000-7000-8000-%012llx", (unsigned long long)n);
  return buf;
}

TEST(LmdbBackend, ReopenKeepsEveryEvent) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  EXPECT_STREQ("lmdb", es_backend_name(b));
  EXPECT_EQ(1, es_backend_is_blocking(b));
  for (int i = 0; i < 50; i++) {
    Appended a = Append(b, "order-" + std::to_string(i % 7), 1, {Uuid(i * 10 + 1)});
    ASSERT_EQ(ES_OK, a.rc) << a.err.msg;
    a = Append(b, "batch-" + std::to_string(i % 5), 3,
               {Uuid(100000 + i * 10), Uuid(100000 + i * 10 + 1), Uuid(100000 + i * 10 + 2)});
    ASSERT_EQ(ES_OK, a.rc) << a.err.msg;
  }
  std::vector<Ev> before = WholeLog(b);
  uint64_t head = 0;
  es_err_t err{};
  ASSERT_EQ(ES_OK, es_backend_head(b, &head, &err));
  ExpectGapFree(before, head);
  es_backend_close(b);

  b = Open(dir);
  ASSERT_NE(nullptr, b);
  uint64_t head2 = 0;
  ASSERT_EQ(ES_OK, es_backend_head(b, &head2, &err));
  EXPECT_EQ(head, head2);
  std::vector<Ev> after = WholeLog(b);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); i++) {
    EXPECT_EQ(before[i].id, after[i].id);
    EXPECT_EQ(before[i].stream, after[i].stream);
    EXPECT_EQ(before[i].version, after[i].version);
    EXPECT_EQ(before[i].payload, after[i].payload);
    EXPECT_EQ("Order", after[i].stream_type);
    EXPECT_EQ(2u, after[i].metadata);
  }
  // The store goes on where it stopped: the next position, the stream's next
  // version, and an old id is still known (an exact retry is a duplicate).
  Appended next = Append(b, "order-0", 1, {Uuid(999999)});
  ASSERT_EQ(ES_OK, next.rc) << next.err.msg;
  EXPECT_EQ(head + 1, next.res.first_position);
  Appended retry = Append(b, "order-0", 1, {Uuid(1)});
  ASSERT_EQ(ES_OK, retry.rc) << retry.err.msg;
  EXPECT_TRUE(retry.res.duplicate);
  EXPECT_EQ(1u, retry.res.first_position);
  es_backend_close(b);
}

TEST(LmdbBackend, SecondOpenOfTheSameDirectoryIsRefused) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  es_backend_t *b2 = nullptr;
  es_err_t err{};
  EXPECT_EQ(ES_EUNAVAIL, es_lmdb_open(dir.c_str(), nullptr, &b2, &err));
  EXPECT_EQ(nullptr, b2);
  EXPECT_NE(nullptr, strstr(err.msg, dir.c_str())) << err.msg;
  EXPECT_NE(nullptr, strstr(err.msg, "in use")) << err.msg;

  // Another process is refused as well (flock is per open file, so this
  // holds within the process too; a child makes it explicit).
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    es_backend_t *c = nullptr;
    es_err_t e{};
    _exit(es_lmdb_open(dir.c_str(), nullptr, &c, &e) == ES_EUNAVAIL ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(pid, waitpid(pid, &status, 0));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  es_backend_close(b);
  b = Open(dir);  // free again once closed
  EXPECT_NE(nullptr, b);
  es_backend_close(b);
}

TEST(LmdbBackend, TheMapGrowsWhenFull) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir, 64 << 10);  // 16 pages
  ASSERT_NE(nullptr, b);
  uint64_t map0 = Stat(b, "lmdb_map_bytes");
  for (int i = 0; i < 400; i++) {
    Appended a = Append(b, "s" + std::to_string(i % 13), 10, {}, 256);
    ASSERT_EQ(ES_OK, a.rc) << a.err.msg;
  }
  EXPECT_GT(Stat(b, "lmdb_map_grows_total"), 0u);
  EXPECT_GT(Stat(b, "lmdb_map_bytes"), map0);
  std::vector<Ev> log = WholeLog(b);
  ExpectGapFree(log, 4000);
  es_backend_close(b);
  b = Open(dir, 64 << 10);  // the larger file wins over the small setting
  ASSERT_NE(nullptr, b);
  ExpectGapFree(WholeLog(b), 4000);
  es_backend_close(b);
}

TEST(LmdbBackend, ConcurrentAppendsAreCommittedInGroupsWhileReadersRead) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  const int kWriters = 8, kAppends = 60;
  std::atomic<bool> writing{true};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; w++) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kAppends; i++) {
        Appended a = Append(b, "w" + std::to_string(w), 1 + (i % 2));
        if (a.rc != ES_OK || a.res.first_version != uint64_t(i + i / 2 + 1)) failures++;
      }
    });
  }
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; r++) {
    readers.emplace_back([&] {
      while (writing.load()) {
        uint64_t head = 0;
        es_err_t err{};
        if (es_backend_head(b, &head, &err) != ES_OK) failures++;
        std::vector<Ev> log = WholeLog(b);
        // A snapshot is a prefix of the log: gap-free and at least the head
        // published before it was taken.
        if (log.size() < head) failures++;
        for (size_t i = 0; i < log.size(); i++)
          if (log[i].position != i + 1) failures++;
      }
    });
  }
  for (auto &t : threads) t.join();
  writing = false;
  for (auto &t : readers) t.join();
  EXPECT_EQ(0, failures.load());
  const uint64_t total = kWriters * (kAppends + kAppends / 2);
  ExpectGapFree(WholeLog(b), total);
  uint64_t commits = Stat(b, "lmdb_commits_total");
  uint64_t appends = Stat(b, "lmdb_committed_appends_total");
  EXPECT_EQ(uint64_t(kWriters * kAppends), appends);
  // Eight appenders each waiting for a sync: the committer takes several at
  // once (one sync for many acknowledgements).
  EXPECT_LT(commits, appends);
  EXPECT_GT(Stat(b, "lmdb_commit_group_max"), 1u);
  printf("%llu appends in %llu commits (largest group %llu)\n", (unsigned long long)appends,
         (unsigned long long)commits, (unsigned long long)Stat(b, "lmdb_commit_group_max"));
  es_backend_close(b);
}

int fail_after;  // commits that succeed before the hook fails one
int FailingCommit(void *) {
  return fail_after-- > 0 ? 0 : 1;
}

TEST(LmdbBackend, AFailedCommitStopsWritesAndAcknowledgesNothing) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  fail_after = 3;
  es_lmdb_set_commit_hook(b, FailingCommit, nullptr);
  for (int i = 0; i < 3; i++) ASSERT_EQ(ES_OK, Append(b, "s", 1).rc);
  Appended failed = Append(b, "s", 1, {Uuid(77)});
  EXPECT_EQ(ES_EUNAVAIL, failed.rc);
  EXPECT_NE(nullptr, strstr(failed.err.msg, "commit")) << failed.err.msg;
  EXPECT_EQ(0u, failed.res.last_position);
  // Refused from now on, even when the next commit would succeed.
  fail_after = 100;
  Appended later = Append(b, "s", 1);
  EXPECT_EQ(ES_EUNAVAIL, later.rc);
  EXPECT_NE(nullptr, strstr(later.err.msg, "no more appends")) << later.err.msg;
  EXPECT_EQ(1u, Stat(b, "lmdb_writes_failed"));
  // Reads go on.
  uint64_t head = 0;
  es_err_t err{};
  ASSERT_EQ(ES_OK, es_backend_head(b, &head, &err));
  EXPECT_EQ(3u, head);
  ExpectGapFree(WholeLog(b), 3);
  es_backend_close(b);
  // Reopened, the store takes appends again; the failed one is not there.
  b = Open(dir);
  ASSERT_NE(nullptr, b);
  ExpectGapFree(WholeLog(b), 3);
  Appended again = Append(b, "s", 1, {Uuid(77)});
  ASSERT_EQ(ES_OK, again.rc) << again.err.msg;
  EXPECT_FALSE(again.res.duplicate);
  EXPECT_EQ(4u, again.res.first_position);
  es_backend_close(b);
}

// A child process appends from several threads and reports each
// acknowledgement (position and id) through a pipe; it is killed with
// SIGKILL in the middle. Every acknowledged event must be in the reopened
// store at its position, and the log must be 1..N without a gap.
TEST(LmdbBackend, KillNineKeepsEveryAcknowledgedEvent) {
  for (int round = 0; round < 3; round++) {
    std::string dir = TempDir();
    int fds[2];
    ASSERT_EQ(0, pipe(fds));
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      es_backend_t *b = nullptr;
      es_err_t err{};
      if (es_lmdb_open(dir.c_str(), nullptr, &b, &err) != ES_OK) _exit(3);
      std::vector<std::thread> ts;
      for (int w = 0; w < 8; w++) {
        ts.emplace_back([&, w] {
          for (uint64_t i = 0;; i++) {
            std::string id = Uuid((uint64_t(w) << 32) | i);
            Appended a = Append(b, "w" + std::to_string(w), 1, {id}, 200);
            if (a.rc != ES_OK) _exit(4);
            char line[64];
            int len = snprintf(line, sizeof line, "%llu %s\n",
                               (unsigned long long)a.res.first_position, id.c_str());
            if (write(fds[1], line, len) != len) _exit(5);  // atomic: < PIPE_BUF
          }
        });
      }
      for (auto &t : ts) t.join();
      _exit(0);
    }
    close(fds[1]);
    // Read acknowledgements until enough, then kill without warning.
    std::string acks;
    size_t lines = 0;
    char buf[4096];
    while (lines < 300u + 200u * round) {
      ssize_t n = read(fds[0], buf, sizeof buf);
      ASSERT_GT(n, 0) << "the child stopped early";
      acks.append(buf, n);
      for (ssize_t i = 0; i < n; i++) lines += buf[i] == '\n';
    }
    kill(pid, SIGKILL);
    // Acknowledgements already in the pipe count too.
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0) acks.append(buf, n);
    close(fds[0]);
    int status = 0;
    ASSERT_EQ(pid, waitpid(pid, &status, 0));
    ASSERT_TRUE(WIFSIGNALED(status));

    es_backend_t *b = Open(dir);
    ASSERT_NE(nullptr, b);
    uint64_t head = 0;
    es_err_t err{};
    ASSERT_EQ(ES_OK, es_backend_head(b, &head, &err));
    std::vector<Ev> log = WholeLog(b);
    ExpectGapFree(log, head);
    size_t checked = 0, pos_start = 0;
    while (pos_start < acks.size()) {
      size_t eol = acks.find('\n', pos_start);
      if (eol == std::string::npos) break;  // a line cut by the kill
      std::string line = acks.substr(pos_start, eol - pos_start);
      pos_start = eol + 1;
      unsigned long long p = 0;
      char id[64];
      ASSERT_EQ(2, sscanf(line.c_str(), "%llu %63s", &p, id)) << line;
      ASSERT_LE(p, head) << "acknowledged position " << p << " lost";
      EXPECT_EQ(std::string(id), log[p - 1].id);
      checked++;
    }
    EXPECT_GE(checked, lines);
    printf("round %d: %zu acknowledged events checked, head %llu\n", round, checked,
           (unsigned long long)head);
    es_backend_close(b);
  }
}

}  // namespace
