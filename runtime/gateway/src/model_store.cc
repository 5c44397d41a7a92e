#include "tributary/gateway/model_store.h"

namespace tributary::gateway {

void ModelStore::Publish(const std::string& job, PublishedModel model, const std::string& client) {
  std::lock_guard lock(mu_);
  auto it = models_.find({job, client});
  if (it != models_.end() && it->second.version >= model.version) return;
  if (client.empty()) DropPersonalLocked(job, model.version);
  models_[{job, client}] = std::move(model);
}

Result<PublishedModel> ModelStore::Get(const std::string& job, const std::string& client) const {
  std::lock_guard lock(mu_);
  auto it = client.empty() ? models_.end() : models_.find({job, client});
  if (it == models_.end()) it = models_.find({job, ""});
  if (it == models_.end()) return MakeError(ErrorCode::kNotFound, "no model published for job '" + job + "'");
  const PublishedModel& m = it->second;
  TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef block, m.block.Clone());
  return PublishedModel{m.version, m.spec, m.xxh3, std::move(block)};
}

void ModelStore::DropPersonalBefore(const std::string& job, uint64_t version) {
  std::lock_guard lock(mu_);
  DropPersonalLocked(job, version);
}

void ModelStore::DropPersonalLocked(const std::string& job, uint64_t version) {
  std::erase_if(models_, [&](const auto& kv) {
    return kv.first.first == job && !kv.first.second.empty() && kv.second.version < version;
  });
}

void ModelStore::Clear() {
  std::lock_guard lock(mu_);
  models_.clear();
}

}  // namespace tributary::gateway
