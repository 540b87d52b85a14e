// Tests of notifier.c: registration against the published head, one firing
// per registration, exact cancellation, wake-all, callbacks that re-enter the
// notifier, and races between publishers, waiters and cancellers.
#include "es/notifier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// A waiter that counts its firings.
struct Counted {
  es_waiter_t w{};
  std::atomic<int> fired{0};
  Counted() {
    w.fn = [](es_waiter_t *self) { static_cast<Counted *>(self->arg)->fired++; };
    w.arg = this;
  }
};

class NotifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    n_ = es_notifier_new();
    ASSERT_NE(nullptr, n_);
  }
  void TearDown() override { es_notifier_free(n_); }
  es_notifier_t *n_ = nullptr;
};

TEST_F(NotifierTest, HeadOnlyGrows) {
  EXPECT_EQ(0u, es_notifier_head(n_));
  es_notifier_publish(n_, 5);
  EXPECT_EQ(5u, es_notifier_head(n_));
  es_notifier_publish(n_, 3);
  EXPECT_EQ(5u, es_notifier_head(n_));
  es_notifier_publish(n_, 5);
  EXPECT_EQ(5u, es_notifier_head(n_));
  es_notifier_publish(n_, 9);
  EXPECT_EQ(9u, es_notifier_head(n_));
}

TEST_F(NotifierTest, WaitRefusesWhenHeadIsAlreadyPast) {
  Counted c;
  es_notifier_publish(n_, 10);
  EXPECT_EQ(1, es_notifier_wait(n_, &c.w, 9));
  EXPECT_EQ(1, es_notifier_wait(n_, &c.w, 0));
  EXPECT_EQ(0, c.fired);
  EXPECT_EQ(0, es_notifier_cancel(n_, &c.w));  // never registered
  EXPECT_EQ(0, es_notifier_wait(n_, &c.w, 10));
  EXPECT_EQ(1, es_notifier_cancel(n_, &c.w));
}

TEST_F(NotifierTest, FiresOnceWhenHeadPassesAfter) {
  Counted c;
  ASSERT_EQ(0, es_notifier_wait(n_, &c.w, 4));
  es_notifier_publish(n_, 3);
  es_notifier_publish(n_, 4);  // not past 4
  EXPECT_EQ(0, c.fired);
  es_notifier_publish(n_, 5);
  EXPECT_EQ(1, c.fired);
  es_notifier_publish(n_, 6);
  EXPECT_EQ(1, c.fired);  // unregistered after firing
  EXPECT_EQ(0, es_notifier_cancel(n_, &c.w));
}

TEST_F(NotifierTest, OnlyWaitersBelowTheHeadFire) {
  Counted a, b, c;
  ASSERT_EQ(0, es_notifier_wait(n_, &a.w, 1));
  ASSERT_EQ(0, es_notifier_wait(n_, &b.w, 5));
  ASSERT_EQ(0, es_notifier_wait(n_, &c.w, 3));
  es_notifier_publish(n_, 4);
  EXPECT_EQ(1, a.fired);
  EXPECT_EQ(0, b.fired);
  EXPECT_EQ(1, c.fired);
  EXPECT_EQ(1, es_notifier_cancel(n_, &b.w));
  es_notifier_publish(n_, 100);
  EXPECT_EQ(0, b.fired);
}

TEST_F(NotifierTest, CancelledWaiterNeverFires) {
  Counted c;
  ASSERT_EQ(0, es_notifier_wait(n_, &c.w, 0));
  EXPECT_EQ(1, es_notifier_cancel(n_, &c.w));
  EXPECT_EQ(0, es_notifier_cancel(n_, &c.w));
  es_notifier_publish(n_, 1);
  es_notifier_wake_all(n_);
  EXPECT_EQ(0, c.fired);
}

TEST_F(NotifierTest, CancelAfterFiringReturnsZero) {
  Counted c;
  ASSERT_EQ(0, es_notifier_wait(n_, &c.w, 0));
  es_notifier_publish(n_, 1);
  EXPECT_EQ(1, c.fired);
  EXPECT_EQ(0, es_notifier_cancel(n_, &c.w));
}

TEST_F(NotifierTest, CancelFromTheMiddleKeepsTheList) {
  std::vector<Counted> cs(5);
  for (auto &c : cs) ASSERT_EQ(0, es_notifier_wait(n_, &c.w, 0));
  EXPECT_EQ(1, es_notifier_cancel(n_, &cs[2].w));
  EXPECT_EQ(1, es_notifier_cancel(n_, &cs[0].w));
  EXPECT_EQ(1, es_notifier_cancel(n_, &cs[4].w));
  es_notifier_publish(n_, 1);
  EXPECT_EQ(0, cs[0].fired);
  EXPECT_EQ(1, cs[1].fired);
  EXPECT_EQ(0, cs[2].fired);
  EXPECT_EQ(1, cs[3].fired);
  EXPECT_EQ(0, cs[4].fired);
}

