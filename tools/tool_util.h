// SPDX-License-Identifier: MIT
// Small helpers the offline subcommands share: the one-line error report and
// opening snapshots with the error naming the file.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "format/chain.h"

namespace vmsnap::tools {

// Prints "vmsnap <command>: <file>: <message>" on stderr (the file is left out
// when the message already names it) and returns `exit_code`.
int Fail(std::string_view command, const std::string& file, const Status& status, int exit_code);

// The files of a chain, leaf first: what a command reading it must never
// write over.
std::vector<std::string> ChainPaths(const SnapshotChain& chain);

// A snapshot argument that is a store URL (rados://POOL/NAME or
// s3://BUCKET/PREFIX/NAME) becomes the path of a local copy in vmsnap's cache
// (${XDG_CACHE_HOME:-~/.cache}/vmsnap/store/POOL-or-BUCKET/), pulled with
// every chunk checked unless the cache has it; the cluster is CEPH_CONF's,
// the S3 service the AWS_* environment's. A plain path is left as it is. On failure the
// error is printed (one line) and the command's exit status returned; 0 on
// success.
int ResolveSnapshotArg(std::string& arg, std::string_view command, int exit_code);

}  // namespace vmsnap::tools
