// SPDX-License-Identifier: MIT
// ObjectStore on a Ceph pool through librados's C API (thread-safe: one
// cluster handle and one I/O context serve every worker thread).
#include "store/object_store.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <rados/librados.h>

namespace vmsnap::store {
namespace {

constexpr char kMarkAttr[] = "vmsnap.mark";
constexpr int kTimeoutS = 30;
// Bytes asked for by the first read of a whole object (Get).
constexpr size_t kFirstRead = 256 << 10;

Status FromRados(int rc, const std::string& what) {
  const int e = rc < 0 ? -rc : rc;
  if (e == ENOENT) return Status::NotFound(what + ": no such object");
  if (e == ENOSPC || e == EDQUOT) return Status::NoSpace(what + ": " + std::strerror(e));
  if (e == ETIMEDOUT) return Status::Io(what + ": the cluster did not answer in time");
  return Status::Io(what + ": " + std::strerror(e));
}

class RadosStore final : public ObjectStore {
 public:
  RadosStore(rados_t cluster, rados_ioctx_t io, std::string pool)
      : cluster_(cluster), io_(io), where_("rados://" + std::move(pool)) {}
  ~RadosStore() override {
    rados_ioctx_destroy(io_);
    rados_shutdown(cluster_);
  }
  const std::string& where() const override { return where_; }

  Status Put(const std::string& name, std::span<const uint8_t> data, const std::string& mark) override {
    rados_write_op_t op = rados_create_write_op();
    rados_write_op_write_full(op, reinterpret_cast<const char*>(data.data()), data.size());
    rados_write_op_setxattr(op, kMarkAttr, mark.data(), mark.size());
    const int rc = rados_write_op_operate(op, io_, name.c_str(), nullptr, 0);
    rados_release_write_op(op);
    return rc < 0 ? FromRados(rc, Where(name) + ": write") : Status::Ok();
  }

  Status Touch(const std::string& name, const std::string& mark) override {
    rados_write_op_t op = rados_create_write_op();
    rados_write_op_assert_exists(op);
    rados_write_op_setxattr(op, kMarkAttr, mark.data(), mark.size());
    const int rc = rados_write_op_operate(op, io_, name.c_str(), nullptr, 0);
    rados_release_write_op(op);
    return rc < 0 ? FromRados(rc, Where(name)) : Status::Ok();
  }

  // One operation per object when the guess is right: an exclusive create
  // (with the bytes and the mark) that the OSD refuses with EEXIST when the
  // object is there, or a mark that requires the object to exist. A wrong
  // guess costs the other one; an object gc removes in between is written.
  Result<bool> Ensure(const std::string& name, std::span<const uint8_t> data, const std::string& mark,
                      bool likely_new) override {
    for (int attempt = 0; attempt < 4; ++attempt, likely_new = !likely_new) {
      if (!likely_new) {
        Status s = Touch(name, mark);
        if (s.ok()) return false;
        if (s.code() != Code::kNotFound) return s;
        continue;
      }
      rados_write_op_t op = rados_create_write_op();
      rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, nullptr);
      rados_write_op_write_full(op, reinterpret_cast<const char*>(data.data()), data.size());
      rados_write_op_setxattr(op, kMarkAttr, mark.data(), mark.size());
      const int rc = rados_write_op_operate(op, io_, name.c_str(), nullptr, 0);
      rados_release_write_op(op);
      if (rc == 0) return true;
      if (rc != -EEXIST) return FromRados(rc, Where(name) + ": write");
    }
    return Status::Io(Where(name) + ": kept being removed and created by others while it was written");
  }

  Result<std::vector<uint8_t>> Get(const std::string& name) override {
    // One read first, with no stat: an object smaller than it (a layout
    // object, which `load` waits for) costs one round trip instead of two.
    // A larger one is stat'ed once and read to its end.
    std::vector<uint8_t> out(kFirstRead);
    int rc = rados_read(io_, name.c_str(), reinterpret_cast<char*>(out.data()), kFirstRead, 0);
    if (rc < 0) return FromRados(rc, Where(name) + (rc == -ENOENT ? "" : ": read"));
    uint64_t done = static_cast<uint64_t>(rc);
    if (done == kFirstRead) {
      uint64_t size = 0;
      time_t mtime = 0;
      rc = rados_stat(io_, name.c_str(), &size, &mtime);
      if (rc < 0) return FromRados(rc, Where(name));
      out.resize(std::max<uint64_t>(size, done));
      while (done < size) {
        // rados_read takes an int-sized length: large objects come in pieces.
        const size_t step = static_cast<size_t>(std::min<uint64_t>(size - done, 64ull << 20));
        rc = rados_read(io_, name.c_str(), reinterpret_cast<char*>(out.data() + done), step, done);
        if (rc < 0) return FromRados(rc, Where(name) + ": read");
        if (rc == 0) return Status::Io(Where(name) + ": shorter than its size while reading");
        done += static_cast<uint64_t>(rc);
      }
    }
    out.resize(done);
    return out;
  }

