// A TCP proxy on 127.0.0.1 that a test can stop and start, for faults that a
// real network produces and a real database cannot be asked for: a
// connection that stops answering in the middle of a commit while TCP stays
// up (a hung host, a firewall or proxy holding the traffic), and a database
// that accepts connections but never answers them.
//
// One thread moves bytes between each accepted client connection and a new
// connection to the upstream port. Per connection it can freeze (read
// nothing more from either side: the peers' data piles up in the kernel, and
// their TCP stays up and acknowledged, as behind a stuck middlebox); new
// connections can be served, held (left unaccepted in the listen backlog:
// the client's connect completes, its startup packet is never answered) or
// refused (accepted and closed at once).
//
// A trigger makes the fault land exactly where the test wants it: the first
// client-to-server chunk that contains a byte pattern (for example the text
// of a statement) either is held back (the server never sees it) or is
// forwarded, and at that moment the connection freezes, the other
// connections freeze or are dropped, and new connections get a mode.
//
// Threading: every method may be called from any thread; the proxy's own
// thread does the I/O. The destructor stops the thread and closes every
// socket.
#ifndef ES_TESTS_PG_TCP_PROXY_H
#define ES_TESTS_PG_TCP_PROXY_H

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace es_pg_test {

class TcpProxy {
 public:
  enum class NewConnections { kServe, kHold, kRefuse };
  enum class OnMatch { kHoldChunk, kForwardChunk };
  enum class Others { kFreeze, kDrop, kLeave };

  explicit TcpProxy(int upstream_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy &) = delete;
  TcpProxy &operator=(const TcpProxy &) = delete;

  // Listens on a free loopback port and starts the thread.
  bool Start(std::string *error);
  int Port() const { return port_; }
  // postgresql://postgres@127.0.0.1:PORT/db
  std::string Url(const std::string &db = "postgres") const;

  // Every connection stops moving data; new ones are held.
  void Pause();
  // Everything moves again: frozen connections thaw, held-back chunks go
  // out, held new connections are served.
  void Resume();
  void FreezeExisting();
  void DropExisting();
  void SetNewConnections(NewConnections mode);

  // Arms a one-shot trigger (see above).
  void ArmTrigger(const std::string &pattern, OnMatch how, Others others,
                  NewConnections new_connections);
  // Waits up to ms for the trigger to fire.
  bool WaitTriggered(int ms);
  bool Triggered();

  // Connections accepted so far.
  int Accepted();

 private:
  struct Pair;
  void Run();
  void Wake();
  void AcceptOne();
  void ClosePair(Pair *p);
  bool Pump(Pair *p, int from);  // false when the pair is done

  int upstream_port_;
  int port_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;

  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  bool stop_ = false;
  NewConnections new_mode_ = NewConnections::kServe;
  bool thaw_all_ = false;    // Resume() asked: the thread thaws every pair
  bool freeze_all_ = false;  // FreezeExisting() asked
  bool drop_all_ = false;    // DropExisting() asked
  bool armed_ = false;
  bool triggered_ = false;
  std::string pattern_;
  OnMatch on_match_ = OnMatch::kHoldChunk;
  Others others_ = Others::kFreeze;
  NewConnections new_after_ = NewConnections::kServe;
  int accepted_ = 0;

  std::vector<std::unique_ptr<Pair>> pairs_;  // the thread's only
};

}  // namespace es_pg_test

#endif  // ES_TESTS_PG_TCP_PROXY_H
