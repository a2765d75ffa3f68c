#pragma once
// Crash-consistent outputs: a file or a folder of files appears complete at its path or not at
// all, even when the writer is killed. Temporary names are hidden (a leading dot), unique per
// writer (pid and a process-wide counter, so `--jobs` threads never share one), and left-overs of
// writers that died are removed by the next writer of the same path.
#include <string>
#include <string_view>
#include <vector>

namespace moesim {

// One file written as temp + fsync + rename. The temporary file is created by the constructor,
// so an unwritable destination fails before any work is done; the destructor removes it unless
// it was published. Errors are InputErrors naming the path and the OS reason (strerror).
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Writes and fsyncs the content to the temporary file (it may be called once).
  void stage(std::string_view content);
  // Renames the staged file into place and fsyncs the folder.
  void publish();
  void commit(std::string_view content) {
    stage(content);
    publish();
  }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  bool staged_ = false, published_ = false;
};

// Atomic write of one file (AtomicFile in one call).
void write_file_atomic(const std::string& path, const std::string& content);

// A set of files (a run's or a comparison's folder) written into a hidden folder beside `dir` and
// renamed into place by commit(), so the folder is either complete or absent and never mixes new
// files with an earlier run's. An existing `dir` is replaced as a whole, which is why the
// constructor refuses one that holds anything but the names in `replaceable` (moesim's own
// outputs): it would be deleted. The constructor creates the hidden folder, so an unwritable
// destination is reported before the simulation starts.
class OutputFolder {
 public:
  // `remove_stale`: also clear dead writers' temporaries beside it (a scan of the parent folder;
  // a sweep does it once for all its runs instead).
  OutputFolder(std::string dir, std::vector<std::string> replaceable, bool remove_stale = true);
  ~OutputFolder();
  OutputFolder(const OutputFolder&) = delete;
  OutputFolder& operator=(const OutputFolder&) = delete;

  // Writes `name` (a plain file name) into the hidden folder, fsynced.
  void write(const std::string& name, std::string_view content);
  // Moves the folder into place: an atomic exchange with an existing folder where the file system
  // allows it (renameat2), else the old one renamed away first; the old one is then removed.
  void commit();
  [[nodiscard]] const std::string& dir() const { return dir_; }

 private:
  std::string dir_, staging_;
  std::vector<std::string> replaceable_;
  bool committed_ = false;
};

// The names of moesim's outputs in a run or compare folder, which OutputFolder may replace:
// the files write_outputs writes and what `moesim report` adds (report.md, report.html, plots/).
[[nodiscard]] const std::vector<std::string>& output_folder_names();

// Removes hidden temporaries (".NAME.tmp-PID-N", ".NAME.new-PID-N", ".NAME.old-PID-N") in `folder`
// left by writers that no longer run (their pid is gone). Returns how many were removed.
std::size_t remove_stale_temporaries(const std::string& folder);

// Whether `name` is one of the hidden temporaries above (any pid).
[[nodiscard]] bool is_temporary_name(const std::string& name);

}  // namespace moesim
