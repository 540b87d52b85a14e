// The LMDB backend's own promises, beyond the conformance suite: every
// acknowledged event survives a close and a kill -9, positions stay 1..N
// without a gap, a second opener of a directory is refused, the map grows by
// itself, concurrent appends are committed in groups, and a failed commit
// stops writes without acknowledging anything.
#include <errno.h>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
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

// The log read in pages of page_size, forward or backward, optionally
// filtered by one event type.
std::vector<Ev> ReadLog(es_backend_t *b, uint32_t page_size, int direction,
                        const char *event_type = nullptr) {
  std::vector<Ev> all;
  uint64_t from = direction == ES_FORWARD ? 1 : 0;
  for (;;) {
    es_read_all_req_t req;
    std::memset(&req, 0, sizeof req);
    req.from_position = from;
    req.max_count = page_size;
    req.direction = direction;
    req.max_bytes = 4 << 20;
    if (event_type) {
      req.filter.event_types = &event_type;
      req.filter.event_type_count = 1;
    }
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

// The whole log, read forward in pages of 500.
std::vector<Ev> WholeLog(es_backend_t *b) {
  return ReadLog(b, 500, ES_FORWARD);
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
  // Eight appenders each waiting for a sync: one commit takes several at
  // once (one sync for many acknowledgements).
  EXPECT_LT(commits, appends);
  EXPECT_GT(Stat(b, "lmdb_commit_group_max"), 1u);
  printf("%llu appends in %llu commits (largest group %llu)\n", (unsigned long long)appends,
         (unsigned long long)commits, (unsigned long long)Stat(b, "lmdb_commit_group_max"));
  es_backend_close(b);
}

// The thread each commit ran on, recorded by the commit hook.
std::vector<pthread_t> commit_threads;
int RecordCommitThread(void *) {
  commit_threads.push_back(pthread_self());
  return 0;
}

// An append with nothing else in flight is committed by the appending thread
// itself: handing it to a committer thread and back cost two wake-ups on the
// path of every append.
TEST(LmdbBackend, AnAppendAloneIsCommittedOnItsOwnThread) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  commit_threads.clear();
  es_lmdb_set_commit_hook(b, RecordCommitThread, nullptr);
  for (int i = 0; i < 3; i++) ASSERT_EQ(ES_OK, Append(b, "s", 1).rc);
  std::thread other([&] { EXPECT_EQ(ES_OK, Append(b, "t", 2).rc); });
  other.join();
  ASSERT_EQ(4u, commit_threads.size());
  for (int i = 0; i < 3; i++) EXPECT_TRUE(pthread_equal(pthread_self(), commit_threads[i]));
  EXPECT_FALSE(pthread_equal(pthread_self(), commit_threads[3]));
  es_lmdb_set_commit_hook(b, nullptr, nullptr);
  es_backend_close(b);
}

// Polls cond every millisecond for up to ms milliseconds; true once it holds.
bool WaitUntil(const std::function<bool()> &cond, int ms) {
  for (int i = 0; i < ms && !cond(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return cond();
}

// One asynchronous append of one event to `stream`, owning everything the
// backend borrows until done; done counts its calls.
struct AsyncAppend {
  std::string stream, payload;
  es_event_data_t ev;
  es_append_req_t req;
  es_append_result_t res{};
  es_err_t err{};
  std::atomic<int> calls{0};
  std::atomic<int> rc{-1};
  std::atomic<int> *pending = nullptr;
  AsyncAppend(const std::string &s, es_limits_t *limits) : stream(s), payload(s + "/async") {
    std::memset(&ev, 0, sizeof ev);
    ev.event_id = "";
    ev.event_type = "OrderPlaced";
    ev.content_type = "";
    ev.payload = reinterpret_cast<const uint8_t *>(payload.data());
    ev.payload_len = payload.size();
    ev.correlation_id = "";
    ev.causation_id = "";
    std::memset(&req, 0, sizeof req);
    req.stream_id = stream.c_str();
    req.stream_type = "Order";
    req.expected_kind = ES_EXPECT_ANY;
    req.events = &ev;
    req.event_count = 1;
    EXPECT_EQ(ES_OK, es_append_prepare(limits, &req, &err)) << err.msg;
  }
  static void Done(void *arg, int code) {
    AsyncAppend *a = static_cast<AsyncAppend *>(arg);
    a->rc = code;
    a->calls++;
    if (a->pending) (*a->pending)--;
  }
};

// Asynchronous appends (the server's Append) from several threads at once,
// mixed with blocking ones: each ends exactly once, by the thread that
// committed it, with its own result; the log is 1..N without a gap; and
// they share commits (no thread waits per append, one commit answers many).
TEST(LmdbBackend, AsyncAppendsEndOnceEachAndShareCommitsWithBlockingOnes) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  es_limits_t limits;
  es_limits_default(&limits);
  const int kAsyncThreads = 4, kAsyncEach = 250, kSyncThreads = 2, kSyncEach = 40;
  std::vector<std::vector<std::unique_ptr<AsyncAppend>>> all(kAsyncThreads);
  std::atomic<int> pending{kAsyncThreads * kAsyncEach};
  std::atomic<int> sync_failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kAsyncThreads; t++)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kAsyncEach; i++) {
        all[t].emplace_back(new AsyncAppend("a" + std::to_string(t), &limits));
        AsyncAppend *a = all[t].back().get();
        a->pending = &pending;
        es_backend_append_async(b, &a->req, &a->res, &a->err, AsyncAppend::Done, a);
      }
    });
  for (int t = 0; t < kSyncThreads; t++)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kSyncEach; i++)
        if (Append(b, "s" + std::to_string(t), 1).rc != ES_OK) sync_failures++;
    });
  for (auto &th : threads) th.join();
  WaitUntil([&] { return pending.load() == 0; }, 10000);
  ASSERT_EQ(0, pending.load()) << "asynchronous appends never ended";
  EXPECT_EQ(0, sync_failures.load());
  const uint64_t total = kAsyncThreads * kAsyncEach + kSyncThreads * kSyncEach;
  std::vector<Ev> log = WholeLog(b);
  ExpectGapFree(log, total);
  for (int t = 0; t < kAsyncThreads; t++) {
    // Queued in order by one thread, committed in that order: versions
    // 1..n of the stream, each where the log holds it.
    for (int i = 0; i < kAsyncEach; i++) {
      const AsyncAppend &a = *all[t][i];
      ASSERT_EQ(1, a.calls.load());
      ASSERT_EQ(ES_OK, a.rc.load()) << a.err.msg;
      EXPECT_EQ(uint64_t(i + 1), a.res.first_version);
      ASSERT_GE(a.res.first_position, 1u);
      ASSERT_LE(a.res.first_position, total);
      EXPECT_EQ(a.stream, log[a.res.first_position - 1].stream);
      EXPECT_EQ(a.payload, log[a.res.first_position - 1].payload);
    }
  }
  uint64_t commits = Stat(b, "lmdb_commits_total");
  EXPECT_LT(commits, total / 4) << "appends queued together share a commit";
  es_backend_close(b);
  // Every acknowledged event is durable: there after a reopen.
  b = Open(dir);
  ASSERT_NE(nullptr, b);
  ExpectGapFree(WholeLog(b), total);
  es_backend_close(b);
}

// Asynchronous AppendMany (the server's AppendMany on this backend): each
// request's appends get one contiguous run, in request order; one whose
// expected version fails stores nothing, names the append, and leaves its
// results zeroed; each ends exactly once; the log stays 1..N.
TEST(LmdbBackend, AsyncAppendManyIsAllOrNothingAndContiguous) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(1, es_backend_has_append_many_async(b));
  es_limits_t limits;
  es_limits_default(&limits);
  struct Many {
    AsyncAppend x, y;  // their req are the request's two appends
    es_append_req_t reqs[2];
    es_append_many_req_t req;
    es_append_result_t res[2]{};
    es_err_t err{};
    std::atomic<int> calls{0}, rc{-1};
    Many(const std::string &sx, const std::string &sy, es_limits_t *limits)
        : x(sx, limits), y(sy, limits) {
      reqs[0] = x.req;
      reqs[1] = y.req;
      req = {reqs, 2, nullptr};
    }
    static void Done(void *arg, int code) {
      Many *m = static_cast<Many *>(arg);
      m->rc = code;
      m->calls++;
    }
  };
  const int kRequests = 100;
  std::vector<std::unique_ptr<Many>> ok;
  for (int i = 0; i < kRequests; i++) {
    ok.emplace_back(new Many("m" + std::to_string(i % 7), "n" + std::to_string(i % 5), &limits));
    es_backend_append_many_async(b, &ok.back()->req, ok.back()->res, &ok.back()->err, Many::Done,
                                 ok.back().get());
  }
  // The second append expects a stream that does not exist to be at 5.
  Many bad("m0", "nowhere", &limits);
  bad.reqs[1].expected_kind = ES_EXPECT_EXACT;
  bad.reqs[1].expected_version = 5;
  es_backend_append_many_async(b, &bad.req, bad.res, &bad.err, Many::Done, &bad);
  WaitUntil([&] { return bad.calls.load() != 0; }, 10000);
  ASSERT_EQ(1, bad.calls.load());
  EXPECT_NE(ES_OK, bad.rc.load());
  EXPECT_TRUE(bad.err.has_append_index);
  EXPECT_EQ(1u, bad.err.append_index);
  EXPECT_EQ(0u, bad.res[0].first_position) << "results of a failed request are zeroed";
  std::vector<Ev> log = WholeLog(b);
  ExpectGapFree(log, 2 * kRequests);
  for (const auto &m : ok) {
    ASSERT_EQ(1, m->calls.load());
    ASSERT_EQ(ES_OK, m->rc.load()) << m->err.msg;
    EXPECT_EQ(m->res[0].first_position + 1, m->res[1].first_position) << "one contiguous run";
    EXPECT_EQ(m->x.stream, log[m->res[0].first_position - 1].stream);
    EXPECT_EQ(m->y.stream, log[m->res[1].first_position - 1].stream);
  }
  es_backend_close(b);
}

