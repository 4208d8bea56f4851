// SPDX-License-Identifier: MIT
// A flat namespace of immutable objects in a distributed store, as the chunk
// store needs it: whole-object writes, reads, listing, and a "mark" (an
// attribute the garbage collector compares before it deletes) so a delete
// can never race a writer that still relies on the object.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace vmsnap::store {

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  // "rados://POOL", "s3://BUCKET/PREFIX": for messages.
  virtual const std::string& where() const = 0;
  // Writes the whole object in one atomic step and sets its mark.
  virtual Status Put(const std::string& name, std::span<const uint8_t> data, const std::string& mark) = 0;
  // Sets the mark of an object that exists; NotFound (and nothing created)
  // when it does not.
  virtual Status Touch(const std::string& name, const std::string& mark) = 0;
  // Makes sure an immutable object (its name fixes its bytes) exists and
  // carries `mark`: marks it when it is there, without sending its bytes
  // again, writes it otherwise; true when it wrote it. `likely_new` says
  // which to try first, so that a right guess costs one request.
  virtual Result<bool> Ensure(const std::string& name, std::span<const uint8_t> data, const std::string& mark,
                              bool likely_new);
  // The whole object; NotFound when it does not exist.
  virtual Result<std::vector<uint8_t>> Get(const std::string& name) = 0;
  // The whole object when the caller knows its size (a chunk, from the
  // layout), into `out` (room for `size` + 1 bytes), for a caller that
  // reuses one buffer for many chunks: in one request where the store
  // allows it, no allocation, and on RADOS no zero fill, per object.
  // Returns the object's length, or `size` + 1 when it is larger.
  virtual Result<uint64_t> ReadSized(const std::string& name, uint64_t size, uint8_t* out) {
    VMSNAP_ASSIGN_OR_RETURN(std::vector<uint8_t> got, Get(name));
    const uint64_t n = std::min<uint64_t>(got.size(), size + 1);
    std::copy_n(got.data(), n, out);
    return n;
  }
  // The object's mark, and its size.
  virtual Result<std::string> Mark(const std::string& name, uint64_t* size = nullptr) = 0;
  // Every object whose name starts with `prefix`.
  virtual Result<std::vector<std::string>> List(const std::string& prefix) = 0;
  // Deletes the object only if its mark is still `mark`: true when it did,
  // false when it kept the object because someone marked it again (or, on
  // S3, modified it too recently to tell a new mark apart).
  virtual Result<bool> RemoveIfMark(const std::string& name, const std::string& mark) = 0;
  virtual Status Remove(const std::string& name) = 0;

  // For tests: stands for a push that marks an object at the worst moment
  // for gc, run by RemoveIfMark after its last look at the object and
  // right before the delete itself.
  void SetBeforeRemove(std::function<void(const std::string& name)> fn) { before_remove_ = std::move(fn); }

 protected:
  void BeforeRemove(const std::string& name) {
    if (before_remove_) before_remove_(name);
  }

 private:
  std::function<void(const std::string& name)> before_remove_;
};

// A mark, "<unix seconds> <random>": gc reads its time, and the random part
// makes every push's mark its own, so gc's compare-and-delete notices any
// new one.
std::string NewMark();
// The time a mark was made, in unix seconds.
int64_t MarkTime(const std::string& mark);

// A store that passes every call to another, for a wrapper that changes
// one or two of them: it overrides those, and Target(), which may wait for
// the other store or fail (its error is then every call's).
class ForwardingStore : public ObjectStore {
 public:
  Status Put(const std::string& name, std::span<const uint8_t> data, const std::string& mark) override {
    VMSNAP_ASSIGN_OR_RETURN(ObjectStore * s, Target());
    return s->Put(name, data, mark);
  }
  Status Touch(const std::string& name, const std::string& mark) override {
    VMSNAP_ASSIGN_OR_RETURN(ObjectStore * s, Target());
    return s->Touch(name, mark);
  }
  Result<bool> Ensure(const std::string& name, std::span<const uint8_t> data, const std::string& mark,
                      bool likely_new) override {
    VMSNAP_ASSIGN_OR_RETURN(ObjectStore * s, Target());
    return s->Ensure(name, data, mark, likely_new);
  }
  Result<std::vector<uint8_t>> Get(const std::string& name) override {
    VMSNAP_ASSIGN_OR_RETURN(ObjectStore * s, Target());
    return s->Get(name);
  }
  Result<uint64_t> ReadSized(const std::string& name, uint64_t size, uint8_t* out) override {
    VMSNAP_ASSIGN_OR_RETURN(ObjectStore * s, Target());
    return s->ReadSized(name, size, out);
  }
  Result<std::string> Mark(const std::string& name, uint64_t* size = nullptr) override {
    VMSNAP_ASSIGN_OR_RETURN(ObjectStore * s, Target());
    return s->Mark(name, size);
  }
  Result<std::vector<std::string>> List(const std::string& prefix) override {
    VMSNAP_ASSIGN_OR_RETURN(ObjectStore * s, Target());
    return s->List(prefix);
  }
  Result<bool> RemoveIfMark(const std::string& name, const std::string& mark) override {
    VMSNAP_ASSIGN_OR_RETURN(ObjectStore * s, Target());
    return s->RemoveIfMark(name, mark);
  }
  Status Remove(const std::string& name) override {
    VMSNAP_ASSIGN_OR_RETURN(ObjectStore * s, Target());
    return s->Remove(name);
  }

 protected:
  virtual Result<ObjectStore*> Target() = 0;
};

// A pool of a Ceph cluster through librados: the cluster from `conf` (a
// ceph.conf path; empty: CEPH_CONF, then Ceph's default places), the identity
// client.admin unless CEPH_ARGS says otherwise, keys from the usual keyring.
Result<std::unique_ptr<ObjectStore>> OpenRados(const std::string& pool, const std::string& conf);

// Loads librados (which the store otherwise loads on its first call, tens
// of milliseconds) now: for a process that forks workers which will open
// stores, so that each inherits it loaded. Loading starts no thread, so the
// fork stays safe.
void PreloadRados();

// Where an S3 service is and who we are to it, as the AWS tools take it:
// AWS_ENDPOINT_URL (default https://s3.REGION.amazonaws.com), AWS_REGION (or
// AWS_DEFAULT_REGION; default us-east-1), AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (optional); and VMSNAP_S3_TIMEOUT,
// the seconds a request may move no byte before it fails (default 30).
struct S3Config {
  std::string endpoint, region, access_key, secret_key, session_token;
  long stall_s = 30;
};
Result<S3Config> S3ConfigFromEnv();

// Loads libcurl and runs its one-time set-up (which starts no thread) now:
// PreloadRados's reason, for a process whose workers will open S3 stores.
void PreloadS3();

// The objects under `prefix` in an S3 bucket (Ceph's radosgw, or any service
// speaking S3), requests signed with AWS Signature V4 by libcurl. Opening
// lists the bucket once, so a wrong bucket or key fails here.
Result<std::unique_ptr<ObjectStore>> OpenS3(const std::string& bucket, const std::string& prefix,
                                            const S3Config& config);

}  // namespace vmsnap::store
