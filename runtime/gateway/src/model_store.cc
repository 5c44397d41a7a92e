#include "tributary/gateway/model_store.h"

namespace tributary::gateway {

void ModelStore::Publish(const std::string& job, PublishedModel model) {
  std::lock_guard lock(mu_);
  auto it = models_.find(job);
  if (it != models_.end() && it->second.version >= model.version) return;
  models_[job] = std::move(model);
}

Result<PublishedModel> ModelStore::Get(const std::string& job) const {
  std::lock_guard lock(mu_);
  auto it = models_.find(job);
  if (it == models_.end()) return MakeError(ErrorCode::kNotFound, "no global model published for job '" + job + "'");
  const PublishedModel& m = it->second;
  TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef block, m.block.Clone());
  return PublishedModel{m.version, m.spec, m.xxh3, std::move(block)};
}

void ModelStore::Clear() {
  std::lock_guard lock(mu_);
  models_.clear();
}

}  // namespace tributary::gateway
