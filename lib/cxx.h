// SPDX-License-Identifier: MIT
// The C API as the built-in VMM (C++, in this repository) calls it: a
// snapshot handle over a chain it opened already, a call's status as a
// Status, and the VM configuration a vmsnap_vm handle applied.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "format/chain.h"
#include "include/vmsnap/vmsnap.h"
#include "kvm/x86_64/x86.h"

namespace vmsnap::capi {

// What vmsnap_open makes of a chain it opened: a handle over CHAIN, which
// may be shared (a server keeps chains open for the workers it forks).
// Free it with vmsnap_close.
vmsnap_snapshot* WrapChain(std::shared_ptr<const SnapshotChain> chain, std::string path);

// RC, as a vmsnap_* call returned it, with the calling thread's last error
// as the message.
Status StatusOf(int rc);

// The configuration vmsnap_vm_configure or vmsnap_vm_restore_config applied
// to VM; null before either.
const kvm::x86::VmConfig* VmConfigOf(const vmsnap_vm* vm);

}  // namespace vmsnap::capi
