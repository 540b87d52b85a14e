// The live window (server/tail.c) over a real memory backend, without a
// server: which reads it answers and which it leaves to the backend, that its
// bytes are exactly the SubscribeResponse the server would encode, its bounds,
// and subscriptions reading through it while writers append concurrently
// (each sees 1..N exactly once, moving between window and storage).
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "es/backend.h"
#include "es/backend_memory.h"
#include "es/notifier.h"
#include "es/subscription.h"
#include "es/validate.h"
#include "eventstore/v1/eventstore.pb-c.h"
#include "tail.h"
}

namespace {

class TailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc_init();
    es_limits_default(&limits_);
    es_err_t err;
    ASSERT_EQ(es_mem_open(&backend_, &err), ES_OK) << err.msg;
    log_ = es_notifier_new();
    ASSERT_NE(log_, nullptr);
    es_backend_set_notifier(backend_, log_);
  }
  void TearDown() override {
    es_tail_stop(tail_);
    es_backend_set_notifier(backend_, nullptr);
    es_backend_close(backend_);
    es_notifier_free(log_);
    grpc_shutdown();
  }

  void Start(size_t max_events, size_t max_bytes) {
    tail_ = es_tail_start(backend_, log_, &limits_, max_events, max_bytes);
    ASSERT_NE(tail_, nullptr);
  }

  // Appends n single-event batches to `stream`, payload `payload`.
  void Append(const std::string &stream, int n, const std::string &payload = "p") {
    for (int i = 0; i < n; ++i) {
      es_event_data_t ev{};
      ev.event_id = "";
      ev.event_type = i % 2 ? "Odd" : "Even";
      ev.content_type = "";
      ev.payload = reinterpret_cast<const uint8_t *>(payload.data());
      ev.payload_len = payload.size();
      ev.correlation_id = "";
      ev.causation_id = "";
      es_append_req_t req{};
      req.stream_id = stream.c_str();
      req.stream_type = "";
      req.expected_kind = ES_EXPECT_ANY;
      req.events = &ev;
      req.event_count = 1;
      es_err_t err;
      ASSERT_EQ(es_append_prepare(&limits_, &req, &err), ES_OK) << err.msg;
      es_append_result_t res;
      ASSERT_EQ(es_backend_append(backend_, &req, &res, &err), ES_OK) << err.msg;
    }
  }

  // Waits (bounded) until the window holds `last`.
  bool WaitForLast(uint64_t last) {
    for (int i = 0; i < 5000; ++i) {
      es_tail_stats_t st;
      es_tail_stats(tail_, &st);
      if (st.last >= last && st.active) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }

  es_read_all_req_t Req(uint64_t from, uint32_t max_count = 256) {
    es_read_all_req_t r{};
    r.from_position = from;
    r.max_count = max_count;
    r.direction = ES_FORWARD;
    r.max_bytes = limits_.max_page_bytes;
    r.max_scan = 1;
    return r;
  }

  es_limits_t limits_;
  es_backend_t *backend_ = nullptr;
  es_notifier_t *log_ = nullptr;
  es_tail_t *tail_ = nullptr;
};

TEST_F(TailTest, AnswersFromTheWindowOnlyWhatItHolds) {
  Append("before", 5);  // committed before any subscription: storage only
  Start(8, 1 << 20);
  es_tail_attach(tail_);
  ASSERT_TRUE(WaitForLast(5));
  Append("s", 20);
  ASSERT_TRUE(WaitForLast(25));
  es_tail_stats_t st;
  es_tail_stats(tail_, &st);
  EXPECT_EQ(st.events, 8u);
  EXPECT_EQ(st.first, 18u);
  EXPECT_EQ(st.last, 25u);
  EXPECT_EQ(st.filled_events, 20u);

  es_err_t err;
  es_page_t page;
  es_read_all_req_t req = Req(18);
  ASSERT_EQ(es_tail_read(tail_, &req, &page, &err), ES_OK);
  ASSERT_EQ(page.count, 8u);
  ASSERT_NE(page.encoded, nullptr);
  for (size_t i = 0; i < page.count; ++i) EXPECT_EQ(page.events[i].global_position, 18 + i);
  EXPECT_TRUE(page.is_end);
  EXPECT_EQ(page.next, 26u);
  EXPECT_EQ(page.last, 25u);
  es_page_free(&page);

  req = Req(26);  // the head as the window knows it: an empty end page
  ASSERT_EQ(es_tail_read(tail_, &req, &page, &err), ES_OK);
  EXPECT_EQ(page.count, 0u);
  EXPECT_TRUE(page.is_end);
  EXPECT_EQ(page.next, 26u);
  es_page_free(&page);

  req = Req(10, 4);  // evicted: from storage, no encodings
  ASSERT_EQ(es_tail_read(tail_, &req, &page, &err), ES_OK);
  ASSERT_EQ(page.count, 4u);
  EXPECT_EQ(page.encoded, nullptr);
  EXPECT_EQ(page.events[0].global_position, 10u);
  EXPECT_FALSE(page.is_end);
  es_page_free(&page);

  es_tail_stats(tail_, &st);
  EXPECT_EQ(st.pages_window, 2u);
  EXPECT_EQ(st.pages_backend, 1u);
  es_tail_detach(tail_);
}