TEST_F(NotifierTest, WakeAllFiresEveryWaiterOnce) {
  std::vector<Counted> cs(200);  // more than one firing round
  for (size_t i = 0; i < cs.size(); i++) ASSERT_EQ(0, es_notifier_wait(n_, &cs[i].w, 1000 + i));
  es_notifier_wake_all(n_);
  for (auto &c : cs) EXPECT_EQ(1, c.fired);
  EXPECT_EQ(0u, es_notifier_head(n_));  // wake-all publishes nothing
  es_notifier_wake_all(n_);             // nothing registered: a no-op
  for (auto &c : cs) EXPECT_EQ(1, c.fired);
}

TEST_F(NotifierTest, ManyWaitersAllFire) {
  std::vector<Counted> cs(1000);
  for (auto &c : cs) ASSERT_EQ(0, es_notifier_wait(n_, &c.w, 0));
  es_notifier_publish(n_, 1);
  for (auto &c : cs) EXPECT_EQ(1, c.fired);
}

// A callback may register again (or publish) without deadlocking: callbacks
// run outside the notifier's lock.
struct Reenter {
  es_waiter_t w{};
  es_notifier_t *n = nullptr;
  int fired = 0;
  int registered_again = -1;
};

TEST_F(NotifierTest, CallbackMayReenter) {
  Reenter r;
  r.n = n_;
  r.w.arg = &r;
  r.w.fn = [](es_waiter_t *w) {
    Reenter *self = static_cast<Reenter *>(w->arg);
    self->fired++;
    if (self->fired == 1)
      self->registered_again = es_notifier_wait(self->n, w, es_notifier_head(self->n));
  };
  ASSERT_EQ(0, es_notifier_wait(n_, &r.w, 0));
  es_notifier_publish(n_, 1);
  EXPECT_EQ(1, r.fired);
  EXPECT_EQ(0, r.registered_again);
  es_notifier_publish(n_, 2);
  EXPECT_EQ(2, r.fired);
}

TEST_F(NotifierTest, WakeAllWithReregisteringCallbacksTerminates) {
  // Every callback registers again at once; wake-all must still return.
  std::vector<Reenter> rs(150);
  for (auto &r : rs) {
    r.n = n_;
    r.w.arg = &r;
    r.w.fn = [](es_waiter_t *w) {
      Reenter *self = static_cast<Reenter *>(w->arg);
      self->fired++;
      es_notifier_wait(self->n, w, 0);
    };
    ASSERT_EQ(0, es_notifier_wait(n_, &r.w, 0));
  }
  es_notifier_wake_all(n_);
  for (auto &r : rs) EXPECT_EQ(1, r.fired);
  for (auto &r : rs) EXPECT_EQ(1, es_notifier_cancel(n_, &r.w));
}

// ---- races -------------------------------------------------------------------

// A waiter owned by one thread, fired by another: the owner sleeps on a
// condition variable until its callback runs.
struct Blocking {
  es_waiter_t w{};
  std::mutex mu;
  std::condition_variable cv;
  bool fired = false;
  Blocking() {
    w.arg = this;
    w.fn = [](es_waiter_t *self) {
      Blocking *b = static_cast<Blocking *>(self->arg);
      std::lock_guard<std::mutex> lock(b->mu);
      b->fired = true;
      b->cv.notify_all();
    };
  }
  // Waits for the callback; false on timeout.
  bool Await(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu);
    bool ok = cv.wait_for(lock, timeout, [&] { return fired; });
    fired = false;
    return ok;
  }
};

