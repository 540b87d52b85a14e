// The worker pool (server/workers.c): every job runs once; a job submitted
// while workers are idle runs on the one that became idle last (at one call
// in flight, one warm thread takes every call); jobs submitted while all are
// busy run in arrival order; stop runs what is queued.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

extern "C" {
#include "workers.h"
}

namespace {

using Clock = std::chrono::steady_clock;

// A job that records the thread it ran on and its place in the run order,
// optionally waiting for a gate to open first.
struct Job {
  es_job_t job{};
  pthread_t thread{};
  int order = -1;
  std::atomic<bool> ran{false};
  struct Shared *shared = nullptr;
};

struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  bool gate_open = true;
  std::atomic<int> next_order{0};
};

void RunJob(es_job_t *j) {
  Job *job = reinterpret_cast<Job *>(reinterpret_cast<char *>(j) - offsetof(Job, job));
  Shared *s = job->shared;
  {
    std::unique_lock<std::mutex> lock(s->mu);
    s->cv.wait(lock, [&] { return s->gate_open; });
  }
  job->thread = pthread_self();
  job->order = s->next_order++;
  job->ran.store(true);
}

void Submit(es_workers_t *w, Job *job, Shared *s) {
  job->job.fn = RunJob;
  job->shared = s;
  es_workers_submit(w, &job->job);
}

// Waits (bounded) until pred() holds.
template <typename Pred>
bool WaitFor(Pred pred) {
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

TEST(WorkersTest, OneAtATimeEveryJobRunsOnTheWorkerThatWentIdleLast) {
  es_workers_t *w = es_workers_start(8);
  ASSERT_NE(nullptr, w);
  ASSERT_TRUE(WaitFor([&] { return es_workers_idle(w) == 8; }));
  Shared s;
  constexpr int kJobs = 50;
  std::vector<Job> jobs(kJobs);
  for (int i = 0; i < kJobs; i++) {
    Submit(w, &jobs[i], &s);
    ASSERT_TRUE(WaitFor([&] { return jobs[i].ran.load() && es_workers_idle(w) == 8; }))
        << "job " << i << " did not run";
  }
  for (int i = 1; i < kJobs; i++)
    EXPECT_TRUE(pthread_equal(jobs[0].thread, jobs[i].thread))
        << "job " << i << " woke another worker than the one that had just gone idle";
  es_workers_stop(w);
}

TEST(WorkersTest, JobsSubmittedWhileAllAreBusyRunInArrivalOrder) {
  es_workers_t *w = es_workers_start(2);
  ASSERT_NE(nullptr, w);
  ASSERT_TRUE(WaitFor([&] { return es_workers_idle(w) == 2; }));
  Shared s;
  s.gate_open = false;
  std::vector<Job> blockers(2), queued(20);
  for (auto &j : blockers) Submit(w, &j, &s);
  ASSERT_TRUE(WaitFor([&] { return es_workers_idle(w) == 0; }));
  for (auto &j : queued) Submit(w, &j, &s);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.gate_open = true;
  }
  s.cv.notify_all();
  ASSERT_TRUE(WaitFor([&] {
    for (auto &j : queued)
      if (!j.ran.load()) return false;
    return true;
  }));
  // Two workers take the queue from its head: a job never starts more than
  // one place before one submitted earlier.
  for (size_t i = 1; i < queued.size(); i++)
    EXPECT_LE(queued[i - 1].order, queued[i].order + 1) << "job " << i;
  es_workers_stop(w);
}

TEST(WorkersTest, StopRunsEveryQueuedJob) {
  es_workers_t *w = es_workers_start(3);
  ASSERT_NE(nullptr, w);
  Shared s;
  s.gate_open = false;
  std::vector<Job> jobs(30);
  for (auto &j : jobs) Submit(w, &j, &s);
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    {
      std::lock_guard<std::mutex> lock(s.mu);
      s.gate_open = true;
    }
    s.cv.notify_all();
  });
  es_workers_stop(w);  // returns once every queued job has run
  opener.join();
  for (size_t i = 0; i < jobs.size(); i++) EXPECT_TRUE(jobs[i].ran.load()) << "job " << i;
}

// A niced pool (subscription delivery) runs its jobs below the priority of
// the thread that started it; a plain pool at the same priority.
struct NiceJob {
  es_job_t job{};
  std::atomic<int> nice{-100};
};

void RecordNice(es_job_t *j) {
  auto *nj = reinterpret_cast<NiceJob *>(j);
  errno = 0;
  nj->nice = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
}

int NiceOf(es_workers_t *w) {
  NiceJob nj;
  nj.job.fn = RecordNice;
  es_workers_submit(w, &nj.job);
  for (int i = 0; i < 2000 && nj.nice == -100; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return nj.nice;
}

TEST(WorkersTest, NicedPoolRunsBelowTheCallersPriority) {
  errno = 0;
  int mine = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
  es_workers_t *plain = es_workers_start(1);
  es_workers_t *niced = es_workers_start_niced(1, 10);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(niced, nullptr);
  EXPECT_EQ(NiceOf(plain), mine);
  EXPECT_EQ(NiceOf(niced), std::min(mine + 10, 19));
  es_workers_stop(plain);
  es_workers_stop(niced);
}

}  // namespace
