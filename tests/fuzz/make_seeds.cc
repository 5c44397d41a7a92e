// Writes the seed corpora of tests/fuzz/corpus (checked in): one directory per
// target, each file a valid input (or a near miss) the mutations start from.
// Usage: fuzz_make_seeds SOURCE_DIR OUT_DIR (scripts/fuzz --seeds).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "fuzz_fixture.h"
#include "messages.h"
#include "tributary/controller/checkpoint.h"
#include "tributary/controller/safetensors.h"
#include "tributary/ebpf/abi.h"
#include "tributary/protocol/codec.h"

namespace fs = std::filesystem;
using namespace tributary;

namespace {

fs::path out_dir;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(out_dir / target);
  std::ofstream(out_dir / target / name, std::ios::binary) << bytes;
}

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Wire(const v1::Envelope& e) { return protocol::EncodeEnvelope(e); }

v1::Envelope Header(const std::string& client, const std::string& payload) {
  v1::Envelope e = protocol::NewEnvelope(1);
  v1::UpdateHeader& h = *e.mutable_update();
  h.set_job_id(fuzz::kGatewayJob);
  h.set_round(fuzz::kGatewayRound);
  h.set_client_id(client);
  h.set_model_version(fuzz::kGatewayModelVersion);
  h.set_sample_count(60);
  protocol::ToProto(fuzz::GatewayModel(), h.mutable_tensors());
  h.set_payload_bytes(payload.size());
  h.set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(payload))));
  return e;
}

// Header then every chunk of `payload` for upload `id`.
std::string Upload(const std::string& client, const std::string& payload, uint64_t id, std::string input = {}) {
  fuzz::AppendMessage(input, {Wire(Header(client, payload))});
  for (uint64_t at = 0; at < payload.size(); at += fuzz::kGatewayChunkBytes) {
    v1::Envelope c = protocol::NewEnvelope(2 + at);
    c.mutable_upload_chunk()->set_upload_id(id);
    c.mutable_upload_chunk()->set_offset(at);
    fuzz::AppendMessage(input, {Wire(c), payload.substr(at, fuzz::kGatewayChunkBytes)});
  }
  return input;
}

void GatewaySeeds() {
  const std::string good = fuzz::GatewayPayload(2.0f);
  Write("fuzz_gateway", "upload", Upload("c0", good, 1));
  Write("fuzz_gateway", "two-uploads", Upload("c1", fuzz::GatewayPayload(3.0f), 2, Upload("c0", good, 1)));
  std::string nan = good;
  const float bad = std::nanf("");
  std::memcpy(nan.data() + 40, &bad, sizeof bad);
  Write("fuzz_gateway", "upload-nan", Upload("c2", nan, 1));
  std::string resumed;
  fuzz::AppendMessage(resumed, {Wire(Header("c3", good))});
  resumed += Upload("c3", good, 1);  // the header again resumes upload 1
  Write("fuzz_gateway", "resume", resumed);
  v1::Envelope wrong = Header("c0", good);
  wrong.mutable_update()->set_payload_xxh3(1);
  std::string mismatch;
  fuzz::AppendMessage(mismatch, {Wire(wrong)});
  mismatch += Upload("c0", good, 1).substr(mismatch.size());  // chunks of upload 1 after a wrong checksum
  Write("fuzz_gateway", "checksum-mismatch", mismatch);
  std::string asks;
  v1::Envelope task = protocol::NewEnvelope(5);
  task.mutable_task_request()->set_client_id("c1");
  (*task.mutable_task_request()->mutable_properties())["cores"].set_int_value(4);
  fuzz::AppendMessage(asks, {Wire(task)});
  for (uint64_t at = 0; at < 300; at += fuzz::kGatewayChunkBytes) {
    v1::Envelope m = protocol::NewEnvelope(6 + at);
    m.mutable_model_request()->set_job_id(fuzz::kGatewayJob);
    m.mutable_model_request()->set_offset(at);
    m.mutable_model_request()->set_client_id("c1");
    fuzz::AppendMessage(asks, {Wire(m)});
  }
  Write("fuzz_gateway", "task-and-model", asks);
}

