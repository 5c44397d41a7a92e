# bpf_object(NAME SOURCE INCLUDES...): compiles SOURCE with clang -target bpf
# against a vmlinux.h generated from the running kernel's BTF, runs
# `bpftool gen skeleton`, and defines the INTERFACE target NAME_skel that
# carries the skeleton header and libbpf (the libbpf-bootstrap pattern).
find_program(BPF_CLANG clang REQUIRED)
find_program(BPFTOOL bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)
pkg_check_modules(LIBBPF REQUIRED IMPORTED_TARGET libbpf)
set(TRIBUTARY_VMLINUX_BTF /sys/kernel/btf/vmlinux CACHE FILEPATH "Kernel BTF that vmlinux.h is generated from")

set(_bpf_gen ${CMAKE_BINARY_DIR}/bpf-gen)
add_custom_command(
  OUTPUT ${_bpf_gen}/vmlinux.h
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_bpf_gen}
  COMMAND ${BPFTOOL} btf dump file ${TRIBUTARY_VMLINUX_BTF} format c > ${_bpf_gen}/vmlinux.h
  COMMENT "vmlinux.h from ${TRIBUTARY_VMLINUX_BTF}" VERBATIM)

function(bpf_object name source)
  set(obj ${_bpf_gen}/${name}.bpf.o)
  set(skel ${_bpf_gen}/${name}.skel.h)
  set(incs)
  foreach(i ${ARGN})
    list(APPEND incs -I${i})
  endforeach()
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror
            -I${_bpf_gen} ${incs} -c ${source} -o ${obj}
    DEPENDS ${source} ${_bpf_gen}/vmlinux.h
    IMPLICIT_DEPENDS C ${source}
    COMMENT "clang -target bpf ${name}" VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${name}_bpf > ${skel}
    DEPENDS ${obj}
    COMMENT "bpftool gen skeleton ${name}" VERBATIM)
  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${_bpf_gen})
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF)
endfunction()
