// `tributary node`'s HTTP side: /healthz and Prometheus /metrics.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include "tributary/node/node_service.h"

namespace tributary::node {
namespace {

TEST(NodeService, ServesHealthAndPrometheusMetrics) {
  NodeOptions o;
  o.node_id = "metrics-" + std::to_string(getpid());
  o.store = {"tributary." + o.node_id, 16ull << 20, 256};
  o.binary = TRIBUTARY_BINARY;
  o.dataplane = dataplane::DataPlaneMode::kUserspace;
  // No controller listens there: the node keeps saying hello into the void.
  auto service = NodeService::Start(o, {.endpoint = "tcp://127.0.0.1:9"}, "127.0.0.1:0");
  ASSERT_TRUE(service) << service.error().ToString();
  ASSERT_GT(service.value()->metrics_port(), 0);
  httplib::Client http("127.0.0.1", service.value()->metrics_port());
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok\n");
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  const std::string& m = metrics->body;
  EXPECT_NE(m.find("# TYPE tributary_functions_cold_starts_total counter"), std::string::npos) << m;
  EXPECT_NE(m.find("tributary_dataplane_info{node=\"" + o.node_id + "\",mode=\"userspace\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("tributary_store_leases{node=\"" + o.node_id + "\"} 1"), std::string::npos) << m;
}

}  // namespace
}  // namespace tributary::node
