#include "tributary/gateway/round_book.h"

#include <utility>

namespace tributary::gateway {

void RoundBook::OpenRound(RoundSpec spec) {
  std::lock_guard lock(mu_);
  Job& j = jobs_[spec.job];
  j.spec = std::move(spec);
  j.open = true;
  j.in_flight.clear();
  j.delivered.clear();
}

void RoundBook::CloseRound(const std::string& job) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job);
  if (it != jobs_.end()) it->second.open = false;
}

Result<const RoundBook::Job*> RoundBook::Find(const std::string& job, uint64_t round, uint64_t model_version) const {
  auto it = jobs_.find(job);
  if (it == jobs_.end()) return MakeError(ErrorCode::kUnknownJob, "no job '" + job + "'");
  const Job& j = it->second;
  if (round < j.spec.round) {
    return MakeError(ErrorCode::kReplay, "round " + std::to_string(round) + " is over (current round " +
                                             std::to_string(j.spec.round) + ")");
  }
  if (round > j.spec.round || !j.open) {
    return MakeError(ErrorCode::kRoundClosed, "round " + std::to_string(round) + " of job '" + job + "' is not open");
  }
  if (model_version != j.spec.model_version) {
    return MakeError(ErrorCode::kReplay, "update trained from model version " + std::to_string(model_version) +
                                             ", the round's is " + std::to_string(j.spec.model_version));
  }
  return &j;
}

std::optional<Assignment> RoundBook::AssignmentFor(const std::string& client) const {
  std::lock_guard lock(mu_);
  for (const auto& [name, j] : jobs_) {
    if (!j.open) continue;
    if (j.spec.selected.count(client) != 0 && j.delivered.count(client) == 0) {
      return Assignment{name, j.spec.round, j.spec.model_version, j.spec.client_config, std::nullopt};
    }
    // Whether it delivered there is that gateway's to say.
    if (auto away = j.spec.steered_away.find(client); away != j.spec.steered_away.end()) {
      return Assignment{name, j.spec.round, j.spec.model_version, j.spec.client_config, away->second};
    }
  }
  return std::nullopt;
}

Result<RoundTerms> RoundBook::Lookup(const std::string& job, uint64_t round, uint64_t model_version) const {
  std::lock_guard lock(mu_);
  TRIBUTARY_ASSIGN_OR_RETURN(const Job* j, Find(job, round, model_version));
  return RoundTerms{j->spec.model, j->spec.reject_non_finite};
}

Result<Admission> RoundBook::Admit(const std::string& job, uint64_t round, uint64_t model_version,
                                   const std::string& client) {
  std::lock_guard lock(mu_);
  TRIBUTARY_ASSIGN_OR_RETURN(const Job* j, Find(job, round, model_version));
  auto sel = j->spec.selected.find(client);
  if (sel == j->spec.selected.end()) {
    return MakeError(ErrorCode::kNotSelected, "client '" + client + "' is not selected for round " +
                                                  std::to_string(round));
  }
  Job& mj = jobs_.at(job);
  if (mj.delivered.count(client) != 0) {
    return MakeError(ErrorCode::kDuplicateUpdate, "client '" + client + "' already delivered round " +
                                                      std::to_string(round));
  }
  if (!mj.in_flight.insert(client).second) {
    return MakeError(ErrorCode::kUploadInProgress, "an upload of client '" + client + "' is already in progress");
  }
  return Admission(this, AdmittedUpload{job, round, client, sel->second});
}

void RoundBook::Settle(const AdmittedUpload& who, bool delivered) {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(who.job);
  if (it == jobs_.end() || it->second.spec.round != who.round) return;  // a later round: nothing of it is held
  it->second.in_flight.erase(who.client);
  if (delivered) it->second.delivered.insert(who.client);
}

Admission::Admission(Admission&& other) noexcept
    : book_(std::exchange(other.book_, nullptr)), who_(std::move(other.who_)) {}

Admission& Admission::operator=(Admission&& other) noexcept {
  if (this != &other) {
    Settle(false);
    book_ = std::exchange(other.book_, nullptr);
    who_ = std::move(other.who_);
  }
  return *this;
}

void Admission::Settle(bool delivered) {
  if (book_ == nullptr) return;
  std::exchange(book_, nullptr)->Settle(who_, delivered);
}

}  // namespace tributary::gateway