void CodecSeeds() {
  const std::string payload = fuzz::GatewayPayload(1.0f);
  Write("fuzz_protocol_codec", "header", Wire(Header("c0", payload)));
  v1::Envelope e = protocol::NewEnvelope(9);
  *e.mutable_error() = protocol::ToErrorReply(MakeError(ErrorCode::kChecksumMismatch, "checksum"));
  Write("fuzz_protocol_codec", "error", Wire(e));
  e = protocol::NewEnvelope(10);
  v1::RoundPlan& plan = *e.mutable_round_plan();
  plan.set_job_id("job");
  plan.set_round(4);
  protocol::ToProto(fuzz::GatewayModel(), plan.mutable_model());
  (*plan.mutable_clients())["c0"] = 100;
  protocol::ToProto(ConfigMap{{"lr", 0.1}, {"epochs", int64_t{2}}, {"name", std::string("x")}, {"on", true}},
                    plan.mutable_client_config());
  Write("fuzz_protocol_codec", "round-plan", Wire(e));
  e = protocol::NewEnvelope(11);
  e.mutable_task_request()->set_client_id("c0");
  (*e.mutable_task_request()->mutable_properties())["gpu"].set_bool_value(true);
  Write("fuzz_protocol_codec", "task-request", Wire(e));
}

void ControllerSeeds() {
  v1::Envelope hello = protocol::NewEnvelope();
  hello.mutable_node_hello()->set_node_id("n1");
  hello.mutable_node_hello()->set_gateway_endpoint("tcp://127.0.0.1:2");
  hello.mutable_node_hello()->set_segment_bytes(64 << 20);
  hello.mutable_node_hello()->set_function_limit(8);
  v1::Envelope beat = protocol::NewEnvelope();
  beat.mutable_node_heartbeat()->set_node_id("n1");
  beat.mutable_node_heartbeat()->set_job_id("job");
  beat.mutable_node_heartbeat()->set_round(1);
  beat.mutable_node_heartbeat()->set_plan_id(1);  // the harness puts in the plan it was sent
  v1::Envelope check_ins = protocol::NewEnvelope();
  check_ins.mutable_node_check_ins()->set_node_id("n1");
  for (const char* c : {"c0", "c1"}) check_ins.mutable_node_check_ins()->add_clients()->set_client_id(c);
  std::string joined;
  for (const v1::Envelope* m : {&hello, &beat, &check_ins}) fuzz::AppendMessage(joined, {Wire(*m)});
  Write("fuzz_controller", "join", joined);

  // A partial of round 1 in one chunk: sums of 8 elements, two updates.
  std::string sums(8 * sizeof(float), '\0');
  for (int i = 0; i < 8; ++i) {
    const float v = 1.0f + static_cast<float>(i);
    std::memcpy(sums.data() + i * sizeof(float), &v, sizeof v);
  }
  v1::Envelope partial = protocol::NewEnvelope();
  v1::NodePartial& p = *partial.mutable_node_partial();
  p.set_job_id("job");
  p.set_round(1);
  p.set_node_id("n1");
  p.set_weight(2);
  p.set_updates(2);
  p.set_payload_bytes(sums.size());
  p.set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(sums))));
  p.add_clients("c0");
  p.add_clients("c1");
  p.set_plan_id(1);
  v1::Envelope chunk = protocol::NewEnvelope();
  v1::NodePartialChunk& k = *chunk.mutable_node_partial_chunk();
  k.set_job_id("job");
  k.set_round(1);
  k.set_node_id("n1");
  k.set_offset(0);
  k.set_plan_id(1);
  std::string delivered = joined;
  fuzz::AppendMessage(delivered, {Wire(partial)});
  fuzz::AppendMessage(delivered, {Wire(chunk), sums});
  Write("fuzz_controller", "partial", delivered);
  v1::Envelope failed = protocol::NewEnvelope();
  failed.mutable_node_round_failed()->set_job_id("job");
  failed.mutable_node_round_failed()->set_round(1);
  failed.mutable_node_round_failed()->set_node_id("n1");
  failed.mutable_node_round_failed()->set_plan_id(1);
  *failed.mutable_node_round_failed()->mutable_error() = protocol::ToErrorReply(MakeError(ErrorCode::kIo, "lost"));
  std::string failing = joined;
  fuzz::AppendMessage(failing, {Wire(failed)});
  Write("fuzz_controller", "round-failed", failing);
}

