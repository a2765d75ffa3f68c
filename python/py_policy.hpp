#pragma once
// Policies written in Python: the C++ moesim::Policy that forwards each call to an instance of a
// `moesim.Policy` subclass, and the run-time registration that puts such a class in the policy
// registry beside the built-in ones.
//
// The GIL: run() and compare() release it while the simulator runs; every call into Python here
// takes it first (py::gil_scoped_acquire), so `compare(jobs=N)` threads may each drive their own
// Python policy. Python data never outlives the call that made it: C++ objects are copied into
// Python (plain lists, or the pure-Python types of moesim/_policy.py) and the answers copied back
// and checked, so a policy cannot leave a dangling reference or index past a buffer.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "core/config.hpp"
#include "sim/policy.hpp"

namespace moesim::py {

namespace pyb = pybind11;

// A Python policy answered something the simulator cannot use (a wrong size, an index out of
// range): moesim.PolicyError, a RuntimeError, naming the method and what was wrong.
class PolicyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A policy context as Python sees it: a copy, marked dead when the run that made it ends, so that a
// helper handed a stale one (default_sync_plan, placement_moves) raises instead of reading freed
// scenario data.
struct PyContext {
  PolicyContext ctx;
  bool live = true;
  [[nodiscard]] const PolicyContext& get() const;
};

// The parameters of a policy entry, for the constructor of a Python policy: the same strict reads
// as a C++ policy's (Cfg); any key not read is an error once the constructor returns. Valid only
// during the constructor.
struct PyParams {
  Cfg* cfg = nullptr;
  [[nodiscard]] Cfg& get() const;
};

// Registers `name` in the policy registry: building it calls moesim._policy._instantiate(name,
// ctx, params), which looks the class up on the Python side (so no Python object is held by the
// registry, which outlives the interpreter).
void register_python_policy(const std::string& name, const std::string& description);

// Conversions shared with the module (moesim/_policy.py types <-> C++); they check shapes and
// ranges against `ctx` and raise PolicyError (a Python RuntimeError) on a mismatch.
[[nodiscard]] Placement placement_from_py(const pyb::handle& obj, const PolicyContext& ctx, const char* what);
[[nodiscard]] pyb::object placement_to_py(const Placement& p);

// Binds PolicyContext, PolicyParams and the plain C++ types a Python policy returns (Endpoint,
// Transfer, Movement, CollectiveOp, SyncPlan) and the helpers (default_sync_plan, placement_moves,
// deepspeed_capacity).
void bind_policy_types(pyb::module_& m);

}  // namespace moesim::py
