// SPDX-License-Identifier: MIT
// The librados functions the store calls, loaded on first use instead of
// linked: librados brings libceph-common, boost and the RDMA libraries,
// whose loading (about 1300 page faults, 8 ms of CPU, more on a host with
// shadow paging) every run of `vmsnap` paid before main, although only the
// store commands and store URLs need them. `vmsnap load --via`, whose whole
// run should take a few milliseconds, paid it three times over.
//
// Each function below has the signature <rados/librados.h> declares and
// forwards to the same symbol of librados.so.2, opened once. A store call
// that is not listed here fails to link (add it here). Where librados.so.2
// cannot be opened, the calls that return an int fail with -ENOSYS, which
// the store reports as an error of the first one it makes (rados_create).
#include <rados/librados.h>

#include <cerrno>
#include <cstdint>
#include <ctime>

#include "store/dl_library.h"
#include "store/object_store.h"

namespace {

constexpr char kSoname[] = "librados.so.2";
using Rados = vmsnap::store::dl::Library<kSoname>;

}  // namespace

#define VMSNAP_RADOS_INT(name, params, args)                              \
  extern "C" int name params {                                            \
    static const auto fn = Rados::Symbol<int(*) params>(#name);           \
    return fn != nullptr ? fn args : -ENOSYS;                             \
  }
#define VMSNAP_RADOS_VOID(name, params, args)                             \
  extern "C" void name params {                                           \
    static const auto fn = Rados::Symbol<void(*) params>(#name);          \
    if (fn != nullptr) fn args;                                           \
  }

VMSNAP_RADOS_INT(rados_create, (rados_t* cluster, const char* const id), (cluster, id))
VMSNAP_RADOS_INT(rados_conf_read_file, (rados_t cluster, const char* path), (cluster, path))
VMSNAP_RADOS_INT(rados_conf_parse_env, (rados_t cluster, const char* var), (cluster, var))
VMSNAP_RADOS_INT(rados_conf_set, (rados_t cluster, const char* option, const char* value), (cluster, option, value))
VMSNAP_RADOS_INT(rados_conf_get, (rados_t cluster, const char* option, char* buf, size_t len),
                 (cluster, option, buf, len))
VMSNAP_RADOS_INT(rados_connect, (rados_t cluster), (cluster))
VMSNAP_RADOS_VOID(rados_shutdown, (rados_t cluster), (cluster))
VMSNAP_RADOS_INT(rados_ioctx_create, (rados_t cluster, const char* pool_name, rados_ioctx_t* ioctx),
                 (cluster, pool_name, ioctx))
VMSNAP_RADOS_VOID(rados_ioctx_destroy, (rados_ioctx_t io), (io))
VMSNAP_RADOS_INT(rados_stat, (rados_ioctx_t io, const char* o, uint64_t* psize, time_t* pmtime),
                 (io, o, psize, pmtime))
VMSNAP_RADOS_INT(rados_read, (rados_ioctx_t io, const char* oid, char* buf, size_t len, uint64_t off),
                 (io, oid, buf, len, off))
VMSNAP_RADOS_INT(rados_remove, (rados_ioctx_t io, const char* oid), (io, oid))
VMSNAP_RADOS_INT(rados_getxattr, (rados_ioctx_t io, const char* o, const char* name, char* buf, size_t len),
                 (io, o, name, buf, len))
VMSNAP_RADOS_INT(rados_nobjects_list_open, (rados_ioctx_t io, rados_list_ctx_t* ctx), (io, ctx))
VMSNAP_RADOS_INT(rados_nobjects_list_next,
                 (rados_list_ctx_t ctx, const char** entry, const char** key, const char** nspace),
                 (ctx, entry, key, nspace))
VMSNAP_RADOS_VOID(rados_nobjects_list_close, (rados_list_ctx_t ctx), (ctx))
VMSNAP_RADOS_VOID(rados_release_write_op, (rados_write_op_t write_op), (write_op))
VMSNAP_RADOS_VOID(rados_write_op_setxattr,
                  (rados_write_op_t write_op, const char* name, const char* value, size_t value_len),
                  (write_op, name, value, value_len))
VMSNAP_RADOS_VOID(rados_write_op_write_full, (rados_write_op_t write_op, const char* buffer, size_t len),
                  (write_op, buffer, len))
VMSNAP_RADOS_VOID(rados_write_op_remove, (rados_write_op_t write_op), (write_op))
VMSNAP_RADOS_VOID(rados_write_op_cmpxattr,
                  (rados_write_op_t write_op, const char* name, uint8_t comparison_operator, const char* value,
                   size_t value_len),
                  (write_op, name, comparison_operator, value, value_len))
VMSNAP_RADOS_VOID(rados_write_op_create, (rados_write_op_t write_op, int exclusive, const char* category),
                  (write_op, exclusive, category))
VMSNAP_RADOS_VOID(rados_write_op_assert_exists, (rados_write_op_t write_op), (write_op))
VMSNAP_RADOS_INT(rados_write_op_operate,
                 (rados_write_op_t write_op, rados_ioctx_t io, const char* oid, time_t* mtime, int flags),
                 (write_op, io, oid, mtime, flags))

// The one call that returns a handle rather than a status: null without
// librados, which the store treats as an allocation failure.
extern "C" rados_write_op_t rados_create_write_op(void) {
  static const auto fn = Rados::Symbol<rados_write_op_t (*)(void)>("rados_create_write_op");
  return fn != nullptr ? fn() : nullptr;
}

namespace vmsnap::store {

void PreloadRados() { (void)Rados::Handle(); }

}  // namespace vmsnap::store
