// The race in call_park (server/server.c): once es_notifier_wait has
// registered a streaming call's waiter, another thread may fire it, finish the
// call and drop the driver's reference while the parking thread still reads
// the call. The parking thread must hold a reference of its own until it is
// done with the call.
//
// The server runs in this process from the test build of the server library
// (//server:server_lib_test_hooks), whose hook holds the parking thread right
// after the waiter is registered. Meanwhile the client cancels the
// subscription: the close watch takes the waiter back and a worker finishes
// the call. The call must not be freed while the parking thread is held; once
// released, it must be freed (no leak). Without the reference the first check
// fails, and under --config=asan the released thread's read is reported as a
// heap-use-after-free.
#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "eventstore/v1/eventstore.grpc.pb.h"

extern "C" {
#include "config.h"
#include "es/backend_memory.h"
#include "server.h"
#include "test_hooks.h"
}

namespace {

namespace v1 = ::eventstore::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kSubscribe[] = "eventstore.v1.EventStore/Subscribe";

// What the hooks saw, and the gate that holds the parking thread.
struct Probe {
  std::mutex mu;
  std::condition_variable cv;
  bool armed = false;     // hold the next parking Subscribe
  bool parked = false;    // a Subscribe is held inside call_park
  bool released = false;  // let it go
  bool freed = false;     // the Subscribe call was freed
} probe;

void OnParked(const char *method) {
  if (std::strcmp(method, kSubscribe) != 0) return;
  std::unique_lock<std::mutex> lock(probe.mu);
  if (!probe.armed) return;
  probe.armed = false;
  probe.parked = true;
  probe.cv.notify_all();
  // Bounded: a broken test must not hang the server thread for ever.
  probe.cv.wait_for(lock, seconds(20), [] { return probe.released; });
}

void OnFreed(const char *method) {
  if (std::strcmp(method, kSubscribe) != 0) return;
  std::lock_guard<std::mutex> lock(probe.mu);
  probe.freed = true;
  probe.cv.notify_all();
}

class ParkRaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two completion-queue threads: one is held in the hook, the other
    // handles the cancellation and the end of the call.
    const char *argv[] = {"eventstore", "--bind",    "127.0.0.1:0", "--threads",
                          "2",          "--workers", "2",           nullptr};
    ASSERT_EQ(es_config_load(&cfg_, 7, const_cast<char **>(argv)), ES_CONFIG_RUN);
    es_log_set_level(ES_LOG_WARN);
    grpc_init();
    es_err_t err;
    ASSERT_EQ(es_mem_open(&backend_, &err), ES_OK) << err.msg;
    es__test_hook_parked = OnParked;
    es__test_hook_call_freed = OnFreed;
    char errbuf[512];
    ASSERT_EQ(es_server_start(&cfg_, backend_, &server_, errbuf, sizeof errbuf), 0) << errbuf;
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(es_server_port(server_)),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::EventStore::NewStub(channel_);
  }

  void TearDown() override {
    {
      std::lock_guard<std::mutex> lock(probe.mu);
      probe.released = true;
      probe.cv.notify_all();
    }
    stub_.reset();
    channel_.reset();
    if (server_) {
      EXPECT_TRUE(es_server_stop(server_));
    }
    es__test_hook_parked = nullptr;
    es__test_hook_call_freed = nullptr;
    if (backend_) es_backend_close(backend_);
    grpc_shutdown();
  }

  es_config_t cfg_;
  es_backend_t *backend_ = nullptr;
  es_server_t *server_ = nullptr;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::EventStore::Stub> stub_;
};

TEST_F(ParkRaceTest, CallOutlivesTheThreadThatParksIt) {
  {
    std::lock_guard<std::mutex> lock(probe.mu);
    probe.armed = true;
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(30));
  auto reader = stub_->Subscribe(&ctx, v1::SubscribeRequest());
  v1::SubscribeResponse first;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_TRUE(first.has_caught_up()) << first.ShortDebugString();

  // After CaughtUp the call parks at the head of the (empty) log: held there.
  {
    std::unique_lock<std::mutex> lock(probe.mu);
    ASSERT_TRUE(probe.cv.wait_for(lock, seconds(10), [] { return probe.parked; }))
        << "the subscription never parked";
  }

  // Cancel: the close watch takes the waiter back, a worker finishes the
  // stream and the call's own references are all released while the parking
  // thread is still inside call_park.
  ctx.TryCancel();
  v1::SubscribeResponse more;
  while (reader->Read(&more)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  {
    std::unique_lock<std::mutex> lock(probe.mu);
    // Time for the server to finish the call; with the bug it is freed here.
    bool freed = probe.cv.wait_for(lock, seconds(3), [] { return probe.freed; });
    EXPECT_FALSE(freed) << "the call was freed while a thread was still inside call_park";
    probe.released = true;
    probe.cv.notify_all();
  }
  // Released, the parking thread drops the last reference: the call is freed.
  std::unique_lock<std::mutex> lock(probe.mu);
  EXPECT_TRUE(probe.cv.wait_for(lock, seconds(10), [] { return probe.freed; }))
      << "the call was never freed";
}

}  // namespace
