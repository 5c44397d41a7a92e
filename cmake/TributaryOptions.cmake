# Build options shared by every target.
option(TRIBUTARY_WERROR "Treat warnings as errors" OFF)
set(TRIBUTARY_SANITIZE "" CACHE STRING "Sanitizers: '', 'address' (ASan+UBSan) or 'thread' (TSan)")
set_property(CACHE TRIBUTARY_SANITIZE PROPERTY STRINGS "" address thread)

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  set(CMAKE_C_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

add_library(tributary_options INTERFACE)
# Designated initializers name the fields they set and leave the rest at their
# defaults (descriptor builders, block metadata): GCC 12 would warn for each.
target_compile_options(tributary_options INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wno-missing-field-initializers)
# The release every component reports (node hellos, --version, /v1/status).
target_compile_definitions(tributary_options INTERFACE TRIBUTARY_VERSION="${PROJECT_VERSION}")
if(TRIBUTARY_WERROR)
  target_compile_options(tributary_options INTERFACE -Werror)
endif()

# Fuzzing (tests/fuzz, scripts/fuzz): clang's libFuzzer. Every library gets
# its coverage instrumentation and ASan + UBSan; each fuzz target links the
# fuzzer's main (tributary_add_fuzzer).
option(TRIBUTARY_FUZZ "Build the libFuzzer targets of tests/fuzz (clang; ASan + UBSan)" OFF)
if(TRIBUTARY_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "TRIBUTARY_FUZZ needs clang (CC=clang CXX=clang++)")
  endif()
  set(_san -fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  # Clang's half-float conversions (__fp16 without F16C) live in compiler-rt's builtins, not libgcc.
  add_link_options(-rtlib=compiler-rt -unwindlib=libgcc)
  # At the fuzzers' -O1 clang does not vectorize the `omp simd` loops, and says so.
  target_compile_options(tributary_options INTERFACE -Wno-pass-failed)
elseif(TRIBUTARY_SANITIZE STREQUAL "address")
  set(_san -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
elseif(TRIBUTARY_SANITIZE STREQUAL "thread")
  # GCC defines __SANITIZE_THREAD__, and protobuf's map_field.h then adds
  # members to MapFieldBase: our inline message code would disagree with
  # Debian's libprotobuf (built without TSan) on the layout of every message
  # with a map, and messages would lose fields on the wire. Undefined, the
  # layouts match the library's. libstdc++ derives _GLIBCXX_TSAN from it (the
  # shared_ptr paths TSan understands): set that directly. (glog reads it too:
  # only LibTorch code includes glog, and no TSan suite builds it.)
  set(_san -fsanitize=thread -fno-omit-frame-pointer -U__SANITIZE_THREAD__ -D_GLIBCXX_TSAN=1)
elseif(NOT TRIBUTARY_SANITIZE STREQUAL "")
  message(FATAL_ERROR "TRIBUTARY_SANITIZE must be '', 'address' or 'thread'")
endif()
if(_san)
  target_compile_options(tributary_options INTERFACE ${_san})
  target_link_options(tributary_options INTERFACE ${_san})
endif()