  Result<uint64_t> ReadSized(const std::string& name, uint64_t size, uint8_t* out) override {
    // One read of one byte more than expected: no stat round trip first.
    if (size >= (64ull << 20)) return ObjectStore::ReadSized(name, size, out);
    const int rc = rados_read(io_, name.c_str(), reinterpret_cast<char*>(out), size + 1, 0);
    if (rc < 0) return FromRados(rc, Where(name) + (rc == -ENOENT ? "" : ": read"));
    return uint64_t(rc);
  }

  Result<std::string> Mark(const std::string& name, uint64_t* size) override {
    if (size != nullptr) {
      time_t mtime = 0;
      const int rc = rados_stat(io_, name.c_str(), size, &mtime);
      if (rc < 0) return FromRados(rc, Where(name));
    }
    char buf[256];
    const int rc = rados_getxattr(io_, name.c_str(), kMarkAttr, buf, sizeof buf);
    if (rc == -ENODATA) return std::string();
    if (rc < 0) return FromRados(rc, Where(name));
    return std::string(buf, static_cast<size_t>(rc));
  }

  Result<std::vector<std::string>> List(const std::string& prefix) override {
    rados_list_ctx_t ctx;
    int rc = rados_nobjects_list_open(io_, &ctx);
    if (rc < 0) return FromRados(rc, where_ + ": list");
    std::vector<std::string> names;
    const char* entry = nullptr;
    while ((rc = rados_nobjects_list_next(ctx, &entry, nullptr, nullptr)) == 0) {
      if (std::strncmp(entry, prefix.c_str(), prefix.size()) == 0) names.emplace_back(entry);
    }
    rados_nobjects_list_close(ctx);
    if (rc != -ENOENT) return FromRados(rc, where_ + ": list");
    return names;
  }

  Result<bool> RemoveIfMark(const std::string& name, const std::string& mark) override {
    BeforeRemove(name);
    rados_write_op_t op = rados_create_write_op();
    rados_write_op_cmpxattr(op, kMarkAttr, LIBRADOS_CMPXATTR_OP_EQ, mark.data(), mark.size());
    rados_write_op_remove(op);
    const int rc = rados_write_op_operate(op, io_, name.c_str(), nullptr, 0);
    rados_release_write_op(op);
    if (rc == -ECANCELED) return false;  // marked again since it was examined
    if (rc < 0) return FromRados(rc, Where(name) + ": remove");
    return true;
  }

  Status Remove(const std::string& name) override {
    const int rc = rados_remove(io_, name.c_str());
    return rc < 0 ? FromRados(rc, Where(name) + ": remove") : Status::Ok();
  }

 private:
  std::string Where(const std::string& name) const { return where_ + "/" + name; }
  rados_t cluster_;
  rados_ioctx_t io_;
  std::string where_;
};

}  // namespace

Result<std::unique_ptr<ObjectStore>> OpenRados(const std::string& pool, const std::string& conf) {
  rados_t cluster;
  int rc = rados_create(&cluster, nullptr);
  if (rc < 0) return FromRados(rc, "rados://" + pool + ": create a cluster handle");
  // Every error reaches the user as the one line the command prints; Ceph's
  // own logging would add lines of its own on stderr (CEPH_ARGS may turn it
  // back on).
  (void)rados_conf_set(cluster, "err_to_stderr", "false");
  (void)rados_conf_set(cluster, "log_to_stderr", "false");
  auto fail = [&](int code, const std::string& what) {
    rados_shutdown(cluster);
    return FromRados(code, "rados://" + pool + ": " + what);
  };
  // CEPH_CONF and Ceph's default places when no path is given.
  rc = rados_conf_read_file(cluster, conf.empty() ? nullptr : conf.c_str());
  if (rc < 0) return fail(rc, "read the cluster configuration " + (conf.empty() ? std::string("(CEPH_CONF or /etc/ceph/ceph.conf)") : conf));
  // A store command is a short client, and `load` waits for its session
  // before the guest's first instruction: it binds no admin socket and
  // opens no log file, which nothing reads for a client this brief, whatever
  // the configuration file says. CEPH_ARGS (read next) can ask for them.
  (void)rados_conf_set(cluster, "admin_socket", "");
  (void)rados_conf_set(cluster, "log_file", "");
  (void)rados_conf_parse_env(cluster, nullptr);  // CEPH_ARGS
  // A store that is gone must fail a command, not hang it: Ceph's clients
  // wait forever (op timeouts 0) or five minutes (mount) by default. A
  // configuration that sets its own limits keeps them.
  for (const char* opt : {"client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"}) {
    char value[64] = "";
    const double v = rados_conf_get(cluster, opt, value, sizeof value) == 0 ? std::atof(value) : 0;
    if (v == 0 || v > kTimeoutS) (void)rados_conf_set(cluster, opt, std::to_string(kTimeoutS).c_str());
  }
  rc = rados_connect(cluster);
  if (rc < 0) return fail(rc, "connect to the cluster");
  rados_ioctx_t io;
  rc = rados_ioctx_create(cluster, pool.c_str(), &io);
  if (rc == -ENOENT) {
    rados_shutdown(cluster);
    return Status::NotFound("rados://" + pool + ": no such pool");
  }
  if (rc < 0) return fail(rc, "open the pool");
  return std::unique_ptr<ObjectStore>(new RadosStore(cluster, io, pool));
}

}  // namespace vmsnap::store
