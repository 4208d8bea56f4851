// SPDX-License-Identifier: MIT
// The C API as the built-in VMM (C++, in this repository) calls it: a
// snapshot handle over a chain it opened already, and a call's status as a
// Status.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "format/chain.h"
#include "include/vmsnap/vmsnap.h"

namespace vmsnap::capi {

// What vmsnap_open makes of a chain it opened: a handle over CHAIN, which
// may be shared (a server keeps chains open for the workers it forks).
// Free it with vmsnap_close.
vmsnap_snapshot* WrapChain(std::shared_ptr<const SnapshotChain> chain, std::string path);

// RC, as a vmsnap_* call returned it, with the calling thread's last error
// as the message.
Status StatusOf(int rc);

}  // namespace vmsnap::capi