TEST_F(TailTest, FiltersAndCountsLikeTheBackend) {
  Start(64, 1 << 20);
  es_tail_attach(tail_);
  ASSERT_TRUE(WaitForLast(0));
  Append("a-1", 10);
  Append("b-1", 10);
  ASSERT_TRUE(WaitForLast(20));
  const char *types[] = {"Odd"};
  for (int source = 0; source < 2; ++source) {
    SCOPED_TRACE(source ? "backend" : "window");
    es_read_all_req_t req = Req(1, 3);
    req.filter.stream_prefix = "b-";
    req.filter.event_types = types;
    req.filter.event_type_count = 1;
    req.max_scan = 100;
    es_page_t page;
    es_err_t err;
    int rc = source ? es_backend_read_all(backend_, &req, &page, &err)
                    : es_tail_read(tail_, &req, &page, &err);
    ASSERT_EQ(rc, ES_OK);
    EXPECT_EQ(source == 0, page.encoded != nullptr);
    ASSERT_EQ(page.count, 3u);  // b-1's odd events: 12, 14, 16
    EXPECT_EQ(page.events[0].global_position, 12u);
    EXPECT_EQ(page.events[2].global_position, 16u);
    EXPECT_EQ(page.next, 17u);
    EXPECT_FALSE(page.is_end);
    EXPECT_STREQ(page.events[1].stream_id, "b-1");
    EXPECT_STREQ(page.events[1].event_type, "Odd");
    es_page_free(&page);
    // max_scan bounds the scan: 4 events from 13, one match (14).
    req = Req(13, 10);
    req.filter.event_types = types;
    req.filter.event_type_count = 1;
    req.max_scan = 4;
    rc = source ? es_backend_read_all(backend_, &req, &page, &err)
                : es_tail_read(tail_, &req, &page, &err);
    ASSERT_EQ(rc, ES_OK);
    EXPECT_EQ(page.count, 2u);  // 14, 16
    EXPECT_EQ(page.next, 17u);
    es_page_free(&page);
  }
  es_tail_detach(tail_);
}

// Extension 1: the window keeps each event's tags, so Filter.items select the
// same events from the window as from the backend, and the bytes carry them.
TEST_F(TailTest, QueryItemsSelectLikeTheBackendAndTagsAreOnTheWire) {
  Start(64, 1 << 20);
  es_tail_attach(tail_);
  ASSERT_TRUE(WaitForLast(0));
  for (int i = 0; i < 12; ++i) {
    std::string a = "course:c" + std::to_string(i % 3), b = "student:s" + std::to_string(i % 2);
    const char *tags[] = {a.c_str(), b.c_str()};
    es_event_data_t ev{};
    ev.event_id = "";
    ev.event_type = i % 4 ? "Enrolled" : "Opened";
    ev.tags = tags;
    ev.tag_count = 2;
    es_append_req_t req{};
    req.stream_id = "s";
    req.events = &ev;
    req.event_count = 1;
    es_err_t err;
    ASSERT_EQ(es_append_prepare(&limits_, &req, &err), ES_OK) << err.msg;
    es_append_result_t res;
    ASSERT_EQ(es_backend_append(backend_, &req, &res, &err), ES_OK) << err.msg;
  }
  ASSERT_TRUE(WaitForLast(12));
  const char *course[] = {"course:c1"}, *both[] = {"course:c0", "student:s0"};
  const char *enrolled[] = {"Enrolled"};
  es_query_item_t items[2] = {{enrolled, 1, course, 1}, {nullptr, 0, both, 2}};
  std::vector<uint64_t> seen[2];
  for (int source = 0; source < 2; ++source) {
    SCOPED_TRACE(source ? "backend" : "window");
    es_read_all_req_t req = Req(1, 100);
    req.filter.items = items;
    req.filter.item_count = 2;
    req.max_scan = 100;
    es_page_t page;
    es_err_t err;
    int rc = source ? es_backend_read_all(backend_, &req, &page, &err)
                    : es_tail_read(tail_, &req, &page, &err);
    ASSERT_EQ(rc, ES_OK) << err.msg;
    EXPECT_TRUE(page.is_end);
    for (size_t i = 0; i < page.count; ++i) {
      seen[source].push_back(page.events[i].global_position);
      ASSERT_EQ(page.events[i].tag_count, 2u);
      if (source == 0) {
        grpc_slice w = es_tail_wire(page.encoded[i]);
        Eventstore__V1__SubscribeResponse *m = eventstore__v1__subscribe_response__unpack(
            nullptr, GRPC_SLICE_LENGTH(w), GRPC_SLICE_START_PTR(w));
        ASSERT_NE(m, nullptr);
        ASSERT_EQ(m->event->n_tags, 2u);
        EXPECT_STREQ(m->event->tags[0], page.events[i].tags[0]);
        EXPECT_STREQ(m->event->tags[1], page.events[i].tags[1]);
        eventstore__v1__subscribe_response__free_unpacked(m, nullptr);
      }
    }
    es_page_free(&page);
  }
  // Event i is at position i + 1. Enrolled (i % 4 != 0) with course:c1
  // (i % 3 == 1): i = 1, 7, 10; course:c0 with student:s0: i = 0, 6.
  EXPECT_EQ(seen[0], seen[1]);
  EXPECT_EQ(seen[0], (std::vector<uint64_t>{1, 2, 7, 8, 11}));
  es_tail_detach(tail_);
}