// The commit hook of the next test: holds the commit until released.
std::atomic<bool> hold_commit{false}, commit_held{false};
int HoldCommit(void *) {
  commit_held = true;
  while (hold_commit.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return 0;
}

// An asynchronous append returns while its commit has not happened (the
// caller's thread, in the server a completion-queue thread, is never held
// by a sync), and ends once it is durable, on the committer thread.
TEST(LmdbBackend, AnAsyncAppendReturnsBeforeItsCommitAndEndsAfterIt) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(1, es_backend_has_append_async(b));
  es_limits_t limits;
  es_limits_default(&limits);
  hold_commit = true;
  commit_held = false;
  es_lmdb_set_commit_hook(b, HoldCommit, nullptr);
  AsyncAppend a("held", &limits);
  std::atomic<bool> returned{false};
  std::thread caller([&] {
    es_backend_append_async(b, &a.req, &a.res, &a.err, AsyncAppend::Done, &a);
    returned = true;
  });
  WaitUntil([&] { return returned.load() && commit_held.load(); }, 2000);
  EXPECT_TRUE(returned.load()) << "append_async waited for the commit";
  EXPECT_TRUE(commit_held.load());
  EXPECT_EQ(0, a.calls.load()) << "ended before its commit";
  hold_commit = false;
  caller.join();
  WaitUntil([&] { return a.calls.load() != 0; }, 2000);
  EXPECT_EQ(1, a.calls.load());
  EXPECT_EQ(ES_OK, a.rc.load()) << a.err.msg;
  EXPECT_EQ(1u, a.res.first_position);
  es_lmdb_set_commit_hook(b, nullptr, nullptr);
  es_backend_close(b);
}

// An asynchronous append refused before it is queued (too big for the
// store, a request not prepared) ends at once, on the caller's thread; one
// queued and then the store closed is committed first: close waits for it.
TEST(LmdbBackend, AsyncAppendsRefusedEndAtOnceAndCloseCommitsWhatIsQueued) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  es_limits_t limits;
  es_limits_default(&limits);
  limits.max_id_bytes = 4096;
  AsyncAppend big(std::string(1000, 's'), &limits);  // over LMDB's largest key
  es_backend_append_async(b, &big.req, &big.res, &big.err, AsyncAppend::Done, &big);
  EXPECT_EQ(1, big.calls.load()) << "not ended before append_async returned";
  EXPECT_EQ(ES_ETOOBIG, big.rc.load()) << big.err.msg;
  AsyncAppend unprepared("u", &limits);
  unprepared.req.event_count = 0;
  es_backend_append_async(b, &unprepared.req, &unprepared.res, &unprepared.err, AsyncAppend::Done,
                          &unprepared);
  EXPECT_EQ(1, unprepared.calls.load());
  EXPECT_EQ(ES_EINVAL, unprepared.rc.load());
  std::vector<std::unique_ptr<AsyncAppend>> queued;
  for (int i = 0; i < 50; i++) {
    queued.emplace_back(new AsyncAppend("q", &limits));
    es_backend_append_async(b, &queued.back()->req, &queued.back()->res, &queued.back()->err,
                            AsyncAppend::Done, queued.back().get());
  }
  es_backend_close(b);
  for (auto &a : queued) {
    EXPECT_EQ(1, a->calls.load());
    EXPECT_EQ(ES_OK, a->rc.load()) << a->err.msg;
  }
  b = Open(dir);
  ASSERT_NE(nullptr, b);
  ExpectGapFree(WholeLog(b), 50);
  es_backend_close(b);
}

// The commit figures that /metrics shows: commits, the appends and events
// they made durable, the sizes of their groups, and how long they took.
TEST(LmdbBackend, CommitMetricsCountGroupsEventsAndTime) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "first", 3).rc);
  const int kWriters = 8, kAppends = 40;
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; w++)
    threads.emplace_back([&, w] {
      for (int i = 0; i < kAppends; i++) EXPECT_EQ(ES_OK, Append(b, "w" + std::to_string(w), 2).rc);
    });
  for (auto &t : threads) t.join();
  // A duplicate is decided in a group but writes nothing.
  Appended dup_src = Append(b, "d", 1, {Uuid(5)});
  ASSERT_EQ(ES_OK, dup_src.rc);
  Appended dup = Append(b, "d", 1, {Uuid(5)});
  ASSERT_EQ(ES_OK, dup.rc);
  ASSERT_TRUE(dup.res.duplicate);

  const uint64_t appends = 1 + kWriters * kAppends + 1, events = 3 + 2 * kWriters * kAppends + 1;
  EXPECT_EQ(events, Stat(b, "lmdb_events"));
  EXPECT_EQ(events, Stat(b, "lmdb_committed_events_total"));
  EXPECT_EQ(appends, Stat(b, "lmdb_committed_appends_total"));
  uint64_t commits = Stat(b, "lmdb_commits_total");
  uint64_t grouped = Stat(b, "lmdb_commit_group_appends_total");
  EXPECT_GE(grouped, appends);
  EXPECT_LE(grouped, appends + 1);  // the duplicate counts when a commit took it
  EXPECT_LT(commits, appends);
  EXPECT_GE(Stat(b, "lmdb_commit_group_max") * commits, grouped);
  uint64_t total_us = Stat(b, "lmdb_commit_microseconds_total");
  uint64_t max_us = Stat(b, "lmdb_commit_microseconds_max");
  EXPECT_GT(max_us, 0u);  // a commit syncs twice: never under a microsecond
  EXPECT_LE(max_us, total_us);
  EXPECT_GE(max_us * commits, total_us);
  EXPECT_GT(Stat(b, "lmdb_map_used_bytes"), 0u);
  EXPECT_LE(Stat(b, "lmdb_map_used_bytes"), Stat(b, "lmdb_map_bytes"));
  es_backend_close(b);
}

int fail_after;  // commits that succeed before the hook fails one
int FailingCommit(void *) {
  return fail_after-- > 0 ? 0 : EIO;
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

int space_failures;  // commits the hook fails with ENOSPC, one after another
int FullDiskCommit(void *) {
  return space_failures-- > 0 ? ENOSPC : 0;
}

TEST(LmdbBackend, ACommitWithoutSpaceFailsOnlyItsAppends) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", 2).rc);
  space_failures = 2;
  es_lmdb_set_commit_hook(b, FullDiskCommit, nullptr);
  for (int i = 0; i < 2; i++) {
    Appended full = Append(b, "s", 1, {Uuid(5)});
    EXPECT_EQ(ES_ENOSPACE, full.rc) << full.err.msg;
    EXPECT_NE(nullptr, strstr(full.err.msg, "No space left on device")) << full.err.msg;
    EXPECT_EQ(0u, full.res.last_position);
  }
  EXPECT_EQ(0u, Stat(b, "lmdb_writes_failed"));
  EXPECT_EQ(2u, Stat(b, "lmdb_no_space_total"));
  // Space again: the same append is stored, as new, right after the others.
  Appended again = Append(b, "s", 1, {Uuid(5)});
  ASSERT_EQ(ES_OK, again.rc) << again.err.msg;
  EXPECT_FALSE(again.res.duplicate);
  EXPECT_EQ(3u, again.res.first_position);
  EXPECT_EQ(3u, again.res.first_version);
  ExpectGapFree(WholeLog(b), 3);
  es_backend_close(b);
}

