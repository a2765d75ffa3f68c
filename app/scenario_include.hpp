#pragma once
// A scenario's top-level `include:` (a path, or a list of paths, relative to the including file):
// each included file is a scenario fragment, itself possibly including others. They are merged in
// order, each over the one before, and the including file's own keys over all of them. Mappings
// merge key by key; any other value (a scalar, a list: `policies` whole) is taken from the
// highest layer that gives it, and a null there means "not given", so a lower layer's value
// shows through. A mapping over a scalar or a list (or the reverse) is an error naming both
// files, as are a missing file and an include cycle.
#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>

#include "core/config.hpp"

namespace moesim {

struct ResolvedDocument {
  YAML::Node root;
  // The file every key path came from, when any came from an included file (else null).
  std::shared_ptr<const Cfg::Origins> origins;
};

// `root` was read from `origin` (a file name, or "<...>" for text: its includes are then
// relative to the working directory). The result has no `include` key.
[[nodiscard]] ResolvedDocument resolve_includes(YAML::Node root, const std::string& origin);

}  // namespace moesim