TEST_F(NotifierTest, PublishersAndWaitersRace) {
  // Publishers push the head to kTarget in small steps; each waiter loops
  // "read head, register after it, sleep until fired" and must reach the
  // target: a wake-up lost between read and register would hang it (bounded
  // here by a timeout that fails the test).
  const uint64_t kTarget = 100000;
  const int kPublishers = 3, kWaiters = 4;
  std::atomic<uint64_t> next{1};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int p = 0; p < kPublishers; p++) {
    threads.emplace_back([&] {
      for (;;) {
        uint64_t h = next.fetch_add(1);
        if (h > kTarget) return;
        es_notifier_publish(n_, h);
        if (h % 64 == 0) std::this_thread::yield();  // let waiters register
      }
    });
  }
  std::vector<int> wakeups(kWaiters, 0);
  for (int i = 0; i < kWaiters; i++) {
    threads.emplace_back([&, i] {
      Blocking b;
      uint64_t seen = 0;
      auto deadline = Clock::now() + std::chrono::seconds(60);
      while (seen < kTarget && Clock::now() < deadline) {
        uint64_t h = es_notifier_head(n_);
        if (h < seen) {
          failed = true;  // the head went back
          return;
        }
        seen = h;
        if (seen >= kTarget) break;
        if (es_notifier_wait(n_, &b.w, seen) == 1) continue;
        if (!b.Await(std::chrono::seconds(30))) {
          failed = true;  // a lost wake-up
          es_notifier_cancel(n_, &b.w);
          return;
        }
        wakeups[i]++;
        // Fired only once the head passed what we registered with.
        if (es_notifier_head(n_) <= seen) failed = true;
      }
      if (seen < kTarget) failed = true;
    });
  }
  for (auto &t : threads) t.join();
  EXPECT_FALSE(failed);
  EXPECT_EQ(kTarget, es_notifier_head(n_));
}

TEST_F(NotifierTest, CancelRacesPublishExactly) {
  // For every registration exactly one of two things happens: cancel returns
  // 1 (and the callback never runs) or the callback runs (and cancel
  // returned 0). The owner waits for a running callback before reusing the
  // waiter, as the contract asks.
  const int kRounds = 4000;
  std::atomic<bool> stop{false};
  std::thread publisher([&] {
    uint64_t h = 0;
    while (!stop) es_notifier_publish(n_, ++h);
  });
  struct Owner {
    es_waiter_t w{};
    std::atomic<int> fired{0};
  } o;
  o.w.arg = &o;
  o.w.fn = [](es_waiter_t *w) { static_cast<Owner *>(w->arg)->fired.fetch_add(1); };
  int cancelled = 0, ran = 0, refused = 0;
  for (int i = 0; i < kRounds; i++) {
    int before = o.fired.load();
    uint64_t after = es_notifier_head(n_);
    if (es_notifier_wait(n_, &o.w, after) == 1) {
      refused++;
      continue;
    }
    // Every other round, give the publisher time to reach the waiter, so
    // that cancel meets a firing in progress as well as a registered waiter.
    for (int spin = 0; i % 2 == 1 && spin < 200 && es_notifier_head(n_) <= after; spin++) {
      std::this_thread::yield();
    }
    if (es_notifier_cancel(n_, &o.w) == 1) {
      cancelled++;
      // No callback may follow a successful cancel.
      std::this_thread::yield();
      if (o.fired.load() != before) {
        ADD_FAILURE() << "callback ran after cancel returned 1";
        break;
      }
    } else {
      ran++;
      auto deadline = Clock::now() + std::chrono::seconds(10);
      while (o.fired.load() == before && Clock::now() < deadline) std::this_thread::yield();
      if (o.fired.load() != before + 1) {
        ADD_FAILURE() << "cancel returned 0 but the callback never ran";
        break;
      }
    }
  }
  stop = true;
  publisher.join();
  EXPECT_EQ(kRounds, cancelled + ran + refused);  // also fails after a break above
  EXPECT_EQ(ran, o.fired.load());
  // Both outcomes should have happened; not asserted, as it depends on timing.
  RecordProperty("cancelled", cancelled);
  RecordProperty("ran", ran);
}

TEST_F(NotifierTest, WakeAllRacesWaitAndCancel) {
  // Shutdown-style wake-ups interleaved with registrations and cancels from
  // several threads: nothing crashes, every registration ends exactly once.
  const int kThreads = 4, kRounds = 20000;
  std::atomic<bool> stop{false};
  std::atomic<bool> failed{false};
  std::atomic<bool> started{false};
  std::thread waker([&] {
    while (!stop) {
      es_notifier_wake_all(n_);
      started = true;
      std::this_thread::yield();
    }
  });
  while (!started) std::this_thread::yield();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&] {
      Counted c;
      for (int i = 0; i < kRounds; i++) {
        int before = c.fired.load();
        if (es_notifier_wait(n_, &c.w, 0) == 1) continue;
        if (i % 2 == 1) std::this_thread::yield();
        if (es_notifier_cancel(n_, &c.w) == 0) {
          auto deadline = Clock::now() + std::chrono::seconds(10);
          while (c.fired.load() == before && Clock::now() < deadline) std::this_thread::yield();
          if (c.fired.load() != before + 1) failed = true;
        } else if (c.fired.load() != before) {
          failed = true;
        }
      }
    });
  }
  for (auto &t : threads) t.join();
  stop = true;
  waker.join();
  EXPECT_FALSE(failed);
}

}  // namespace