// A real full disk: a child process whose files may not grow beyond the
// store's size (RLIMIT_FSIZE, SIGXFSZ ignored, so writes fail with EFBIG or
// come up short) appends until an append fails, then checks reads and
// appends while full and after the limit is lifted, and reports each step
// on a pipe. The parent checks the report and the reopened store.
TEST(LmdbBackend, AFullDiskFailsAppendsUntilSpaceIsFreed) {
  std::string dir = TempDir();
  int fds[2];
  ASSERT_EQ(0, pipe(fds));
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    FILE *out = fdopen(fds[1], "w");
    signal(SIGXFSZ, SIG_IGN);
    es_backend_t *b = nullptr;
    es_err_t err{};
    if (es_lmdb_open(dir.c_str(), nullptr, &b, &err) != ES_OK) _exit(3);
    uint64_t acked = 0;
    for (int i = 0; i < 20; i++) {
      Appended a = Append(b, "s" + std::to_string(i % 3), 5, {}, 1000);
      if (a.rc != ES_OK) _exit(4);
      acked = a.res.last_position;
    }
    struct stat st;
    if (stat((dir + "/data.mdb").c_str(), &st) != 0) _exit(5);
    struct rlimit lim;
    getrlimit(RLIMIT_FSIZE, &lim);
    struct rlimit small = lim;
    /* Not at a page boundary: the write that crosses it comes up short,
     * which LMDB reports as EIO. */
    small.rlim_cur = (rlim_t)st.st_size + 10000;
    if (setrlimit(RLIMIT_FSIZE, &small) != 0) _exit(6);
    Appended full{};
    int i = 0;
    for (; i < 5000; i++) {
      Appended a = Append(
          b, "s" + std::to_string(i % 3), 5,
          {Uuid(5 * i + 1), Uuid(5 * i + 2), Uuid(5 * i + 3), Uuid(5 * i + 4), Uuid(5 * i + 5)},
          1000);
      if (a.rc != ES_OK) {
        full = a;
        break;
      }
      acked = a.res.last_position;
    }
    fprintf(out, "acked %llu\n", (unsigned long long)acked);
    fprintf(out, "full %d %s\n", full.rc, full.err.msg);
    // The same append again, with nothing committed in between: still full.
    Appended still = Append(
        b, "s" + std::to_string(i % 3), 5,
        {Uuid(5 * i + 1), Uuid(5 * i + 2), Uuid(5 * i + 3), Uuid(5 * i + 4), Uuid(5 * i + 5)},
        1000);
    fprintf(out, "still %d\n", still.rc);
    uint64_t head = 0;
    es_backend_head(b, &head, &err);
    std::vector<Ev> log = WholeLog(b);
    bool dense = true;
    for (size_t k = 0; k < log.size(); k++) dense = dense && log[k].position == k + 1;
    fprintf(out, "read %llu %zu %d\n", (unsigned long long)head, log.size(), dense ? 1 : 0);
    fprintf(out, "writes_failed %llu\n", (unsigned long long)Stat(b, "lmdb_writes_failed"));
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(7);
    Appended freed = Append(
        b, "s" + std::to_string(i % 3), 5,
        {Uuid(5 * i + 1), Uuid(5 * i + 2), Uuid(5 * i + 3), Uuid(5 * i + 4), Uuid(5 * i + 5)},
        1000);
    fprintf(out, "freed %d %llu %d\n", freed.rc, (unsigned long long)freed.res.first_position,
            freed.res.duplicate ? 1 : 0);
    es_backend_close(b);
    fflush(out);
    _exit(0);
  }
  close(fds[1]);
  std::string report;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) report.append(buf, n);
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(pid, waitpid(pid, &status, 0));
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << report;
  printf("%s", report.c_str());

  unsigned long long acked = 0, head = 0, count = 0, first = 0, writes_failed = 9;
  int full_rc = 0, still_rc = 0, dense = 0, freed_rc = 0, dup = 1;
  const char *r = report.c_str();
  ASSERT_EQ(1, sscanf(strstr(r, "acked "), "acked %llu", &acked)) << report;
  ASSERT_EQ(1, sscanf(strstr(r, "full "), "full %d", &full_rc)) << report;
  ASSERT_EQ(1, sscanf(strstr(r, "still "), "still %d", &still_rc)) << report;
  ASSERT_EQ(3, sscanf(strstr(r, "read "), "read %llu %llu %d", &head, &count, &dense)) << report;
  ASSERT_EQ(1, sscanf(strstr(r, "writes_failed "), "writes_failed %llu", &writes_failed));
  ASSERT_EQ(3, sscanf(strstr(r, "freed "), "freed %d %llu %d", &freed_rc, &first, &dup));
  // Full: the failing append and the next are ES_ENOSPACE naming the cause.
  EXPECT_EQ(ES_ENOSPACE, full_rc) << report;
  EXPECT_NE(std::string::npos, report.find("File too large")) << report;
  EXPECT_NE(std::string::npos, report.find(dir)) << report;
  EXPECT_EQ(ES_ENOSPACE, still_rc) << report;
  EXPECT_EQ(0u, writes_failed) << "a full disk is not a failed sync";
  // Reads go on and see exactly what was acknowledged.
  EXPECT_EQ(acked, head);
  EXPECT_EQ(acked, count);
  EXPECT_EQ(1, dense);
  // Space again: the append that failed is stored as new, right after.
  EXPECT_EQ(ES_OK, freed_rc) << report;
  EXPECT_EQ(acked + 1, first);
  EXPECT_EQ(0, dup);
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ExpectGapFree(WholeLog(b), acked + 5);
  es_backend_close(b);
}

// Backups while another process writes and keeps growing its map (from
// 64 KiB): every copy is a gap-free prefix that opens as a store of its own,
// at least as long as the previous one, while the writer goes on.
TEST(LmdbBackend, BackupsWhileAnotherProcessWritesAndGrowsTheMap) {
  std::string dir = TempDir();
  int fds[2];
  ASSERT_EQ(0, pipe(fds));
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    es_backend_t *b = Open(dir, 64 << 10);
    if (!b) _exit(3);
    if (write(fds[1], "o", 1) != 1) _exit(4);  // open: backups may start
    for (int i = 0; i < 100000; i++)
      if (Append(b, "s" + std::to_string(i % 11), 1 + i % 4, {}, 300).rc != ES_OK) _exit(5);
    _exit(0);
  }
  close(fds[1]);
  char c;
  ASSERT_EQ(1, read(fds[0], &c, 1));
  close(fds[0]);
  uint64_t previous = 0;
  for (int round = 0; round < 15; round++) {
    std::string out = TempDir() + "/copy";
    es_lmdb_backup_info_t info{};
    es_err_t err{};
    ASSERT_EQ(ES_OK, es_lmdb_backup(dir.c_str(), out.c_str(), &info, &err)) << err.msg;
    EXPECT_GE(info.head, previous);
    previous = info.head;
    es_backend_t *copy = Open(out);
    ASSERT_NE(nullptr, copy);
    uint64_t head = 0;
    ASSERT_EQ(ES_OK, es_backend_head(copy, &head, &err));
    EXPECT_EQ(info.head, head);
    ExpectGapFree(WholeLog(copy), head);
    es_backend_close(copy);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(pid, waitpid(pid, &status, 0));
  EXPECT_TRUE(WIFSIGNALED(status)) << "the writer stopped early: " << status;
  EXPECT_GT(previous, 0u);
  printf("last copy: %llu events\n", (unsigned long long)previous);
  // A killed writer leaves a store a backup still copies.
  std::string out = TempDir() + "/after";
  es_lmdb_backup_info_t info{};
  es_err_t err{};
  ASSERT_EQ(ES_OK, es_lmdb_backup(dir.c_str(), out.c_str(), &info, &err)) << err.msg;
  EXPECT_GE(info.head, previous);
  EXPECT_GT(info.bytes, 0u);
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

// A restart with a large store serves at once: opening reads the head from
// the log's last key and nothing else (no scan of the log, no recovery step:
// LMDB's last synced meta page is the store), so a store of 1,000,000 events
// answers a read and takes an append within a second of being opened.
TEST(LmdbBackend, AStoreOfAMillionEventsServesWithinASecondOfOpening) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  // Built in big appends with small payloads to keep the test short: 1,000
  // appends of 1,000 events over 100 streams.
  const uint64_t kEvents = 1000000, kBatch = 1000;
  for (uint64_t i = 0; i < kEvents / kBatch; i++) {
    Appended a = Append(b, "big-" + std::to_string(i % 100), kBatch);
    ASSERT_EQ(ES_OK, a.rc) << a.err.msg;
  }
  es_backend_close(b);

  auto t0 = std::chrono::steady_clock::now();
  b = Open(dir);
  ASSERT_NE(nullptr, b);
  uint64_t head = 0;
  es_err_t err{};
  ASSERT_EQ(ES_OK, es_backend_head(b, &head, &err));
  EXPECT_EQ(kEvents, head);
  // The last page of the log and of a stream.
  es_read_all_req_t all;
  std::memset(&all, 0, sizeof all);
  all.from_position = kEvents - 9;
  all.max_count = 100;
  all.direction = ES_FORWARD;
  all.max_bytes = 4 << 20;
  es_page_t page;
  std::memset(&page, 0, sizeof page);
  ASSERT_EQ(ES_OK, es_backend_read_all(b, &all, &page, &err)) << err.msg;
  EXPECT_EQ(10u, page.count);
  EXPECT_TRUE(page.is_end);
  es_page_free(&page);
  es_read_stream_req_t rs;
  std::memset(&rs, 0, sizeof rs);
  rs.stream_id = "big-99";
  rs.max_count = 10;
  rs.direction = ES_BACKWARD;
  rs.max_bytes = 4 << 20;
  std::memset(&page, 0, sizeof page);
  ASSERT_EQ(ES_OK, es_backend_read_stream(b, &rs, &page, &err)) << err.msg;
  ASSERT_EQ(10u, page.count);
  EXPECT_EQ(kEvents, page.events[0].global_position);
  EXPECT_EQ(10 * kBatch, page.events[0].stream_version);
  es_page_free(&page);
  Appended next = Append(b, "big-0", 1);
  ASSERT_EQ(ES_OK, next.rc) << next.err.msg;
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(kEvents + 1, next.res.first_position);
  EXPECT_EQ(10 * kBatch + 1, next.res.first_version);
  double ms = std::chrono::duration<double, std::milli>(took).count();
  printf("open, reads and an append on a store of %llu events: %.1f ms\n",
         (unsigned long long)kEvents, ms);
  EXPECT_LT(ms, 1000.0);
  es_backend_close(b);
}

