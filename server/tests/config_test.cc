// Unit tests of the server's configuration: defaults, environment, flags (flags
// win), every kind of value and every refusal with its exit code.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

extern "C" {
#include "config.h"
}

namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char *v : kEnv) unsetenv(v);
  }
  void TearDown() override {
    for (const char *v : kEnv) unsetenv(v);
  }
  // Runs es_config_load on "eventstore" + args.
  int Load(std::vector<std::string> args) {
    args.insert(args.begin(), "eventstore");
    std::vector<char *> argv;
    for (auto &a : args) argv.push_back(&a[0]);
    argv.push_back(nullptr);
    return es_config_load(&cfg_, static_cast<int>(args.size()), argv.data());
  }
  static constexpr const char *kEnv[] = {"BIND_ADDR",
                                         "BACKEND",
                                         "DATABASE_URL",
                                         "ES_THREADS",
                                         "ES_WORKERS",
                                         "LOG_LEVEL",
                                         "ES_MAX_APPEND_EVENTS",
                                         "ES_INSECURE",
                                         "ES_TLS_CERT",
                                         "ES_TLS_KEY",
                                         "ES_AUTH_TOKENS_FILE",
                                         "ES_SHUTDOWN_GRACE_MS",
                                         "ES_TLS_CLIENT_CA",
                                         "ES_MAX_REQUEST_BYTES",
                                         "ES_PG_CONNECT_TIMEOUT_S",
                                         "ES_PG_STATEMENT_TIMEOUT_MS",
                                         "ES_PG_LOCK_TIMEOUT_MS",
                                         "ES_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                                         "ES_PG_TCP_USER_TIMEOUT_MS",
                                         "ES_DATA_DIR",
                                         "BUILD_WORKING_DIRECTORY"};
  es_config_t cfg_;
};
constexpr const char *ConfigTest::kEnv[];

TEST_F(ConfigTest, DefaultsFollowTheContract) {
  ASSERT_EQ(ES_CONFIG_RUN, Load({}));
  EXPECT_STREQ("127.0.0.1:50051", cfg_.bind_addr);
  EXPECT_STREQ("lmdb", cfg_.backend);  // durable by default, in ./data
  EXPECT_EQ(1, cfg_.cq_threads);
  EXPECT_EQ(64, cfg_.workers);
  EXPECT_EQ(5000, cfg_.shutdown_grace_ms);
  EXPECT_EQ(ES_LOG_INFO, cfg_.log_level);
  EXPECT_EQ(4u * 1024 * 1024, cfg_.limits.max_request_bytes);
  EXPECT_EQ(1000u, cfg_.limits.max_append_events);
  EXPECT_EQ(cfg_.limits.max_request_bytes, cfg_.limits.max_event_bytes);
}

TEST_F(ConfigTest, EnvironmentThenFlagsWin) {
  setenv("BIND_ADDR", "127.0.0.1:7000", 1);
  setenv("ES_MAX_APPEND_EVENTS", "10", 1);
  setenv("LOG_LEVEL", "debug", 1);
  ASSERT_EQ(ES_CONFIG_RUN, Load({"--max-append-events", "20"}));
  EXPECT_STREQ("127.0.0.1:7000", cfg_.bind_addr);
  EXPECT_EQ(20u, cfg_.limits.max_append_events);
  EXPECT_EQ(ES_LOG_DEBUG, cfg_.log_level);
}

TEST_F(ConfigTest, EveryKindOfValue) {
  ASSERT_EQ(ES_CONFIG_RUN,
            Load({"--threads", "3", "--workers", "5", "--shutdown-grace-ms", "0", "--log-level",
                  "error", "--max-request-bytes", "1024", "--checkpoint-interval", "7", "--backend",
                  "postgres", "--database-url", "postgres://x", "--port-file", "/tmp/p"}));
  EXPECT_EQ(3, cfg_.cq_threads);
  EXPECT_EQ(5, cfg_.workers);
  EXPECT_EQ(0, cfg_.shutdown_grace_ms);
  EXPECT_EQ(ES_LOG_ERROR, cfg_.log_level);
  EXPECT_EQ(1024u, cfg_.limits.max_request_bytes);
  EXPECT_EQ(7u, cfg_.limits.default_checkpoint_interval);
  EXPECT_STREQ("postgres", cfg_.backend);
  EXPECT_STREQ("/tmp/p", cfg_.port_file);
}

TEST_F(ConfigTest, PostgresGetsMoreWorkersByDefault) {
  ASSERT_EQ(ES_CONFIG_RUN, Load({"--backend", "postgres"}));
  EXPECT_EQ(64, cfg_.workers);
}

