// Who may send what: the open round of each job, as the controller set it.
//
// Admit() decides whether an update header may be uploaded: the job exists,
// the round is open, the client was selected for it, the model version is
// the round's, and the client has not already delivered (each client's
// update is admitted once per round). The Admission is held while the upload
// runs: its Commit() marks the client as delivered; an Admission that goes
// without Commit() releases itself, so the client may try again.
//
// Thread safety: all methods lock; shared by the gateway and the controller link.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "tributary/aggregator/tensor.h"
#include "tributary/core/config_map.h"
#include "tributary/core/error.h"

namespace tributary::gateway {

// Another node's gateway, where the placement steered a client to upload.
struct UploadGateway {
  std::string endpoint;
  std::string public_key;  // Z85; empty without CURVE
};

struct RoundSpec {
  std::string job;
  uint64_t round = 0;
  uint64_t model_version = 0;
  agg::ModelSpec model;                      // tensor names, shapes, model dtypes
  std::map<std::string, uint32_t> selected;  // client id -> route key
  bool reject_non_finite = true;
  ConfigMap client_config;                   // sent to each selected client with its task
  // Selected clients that asked here but upload to another node's gateway.
  std::map<std::string, UploadGateway> steered_away;
};

// What an update header is checked against.
struct RoundTerms {
  agg::ModelSpec model;
  bool reject_non_finite = true;
};

// A selected client's task: what it trains from and for which round, and
// where it uploads when that is not this gateway.
struct Assignment {
  std::string job;
  uint64_t round = 0;
  uint64_t model_version = 0;
  ConfigMap config;
  std::optional<UploadGateway> upload_gateway;
};

// Whose upload an admission admits.
struct AdmittedUpload {
  std::string job;
  uint64_t round = 0;
  std::string client;
  uint32_t route_key = 0;
};

class RoundBook;

// One client's admission to upload in a round: move-only, released when it
// goes unless committed. Must not outlive its RoundBook.
class Admission {
 public:
  Admission() = default;
  Admission(Admission&& other) noexcept;
  Admission& operator=(Admission&& other) noexcept;
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;
  ~Admission() { Settle(false); }

  const AdmittedUpload& operator*() const { return who_; }
  const AdmittedUpload* operator->() const { return &who_; }
  // The client delivered: it is not admitted again this round.
  void Commit() { Settle(true); }

 private:
  friend class RoundBook;
  Admission(RoundBook* book, AdmittedUpload who) : book_(book), who_(std::move(who)) {}
  void Settle(bool delivered);

  RoundBook* book_ = nullptr;  // null once settled or moved from
  AdmittedUpload who_;
};

class RoundBook {
 public:
  void OpenRound(RoundSpec spec);
  void CloseRound(const std::string& job);

  // The model spec and policy of the job's open round, to validate a header
  // (not the whole spec: its client lists are as long as the round).
  Result<RoundTerms> Lookup(const std::string& job, uint64_t round, uint64_t model_version) const;
  Result<Admission> Admit(const std::string& job, uint64_t round, uint64_t model_version, const std::string& client);

  // The open round `client` is selected for and has not delivered yet, if any.
  std::optional<Assignment> AssignmentFor(const std::string& client) const;

 private:
  friend class Admission;
  void Settle(const AdmittedUpload& who, bool delivered);

  struct Job {
    RoundSpec spec;
    bool open = false;
    std::set<std::string> in_flight;
    std::set<std::string> delivered;
  };
  Result<const Job*> Find(const std::string& job, uint64_t round, uint64_t model_version) const;

  mutable std::mutex mu_;
  std::map<std::string, Job> jobs_;
};

}  // namespace tributary::gateway