// Bytes on disk per event: what the record format, the index's layout and
// the page fill add up to. 100,000 events of 256-byte payloads (with the
// test's event type, two metadata entries and a correlation id), appended
// 100 at a time over 100 streams as a busy store would get them. The
// fixed-width record header and an index of (stream, version) keys took
// 512 bytes here; varint headers and the index as fixed-size sorted lists
// appended in order, 435; the stream and the event type named by number
// instead of by their names in every record (record format 3), 404.
// The pages are counted (up to the last one written); the file is larger
// by the zeros written ahead of them (zero_ahead), at most 3 MiB.
TEST(LmdbBackend, AnEventOf256BytesTakesLessThan410BytesOnDisk) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  const uint64_t kEvents = 100000, kBatch = 100;
  for (uint64_t i = 0; i < kEvents / kBatch; i++) {
    Appended a = Append(b, "order-" + std::to_string(i % 100), kBatch, {}, 256);
    ASSERT_EQ(ES_OK, a.rc) << a.err.msg;
  }
  uint64_t used = Stat(b, "lmdb_map_used_bytes");
  es_backend_close(b);
  struct stat st;
  ASSERT_EQ(0, stat((dir + "/data.mdb").c_str(), &st));
  double per_event = double(used) / double(kEvents);
  printf("data.mdb: %llu bytes of pages (%lld in the file) for %llu events: %.1f bytes per event\n",
         (unsigned long long)used, (long long)st.st_size, (unsigned long long)kEvents, per_event);
  EXPECT_LT(per_event, 410.0);
  EXPECT_GE(uint64_t(st.st_size), used);
  EXPECT_LE(uint64_t(st.st_size), used + (3u << 20));
}

// The zeros written ahead of LMDB's last page (zero_ahead) are there after
// every commit, 1 to 3 MiB of them, and never land on a page: 40 MB of
// events, appended 50 at a time, read back whole and in order after a
// reopen. Fails if the zeros are written over the file's end as LMDB left
// it (a page of the log read back as zeros), or not at all.
TEST(LmdbBackend, TheFileIsWrittenAheadOfItsPagesAndTheZerosNeverLandOnAPage) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  const size_t kBatch = 50, kPayload = 1000, kBatches = 800;
  for (size_t i = 0; i < kBatches; i++) {
    Appended a = Append(b, i % 2 ? "odd" : "even", kBatch, {}, kPayload);
    ASSERT_EQ(ES_OK, a.rc) << a.err.msg;
    uint64_t used = Stat(b, "lmdb_map_used_bytes");
    struct stat st;
    ASSERT_EQ(0, stat((dir + "/data.mdb").c_str(), &st));
    // Refilled before each group to 3 MiB past the pages, when less than
    // 2 MiB was left: at least 2 MiB less this group's pages after it.
    ASSERT_GE(uint64_t(st.st_size), used + (1u << 20)) << "after append " << i;
    ASSERT_LE(uint64_t(st.st_size), used + (3u << 20)) << "after append " << i;
  }
  es_backend_close(b);
  b = Open(dir);
  ASSERT_NE(nullptr, b);
  std::vector<Ev> log = WholeLog(b);
  ASSERT_EQ(kBatch * kBatches, log.size());
  for (size_t p = 0; p < log.size(); p++) {
    std::string want =
        std::string((p / kBatch) % 2 ? "odd" : "even") + "/" + std::to_string(p % kBatch);
    want.resize(kPayload, 'x');
    ASSERT_EQ(p + 1, log[p].position);
    ASSERT_EQ(want, log[p].payload) << "event " << p + 1;
  }
  es_backend_close(b);
}

// A closed store in dir opened with LMDB itself, as another program or an
// earlier version of the backend would: its environment and one
// transaction (read-only when flags has MDB_RDONLY), aborted at the end of
// the scope unless Commit() was called. txn is NULL when opening failed.
struct RawStore {
  MDB_env *env = nullptr;
  MDB_txn *txn = nullptr;
  explicit RawStore(const std::string &dir, unsigned flags = 0) {
    EXPECT_EQ(0, mdb_env_create(&env));
    EXPECT_EQ(0, mdb_env_set_maxdbs(env, 16));
    int rc = mdb_env_open(env, dir.c_str(), flags, 0600);
    EXPECT_EQ(0, rc) << mdb_strerror(rc);
    if (rc == 0) {
      EXPECT_EQ(0, mdb_txn_begin(env, nullptr, flags & MDB_RDONLY, &txn));
    }
  }
  int Commit() {
    int rc = mdb_txn_commit(txn);
    txn = nullptr;
    return rc;
  }
  ~RawStore() {
    if (txn) mdb_txn_abort(txn);
    mdb_env_close(env);
  }
};
// A store whose records are in an earlier format (written before the format
// was named in the `format` table) is refused with the reason, not misread.
TEST(LmdbBackend, AStoreInAnEarlierRecordFormatIsRefused) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", 2).rc);
  es_backend_close(b);
  {  // Take the format's name away, as a store of the earlier format lacks it.
    RawStore raw(dir);
    ASSERT_NE(nullptr, raw.txn);
    MDB_dbi fmt;
    ASSERT_EQ(0, mdb_dbi_open(raw.txn, "format", 0, &fmt));
    ASSERT_EQ(0, mdb_drop(raw.txn, fmt, 1));
    ASSERT_EQ(0, raw.Commit());
  }

  es_lmdb_options_t opts;
  es_lmdb_options_default(&opts);
  es_err_t err{};
  b = nullptr;
  EXPECT_EQ(ES_EINTERNAL, es_lmdb_open(dir.c_str(), &opts, &b, &err));
  EXPECT_EQ(nullptr, b);
  EXPECT_NE(nullptr, strstr(err.msg, "earlier record format")) << err.msg;
  EXPECT_NE(nullptr, strstr(err.msg, dir.c_str())) << err.msg;
  // An empty store without the name is simply a new store.
  std::string fresh = TempDir();
  b = Open(fresh);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", 1).rc);
  es_backend_close(b);
  b = Open(fresh);
  ASSERT_NE(nullptr, b);
  es_backend_close(b);
}

// Writes `format` as the record format of the closed store in dir, as an
// earlier version of the backend would have left it.
void MarkRecordFormat(const std::string &dir, uint32_t format) {
  RawStore raw(dir);
  ASSERT_NE(nullptr, raw.txn);
  MDB_dbi fmt;
  ASSERT_EQ(0, mdb_dbi_open(raw.txn, "format", 0, &fmt));
  MDB_val k = {7, const_cast<char *>("records")}, v = {sizeof format, &format};
  ASSERT_EQ(0, mdb_put(raw.txn, fmt, &k, &v, 0));
  ASSERT_EQ(0, raw.Commit());
}

// Opening dir fails, naming the store's format, the one this version reads
// and the directory.
void ExpectRefusedAsFormat(const std::string &dir, uint32_t format) {
  es_lmdb_options_t opts;
  es_lmdb_options_default(&opts);
  es_err_t err{};
  es_backend_t *b = nullptr;
  EXPECT_EQ(ES_EINTERNAL, es_lmdb_open(dir.c_str(), &opts, &b, &err));
  EXPECT_EQ(nullptr, b);
  std::string theirs = "record format " + std::to_string(format) + " of the lmdb backend";
  EXPECT_NE(nullptr, strstr(err.msg, theirs.c_str())) << err.msg;
  EXPECT_NE(nullptr, strstr(err.msg, "reads format 5 only")) << err.msg;
  EXPECT_NE(nullptr, strstr(err.msg, dir.c_str())) << err.msg;
}

// A stream read with ReadStream in pages of page_size from version `from`
// (0 = its end, backward), as (version, position) pairs.
std::vector<std::pair<uint64_t, uint64_t>> ReadStreamAll(es_backend_t *b, const std::string &id,
                                                         uint32_t page_size, int direction,
                                                         uint64_t from) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (int guard = 0; guard < 100000; guard++) {
    es_read_stream_req_t rs;
    std::memset(&rs, 0, sizeof rs);
    rs.stream_id = id.c_str();
    rs.from_version = from;
    rs.max_count = page_size;
    rs.direction = direction;
    rs.max_bytes = 4 << 20;
    es_page_t page;
    std::memset(&page, 0, sizeof page);
    es_err_t err{};
    int rc = es_backend_read_stream(b, &rs, &page, &err);
    EXPECT_EQ(ES_OK, rc) << err.msg;
    if (rc) break;
    for (size_t i = 0; i < page.count; i++)
      out.push_back({page.events[i].stream_version, page.events[i].global_position});
    from = page.next;
    bool end = page.is_end;
    es_page_free(&page);
    if (end) break;
  }
  return out;
}

// The stream index keeps 64 versions a chunk (`versions`). Appends of 7, 1
// and 64 events cross chunk boundaries inside an append and between them;
// every read, forward and backward, from every version near a boundary and
// in pages of 1, 63, 64 and 65, returns each version once, in order, at the
// position the append answered.
TEST(LmdbBackend, StreamReadsCrossTheIndexChunksOfSixtyFourVersions) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  std::vector<uint64_t> pos_of(1, 0);  // [version] -> position, for stream "c"
  for (size_t n : {7, 1, 64, 7, 7, 7, 7, 7, 7, 7, 7, 7, 64, 1, 7}) {
    Appended a = Append(b, "c", n);
    ASSERT_EQ(ES_OK, a.rc) << a.err.msg;
    ASSERT_EQ(ES_OK, Append(b, "other", 3).rc);  // positions of "c" are not contiguous
    for (size_t i = 0; i < n; i++) pos_of.push_back(a.res.first_position + i);
  }
  const uint64_t last = pos_of.size() - 1;  // 201
  for (int reopen = 0; reopen < 2; reopen++) {
    for (uint32_t page : {1u, 63u, 64u, 65u}) {
      for (uint64_t from : {1ull, 63ull, 64ull, 65ull, 128ull, 129ull, 192ull, 200ull, 201ull}) {
        auto fwd = ReadStreamAll(b, "c", page, ES_FORWARD, from);
        ASSERT_EQ(last - from + 1, fwd.size()) << page << " " << from;
        for (size_t i = 0; i < fwd.size(); i++) {
          ASSERT_EQ(from + i, fwd[i].first);
          ASSERT_EQ(pos_of[from + i], fwd[i].second) << "version " << from + i;
        }
        auto back = ReadStreamAll(b, "c", page, ES_BACKWARD, from);
        ASSERT_EQ(from, back.size()) << page << " " << from;
        for (size_t i = 0; i < back.size(); i++) {
          ASSERT_EQ(from - i, back[i].first);
          ASSERT_EQ(pos_of[from - i], back[i].second) << "version " << from - i;
        }
      }
    }
    es_backend_close(b);
    b = Open(dir);
    ASSERT_NE(nullptr, b);
  }
  es_backend_close(b);
}

