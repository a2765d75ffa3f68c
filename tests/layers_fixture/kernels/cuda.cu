#include "kernels/kernels.hpp"
#include "app/main.cpp"  // expect-violation
