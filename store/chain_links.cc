// SPDX-License-Identifier: MIT
// Chain folders of links (see chain_links.h).
#include "store/chain_links.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "base/hex.h"
#include "format/reader.h"
#include "store/sha256.h"

namespace vmsnap::store {

Result<LinkedChain> LinkChain(const std::string& dir, const std::vector<const SnapshotReader*>& readers) {
  namespace fs = std::filesystem;
  std::vector<std::string> layers;
  for (const SnapshotReader* r : readers) layers.push_back(r->path());
  if (layers.size() <= 1) return LinkedChain{layers.empty() ? std::string() : layers.back(), UniqueFd(), std::string()};
  // Where each layer goes, relative to the chain's folder: the leaf first,
  // then each parent where its child's manifest looks for it. A parent
  // path that climbs ("../") needs the leaf that many folders down.
  std::vector<std::string> recorded(layers.size());
  size_t climbs = 0;
  for (size_t k = 1; k < layers.size(); ++k) {
    const auto m = readers[k]->manifest();
    if (!m.hasParent()) return Status::Internal(layers[k] + ": a chain's layer without a parent");
    recorded[k] = m.getParent().getPath().cStr();
    if (recorded[k].empty() || recorded[k][0] == '/') {
      return Status::Unsupported(layers[k] + ": names its parent by the absolute path " + recorded[k] +
                                 "; pull the chain and load the files");
    }
    for (const auto& part : fs::path(recorded[k])) climbs += part == "..";
  }
  std::string key;
  for (const std::string& f : layers) key += fs::absolute(f).string() + '\n';
  const std::string chain_dir = dir + "/chains/" + BytesHex(Sha256({reinterpret_cast<const uint8_t*>(key.data()), key.size()}));
  fs::path leaf = "l";
  for (size_t i = 0; i < climbs; ++i) leaf /= "l";
  leaf /= BytesHex(Sha256({reinterpret_cast<const uint8_t*>(layers.back().data()), layers.back().size()})).substr(0, 16) +
          ".vmsnap";
  std::vector<fs::path> place(layers.size());
  place.back() = leaf;
  std::set<fs::path> used{leaf};
  for (size_t k = layers.size() - 1; k > 0; --k) {
    place[k - 1] = (place[k].parent_path() / recorded[k]).lexically_normal();
    if (place[k - 1].empty() || *place[k - 1].begin() == ".." || !used.insert(place[k - 1]).second) {
      return Status::Unsupported(layers[k] + ": its parent path " + recorded[k] + " cannot be laid out beside it");
    }
  }
  const std::string leaf_path = chain_dir + "/" + leaf.string();
  // The folder is held (a shared lock on it) until the chain is open:
  // RemoveDeadChains takes only folders nobody holds. A folder renamed away
  // between finding it and locking it is made again.
  for (int attempt = 0; attempt < 4; ++attempt) {
    std::error_code ec;
    if (!fs::exists(leaf_path, ec)) {
      // Made aside, then renamed into place: two loads of one chain never
      // see half a folder.
      const std::string tmp = chain_dir + "." + std::to_string(::getpid()) + ".tmp";
      fs::remove_all(tmp, ec);
      for (size_t k = 0; k < layers.size(); ++k) {
        const fs::path link = fs::path(tmp) / place[k];
        fs::create_directories(link.parent_path(), ec);
        if (!ec) fs::create_symlink(fs::absolute(layers[k]), link, ec);
        if (ec) {
          fs::remove_all(tmp, ec);
          return Status::Io("link " + link.string() + " to " + layers[k] + ": " + ec.message());
        }
      }
      if (::rename(tmp.c_str(), chain_dir.c_str()) != 0) {
        const int err = errno;
        fs::remove_all(tmp, ec);
        if (err != EEXIST && err != ENOTEMPTY) return Status::FromErrno(err, "create " + chain_dir);
      }
    }
    UniqueFd hold(::open(chain_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    struct stat held {}, there {};
    if (hold.valid() && ::flock(hold.get(), LOCK_SH) == 0 && ::fstat(hold.get(), &held) == 0 &&
        ::stat(chain_dir.c_str(), &there) == 0 && held.st_ino == there.st_ino && held.st_dev == there.st_dev) {
      return LinkedChain{leaf_path, std::move(hold), chain_dir};
    }
  }
  return Status::Io(chain_dir + ": removed again and again while it was made");
}

void RemoveDeadChains(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::directory_iterator it(fs::path(dir) / "chains", ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path folder = it->path();
    // Folders being made or removed have a '.' in their names.
    if (folder.filename().string().find('.') != std::string::npos) continue;
    bool dead = false;
    std::error_code walk;
    for (fs::recursive_directory_iterator l(folder, walk), lend; !walk && l != lend && !dead; l.increment(walk)) {
      std::error_code e;
      dead = l->is_symlink(e) && !fs::exists(l->path(), e);
    }
    if (dead) RemoveChainFolder(folder.string());
  }
}

void RemoveChainFolder(const std::string& folder) {
  UniqueFd fd(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  // Held: a load is opening the chain through it.
  if (!fd.valid() || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return;
  const std::string gone = folder + "." + std::to_string(::getpid()) + ".gone";
  std::error_code e;
  if (::rename(folder.c_str(), gone.c_str()) == 0) std::filesystem::remove_all(gone, e);
}

}  // namespace vmsnap::store