// Rewrites the closed store in dir as record format 4 left it: the stream
// index as one sorted duplicate list per stream in `index` (number ->
// version, position, both big-endian) instead of `versions`, and the
// format named 4. drop_version (when not 0) is left out of every list, as
// damage.
void RewriteAsFormat4(const std::string &dir, uint64_t drop_version = 0) {
  RawStore raw(dir);
  MDB_txn *txn = raw.txn;
  ASSERT_NE(nullptr, txn);
  MDB_dbi versions, index;
  ASSERT_EQ(0, mdb_dbi_open(txn, "versions", 0, &versions));
  ASSERT_EQ(0, mdb_dbi_open(txn, "index", MDB_CREATE | MDB_INTEGERKEY | MDB_DUPSORT | MDB_DUPFIXED,
                            &index));
  MDB_cursor *cur = nullptr;
  ASSERT_EQ(0, mdb_cursor_open(txn, versions, &cur));
  MDB_val k, v;
  auto be64 = [](const uint8_t *p) {
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x = (x << 8) | p[i];
    return x;
  };
  size_t entries = 0;
  for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    ASSERT_EQ(16u, k.mv_size);
    size_t number = be64(static_cast<const uint8_t *>(k.mv_data));
    uint64_t chunk = be64(static_cast<const uint8_t *>(k.mv_data) + 8);
    for (size_t i = 0; i < v.mv_size / 8; i++) {
      uint64_t pos;
      std::memcpy(&pos, static_cast<const uint8_t *>(v.mv_data) + 8 * i, 8);
      uint64_t version = chunk * 64 + i + 1;
      if (version == drop_version) continue;
      uint8_t entry[16];
      for (int j = 0; j < 8; j++) {
        entry[j] = uint8_t(version >> (56 - 8 * j));
        entry[8 + j] = uint8_t(pos >> (56 - 8 * j));
      }
      MDB_val ik = {sizeof number, &number}, iv = {sizeof entry, entry};
      ASSERT_EQ(0, mdb_put(txn, index, &ik, &iv, 0));
      entries++;
    }
  }
  mdb_cursor_close(cur);
  ASSERT_GT(entries, 0u);
  ASSERT_EQ(0, mdb_drop(txn, versions, 1));
  MDB_dbi fmt;
  ASSERT_EQ(0, mdb_dbi_open(txn, "format", 0, &fmt));
  uint32_t four = 4;
  MDB_val fk = {7, const_cast<char *>("records")}, fv = {sizeof four, &four};
  ASSERT_EQ(0, mdb_put(txn, fmt, &fk, &fv, 0));
  ASSERT_EQ(0, raw.Commit());
}

// The record format named in the closed store in dir, and whether it has a
// table of that name.
uint32_t StoredFormat(const std::string &dir, const char *table, bool *has_table) {
  RawStore raw(dir, MDB_RDONLY);
  *has_table = false;
  if (!raw.txn) return 0;
  MDB_dbi fmt, t;
  uint32_t format = 0;
  MDB_val k = {7, const_cast<char *>("records")}, v;
  if (mdb_dbi_open(raw.txn, "format", 0, &fmt) == 0 && mdb_get(raw.txn, fmt, &k, &v) == 0 &&
      v.mv_size == sizeof format)
    std::memcpy(&format, v.mv_data, sizeof format);
  *has_table = mdb_dbi_open(raw.txn, table, 0, &t) == 0;
  return format;
}

// A store of record format 4 (a duplicate list per stream as its index) is
// converted when it is opened: every stream reads as before, forward and
// backward, appends go on at the next versions, and the store is format 5
// without the old table. Fails without the conversion (refused as format 4).
TEST(LmdbBackend, AStoreInRecordFormat4IsConvertedWhenOpened) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  const std::vector<std::pair<std::string, size_t>> streams = {
      {"long", 150}, {"chunk", 64}, {"one", 1}, {"mid", 65}};
  for (int round = 0; round < 3; round++)
    for (const auto &st : streams) {
      size_t n = st.second / 3 + (round == 2 ? st.second % 3 : 0);
      if (n > 0) {
        ASSERT_EQ(ES_OK, Append(b, st.first, n).rc);
      }
    }
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> before;
  for (const auto &st : streams) before.push_back(ReadStreamAll(b, st.first, 1000, ES_FORWARD, 1));
  es_backend_close(b);
  RewriteAsFormat4(dir);
  bool has_index = false, has_versions = true;
  ASSERT_EQ(4u, StoredFormat(dir, "versions", &has_versions));
  ASSERT_FALSE(has_versions);

  b = Open(dir);
  ASSERT_NE(nullptr, b);
  for (size_t i = 0; i < streams.size(); i++) {
    auto fwd = ReadStreamAll(b, streams[i].first, 7, ES_FORWARD, 1);
    EXPECT_EQ(before[i], fwd) << streams[i].first;
    EXPECT_EQ(streams[i].second, fwd.size()) << streams[i].first;
    auto back = ReadStreamAll(b, streams[i].first, 7, ES_BACKWARD, 0);
    std::reverse(back.begin(), back.end());
    EXPECT_EQ(before[i], back) << streams[i].first;
  }
  Appended next = Append(b, "long", 2);
  ASSERT_EQ(ES_OK, next.rc) << next.err.msg;
  EXPECT_EQ(151u, next.res.first_version);
  EXPECT_EQ(152u, ReadStreamAll(b, "long", 1000, ES_FORWARD, 1).size());
  es_backend_close(b);
  EXPECT_EQ(5u, StoredFormat(dir, "index", &has_index));
  EXPECT_FALSE(has_index);
  StoredFormat(dir, "versions", &has_versions);
  EXPECT_TRUE(has_versions);
}

// Damage in the stream index is refused, never read past: a format-4 list
// with a version missing fails the conversion (the store is refused at open,
// naming the directory, and left in format 4), and a format-5 chunk cut
// short fails the read of the versions it no longer holds while the others
// still read.
TEST(LmdbBackend, ADamagedStreamIndexIsRefusedNotMisread) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", 100).rc);
  es_backend_close(b);
  RewriteAsFormat4(dir, 70);
  es_lmdb_options_t opts;
  es_lmdb_options_default(&opts);
  es_err_t err{};
  b = nullptr;
  EXPECT_EQ(ES_EINTERNAL, es_lmdb_open(dir.c_str(), &opts, &b, &err));
  EXPECT_EQ(nullptr, b);
  EXPECT_NE(nullptr, strstr(err.msg, "converting its stream index")) << err.msg;
  EXPECT_NE(nullptr, strstr(err.msg, dir.c_str())) << err.msg;
  bool has_index = false;
  EXPECT_EQ(4u, StoredFormat(dir, "index", &has_index));
  EXPECT_TRUE(has_index);

  std::string cut = TempDir();
  b = Open(cut);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", 100).rc);
  es_backend_close(b);
  {  // the second chunk (versions 65..100) keeps 10 of its 36 positions
    RawStore raw(cut);
    MDB_txn *txn = raw.txn;
    ASSERT_NE(nullptr, txn);
    MDB_dbi versions;
    ASSERT_EQ(0, mdb_dbi_open(txn, "versions", 0, &versions));
    MDB_cursor *cur = nullptr;
    ASSERT_EQ(0, mdb_cursor_open(txn, versions, &cur));
    MDB_val k, v;
    ASSERT_EQ(0, mdb_cursor_get(cur, &k, &v, MDB_LAST));
    ASSERT_EQ(36u * 8, v.mv_size);
    std::vector<uint8_t> key(static_cast<uint8_t *>(k.mv_data),
                             static_cast<uint8_t *>(k.mv_data) + k.mv_size);
    std::vector<uint8_t> val(static_cast<uint8_t *>(v.mv_data),
                             static_cast<uint8_t *>(v.mv_data) + 10 * 8);
    mdb_cursor_close(cur);
    MDB_val nk = {key.size(), key.data()}, nv = {val.size(), val.data()};
    ASSERT_EQ(0, mdb_put(txn, versions, &nk, &nv, 0));
    ASSERT_EQ(0, raw.Commit());
  }
  b = Open(cut);
  ASSERT_NE(nullptr, b);
  es_read_stream_req_t rs;
  std::memset(&rs, 0, sizeof rs);
  rs.stream_id = "s";
  rs.from_version = 1;
  rs.max_count = 70;  // versions 1..70 (and 71, looked at to end the page): all still held
  rs.direction = ES_FORWARD;
  rs.max_bytes = 4 << 20;
  es_page_t page;
  std::memset(&page, 0, sizeof page);
  es_err_t rerr{};
  ASSERT_EQ(ES_OK, es_backend_read_stream(b, &rs, &page, &rerr)) << rerr.msg;
  EXPECT_EQ(70u, page.count);
  es_page_free(&page);
  rs.from_version = 80;
  rs.max_count = 5;
  std::memset(&page, 0, sizeof page);
  EXPECT_EQ(ES_EUNAVAIL, es_backend_read_stream(b, &rs, &page, &rerr));
  EXPECT_NE(nullptr, strstr(rerr.msg, "MDB_CORRUPTED")) << rerr.msg;
  EXPECT_EQ(0u, page.count);
  es_page_free(&page);
  rs.from_version = 60;
  std::memset(&page, 0, sizeof page);
  EXPECT_EQ(ES_OK, es_backend_read_stream(b, &rs, &page, &rerr)) << rerr.msg;
  EXPECT_EQ(5u, page.count);
  es_page_free(&page);
  es_backend_close(b);
}