// --live-window-events 0 turns the window off; byte sizes stay >= 1.
TEST_F(ConfigTest, TheLiveWindowCanBeTurnedOff) {
  ASSERT_EQ(ES_CONFIG_RUN, Load({"--live-window-events", "0"}));
  EXPECT_EQ(0u, cfg_.live_window_events);
  EXPECT_EQ(ES_CONFIG_EXIT_USAGE, Load({"--live-window-bytes", "0"}));
  EXPECT_EQ(ES_CONFIG_EXIT_USAGE, Load({"--max-request-bytes", "0"}));
}

// Nothing in the memory backend waits, so two workers keep both cores busy.
TEST_F(ConfigTest, MemoryIsChosenByNameOrEnvironment) {
  ASSERT_EQ(ES_CONFIG_RUN, Load({"--backend", "memory"}));
  EXPECT_STREQ("memory", cfg_.backend);
  EXPECT_EQ(2, cfg_.workers);
  setenv("BACKEND", "memory", 1);
  ASSERT_EQ(ES_CONFIG_RUN, Load({}));
  EXPECT_STREQ("memory", cfg_.backend);
  ASSERT_EQ(ES_CONFIG_RUN, Load({"--backend", "lmdb"}));
  EXPECT_STREQ("lmdb", cfg_.backend);
}

// A relative data directory is taken from where the user ran the command:
// BUILD_WORKING_DIRECTORY under `bazel run`, else the current directory.
TEST_F(ConfigTest, DataDirIsResolvedFromWhereTheCommandRan) {
  char cwd[4096];
  ASSERT_NE(nullptr, getcwd(cwd, sizeof cwd));
  ASSERT_EQ(ES_CONFIG_RUN, Load({}));
  EXPECT_EQ(std::string(cwd) + "/data", cfg_.data_dir);
  ASSERT_EQ(ES_CONFIG_RUN, Load({"--data-dir", "/var/lib/es"}));
  EXPECT_STREQ("/var/lib/es", cfg_.data_dir);
  setenv("BUILD_WORKING_DIRECTORY", "/home/user/project", 1);
  ASSERT_EQ(ES_CONFIG_RUN, Load({}));
  EXPECT_STREQ("/home/user/project/data", cfg_.data_dir);
  setenv("ES_DATA_DIR", "store/events", 1);
  ASSERT_EQ(ES_CONFIG_RUN, Load({}));
  EXPECT_STREQ("/home/user/project/store/events", cfg_.data_dir);
  ASSERT_EQ(ES_CONFIG_RUN, Load({"--data-dir", "./other", "--backend", "lmdb"}));
  EXPECT_STREQ("/home/user/project/other", cfg_.data_dir);
  EXPECT_EQ(64, cfg_.workers);  // appends wait for a sync: group commit wants company
}

TEST_F(ConfigTest, PostgresTimeouts) {
  ASSERT_EQ(ES_CONFIG_RUN, Load({}));
  EXPECT_EQ(5, cfg_.pg_connect_timeout_s);
  EXPECT_EQ(10000, cfg_.pg_statement_timeout_ms);
  EXPECT_EQ(5000, cfg_.pg_lock_timeout_ms);
  EXPECT_EQ(10000, cfg_.pg_idle_in_transaction_timeout_ms);
  EXPECT_EQ(10000, cfg_.pg_tcp_user_timeout_ms);
  setenv("ES_PG_STATEMENT_TIMEOUT_MS", "2500", 1);
  setenv("ES_PG_LOCK_TIMEOUT_MS", "700", 1);
  setenv("ES_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS", "0", 1);
  setenv("ES_PG_CONNECT_TIMEOUT_S", "3", 1);
  setenv("ES_PG_TCP_USER_TIMEOUT_MS", "4000", 1);
  ASSERT_EQ(ES_CONFIG_RUN, Load({"--pg-lock-timeout-ms", "800"}));
  EXPECT_EQ(2500, cfg_.pg_statement_timeout_ms);
  EXPECT_EQ(800, cfg_.pg_lock_timeout_ms);
  EXPECT_EQ(0, cfg_.pg_idle_in_transaction_timeout_ms);  // 0 = no bound
  EXPECT_EQ(3, cfg_.pg_connect_timeout_s);
  EXPECT_EQ(4000, cfg_.pg_tcp_user_timeout_ms);
  ASSERT_EQ(ES_CONFIG_RUN,
            Load({"--pg-statement-timeout-ms", "1", "--pg-idle-in-transaction-timeout-ms", "600000",
                  "--pg-tcp-user-timeout-ms", "0", "--pg-connect-timeout-s", "60"}));
  EXPECT_EQ(1, cfg_.pg_statement_timeout_ms);
  EXPECT_EQ(600000, cfg_.pg_idle_in_transaction_timeout_ms);
  EXPECT_EQ(0, cfg_.pg_tcp_user_timeout_ms);
  EXPECT_EQ(60, cfg_.pg_connect_timeout_s);
  for (const char *flag : {"--pg-statement-timeout-ms", "--pg-lock-timeout-ms",
                           "--pg-idle-in-transaction-timeout-ms", "--pg-tcp-user-timeout-ms"}) {
    EXPECT_EQ(ES_CONFIG_EXIT_USAGE, Load({flag, "600001"})) << flag;
    EXPECT_EQ(ES_CONFIG_EXIT_USAGE, Load({flag, "-1"})) << flag;
    EXPECT_EQ(ES_CONFIG_EXIT_USAGE, Load({flag, "1s"})) << flag;
  }
  EXPECT_EQ(ES_CONFIG_EXIT_USAGE, Load({"--pg-connect-timeout-s", "0"}));
  testing::internal::CaptureStdout();
  EXPECT_EQ(ES_CONFIG_EXIT_OK, Load({"--help"}));
  std::string help = testing::internal::GetCapturedStdout();
  EXPECT_NE(std::string::npos, help.find("--pg-statement-timeout-ms"));
  EXPECT_NE(std::string::npos, help.find("[ES_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS]"));
}

