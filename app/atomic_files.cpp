#include "app/atomic_files.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.hpp"

namespace moesim {

namespace {

namespace fs = std::filesystem;

// pid + a process-wide counter: unique among the threads of one process and among processes.
std::string unique_suffix() {
  static std::atomic<std::uint64_t> counter{0};
  return fmt::format("{}-{}", static_cast<long long>(::getpid()), counter.fetch_add(1));
}

std::string hidden_sibling(const fs::path& target, const char* kind) {
  const fs::path parent = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  return (parent / fmt::format(".{}.{}-{}", target.filename().string(), kind, unique_suffix())).string();
}

std::string os_reason(int err) { return std::strerror(err); }

// Writes all of `content` to `fd` and fsyncs it; returns 0 or the errno of the failing call.
int write_all(int fd, std::string_view content) {
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return errno;
  return 0;
}

// The folder's entry in its parent reaches the disk only when the folder itself is synced; some
// file systems cannot fsync a folder (EINVAL), which costs durability there, not consistency.
void sync_folder(const fs::path& folder) {
  const int fd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

fs::path parent_of(const fs::path& p) { return p.parent_path().empty() ? fs::path(".") : p.parent_path(); }

// The pid of a hidden temporary ".NAME.KIND-PID-N", or 0 when `name` is not one.
long long temporary_pid(const std::string& name) {
  if (name.size() < 2 || name[0] != '.') return 0;
  const auto digits = [](const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const std::size_t last = name.rfind('-');
  if (last == std::string::npos || !digits(name.substr(last + 1))) return 0;
  const std::size_t mid = name.rfind('-', last - 1);
  if (mid == std::string::npos || mid < 5 || !digits(name.substr(mid + 1, last - mid - 1))) return 0;
  const std::string kind = name.substr(mid - 4, 4);
  if (kind != ".tmp" && kind != ".new" && kind != ".old") return 0;
  if (name.substr(mid + 1, last - mid - 1).size() > 9) return 0;
  return std::stoll(name.substr(mid + 1, last - mid - 1));
}

// The first entry of `dir` that is neither in `allowed` nor a hidden temporary ("" when none).
std::string foreign_entry(const fs::path& dir, const std::vector<std::string>& allowed) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (std::find(allowed.begin(), allowed.end(), n) == allowed.end() && !is_temporary_name(n)) return n;
  }
  return "";
}

// The folder path as given, without a trailing separator; ".", ".." and "/" cannot be renamed.
fs::path folder_target(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  const std::string n = p.filename().string();
  if (n.empty() || n == "." || n == "..")
    throw InputError(fmt::format("{}: not allowed as an output folder: it is replaced as a whole by each run, so "
                                 "give it a name of its own (e.g. out/results)",
                                 dir));
  return p;
}

void check_replaceable(const std::string& dir, const fs::path& target, const std::vector<std::string>& allowed) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(target, ec);
  if (!fs::exists(st)) return;
  if (fs::is_symlink(st))
    throw InputError(fmt::format("{}: is a symbolic link; the output folder is replaced as a whole, so name the "
                                 "folder itself",
                                 dir));
  if (!fs::is_directory(st)) throw InputError(fmt::format("{}: exists and is not a folder", dir));
  const std::string other = foreign_entry(target, allowed);
  if (!other.empty())
    throw InputError(fmt::format("{}: holds '{}', which is not one of moesim's outputs; the folder is replaced as a "
                                 "whole by each run, so give a new folder or move that out first",
                                 dir, other));
}

}  // namespace

bool is_temporary_name(const std::string& name) { return temporary_pid(name) > 0; }

std::size_t remove_stale_temporaries(const std::string& folder) {
  std::size_t removed = 0;
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    const long long pid = temporary_pid(e.path().filename().string());
    if (pid <= 0 || pid == static_cast<long long>(::getpid())) continue;
    // Only a writer that is gone: a live one (another moesim writing beside us) keeps its files.
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) stale.push_back(e.path());
  }
  for (const fs::path& p : stale) {
    std::error_code rm;
    if (fs::remove_all(p, rm) > 0 && !rm) ++removed;
  }
  return removed;
}