// The window's bytes are a whole SubscribeResponse{event} with exactly what
// the backend stores.
TEST_F(TailTest, EncodedBytesAreTheSubscribeResponse) {
  Start(16, 1 << 20);
  es_tail_attach(tail_);
  ASSERT_TRUE(WaitForLast(0));
  Append("enc", 3, std::string("\0\x01payload", 9));
  ASSERT_TRUE(WaitForLast(3));
  es_page_t page, stored;
  es_err_t err;
  es_read_all_req_t req = Req(1);
  ASSERT_EQ(es_tail_read(tail_, &req, &page, &err), ES_OK);
  ASSERT_EQ(es_backend_read_all(backend_, &req, &stored, &err), ES_OK);
  ASSERT_EQ(page.count, 3u);
  ASSERT_EQ(stored.count, 3u);
  for (size_t i = 0; i < page.count; ++i) {
    grpc_slice s = es_tail_wire(page.encoded[i]);
    Eventstore__V1__SubscribeResponse *m = eventstore__v1__subscribe_response__unpack(
        nullptr, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    ASSERT_NE(m, nullptr);
    ASSERT_EQ(m->message_case, EVENTSTORE__V1__SUBSCRIBE_RESPONSE__MESSAGE_EVENT);
    const es_recorded_t &e = stored.events[i];
    EXPECT_EQ(m->event->global_position, e.global_position);
    EXPECT_EQ(m->event->stream_version, e.stream_version);
    EXPECT_STREQ(m->event->stream_id, e.stream_id);
    EXPECT_STREQ(m->event->event_id, e.event_id);
    EXPECT_STREQ(m->event->event_type, e.event_type);
    EXPECT_STREQ(m->event->content_type, e.content_type);
    EXPECT_EQ(m->event->recorded_at_unix_ms, e.recorded_at_unix_ms);
    ASSERT_EQ(m->event->payload.len, e.payload_len);
    EXPECT_EQ(memcmp(m->event->payload.data, e.payload, e.payload_len), 0);
    eventstore__v1__subscribe_response__free_unpacked(m, nullptr);
    // es_tail_encode gives the same bytes for an event outside the window.
    grpc_slice again;
    ASSERT_TRUE(es_tail_encode(&e, &again));
    EXPECT_TRUE(grpc_slice_eq(s, again));
    grpc_slice_unref(again);
  }
  es_page_free(&stored);
  es_page_free(&page);
  es_tail_detach(tail_);
}

TEST_F(TailTest, ByteBoundKeepsAtLeastTheNewestEvent) {
  Start(1000, 2000);  // about 4 events of ~450 bytes
  es_tail_attach(tail_);
  ASSERT_TRUE(WaitForLast(0));
  Append("big", 20, std::string(400, 'x'));
  ASSERT_TRUE(WaitForLast(20));
  es_tail_stats_t st;
  es_tail_stats(tail_, &st);
  EXPECT_LE(st.bytes, 2000u);
  EXPECT_GE(st.events, 1u);
  EXPECT_LT(st.events, 6u);
  EXPECT_EQ(st.last, 20u);
  Append("huge", 1, std::string(5000, 'y'));  // alone beyond the bound: still held
  ASSERT_TRUE(WaitForLast(21));
  es_tail_stats(tail_, &st);
  EXPECT_EQ(st.events, 1u);
  EXPECT_EQ(st.first, 21u);
  es_tail_detach(tail_);
}

// Readers park on the tail's notifier like the server's subscriptions.
struct Parker {
  es_waiter_t w{};
  std::mutex mu;
  std::condition_variable cv;
  bool fired = false;
  static void Fire(es_waiter_t *w) {
    auto *p = static_cast<Parker *>(w->arg);
    std::lock_guard<std::mutex> lock(p->mu);
    p->fired = true;
    p->cv.notify_one();
  }
};

TEST_F(TailTest, ConcurrentWritersAndReadersSeeEveryEventOnce) {
  Start(32, 1 << 20);  // small: readers keep moving between window and storage
  const int kWriters = 3, kPerWriter = 700, kReaders = 8;
  const uint64_t total = kWriters * kPerWriter;
  std::vector<std::thread> readers;
  std::atomic<int> failures{0};
  std::atomic<bool> written{false};
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      // Reader 0 starts once everything is written: far behind the window,
      // it must read from storage first.
      while (r == 0 && !written.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      es_tail_attach(tail_);
      es_sub_opts_t opts{};
      opts.from_position = 1;
      opts.read = es_tail_read;
      opts.read_ctx = tail_;
      es_sub_t *sub = nullptr;
      es_err_t err;
      if (es_sub_open(backend_, &limits_, &opts, &sub, &err) != ES_OK) {
        ++failures;
        es_tail_detach(tail_);
        return;
      }
      uint64_t expect = 1;
      Parker parker;
      parker.w.fn = Parker::Fire;
      parker.w.arg = &parker;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (expect <= total && std::chrono::steady_clock::now() < deadline) {
        es_sub_item_t item;
        int rc = es_sub_next(sub, &item, &err);
        if (rc == ES_OK) {
          if (item.kind != ES_SUB_EVENT) continue;
          if (item.event->global_position != expect) {
            ADD_FAILURE() << "reader " << r << ": expected " << expect << ", got "
                          << item.event->global_position;
            ++failures;
            break;
          }
          ++expect;
          if (r % 3 == 0 && expect % 97 == 0)  // a slow one: falls behind the window
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          continue;
        }
        if (rc != ES_EAGAIN) {
          ADD_FAILURE() << "reader " << r << ": " << err.msg;
          ++failures;
          break;
        }
        {
          std::lock_guard<std::mutex> lock(parker.mu);
          parker.fired = false;
        }
        if (es_notifier_wait(es_tail_notifier(tail_), &parker.w, es_sub_position(sub)) == 0) {
          std::unique_lock<std::mutex> lock(parker.mu);
          if (!parker.cv.wait_for(lock, std::chrono::seconds(5), [&] { return parker.fired; })) {
            lock.unlock();
            // Not woken within 5 s: take the waiter back before it goes away.
            if (es_notifier_cancel(es_tail_notifier(tail_), &parker.w) == 0) {
              std::unique_lock<std::mutex> again(parker.mu);
              parker.cv.wait(again, [&] { return parker.fired; });
            }
          }
        }
      }
      if (expect != total + 1) {
        ADD_FAILURE() << "reader " << r << " stopped at " << expect;
        ++failures;
      }
      es_sub_close(sub);
      es_tail_detach(tail_);
    });
  }
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w)
    writers.emplace_back([&, w] {
      for (int chunk = 0; chunk < kPerWriter / 100; ++chunk) {
        Append("w-" + std::to_string(w), 100);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));  // readers reach the head
      }
    });
  for (auto &t : writers) t.join();
  written = true;
  for (auto &t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
  es_tail_stats_t st;
  es_tail_stats(tail_, &st);
  EXPECT_GT(st.pages_backend, 0u);  // reader 0, at least
  // The newest events are answered from the window.
  ASSERT_TRUE(WaitForLast(total));
  es_read_all_req_t req = Req(total - 3);
  es_page_t page;
  es_err_t err;
  ASSERT_EQ(es_tail_read(tail_, &req, &page, &err), ES_OK);
  EXPECT_NE(page.encoded, nullptr);
  EXPECT_EQ(page.count, 4u);
  es_page_free(&page);
}

}  // namespace
