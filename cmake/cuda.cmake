# Optional CUDA kernels (kernels/*.cu) behind `moesim calibrate --backend cuda`.
# MOESIM_CUDA: AUTO builds them when a working nvcc is found, ON requires one, OFF never builds them.
# Sets MOESIM_HAVE_CUDA and, when it is ON, defines the module libmoesim_cuda.so: loaded with
# dlopen only by `--backend cuda` and the CUDA tests, so that nothing else pays ~0.2 s per process
# for loading cuBLAS, and the binaries run where no CUDA library is installed. Beside it the module
# libmoesim_nccl.so holds the NCCL collectives (`moesim calibrate --collectives`), linked with NCCL
# when nccl.h and libnccl are found (under the CUDA toolkit, $NCCL_HOME or MOESIM_NCCL_ROOT);
# without them it builds anyway and says at run time that this build has no NCCL.
set(MOESIM_CUDA AUTO CACHE STRING "Build the CUDA kernels: AUTO (when nvcc is found), ON or OFF")
set_property(CACHE MOESIM_CUDA PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${MOESIM_CUDA}" _moesim_cuda_mode)
if(NOT _moesim_cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "MOESIM_CUDA must be AUTO, ON or OFF, not '${MOESIM_CUDA}'")
endif()

set(MOESIM_HAVE_CUDA OFF)
if(NOT _moesim_cuda_mode STREQUAL "OFF")
  # The toolkit usually lives outside PATH; check_language tests whatever CUDACXX names.
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(MOESIM_NVCC nvcc HINTS ENV CUDA_PATH ENV CUDA_HOME PATH_SUFFIXES bin
                 PATHS /usr/local/cuda/bin)
    if(MOESIM_NVCC)
      set(ENV{CUDACXX} "${MOESIM_NVCC}")
    endif()
  endif()
  # nvcc must use the same host compiler as the rest of the build.
  if(NOT DEFINED CMAKE_CUDA_HOST_COMPILER AND NOT DEFINED ENV{CUDAHOSTCXX})
    set(ENV{CUDAHOSTCXX} "${CMAKE_CXX_COMPILER}")
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Ampere (A100) and Hopper (H100/H200): the GPUs the shipped profiles describe.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(CUDAToolkit_FOUND AND TARGET CUDA::cublas)
      set(MOESIM_HAVE_CUDA ON)
    endif()
  endif()
  if(NOT MOESIM_HAVE_CUDA)
    if(_moesim_cuda_mode STREQUAL "ON")
      message(FATAL_ERROR "MOESIM_CUDA=ON but no working nvcc with cuBLAS was found "
                          "(install the CUDA toolkit, or set CUDACXX to nvcc)")
    endif()
    message(STATUS "moesim: no working nvcc found; building without the CUDA kernels")
  endif()
endif()

if(MOESIM_HAVE_CUDA)
  message(STATUS "moesim: building the CUDA kernels with ${CMAKE_CUDA_COMPILER} "
                 "(architectures ${CMAKE_CUDA_ARCHITECTURES})")
  file(GLOB MOESIM_CUDA_SOURCES CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/kernels/*.cu")
  list(REMOVE_ITEM MOESIM_CUDA_SOURCES "${PROJECT_SOURCE_DIR}/kernels/nccl_collectives.cu")
  add_library(moesim_cuda MODULE ${MOESIM_CUDA_SOURCES})
  target_include_directories(moesim_cuda PRIVATE "${PROJECT_SOURCE_DIR}")
  # Beside the executables, where make_cuda_backend() looks first; only the factory is exported.
  set_target_properties(moesim_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                                               CUDA_EXTENSIONS OFF PREFIX "lib"
                                               LIBRARY_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}"
                                               CUDA_VISIBILITY_PRESET hidden CXX_VISIBILITY_PRESET hidden)
  # Host code gets the project's warnings but -Wpedantic, which rejects the line markers of
  # nvcc's generated host code; device code is checked by nvcc itself.
  set(_moesim_host_warnings ${MOESIM_WARNINGS})
  list(REMOVE_ITEM _moesim_host_warnings -Wpedantic)
  string(REPLACE ";" "," _moesim_host_warnings "${_moesim_host_warnings}")
  target_compile_options(moesim_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${_moesim_host_warnings}>)
  if(MOESIM_WERROR)
    target_compile_options(moesim_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>)
  endif()
  target_link_libraries(moesim_cuda PRIVATE CUDA::cudart_static CUDA::cublas)
  # cuBLAS is found where the toolkit is, even when the loader's path does not name it.
  set_target_properties(moesim_cuda PROPERTIES BUILD_RPATH "${CUDAToolkit_LIBRARY_DIR}")
endif()

if(MOESIM_HAVE_CUDA)
  # NCCL ships with the CUDA toolkit here (/usr/local/cuda/include/nccl.h, lib/libnccl.so); the pip
  # wheel nvidia-nccl-cu13 has only libnccl.so.2, hence that name too.
  set(MOESIM_NCCL_ROOT "" CACHE PATH "Where NCCL is (include/nccl.h, lib/libnccl.so), when not under the CUDA toolkit")
  set(_moesim_nccl_hints ${MOESIM_NCCL_ROOT} $ENV{NCCL_HOME} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR}
                         /usr/local/cuda)
  find_path(MOESIM_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} PATHS ${_moesim_nccl_hints}
            PATH_SUFFIXES include)
  find_library(MOESIM_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${CUDAToolkit_LIBRARY_DIR} PATHS ${_moesim_nccl_hints}
               PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
  add_library(moesim_nccl MODULE "${PROJECT_SOURCE_DIR}/kernels/nccl_collectives.cu")
  target_include_directories(moesim_nccl PRIVATE "${PROJECT_SOURCE_DIR}")
  set_target_properties(moesim_nccl PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                                               CUDA_EXTENSIONS OFF PREFIX "lib"
                                               LIBRARY_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}"
                                               CUDA_VISIBILITY_PRESET hidden CXX_VISIBILITY_PRESET hidden)
  target_compile_options(moesim_nccl PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${_moesim_host_warnings}>)
  if(MOESIM_WERROR)
    target_compile_options(moesim_nccl PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>)
  endif()
  target_link_libraries(moesim_nccl PRIVATE CUDA::cudart_static)
  if(MOESIM_NCCL_INCLUDE_DIR AND MOESIM_NCCL_LIBRARY)
    message(STATUS "moesim: NCCL collectives with ${MOESIM_NCCL_LIBRARY}")
    target_include_directories(moesim_nccl PRIVATE "${MOESIM_NCCL_INCLUDE_DIR}")
    target_compile_definitions(moesim_nccl PRIVATE MOESIM_HAVE_NCCL=1)
    target_link_libraries(moesim_nccl PRIVATE "${MOESIM_NCCL_LIBRARY}")
    get_filename_component(_moesim_nccl_dir "${MOESIM_NCCL_LIBRARY}" DIRECTORY)
    set_target_properties(moesim_nccl PROPERTIES BUILD_RPATH "${_moesim_nccl_dir};${CUDAToolkit_LIBRARY_DIR}")
  else()
    message(STATUS "moesim: NCCL not found (nccl.h, libnccl); the collectives module builds without NCCL "
                   "and says so at run time (set MOESIM_NCCL_ROOT to point at NCCL)")
  endif()
  # Built with the CUDA module, which the core library depends on; found beside it at run time.
  add_dependencies(moesim_cuda moesim_nccl)
endif()
