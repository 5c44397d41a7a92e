// A minimal client of the gateway's upload protocol, for tests. The real one
// is the client SDK; this one speaks the same frames with no retries, so
// tests see each answer as it comes.
#pragma once

#include <chrono>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "tributary/protocol/codec.h"

namespace tributary::testing {

class UploadClient {
 public:
  explicit UploadClient(const std::string& endpoint) : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }

  // Sends an envelope (and extra frames); returns the reply envelope.
  Result<v1::Envelope> Request(v1::Envelope e, const std::vector<std::string>& frames = {}) {
    e.set_request_id(++request_id_);
    return RequestRaw(protocol::EncodeEnvelope(e), frames);
  }

  Result<v1::Envelope> RequestRaw(const std::string& envelope, const std::vector<std::string>& frames = {}) {
    SendRaw(envelope, frames);
    return Receive();
  }

  void SendRaw(const std::string& envelope, const std::vector<std::string>& frames) {
    socket_.send(zmq::buffer(envelope), frames.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore);
    for (size_t i = 0; i < frames.size(); ++i) {
      socket_.send(zmq::buffer(frames[i]), i + 1 == frames.size() ? zmq::send_flags::none : zmq::send_flags::sndmore);
    }
  }

  // The next reply, whichever request it answers.
  Result<v1::Envelope> Receive() {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(10000));
    if (!(item.revents & ZMQ_POLLIN)) return MakeError(ErrorCode::kIo, "no reply from the gateway");
    std::vector<zmq::message_t> parts;
    (void)zmq::recv_multipart(socket_, std::back_inserter(parts));
    v1::Envelope reply;
    if (parts.empty() || parts.size() > 2 || !reply.ParseFromArray(parts[0].data(), static_cast<int>(parts[0].size()))) {
      return MakeError(ErrorCode::kMalformedFrame, "bad reply");
    }
    last_frame_ = parts.size() == 2 ? parts[1].to_string() : std::string();
    if (reply.has_error()) return protocol::FromErrorReply(reply.error());
    return reply;
  }

  Result<v1::Envelope> Header(const v1::UpdateHeader& h) {
    v1::Envelope e = protocol::NewEnvelope();
    *e.mutable_update() = h;
    return Request(e);
  }

  // Every chunk of payload[from..] sent at once, not waiting for answers
  // (a client using all the credit the gateway grants, and more); then one
  // answer per chunk, in order.
  std::vector<Result<v1::Envelope>> AllChunksAtOnce(uint64_t upload_id, const std::string& payload, uint64_t chunk,
                                                    uint64_t from = 0) {
    size_t sent = 0;
    for (uint64_t at = from; at < payload.size(); at += chunk, ++sent) {
      v1::Envelope e = protocol::NewEnvelope();
      e.set_request_id(++request_id_);
      e.mutable_upload_chunk()->set_upload_id(upload_id);
      e.mutable_upload_chunk()->set_offset(at);
      SendRaw(protocol::EncodeEnvelope(e), {payload.substr(at, chunk)});
    }
    std::vector<Result<v1::Envelope>> answers;
    for (size_t i = 0; i < sent; ++i) answers.push_back(Receive());
    return answers;
  }

  Result<v1::Envelope> Chunk(uint64_t upload_id, uint64_t offset, std::string bytes) {
    v1::Envelope e = protocol::NewEnvelope();
    e.mutable_upload_chunk()->set_upload_id(upload_id);
    e.mutable_upload_chunk()->set_offset(offset);
    return Request(e, {std::move(bytes)});
  }

  // The job's global model, fetched chunk by chunk: {last chunk header, payload}.
  Result<std::pair<v1::ModelChunk, std::string>> DownloadModel(const std::string& job, uint64_t chunk = 64 << 10) {
    std::string payload;
    v1::ModelChunk head;
    do {
      v1::Envelope e = protocol::NewEnvelope();
      e.mutable_model_request()->set_job_id(job);
      e.mutable_model_request()->set_offset(payload.size());
      e.mutable_model_request()->set_max_bytes(chunk);
      TRIBUTARY_ASSIGN_OR_RETURN(v1::Envelope reply, Request(e));
      if (!reply.has_model_chunk()) return MakeError(ErrorCode::kMalformedFrame, "expected model_chunk");
      head = reply.model_chunk();
      if (last_frame_.empty() && payload.size() < head.total_bytes()) return MakeError(ErrorCode::kIo, "empty chunk");
      payload += last_frame_;
    } while (payload.size() < head.total_bytes());
    return std::make_pair(head, payload);
  }

  // The whole upload: header, then chunks; the final answer.
  Result<v1::Envelope> Upload(const v1::UpdateHeader& h, const std::string& payload, size_t chunk = 64 << 10) {
    TRIBUTARY_ASSIGN_OR_RETURN(v1::Envelope ready, Header(h));
    if (!ready.has_upload_ready()) return MakeError(ErrorCode::kMalformedFrame, "expected upload_ready");
    uint64_t off = ready.upload_ready().received_bytes();
    v1::Envelope last = ready;
    while (off < payload.size()) {
      const size_t n = std::min<size_t>(chunk, payload.size() - off);
      TRIBUTARY_ASSIGN_OR_RETURN(last, Chunk(ready.upload_ready().upload_id(), off, payload.substr(off, n)));
      off += n;
    }
    return last;
  }

 private:
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  uint64_t request_id_ = 0;
  std::string last_frame_;  // the payload frame of the last reply, if any
};

}  // namespace tributary::testing
