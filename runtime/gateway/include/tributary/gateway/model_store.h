// The models a node serves to its clients: per job, the latest published
// global version, and personal models (one per client, for personalized jobs
// such as SemiPFL), each in a shared-memory block.
//
// The node's controller link publishes; the gateway reads. A reader gets its
// own reference to the block, so a newer version can be published while an
// older one is still being served.
//
// Thread safety: all methods lock.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "tributary/aggregator/tensor.h"
#include "tributary/core/error.h"
#include "tributary/shm/segment.h"

namespace tributary::gateway {

struct PublishedModel {
  uint64_t version = 0;
  agg::ModelSpec spec;
  uint64_t xxh3 = 0;
  shm::BlockRef block;  // the payload, laid out as an update's
};

class ModelStore {
 public:
  // Replaces the job's model (or `client`'s personal one) if `model.version`
  // is newer; older ones are ignored. Publishing a global version drops the
  // job's personal models of older versions.
  void Publish(const std::string& job, PublishedModel model, const std::string& client = "");
  // `client`'s personal model if one is published, else the job's model (its
  // block held for the caller); kNotFound if neither.
  Result<PublishedModel> Get(const std::string& job, const std::string& client = "") const;
  // Drops the job's personal models older than `version` (their clients were
  // not selected again).
  void DropPersonalBefore(const std::string& job, uint64_t version);
  void Clear();  // drops every model (before the segment goes)

 private:
  void DropPersonalLocked(const std::string& job, uint64_t version);
  using Key = std::pair<std::string, std::string>;  // job, client ("" = the job's)
  mutable std::mutex mu_;
  std::map<Key, PublishedModel> models_;
};

}  // namespace tributary::gateway