// A store of record format 2 (stream ids and event types in every record)
// is refused with the reason: this version would read its stream id as a
// number.
TEST(LmdbBackend, AStoreInRecordFormat2IsRefused) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", 2).rc);
  es_backend_close(b);
  MarkRecordFormat(dir, 2);
  ExpectRefusedAsFormat(dir, 2);

  // A store of format 2 without events holds nothing to misread: it opens
  // and takes the current format.
  std::string empty = TempDir();
  b = Open(empty);
  ASSERT_NE(nullptr, b);
  es_backend_close(b);
  MarkRecordFormat(empty, 2);
  b = Open(empty);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", 1).rc);
  es_backend_close(b);
  b = Open(empty);
  ASSERT_NE(nullptr, b);
  EXPECT_EQ(1u, WholeLog(b).size());
  es_backend_close(b);
}

namespace {

// Appends one event per type in types to stream, with that stream type
// (NULL = none given) and ids (or assigned when empty).
Appended AppendNamed(es_backend_t *b, const std::string &stream, const char *stream_type,
                     const std::vector<std::string> &types,
                     const std::vector<std::string> &ids = {}) {
  es_limits_t limits;
  es_limits_default(&limits);
  std::vector<es_event_data_t> evs(types.size());
  for (size_t i = 0; i < types.size(); i++) {
    es_event_data_t &e = evs[i];
    std::memset(&e, 0, sizeof e);
    e.event_id = ids.empty() ? "" : ids[i].c_str();
    e.event_type = types[i].c_str();
    e.content_type = "";
    e.payload = reinterpret_cast<const uint8_t *>(types[i].data());
    e.payload_len = types[i].size();
    e.correlation_id = "";
    e.causation_id = "";
  }
  es_append_req_t req;
  std::memset(&req, 0, sizeof req);
  req.stream_id = stream.c_str();
  req.stream_type = stream_type;
  req.expected_kind = ES_EXPECT_ANY;
  req.events = evs.data();
  req.event_count = evs.size();
  Appended a{};
  a.rc = es_append_prepare(&limits, &req, &a.err);
  if (a.rc == ES_OK) a.rc = es_backend_append(b, &req, &a.res, &a.err);
  return a;
}

}  // namespace

// Records name their stream and event type by number (lmdb_internal.h);
// every read gives the names back: ReadAll forward, backward and filtered by
// type, ReadStream, an idempotent retry's lookup, after a reopen too. More
// streams and types than a read's name cache has slots, interleaved so that
// slots are taken over within a page; a stream that gets its type later
// shows it on all its events; type numbers go on after a reopen.
TEST(LmdbBackend, StreamsAndEventTypesAreNamedByNumberAndReadBackByName) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  const int kStreams = 100, kTypes = 90, kRounds = 3;
  auto stream_of = [](int s) { return "named-" + std::to_string(s); };
  auto type_of = [&](int s, int round) {
    return "Type" + std::to_string((s * 7 + round * 13) % kTypes);
  };
  auto kind_of = [](int s) { return "Kind" + std::to_string(s % 3); };
  for (int round = 0; round < kRounds; round++) {
    for (int s = 0; s < kStreams; s++) {
      // Odd streams get their type only from the second round on.
      std::string kind = kind_of(s);
      const char *st = s % 2 && round == 0 ? nullptr : kind.c_str();
      std::vector<std::string> types = {type_of(s, round), "Common"};
      std::vector<std::string> ids = {Uuid(1000 + (uint64_t)(round * kStreams + s) * 2),
                                      Uuid(1001 + (uint64_t)(round * kStreams + s) * 2)};
      Appended a = AppendNamed(b, stream_of(s), st, types, ids);
      ASSERT_EQ(ES_OK, a.rc) << a.err.msg;
    }
  }
  const size_t kEvents = (size_t)kStreams * kRounds * 2;
  auto check = [&](es_backend_t *store) {
    for (uint32_t page : {7u, 1000u}) {
      for (int dir_ : {ES_FORWARD, ES_BACKWARD}) {
        std::vector<Ev> log = ReadLog(store, page, dir_);
        ASSERT_EQ(kEvents, log.size());
        for (size_t i = 0; i < log.size(); i++) {
          const Ev &e = log[dir_ == ES_FORWARD ? i : log.size() - 1 - i];
          size_t n = i / 2;  // the append: round * kStreams + s
          int round = (int)(n / kStreams), s = (int)(n % kStreams);
          ASSERT_EQ(i + 1, e.position);
          EXPECT_EQ(stream_of(s), e.stream) << e.position;
          EXPECT_EQ(kind_of(s), e.stream_type) << e.position;
          EXPECT_EQ(i % 2 ? "Common" : type_of(s, round), e.type) << e.position;
          EXPECT_EQ(e.type, e.payload) << e.position;
          EXPECT_EQ((uint64_t)(round * 2 + i % 2 + 1), e.version) << e.position;
        }
      }
    }
    // Filtered by an event type: exactly that type's events, by name.
    std::vector<Ev> t5 = ReadLog(store, 11, ES_FORWARD, "Type5");
    size_t want = 0;
    for (int round = 0; round < kRounds; round++)
      for (int s = 0; s < kStreams; s++) want += type_of(s, round) == "Type5";
    EXPECT_EQ(want, t5.size());
    for (const Ev &e : t5) EXPECT_EQ("Type5", e.type);
    // ReadStream of every stream.
    for (int s = 0; s < kStreams; s++) {
      es_read_stream_req_t rs;
      std::memset(&rs, 0, sizeof rs);
      std::string id = stream_of(s);
      rs.stream_id = id.c_str();
      rs.max_count = 100;
      rs.direction = ES_FORWARD;
      rs.max_bytes = 4 << 20;
      es_page_t page;
      std::memset(&page, 0, sizeof page);
      es_err_t err{};
      ASSERT_EQ(ES_OK, es_backend_read_stream(store, &rs, &page, &err)) << err.msg;
      ASSERT_EQ((size_t)kRounds * 2, page.count);
      for (size_t i = 0; i < page.count; i++) {
        EXPECT_EQ(id, page.events[i].stream_id);
        EXPECT_EQ(kind_of(s), page.events[i].stream_type);
        EXPECT_EQ(i % 2 ? std::string("Common") : type_of(s, (int)i / 2),
                  page.events[i].event_type);
      }
      es_page_free(&page);
    }
    // An exact retry is a duplicate (the stored id's stream is found by its
    // number); the same id in another stream is refused.
    Appended retry = AppendNamed(
        store, stream_of(42), nullptr, {type_of(42, 1), "Common"},
        {Uuid(1000 + (uint64_t)(kStreams + 42) * 2), Uuid(1001 + (uint64_t)(kStreams + 42) * 2)});
    ASSERT_EQ(ES_OK, retry.rc) << retry.err.msg;
    EXPECT_TRUE(retry.res.duplicate);
    EXPECT_EQ((uint64_t)(kStreams + 42) * 2 + 1, retry.res.first_position);
    Appended elsewhere = AppendNamed(store, stream_of(43), nullptr, {"Common"}, {Uuid(1000)});
    EXPECT_NE(ES_OK, elsewhere.rc);
  };
  check(b);
  es_backend_close(b);

  b = Open(dir);
  ASSERT_NE(nullptr, b);
  check(b);
  // New types after the reopen take new numbers; old ones keep theirs.
  Appended more = AppendNamed(b, "after", "Later", {"Fresh", "Type5", "Fresher", "Fresh"});
  ASSERT_EQ(ES_OK, more.rc) << more.err.msg;
  std::vector<Ev> log = ReadLog(b, 1000, ES_FORWARD);
  ASSERT_EQ(kEvents + 4, log.size());
  const char *want[] = {"Fresh", "Type5", "Fresher", "Fresh"};
  for (size_t i = 0; i < 4; i++) {
    EXPECT_EQ(want[i], log[kEvents + i].type);
    EXPECT_EQ("after", log[kEvents + i].stream);
    EXPECT_EQ("Later", log[kEvents + i].stream_type);
  }
  EXPECT_EQ("Type0", log[0].type);
  es_backend_close(b);
}

// A store of record format 3 (no tags in the records and no tag index) is
// refused with the reason once it holds events: reads by query would miss
// its events.
TEST(LmdbBackend, AStoreInRecordFormat3IsRefused) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", 2).rc);
  es_backend_close(b);
  MarkRecordFormat(dir, 3);
  ExpectRefusedAsFormat(dir, 3);
}

