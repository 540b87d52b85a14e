// Helpers for the PostgreSQL backend's fault tests: appends and log reads as
// the server makes them, a check that a log is gap-free, and a subscriber
// driven by the core subscription engine and a notifier, as the server
// drives one, that counts its reads of the backend.
#ifndef ES_BACKEND_POSTGRES_TESTS_PG_TEST_SUPPORT_H
#define ES_BACKEND_POSTGRES_TESTS_PG_TEST_SUPPORT_H

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "es/backend.h"
#include "es/backend_postgres.h"
#include "es/notifier.h"
#include "es/subscription.h"
#include "es/validate.h"

namespace es_pg_test {

using Clock = std::chrono::steady_clock;

inline int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

inline std::string Uuid(uint64_t n) {
  char buf[ES_UUID_STR_LEN + 1];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012llx",
                static_cast<unsigned long long>(n & 0xffffffffffffULL));
  return buf;
}

struct Outcome {
  int rc = ES_OK;
  es_append_result_t res{};
  es_err_t err{};
};

// Appends one event per id to stream (EXPECTED_ANY), prepared as the server
// prepares requests.
inline Outcome Append(es_backend_t *b, const std::string &stream,
                      const std::vector<std::string> &ids) {
  es_limits_t limits;
  es_limits_default(&limits);
  std::vector<es_event_data_t> evs(ids.size());
  std::string payload = "payload of " + stream;
  for (size_t i = 0; i < ids.size(); i++) {
    std::memset(&evs[i], 0, sizeof evs[i]);
    evs[i].event_id = ids[i].c_str();
    evs[i].event_type = "E";
    evs[i].content_type = "";
    evs[i].payload = reinterpret_cast<const uint8_t *>(payload.data());
    evs[i].payload_len = payload.size();
    evs[i].correlation_id = "";
    evs[i].causation_id = "";
  }
  es_append_req_t req;
  std::memset(&req, 0, sizeof req);
  req.stream_id = stream.c_str();
  req.stream_type = "";
  req.expected_kind = ES_EXPECT_ANY;
  req.events = evs.data();
  req.event_count = evs.size();
  Outcome o;
  o.rc = es_append_prepare(&limits, &req, &o.err);
  if (o.rc) return o;
  o.rc = es_backend_append(b, &req, &o.res, &o.err);
  return o;
}

struct LogEntry {
  uint64_t position, version;
  std::string stream, id;
};

inline int ReadLog(es_backend_t *b, std::vector<LogEntry> *log, es_err_t *err) {
  es_limits_t limits;
  es_limits_default(&limits);
  uint64_t from = 1;
  for (;;) {
    es_read_all_req_t req;
    std::memset(&req, 0, sizeof req);
    req.from_position = from;
    req.max_count = 1000;
    req.direction = ES_FORWARD;
    req.filter.stream_prefix = "";
    int rc = es_read_all_prepare(&limits, &req, err);
    if (rc) return rc;
    es_page_t page;
    std::memset(&page, 0, sizeof page);
    rc = es_backend_read_all(b, &req, &page, err);
    if (rc) return rc;
    for (size_t i = 0; i < page.count; i++)
      log->push_back({page.events[i].global_position, page.events[i].stream_version,
                      page.events[i].stream_id, page.events[i].event_id});
    from = page.next;
    bool end = page.is_end;
    es_page_free(&page);
    if (end) return ES_OK;
  }
}

// Positions 1..n in order, every id once, stream versions gap-free.
inline void ExpectGapFree(const std::vector<LogEntry> &log, uint64_t n) {
  ASSERT_EQ(n, log.size());
  std::set<std::string> ids;
  std::map<std::string, uint64_t> versions;
  for (size_t i = 0; i < log.size(); i++) {
    ASSERT_EQ(i + 1, log[i].position);
    ASSERT_TRUE(ids.insert(log[i].id).second) << "twice: " << log[i].id;
    ASSERT_EQ(versions[log[i].stream] + 1, log[i].version) << log[i].stream;
    versions[log[i].stream] = log[i].version;
  }
}

inline uint64_t Head(es_backend_t *b) {
  uint64_t h = 0;
  es_err_t err{};
  EXPECT_EQ(ES_OK, es_backend_head(b, &h, &err)) << err.msg;
  return h;
}

// A live subscription from position 1 on b, woken by n, on a thread of its
// own: what the server does for Subscribe, minus gRPC. It records every
// event's position and counts its reads of the backend, so that a test can
// see it skip, repeat, stall or spin.
class Subscriber {
 public:
  Subscriber(es_backend_t *b, es_notifier_t *n) : b_(b), n_(n) {
    es_limits_default(&limits_);
    es_sub_opts_t opts;
    std::memset(&opts, 0, sizeof opts);
    opts.from_position = 1;
    opts.filter.stream_prefix = "";
    es_err_t err{};
    EXPECT_EQ(ES_OK, es_sub_open(b_, &limits_, &opts, &sub_, &err)) << err.msg;
    std::memset(&waiter_, 0, sizeof waiter_);
    waiter_.fn = &Subscriber::Fired;
    waiter_.arg = this;
    thread_ = std::thread([this] { Run(); });
  }
  ~Subscriber() { Stop(); }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (sub_) es_sub_close(sub_);
    sub_ = nullptr;
  }
  bool WaitForPosition(uint64_t pos, int ms) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(ms),
                        [&] { return !positions_.empty() && positions_.back() >= pos; });
  }
  std::vector<uint64_t> Positions() {
    std::lock_guard<std::mutex> lock(mu_);
    return positions_;
  }
  // es_sub_next calls that went to the backend.
  uint64_t Reads() const { return reads_.load(); }
  std::string Errors() {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }

 private:
  static void Fired(es_waiter_t *w) {
    auto *self = static_cast<Subscriber *>(w->arg);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->fired_ = true;
    self->cv_.notify_all();
  }

  void Run() {
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
      }
      if (!es_sub_has_buffered(sub_)) reads_++;
      es_sub_item_t item;
      es_err_t err{};
      int rc = es_sub_next(sub_, &item, &err);
      if (rc == ES_OK) {
        if (item.kind == ES_SUB_EVENT) {
          std::lock_guard<std::mutex> lock(mu_);
          positions_.push_back(item.event->global_position);
          cv_.notify_all();
        }
        continue;
      }
      if (rc != ES_EAGAIN) {
        std::unique_lock<std::mutex> lock(mu_);
        if (errors_.size() < 1000) errors_ += std::string(err.msg) + "; ";
        cv_.wait_for(lock, std::chrono::milliseconds(20), [&] { return stop_; });
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        fired_ = false;
      }
      if (es_notifier_wait(n_, &waiter_, es_sub_position(sub_)) == 1) continue;
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return fired_ || stop_; });
      if (!fired_) {
        lock.unlock();
        if (es_notifier_cancel(n_, &waiter_) == 0) {
          // The callback runs or ran: wait for it before the waiter goes.
          lock.lock();
          cv_.wait(lock, [&] { return fired_; });
        }
        return;
      }
    }
  }

  es_backend_t *b_;
  es_notifier_t *n_;
  es_limits_t limits_;
  es_sub_t *sub_ = nullptr;
  es_waiter_t waiter_;
  std::thread thread_;
  std::atomic<uint64_t> reads_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool fired_ = false;
  std::vector<uint64_t> positions_;
  std::string errors_;
};

}  // namespace es_pg_test

#endif  // ES_BACKEND_POSTGRES_TESTS_PG_TEST_SUPPORT_H
