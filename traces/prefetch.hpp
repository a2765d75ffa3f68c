#pragma once
// A trace source that reads its inner source's next iterations on a thread of its own while the
// caller simulates the current one: the synthetic generator's draws for DeepSeek-V3 on 2,048 GPUs
// take about as long as the rest of an iteration, and overlapped they cost no wall time.
#include <memory>

#include "sim/routing.hpp"

namespace moesim {

// Wraps `inner` so that up to `depth` iterations are read ahead (depth >= 1). The iterations, in
// order, and the end of the trace are exactly the inner source's: the inner source is read by one
// thread at a time, in sequence, so a deterministic source stays deterministic. An exception the
// inner source throws is rethrown by the next() that would have returned its iteration. rewind()
// stops the thread, rewinds the inner source and starts reading again (free right after a rewind
// or before the first next()). Each next() fills `out` completely (any shape it had is replaced).
// shape() and describe() are the inner source's, read once here.
[[nodiscard]] std::unique_ptr<TraceSource> prefetch_trace(std::unique_ptr<TraceSource> inner, int depth);

}  // namespace moesim