namespace {

struct TagEv {
  std::string type;
  std::vector<std::string> tags;
};

// Appends evs to stream, each with its tags, under cond (NULL = none).
Appended AppendTags(es_backend_t *b, const std::string &stream, const std::vector<TagEv> &in,
                    const es_append_condition_t *cond = nullptr) {
  es_limits_t limits;
  es_limits_default(&limits);
  std::vector<es_event_data_t> evs(in.size());
  std::vector<std::vector<const char *>> tags(in.size());
  for (size_t i = 0; i < in.size(); i++) {
    for (const std::string &t : in[i].tags) tags[i].push_back(t.c_str());
    es_event_data_t &e = evs[i];
    std::memset(&e, 0, sizeof e);
    e.event_id = "";
    e.event_type = in[i].type.c_str();
    e.content_type = "";
    e.payload = reinterpret_cast<const uint8_t *>(in[i].type.data());
    e.payload_len = in[i].type.size();
    e.correlation_id = "";
    e.causation_id = "";
    e.tags = tags[i].empty() ? nullptr : tags[i].data();
    e.tag_count = tags[i].size();
  }
  es_append_req_t req;
  std::memset(&req, 0, sizeof req);
  req.stream_id = stream.c_str();
  req.stream_type = "";
  req.expected_kind = ES_EXPECT_ANY;
  req.events = evs.data();
  req.event_count = evs.size();
  req.condition = cond;
  Appended a{};
  a.rc = es_append_prepare(&limits, &req, &a.err);
  if (a.rc == ES_OK) a.rc = es_backend_append(b, &req, &a.res, &a.err);
  return a;
}

struct Tagged {
  uint64_t position;
  std::string type;
  std::vector<std::string> tags;
};

void Collect(const es_page_t &page, std::vector<Tagged> *out) {
  for (size_t i = 0; i < page.count; i++) {
    const es_recorded_t &r = page.events[i];
    Tagged t{r.global_position, r.event_type, {}};
    for (size_t k = 0; k < r.tag_count; k++) t.tags.push_back(r.tags[k]);
    out->push_back(t);
  }
}

// A query item owning its strings.
struct Item {
  std::vector<std::string> types, tags;
  std::vector<const char *> type_ptrs, tag_ptrs;
};

// One ReadAll page with items (none = no filter); fills *next and *is_end.
std::vector<Tagged> ReadQuery(es_backend_t *b, std::vector<Item> items, int direction,
                              uint64_t from = 0, uint32_t max_count = 1000, uint64_t max_scan = 0,
                              uint64_t *next = nullptr, bool *is_end = nullptr) {
  std::vector<es_query_item_t> q(items.size());
  for (size_t i = 0; i < items.size(); i++) {
    for (const std::string &t : items[i].types) items[i].type_ptrs.push_back(t.c_str());
    for (const std::string &t : items[i].tags) items[i].tag_ptrs.push_back(t.c_str());
    q[i] = {items[i].type_ptrs.data(), items[i].type_ptrs.size(), items[i].tag_ptrs.data(),
            items[i].tag_ptrs.size()};
  }
  es_read_all_req_t req;
  std::memset(&req, 0, sizeof req);
  req.from_position = from ? from : (direction == ES_FORWARD ? 1 : 0);
  req.max_count = max_count;
  req.direction = direction;
  req.max_bytes = 4 << 20;
  req.max_scan = max_scan;
  req.filter.items = q.empty() ? nullptr : q.data();
  req.filter.item_count = q.size();
  es_page_t page;
  std::memset(&page, 0, sizeof page);
  es_err_t err{};
  std::vector<Tagged> out;
  EXPECT_EQ(ES_OK, es_backend_read_all(b, &req, &page, &err)) << err.msg;
  Collect(page, &out);
  if (next) *next = page.next;
  if (is_end) *is_end = page.is_end;
  es_page_free(&page);
  return out;
}

std::vector<uint64_t> Positions(const std::vector<Tagged> &evs) {
  std::vector<uint64_t> p;
  for (const Tagged &e : evs) p.push_back(e.position);
  return p;
}

}  // namespace

// Tags are stored in the record, in the order appended, and every read
// returns them: ReadAll unfiltered and by query (through the tag index, and
// through the scan for an item of types only), ReadStream, after a reopen.
TEST(LmdbBackend, TagsAreStoredInOrderAndReturnedByEveryRead) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, AppendTags(b, "course-1",
                              {{"CourseDefined", {"course:c1"}},
                               {"StudentSubscribed", {"student:s1", "course:c1"}},
                               {"Untagged", {}}})
                       .rc);
  ASSERT_EQ(ES_OK, AppendTags(b, "student-1", {{"StudentRegistered", {"student:s1"}}}).rc);
  auto check = [](es_backend_t *store) {
    const std::vector<std::vector<std::string>> want = {
        {"course:c1"}, {"student:s1", "course:c1"}, {}, {"student:s1"}};
    std::vector<Tagged> all = ReadQuery(store, {}, ES_FORWARD);
    ASSERT_EQ(4u, all.size());
    for (size_t i = 0; i < 4; i++) EXPECT_EQ(want[i], all[i].tags) << i;

    es_read_stream_req_t rs;
    std::memset(&rs, 0, sizeof rs);
    rs.stream_id = "course-1";
    rs.from_version = 1;
    rs.max_count = 10;
    rs.direction = ES_FORWARD;
    rs.max_bytes = 4 << 20;
    es_page_t page;
    std::memset(&page, 0, sizeof page);
    es_err_t err{};
    ASSERT_EQ(ES_OK, es_backend_read_stream(store, &rs, &page, &err)) << err.msg;
    std::vector<Tagged> stream;
    Collect(page, &stream);
    es_page_free(&page);
    ASSERT_EQ(3u, stream.size());
    for (size_t i = 0; i < 3; i++) EXPECT_EQ(want[i], stream[i].tags) << i;

    std::vector<Tagged> c1 = ReadQuery(store, {{{}, {"course:c1"}}}, ES_FORWARD);
    EXPECT_EQ((std::vector<uint64_t>{1, 2}), Positions(c1));
    ASSERT_EQ(2u, c1.size());
    EXPECT_EQ(want[1], c1[1].tags);
    EXPECT_EQ((std::vector<uint64_t>{2, 1}),
              Positions(ReadQuery(store, {{{}, {"course:c1"}}}, ES_BACKWARD)));
    EXPECT_EQ((std::vector<uint64_t>{2}),
              Positions(ReadQuery(store, {{{}, {"course:c1", "student:s1"}}}, ES_FORWARD)));
    EXPECT_EQ((std::vector<uint64_t>{2}),
              Positions(ReadQuery(store, {{{"StudentSubscribed"}, {"student:s1"}}}, ES_FORWARD)));
    EXPECT_EQ((std::vector<uint64_t>{1, 2, 4}),
              Positions(ReadQuery(store, {{{}, {"course:c1"}}, {{}, {"student:s1"}}}, ES_FORWARD)));
    EXPECT_TRUE(ReadQuery(store, {{{}, {"course:c9"}}}, ES_FORWARD).empty());
    EXPECT_TRUE(ReadQuery(store, {{{}, {"course:c1", "course:c9"}}}, ES_FORWARD).empty());
    // Types only: the scan, which sees the record's tags too.
    std::vector<Tagged> reg = ReadQuery(store, {{{"StudentRegistered"}, {}}}, ES_FORWARD);
    ASSERT_EQ(1u, reg.size());
    EXPECT_EQ(want[3], reg[0].tags);
  };
  check(b);
  es_backend_close(b);
  b = Open(dir);
  ASSERT_NE(nullptr, b);
  check(b);
  es_backend_close(b);
}

// A read by tag walks the tag's positions, not the log: three events of a
// rare tag among 3,000 come back in one page under a scan bound of 4, in
// both directions and page by page; an item also naming a common tag walks
// the rare one.
TEST(LmdbBackend, AReadByATagFollowsItsEventsNotTheLog) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  const uint64_t kEvents = 3000;
  const std::vector<uint64_t> rare = {500, 1500, 2999};
  for (uint64_t first = 1; first <= kEvents; first += 100) {
    std::vector<TagEv> batch;
    for (uint64_t p = first; p < first + 100; p++) {
      TagEv e{"Tick", {"common"}};
      for (uint64_t r : rare)
        if (p == r) e.tags.push_back("rare");
      batch.push_back(e);
    }
    ASSERT_EQ(ES_OK, AppendTags(b, "s-" + std::to_string(first % 7), batch).rc);
  }
  uint64_t next = 0;
  bool end = false;
  EXPECT_EQ(rare, Positions(ReadQuery(b, {{{}, {"rare"}}}, ES_FORWARD, 1, 100, 4, &next, &end)));
  EXPECT_TRUE(end);
  EXPECT_EQ(kEvents + 1, next);
  EXPECT_EQ(rare, Positions(ReadQuery(b, {{{}, {"common", "rare"}}}, ES_FORWARD, 1, 100, 4)));
  EXPECT_EQ(rare, Positions(ReadQuery(b, {{{}, {"rare"}}, {{}, {"rare", "common"}}}, ES_FORWARD, 1,
                                      100, 4)));
  EXPECT_EQ((std::vector<uint64_t>{2999, 1500, 500}),
            Positions(ReadQuery(b, {{{}, {"rare"}}}, ES_BACKWARD, 0, 100, 4, &next, &end)));
  EXPECT_TRUE(end);
  EXPECT_EQ(0u, next);
  // Page by page, forward from the middle and backward from it.
  std::vector<uint64_t> paged;
  uint64_t from = 600;
  for (end = false; !end;) {
    std::vector<Tagged> page = ReadQuery(b, {{{}, {"rare"}}}, ES_FORWARD, from, 1, 4, &from, &end);
    for (const Tagged &t : page) paged.push_back(t.position);
    ASSERT_LE(paged.size(), 3u);
  }
  EXPECT_EQ((std::vector<uint64_t>{1500, 2999}), paged);
  paged.clear();
  from = 2998;
  for (end = false; !end;) {
    std::vector<Tagged> page = ReadQuery(b, {{{}, {"rare"}}}, ES_BACKWARD, from, 1, 4, &from, &end);
    for (const Tagged &t : page) paged.push_back(t.position);
    ASSERT_LE(paged.size(), 3u);
  }
  EXPECT_EQ((std::vector<uint64_t>{1500, 500}), paged);
  es_backend_close(b);
}

