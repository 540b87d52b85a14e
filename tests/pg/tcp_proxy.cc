// See tcp_proxy.h.
#include "tests/pg/tcp_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

namespace es_pg_test {

struct TcpProxy::Pair {
  int fd[2] = {-1, -1};  // 0: the client, 1: the upstream server
  std::string pend[2];   // bytes to write to fd[i] (flushed even when frozen)
  std::string held;      // client-to-server bytes held back until a thaw
  std::string tail;      // the client's last bytes, to match across chunks
  bool frozen = false;   // read nothing from either side
  bool closed = false;
};

namespace {

void SetNonBlocking(int fd) {
  int fl = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

}  // namespace

TcpProxy::TcpProxy(int upstream_port) : upstream_port_(upstream_port) {}

TcpProxy::~TcpProxy() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  for (auto &p : pairs_) ClosePair(p.get());
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

bool TcpProxy::Start(std::string *error) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (listen_fd_ < 0 || wake_fd_ < 0) {
    *error = std::string("socket/eventfd: ") + strerror(errno);
    return false;
  }
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(listen_fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
      listen(listen_fd_, 64) != 0 ||
      getsockname(listen_fd_, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
    *error = std::string("bind/listen: ") + strerror(errno);
    return false;
  }
  SetNonBlocking(listen_fd_);
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { Run(); });
  return true;
}

std::string TcpProxy::Url(const std::string &db) const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

void TcpProxy::Wake() {
  uint64_t one = 1;
  ssize_t w = write(wake_fd_, &one, sizeof one);
  (void)w;
}

void TcpProxy::Pause() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    freeze_all_ = true;
    new_mode_ = NewConnections::kHold;
  }
  Wake();
}

void TcpProxy::Resume() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    thaw_all_ = true;
    new_mode_ = NewConnections::kServe;
  }
  Wake();
}

void TcpProxy::FreezeExisting() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    freeze_all_ = true;
  }
  Wake();
}

void TcpProxy::DropExisting() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    drop_all_ = true;
  }
  Wake();
}

void TcpProxy::SetNewConnections(NewConnections mode) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    new_mode_ = mode;
  }
  Wake();
}

void TcpProxy::ArmTrigger(const std::string &pattern, OnMatch how, Others others,
                          NewConnections new_connections) {
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = true;
  triggered_ = false;
  pattern_ = pattern;
  on_match_ = how;
  others_ = others;
  new_after_ = new_connections;
}

bool TcpProxy::WaitTriggered(int ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return triggered_; });
}

bool TcpProxy::Triggered() {
  std::lock_guard<std::mutex> lock(mu_);
  return triggered_;
}

int TcpProxy::Accepted() {
  std::lock_guard<std::mutex> lock(mu_);
  return accepted_;
}

void TcpProxy::ClosePair(Pair *p) {
  for (int &fd : p->fd)
    if (fd >= 0) {
      close(fd);
      fd = -1;
    }
  p->closed = true;
}

void TcpProxy::AcceptOne() {
  int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) return;
  NewConnections mode;
  {
    std::lock_guard<std::mutex> lock(mu_);
    mode = new_mode_;
    accepted_++;
  }
  if (mode == NewConnections::kRefuse) {
    close(c);
    return;
  }
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(upstream_port_));
  if (s < 0 || connect(s, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
    if (s >= 0) close(s);
    close(c);
    return;
  }
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  SetNonBlocking(c);
  SetNonBlocking(s);
  auto p = std::make_unique<Pair>();
  p->fd[0] = c;
  p->fd[1] = s;
  pairs_.push_back(std::move(p));
}

bool TcpProxy::Pump(Pair *p, int from) {
  char buf[65536];
  ssize_t n = read(p->fd[from], buf, sizeof buf);
  if (n < 0) return errno == EAGAIN || errno == EINTR;
  if (n == 0) return false;
  std::string chunk(buf, static_cast<size_t>(n));
  if (from == 1) {
    p->pend[0] += chunk;
    return true;
  }
  std::lock_guard<std::mutex> lock(mu_);
  bool match = false;
  if (armed_ && !pattern_.empty()) {
    std::string window = p->tail + chunk;
    match = window.find(pattern_) != std::string::npos;
    size_t keep = pattern_.size() - 1;
    p->tail = window.size() > keep ? window.substr(window.size() - keep) : window;
  }
  if (!match) {
    p->pend[1] += chunk;
    return true;
  }
  armed_ = false;
  triggered_ = true;
  if (on_match_ == OnMatch::kHoldChunk)
    p->held += chunk;
  else
    p->pend[1] += chunk;
  p->frozen = true;
  for (auto &o : pairs_) {
    if (o.get() == p) continue;
    if (others_ == Others::kFreeze) o->frozen = true;
    if (others_ == Others::kDrop) ClosePair(o.get());
  }
  new_mode_ = new_after_;
  cv_.notify_all();
  return true;
}

void TcpProxy::Run() {
  for (;;) {
    NewConnections mode;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      for (auto &p : pairs_) {
        if (thaw_all_) {
          p->frozen = false;
          p->pend[1] += p->held;
          p->held.clear();
        }
        if (freeze_all_) p->frozen = true;
        if (drop_all_) ClosePair(p.get());
      }
      thaw_all_ = freeze_all_ = drop_all_ = false;
      mode = new_mode_;
    }
    // A frozen pair with nothing to flush is not polled at all: a peer that
    // closed it would otherwise report POLLHUP for ever.
    std::vector<pollfd> fds;
    std::vector<std::pair<Pair *, int>> who;
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({mode == NewConnections::kHold ? -1 : listen_fd_, POLLIN, 0});
    for (auto &p : pairs_) {
      if (p->closed) continue;
      for (int i = 0; i < 2; i++) {
        short ev = 0;
        if (!p->frozen && p->pend[1 - i].empty()) ev |= POLLIN;
        if (!p->pend[i].empty()) ev |= POLLOUT;
        fds.push_back({ev ? p->fd[i] : -1, ev, 0});
        who.push_back({p.get(), i});
      }
    }
    int r = poll(fds.data(), fds.size(), -1);
    if (r < 0 && errno != EINTR) return;
    if (fds[0].revents) {
      uint64_t v;
      ssize_t rd = read(wake_fd_, &v, sizeof v);
      (void)rd;
    }
    if (fds[1].fd >= 0 && fds[1].revents) AcceptOne();
    for (size_t k = 0; k < who.size(); k++) {
      Pair *p = who[k].first;
      int i = who[k].second;
      short rev = fds[k + 2].revents;
      if (p->closed || fds[k + 2].fd < 0 || !rev) continue;
      if ((rev & POLLOUT) && !p->pend[i].empty()) {
        ssize_t w = send(p->fd[i], p->pend[i].data(), p->pend[i].size(), MSG_NOSIGNAL);
        if (w > 0) {
          p->pend[i].erase(0, static_cast<size_t>(w));
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
          ClosePair(p);
          continue;
        }
      }
      if ((rev & (POLLIN | POLLHUP | POLLERR)) && !p->frozen && !Pump(p, i)) ClosePair(p);
    }
    for (size_t k = 0; k < pairs_.size();)
      if (pairs_[k]->closed)
        pairs_.erase(pairs_.begin() + static_cast<long>(k));
      else
        k++;
  }
}

}  // namespace es_pg_test
