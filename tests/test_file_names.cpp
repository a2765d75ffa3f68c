// Names that become files or folders: a scenario's or study's name must stay inside its folder.
#include <catch2/catch.hpp>

#include "app/outputs.hpp"

using namespace moesim;

TEST_CASE("outputs: a scenario name used as a folder cannot leave out/ (issue 16)", "[outputs]") {
  // `name: ../../escape` without --out once wrote two folders above out/.
  CHECK(file_safe("../../escape") == "..-..-escape");
  CHECK(file_safe("..") == "unnamed");
  CHECK(file_safe(".") == "unnamed");
  CHECK(file_safe("") == "unnamed");
  CHECK(file_safe("a/b\\c d") == "a-b-c-d");
  CHECK(file_safe("qwen3-30b_a3b.v2+x") == "qwen3-30b_a3b.v2+x");
}
