# cmake --install BUILD --prefix P: the static library and its headers, the CLI, the plotting
# scripts `moesim report` runs, and the package files that make find_package(moesim) work:
#   P/lib/libmoesim_core.a           the library (target moesim::core)
#   P/include/moesim/{core,kernels,models,sim,traces,policies,app}/*.hpp
#                                    headers keep their layout, so #include "sim/policy.hpp" works
#   P/bin/moesim                     the CLI (target moesim::moesim), and the CUDA modules beside it
#   P/share/moesim/plot*.py          found by the installed CLI's `moesim report`
#   P/lib/cmake/moesim/              moesimConfig.cmake, moesimConfigVersion.cmake, moesimTargets.cmake
include(CMakePackageConfigHelpers)
set(MOESIM_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/moesim")

install(TARGETS moesim_core moesim EXPORT moesimTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
# The public headers of every layer; the *_internal.hpp ones and app/sweep/ stay private.
foreach(dir core kernels models sim traces traces/importers policies app)
  file(GLOB _moesim_headers CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/${dir}/*.hpp")
  list(FILTER _moesim_headers EXCLUDE REGEX "_internal\\.hpp$")
  install(FILES ${_moesim_headers} DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/moesim/${dir}")
endforeach()
install(FILES "${PROJECT_SOURCE_DIR}/policies/list.inc" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/moesim/policies")
file(GLOB _moesim_plot_scripts "${PROJECT_SOURCE_DIR}/scripts/plot*.py")
install(PROGRAMS ${_moesim_plot_scripts} DESTINATION "${CMAKE_INSTALL_DATADIR}/moesim")
# kernels/backend.cpp looks for the CUDA modules beside the executable first.
if(MOESIM_HAVE_CUDA)
  # The installed copies keep the build's search path for cuBLAS and NCCL.
  foreach(_moesim_module moesim_cuda moesim_nccl)
    get_target_property(_moesim_rpath ${_moesim_module} BUILD_RPATH)
    if(_moesim_rpath)
      set_target_properties(${_moesim_module} PROPERTIES INSTALL_RPATH "${_moesim_rpath}")
    endif()
  endforeach()
  install(TARGETS moesim_cuda moesim_nccl LIBRARY DESTINATION "${CMAKE_INSTALL_BINDIR}")
endif()

install(EXPORT moesimTargets NAMESPACE moesim:: FILE moesimTargets.cmake DESTINATION "${MOESIM_CMAKE_DIR}")
# moesimConfig.cmake finds MPI again only when this build linked it.
set(MOESIM_WITH_MPI OFF)
if(MPI_CXX_FOUND)
  set(MOESIM_WITH_MPI ON)
endif()
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/moesimConfig.cmake.in"
                              "${PROJECT_BINARY_DIR}/moesimConfig.cmake" INSTALL_DESTINATION "${MOESIM_CMAKE_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/moesimConfigVersion.cmake" COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/moesimConfig.cmake" "${PROJECT_BINARY_DIR}/moesimConfigVersion.cmake"
        DESTINATION "${MOESIM_CMAKE_DIR}")