namespace {

// A commit hook that holds the first commit until released.
std::atomic<int> hook_calls{0};
std::atomic<bool> hook_release{false};
int HoldFirstCommit(void *) {
  if (hook_calls.fetch_add(1) == 0)
    while (!hook_release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return 0;
}

}  // namespace

// A condition is checked inside the group commit's write transaction, which
// already holds the earlier appends of the group: two conditional appends
// for the last seat of a course, committed in one group, store one booking;
// the other fails with the position of the first.
TEST(LmdbBackend, AConditionSeesTheEarlierAppendsOfItsGroup) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  hook_calls = 0;
  hook_release = false;
  es_lmdb_set_commit_hook(b, HoldFirstCommit, nullptr);
  std::thread holder([&] { EXPECT_EQ(ES_OK, AppendTags(b, "other", {{"Noise", {}}}).rc); });
  while (hook_calls.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const char *seat_tags[] = {"course:c1"};
  es_query_item_t item = {nullptr, 0, seat_tags, 1};
  es_append_condition_t cond = {&item, 1, 0};
  Appended booked[2];
  std::vector<std::thread> bookers;
  for (int i = 0; i < 2; i++)
    bookers.emplace_back([&, i] {
      booked[i] = AppendTags(b, "booking-" + std::to_string(i), {{"Booked", {"course:c1"}}}, &cond);
    });
  // Both queue behind the held commit, and form the next group together
  // (half a second is ample for two threads to queue, even on a busy
  // machine; the group size is checked below).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  hook_release = true;
  holder.join();
  for (auto &t : bookers) t.join();
  es_lmdb_set_commit_hook(b, nullptr, nullptr);
  EXPECT_EQ(2u, Stat(b, "lmdb_commit_group_max"));
  int ok = booked[0].rc == ES_OK ? 0 : 1;
  ASSERT_EQ(ES_OK, booked[ok].rc) << booked[ok].err.msg;
  ASSERT_EQ(ES_ECONDITION, booked[1 - ok].rc) << booked[1 - ok].err.msg;
  EXPECT_EQ(1, booked[1 - ok].err.has_condition_position);
  EXPECT_EQ(booked[ok].res.first_position, booked[1 - ok].err.condition_position);
  EXPECT_EQ((std::vector<uint64_t>{2}), Positions(ReadQuery(b, {{{}, {"course:c1"}}}, ES_FORWARD)));
  // After the booking, a condition with `after` at it passes.
  cond.after = 2;
  EXPECT_EQ(ES_OK, AppendTags(b, "booking-2", {{"Booked", {"course:c1"}}}, &cond).rc);
  cond.after = 1;
  Appended late = AppendTags(b, "booking-3", {{"Booked", {"course:c1"}}}, &cond);
  EXPECT_EQ(ES_ECONDITION, late.rc);
  EXPECT_EQ(2u, late.err.condition_position);
  es_backend_close(b);
}

// Tags cost nothing to an event without them: its record is byte for byte
// what record format 3 stored (no tag count, no flag), and the tag index
// holds nothing for it. (AnEventOf256BytesTakesLessThan410BytesOnDisk
// measures the whole store.)
TEST(LmdbBackend, AnEventWithoutTagsTakesNoMoreBytesThanInFormat3) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", 1, {}, 256).rc);
  ASSERT_EQ(ES_OK, AppendTags(b, "t", {{"Tick", {"a", "bc"}}}).rc);
  es_backend_close(b);
  RawStore raw(dir, MDB_RDONLY);
  MDB_txn *txn = raw.txn;
  ASSERT_NE(nullptr, txn);
  MDB_dbi log, tags;
  ASSERT_EQ(0, mdb_dbi_open(txn, "log", MDB_INTEGERKEY, &log));
  ASSERT_EQ(0, mdb_dbi_open(txn, "tags", 0, &tags));
  size_t key = 1;
  MDB_val k = {sizeof key, &key}, v;
  ASSERT_EQ(0, mdb_get(txn, log, &k, &v));
  // Format 3: id 16, flags 1, varints: version 1, recorded_at 6, occurred_at
  // 2 (1234), event_version 1, payload_len 2, stream 1, type 1, metadata
  // count 1; the payload 256; content type default (a flag); "corr\0",
  // "\0"; "k\0v\0trace\0abc\0".
  EXPECT_EQ(16u + 1 + 1 + 6 + 2 + 1 + 2 + 1 + 1 + 1 + 256 + 5 + 1 + 14, v.mv_size);
  // The tagged one: its own fields, then the count and the tags.
  key = 2;
  ASSERT_EQ(0, mdb_get(txn, log, &k, &v));
  EXPECT_EQ(16u + 1 + 1 + 6 + 1 + 1 + 1 + 1 + 1 + 1 + 4 + 1 + 1 + (1 + 2 + 3), v.mv_size);
  MDB_stat st;
  ASSERT_EQ(0, mdb_stat(txn, tags, &st));
  EXPECT_EQ(2u, st.ms_entries); /* "a" -> 2, "bc" -> 2: none for event 1 */
}

namespace {

// An AppendMany of appends (stream, event ids), prepared as the server
// does.
int AppendManyIds(es_backend_t *b,
                  const std::vector<std::pair<std::string, std::vector<std::string>>> &in,
                  std::vector<es_append_result_t> *results, es_err_t *err) {
  es_limits_t limits;
  es_limits_default(&limits);
  std::vector<std::vector<es_event_data_t>> evs(in.size());
  std::vector<es_append_req_t> appends(in.size());
  for (size_t a = 0; a < in.size(); a++) {
    for (const std::string &id : in[a].second) {
      es_event_data_t e;
      std::memset(&e, 0, sizeof e);
      e.event_id = id.c_str();
      e.event_type = "Joined";
      e.content_type = "";
      e.correlation_id = "";
      e.causation_id = "";
      evs[a].push_back(e);
    }
    es_append_req_t &r = appends[a];
    std::memset(&r, 0, sizeof r);
    r.stream_id = in[a].first.c_str();
    r.stream_type = "";
    r.expected_kind = ES_EXPECT_ANY;
    r.events = evs[a].data();
    r.event_count = evs[a].size();
  }
  es_append_many_req_t req = {appends.data(), appends.size(), nullptr};
  results->assign(in.size(), es_append_result_t{});
  int rc = es_append_many_prepare(&limits, &req, err);
  if (rc == ES_OK) rc = es_backend_append_many(b, &req, results->data(), err);
  return rc;
}

}  // namespace

// What makes a retried AppendMany a duplicate is stored with its events
// (the joined flags of the records): after a reopen, the whole request
// retried is a duplicate with the original positions, and one of its
// appends retried alone is not (ES_EEXIST), nor are its appends reordered.
TEST(LmdbBackend, AnAppendManyIsADuplicateOnlyAsAWholeAfterAReopen) {
  std::string dir = TempDir();
  es_backend_t *b = Open(dir);
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "before", 1).rc);
  std::vector<std::pair<std::string, std::vector<std::string>>> req = {
      {"m-1", {Uuid(501), Uuid(502)}}, {"m-2", {Uuid(503)}}, {"m-1", {Uuid(504)}}};
  std::vector<es_append_result_t> res;
  es_err_t err{};
  ASSERT_EQ(ES_OK, AppendManyIds(b, req, &res, &err)) << err.msg;
  EXPECT_EQ(2u, res[0].first_position);
  EXPECT_EQ(5u, res[2].first_position);
  EXPECT_EQ(3u, res[2].first_version);
  es_backend_close(b);

  b = Open(dir);
  ASSERT_NE(nullptr, b);
  std::vector<es_append_result_t> again;
  err = es_err_t{};
  ASSERT_EQ(ES_OK, AppendManyIds(b, req, &again, &err)) << err.msg;
  for (size_t a = 0; a < 3; a++) {
    EXPECT_TRUE(again[a].duplicate) << a;
    EXPECT_EQ(res[a].first_position, again[a].first_position) << a;
    EXPECT_EQ(res[a].last_version, again[a].last_version) << a;
  }
  err = es_err_t{};
  EXPECT_EQ(ES_EEXIST, AppendManyIds(b, {req[0]}, &again, &err)) << err.msg;
  err = es_err_t{};
  EXPECT_EQ(ES_EEXIST, AppendManyIds(b, {req[0], req[1]}, &again, &err)) << err.msg;
  err = es_err_t{};
  EXPECT_EQ(ES_EEXIST, AppendManyIds(b, {req[1], req[0], req[2]}, &again, &err)) << err.msg;
  uint64_t head = 0;
  ASSERT_EQ(ES_OK, es_backend_head(b, &head, &err));
  EXPECT_EQ(5u, head);
  es_backend_close(b);
}