const std::vector<std::string>& output_folder_names() {
  static const std::vector<std::string> names{"summary.json", "iterations.csv", "experts.csv", "compare.csv",
                                              "compare.json", "report.md",      "report.html", "plots"};
  return names;
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  if (fs::is_directory(path_, ec)) throw InputError(fmt::format("{}: is a folder, not a file name", path_));
  tmp_ = hidden_sibling(path_, "tmp");
  // Created now and kept empty until stage(): a destination that cannot be written fails early.
  const int fd = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int err = errno;
    throw InputError(fmt::format("{}: cannot write: {} (in folder {})", path_, os_reason(err),
                                 parent_of(path_).string()));
  }
  ::close(fd);
}

AtomicFile::~AtomicFile() {
  if (!published_) ::unlink(tmp_.c_str());
}

void AtomicFile::stage(std::string_view content) {
  const int fd = ::open(tmp_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  int err = fd < 0 ? errno : write_all(fd, content);
  if (fd >= 0 && ::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(tmp_.c_str());
    published_ = true;  // nothing left to remove
    throw InputError(fmt::format("{}: write failed: {} ({} bytes; the partial file is removed)", path_,
                                 os_reason(err), content.size()));
  }
  staged_ = true;
}

void AtomicFile::publish() {
  if (!staged_ || published_) throw std::logic_error("AtomicFile::publish without stage");
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    published_ = true;
    throw InputError(fmt::format("{}: cannot rename the written file into place: {}", path_, os_reason(err)));
  }
  published_ = true;
  sync_folder(parent_of(path_));
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.commit(content);
}

OutputFolder::OutputFolder(std::string dir, std::vector<std::string> replaceable, bool remove_stale)
    : dir_(std::move(dir)) {
  const fs::path target = folder_target(dir_);
  check_replaceable(dir_, target, replaceable);
  const fs::path parent = parent_of(target);
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) throw InputError(fmt::format("{}: cannot create folder {}: {}", dir_, parent.string(), ec.message()));
  if (remove_stale) remove_stale_temporaries(parent.string());
  staging_ = hidden_sibling(target, "new");
  if (::mkdir(staging_.c_str(), 0777) != 0) {
    const int err = errno;
    throw InputError(fmt::format("{}: cannot write in folder {}: {}", dir_, parent.string(), os_reason(err)));
  }
  replaceable_ = std::move(replaceable);
}

OutputFolder::~OutputFolder() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

void OutputFolder::write(const std::string& name, std::string_view content) {
  const std::string p = (fs::path(staging_) / name).string();
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  int err = fd < 0 ? errno : write_all(fd, content);
  if (fd >= 0 && ::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(p.c_str());
    throw InputError(fmt::format("{}/{}: write failed: {} ({} bytes; nothing of this output set is kept)", dir_, name,
                                 os_reason(err), content.size()));
  }
}

void OutputFolder::commit() {
  if (committed_) throw std::logic_error("OutputFolder::commit twice");
  const fs::path target = folder_target(dir_);
  sync_folder(staging_);
  // Checked again: the folder may have gained files since the constructor looked.
  check_replaceable(dir_, target, replaceable_);
  std::error_code ec;
  const bool exists = fs::exists(fs::symlink_status(target, ec));
  if (!exists) {
    if (::rename(staging_.c_str(), target.c_str()) != 0) {
      const int err = errno;
      throw InputError(fmt::format("{}: cannot move the written folder into place: {}", dir_, os_reason(err)));
    }
  } else if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    // The old folder now has the hidden name.
    fs::remove_all(staging_, ec);
  } else {
    // No atomic exchange here: the old folder goes first, so between the two renames the target
    // is absent, never mixed.
    const std::string old = hidden_sibling(target, "old");
    if (::rename(target.c_str(), old.c_str()) != 0 || ::rename(staging_.c_str(), target.c_str()) != 0) {
      const int err = errno;
      throw InputError(fmt::format("{}: cannot replace the earlier folder: {}", dir_, os_reason(err)));
    }
    fs::remove_all(old, ec);
  }
  committed_ = true;
  sync_folder(parent_of(target));
}

}  // namespace moesim
