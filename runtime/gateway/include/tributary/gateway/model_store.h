// The global models a node serves to its clients: per job, the latest
// published version, in a shared-memory block.
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
  // Replaces the job's model if `model.version` is newer; older ones are ignored.
  void Publish(const std::string& job, PublishedModel model);
  // The job's current model (its block held for the caller); kNotFound if none.
  Result<PublishedModel> Get(const std::string& job) const;
  void Clear();  // drops every model (before the segment goes)

 private:
  mutable std::mutex mu_;
  std::map<std::string, PublishedModel> models_;
};

}  // namespace tributary::gateway