TEST_F(ConfigTest, BadValuesAreRefused) {
  const std::vector<std::vector<std::string>> bad = {
      {"--threads", "0"},
      {"--threads", "2000"},
      {"--threads", "-1"},
      {"--threads", "abc"},
      {"--threads", ""},
      {"--threads", "99999999999999999999999"},
      {"--shutdown-grace-ms", "600001"},
      {"--max-append-events", "0"},
      {"--max-append-events", "4294967296"},
      {"--max-request-bytes", "0"},
      {"--max-request-bytes", "2147483649"},
      {"--log-level", "verbose"},
      {"--insecure=maybe"},
      {"--bind", std::string(300, 'x')},
      {"--no-such-flag"},
      {"stray-argument"},
      {"--default-page-events", "50", "--max-page-events", "10"},
      {"--tls-cert", "c.pem"},
      {"--tls-key", "k.pem"},
      {"--tls-client-ca", "ca.pem"},
  };
  for (const auto &args : bad) {
    std::string joined;
    for (const auto &a : args) joined += a + " ";
    EXPECT_EQ(ES_CONFIG_EXIT_USAGE, Load(args)) << joined;
  }
}

TEST_F(ConfigTest, BadEnvironmentIsRefused) {
  setenv("ES_THREADS", "zero", 1);
  EXPECT_EQ(ES_CONFIG_EXIT_USAGE, Load({}));
}

TEST_F(ConfigTest, LoweringTheMaximumPageLowersTheDefault) {
  ASSERT_EQ(ES_CONFIG_RUN, Load({"--max-page-events", "5"}));
  EXPECT_EQ(5u, cfg_.limits.default_page_events);
}

TEST_F(ConfigTest, HelpAndVersionExitZero) {
  testing::internal::CaptureStdout();
  EXPECT_EQ(ES_CONFIG_EXIT_OK, Load({"--help"}));
  std::string help = testing::internal::GetCapturedStdout();
  EXPECT_NE(std::string::npos, help.find("--max-append-events"));
  EXPECT_NE(std::string::npos, help.find("[BIND_ADDR]"));
  EXPECT_NE(std::string::npos, help.find("backup --data-dir DIR --out DIR2"));
  testing::internal::CaptureStdout();
  EXPECT_EQ(ES_CONFIG_EXIT_OK, Load({"--version"}));
  EXPECT_NE(std::string::npos, testing::internal::GetCapturedStdout().find(ES_VERSION));
}

TEST_F(ConfigTest, NonLoopbackNeedsTlsAndTokensOrInsecure) {
  EXPECT_EQ(ES_CONFIG_EXIT_USAGE, Load({"--bind", "0.0.0.0:50051"}));
  EXPECT_EQ(ES_CONFIG_RUN, Load({"--bind", "0.0.0.0:50051", "--insecure"}));
  setenv("ES_INSECURE", "true", 1);
  EXPECT_EQ(ES_CONFIG_RUN, Load({"--bind", "0.0.0.0:50051"}));
  unsetenv("ES_INSECURE");
  EXPECT_EQ(ES_CONFIG_RUN, Load({"--bind", "0.0.0.0:50051", "--tls-cert", "c", "--tls-key", "k",
                                 "--auth-tokens-file", "t"}));
  EXPECT_EQ(ES_CONFIG_EXIT_USAGE,
            Load({"--bind", "0.0.0.0:50051", "--tls-cert", "c", "--tls-key", "k"}));
  EXPECT_EQ(ES_CONFIG_RUN, Load({"--bind", "[::1]:50051"}));
  EXPECT_EQ(ES_CONFIG_RUN, Load({"--bind", "localhost:50051"}));
  EXPECT_EQ(ES_CONFIG_RUN, Load({"--bind", "127.1.2.3:50051"}));
}

}  // namespace