// What a controller sends a node: a plan for two of the gateway's clients, a
// model in two chunks, a heartbeat that asks for a hello, a close.
void NodeSeeds() {
  v1::Envelope plan = protocol::NewEnvelope();
  v1::RoundPlan& p = *plan.mutable_round_plan();
  p.set_job_id("job");
  p.set_round(2);
  p.set_model_version(1);
  protocol::ToProto(fuzz::GatewayModel(), p.mutable_model());
  (*p.mutable_clients())["c0"] = 100;
  (*p.mutable_clients())["c1"] = 101;
  p.set_fan_in(2);
  p.set_deadline_ms(50);
  p.set_reject_non_finite(true);
  p.set_plan_id(77);
  v1::Envelope close = protocol::NewEnvelope();
  close.mutable_round_close()->set_job_id("job");
  close.mutable_round_close()->set_round(2);
  close.mutable_round_close()->set_plan_id(77);
  std::string round;
  fuzz::AppendMessage(round, {Wire(plan)});
  fuzz::AppendMessage(round, {Wire(close)});
  Write("fuzz_node", "plan-and-close", round);

  const std::string payload = fuzz::GatewayPayload(4.0f);
  v1::Envelope publish = protocol::NewEnvelope();
  v1::ModelPublish& m = *publish.mutable_model_publish();
  m.set_job_id("job");
  m.set_model_version(1);
  protocol::ToProto(fuzz::GatewayModel(), m.mutable_model());
  m.set_payload_bytes(payload.size());
  m.set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(payload))));
  std::string model;
  fuzz::AppendMessage(model, {Wire(publish)});
  for (uint64_t at = 0; at < payload.size(); at += 200) {
    v1::Envelope c = protocol::NewEnvelope();
    c.mutable_model_publish_chunk()->set_job_id("job");
    c.mutable_model_publish_chunk()->set_model_version(1);
    c.mutable_model_publish_chunk()->set_offset(at);
    fuzz::AppendMessage(model, {Wire(c), payload.substr(at, 200)});
  }
  Write("fuzz_node", "model", model);
  v1::Envelope beat = protocol::NewEnvelope();
  beat.mutable_controller_heartbeat()->set_instance(5);
  beat.mutable_controller_heartbeat()->set_known(false);
  std::string beats;
  fuzz::AppendMessage(beats, {Wire(beat)});
  Write("fuzz_node", "heartbeat", beats);
}

void FileSeeds(const fs::path& source) {
  controller::CheckpointState state;
  state.model_version = 3;
  state.steps = 3;
  state.model.assign(8, 0.25f);
  state.slots.push_back(std::vector<float>(8, 0.5f));
  Write("fuzz_checkpoint", "one-slot", std::string("\x08\x01", 2) + controller::EncodeCheckpoint(state));
  state.slots.clear();
  Write("fuzz_checkpoint", "no-slot", std::string("\x08\x00", 2) + controller::EncodeCheckpoint(state));
  const agg::ModelSpec spec = fuzz::GatewayModel();
  std::vector<float> values(spec.elements(), 1.5f);
  Write("fuzz_safetensors", "model",
        controller::EncodeSafetensors(spec, values, {{"format", "pt"}, {"model_version", "3"}}).value());
  // Config texts: the repository's own files, each behind the byte that picks its parser.
  Write("fuzz_config", "node", std::string(1, '\0') + Read(source / "examples/cluster/node.yaml"));
  Write("fuzz_config", "controller", std::string(1, '\1') + Read(source / "examples/cluster/controller.yaml"));
  for (const auto& job : fs::directory_iterator(source / "examples/cluster/jobs")) {
    Write("fuzz_config", "job-" + job.path().stem().string(), std::string(1, '\2') + Read(job.path()));
  }
  Write("fuzz_config", "strategy", std::string(1, '\3') + "strategy:\n  name: fedadam\n  server_lr: 0.01\n  beta1: 0.9\n");
  Write("fuzz_config", "bytes", std::string(1, '\4') + "512MiB");
}

void DescriptorSeeds() {
  trb_descriptor d{};
  d.magic = TRB_DESCRIPTOR_MAGIC;
  d.version = TRB_DESCRIPTOR_VERSION;
  d.kind = TRB_KIND_UPDATE;
  d.dest_fn = 2;
  d.route_key = 100;
  d.offset = 4096;
  d.generation = 1;
  d.length = 1000;
  Write("fuzz_descriptor", "update", std::string(reinterpret_cast<const char*>(&d), sizeof d));
  d.kind = TRB_KIND_HELLO;
  d.dest_fn = TRB_NO_FUNCTION;
  Write("fuzz_descriptor", "by-route", std::string(reinterpret_cast<const char*>(&d), sizeof d));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: fuzz_make_seeds SOURCE_DIR OUT_DIR\n";
    return 2;
  }
  out_dir = argv[2];
  GatewaySeeds();
  CodecSeeds();
  ControllerSeeds();
  NodeSeeds();
  FileSeeds(argv[1]);
  DescriptorSeeds();
  return 0;
}
