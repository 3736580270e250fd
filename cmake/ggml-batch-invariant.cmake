# Included by CMake after each project() of the llama.cpp build (CMAKE_PROJECT_INCLUDE, set in
# .cargo/config.toml; llama-cpp-sys-2's build script forwards every CMAKE_* variable).
#
# llamafile's sgemm kernels (tinyBLAS) compute each output element the same way whatever the
# tile or batch: one fused multiply-add per block along k, in order, and one horizontal sum.
# ggml's own mat-vec kernels round differently. Upstream calls tinyBLAS only for batches of two
# or more tokens ("only enable sgemm for prompt processing"), so a token decoded alone and the
# same token inside a batch get other logits, and speculative verification and KV-cache reuse
# could not be token-identical to plain decoding. This compiles a copy of sgemm.cpp without that
# check: every batch size, one included, goes through tinyBLAS for the types it handles, and
# through ggml's kernels for the others, so the numerics no longer depend on the batch.
# engine/tests/numerics.rs checks it.
#
# Only on x86: there the kernels have no other batch-size condition. On ARM, POWER, s390x and
# RISC-V they take F32 and F16 only from four or eight tokens up, so they are left out there
# (ggml's own kernels, batch-invariant and slower at prompt evaluation).
if(DEFINED AMD_LSP_SGEMM_PATCH_DEFERRED)
  return()
endif()
set(AMD_LSP_SGEMM_PATCH_DEFERRED TRUE)

if(GGML_LLAMAFILE AND NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|x86|i[3-6]86)$")
  message(STATUS "amd-lsp: llamafile sgemm left out on ${CMAKE_SYSTEM_PROCESSOR} (batch-dependent there)")
  set(GGML_LLAMAFILE OFF CACHE BOOL "llamafile sgemm (amd-lsp: x86 only)" FORCE)
endif()

# llama.cpp builds with CMake 3.14 and up; the copy needs 3.21 (deferred calls, COPY_FILE).
# An older CMake gets llamafile left out: batch-invariant as well, prompts slower.
if(GGML_LLAMAFILE AND CMAKE_VERSION VERSION_LESS 3.21)
  message(STATUS "amd-lsp: llamafile sgemm left out: CMake ${CMAKE_VERSION} is older than 3.21")
  set(GGML_LLAMAFILE OFF CACHE BOOL "llamafile sgemm (amd-lsp: CMake 3.21 and up)" FORCE)
  return()
endif()

# Replaces `old` by `new` in the caller's variable `var`; stops the build when `old` is not there
# (a newer llama.cpp, whose sgemm.cpp must be read again by hand).
function(amd_lsp_replace var what old new)
  string(FIND "${${var}}" "${old}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "amd-lsp: ${original} no longer has ${what} that "
      "cmake/ggml-batch-invariant.cmake changes; check the new llama.cpp's sgemm by hand")
  endif()
  string(REPLACE "${old}" "${new}" out "${${var}}")
  set(${var} "${out}" PARENT_SCOPE)
endfunction()

function(amd_lsp_patch_sgemm)
  if(NOT GGML_LLAMAFILE)
    return()
  endif()
  set(src_dir "${CMAKE_SOURCE_DIR}/ggml/src")
  set(original "${src_dir}/ggml-cpu/llamafile/sgemm.cpp")
  file(READ "${original}" text)
  set(check "#if !defined(__MMA__)\n    if (n < 2)\n        return false;\n#endif\n")
  amd_lsp_replace(text "the batch-size check" "${check}" "")
  # A one-token batch (decoding) took the 4-rows-by-1-column kernel (gemm4xN<1>), which decoded
  # at less than half the speed of ggml's mat-vec kernels here (Qwen2.5-Coder-0.5B: 25 tokens/s;
  # 65 with the one-row kernel, docs/benchmarks.md). The generic one-row kernel computes each
  # element with the same operations in the same order (the scales' product, then one fused
  # multiply-add per block along k, then one horizontal sum): the numbers do not change.
  amd_lsp_replace(text "the one-column case"
    "        case 0x41:\n            mc = 4;\n            nc = 1;\n#if defined(__AVX2__) && defined(__F16C__)\n            gemm4xN<1>(m0, m, n0, n);\n#else\n            gemm<4, 1>(m0, m, n0, n);\n#endif\n            break;\n"
    "        case 0x41:\n            mc = 1;\n            nc = 1;\n            gemm<1, 1>(m0, m, n0, n);\n            break;\n")
  # scripts/setup.sh cleans a build whose copy lacks this line (made by an older version of this file).
  set(text "// amd-lsp batch-invariant sgemm v2 (cmake/ggml-batch-invariant.cmake)\n${text}")
  set(patched "${CMAKE_BINARY_DIR}/amd-lsp/sgemm.cpp")
  file(WRITE "${patched}.tmp" "${text}")
  file(COPY_FILE "${patched}.tmp" "${patched}" ONLY_IF_DIFFERENT)
  get_property(targets DIRECTORY "${src_dir}" PROPERTY BUILDSYSTEM_TARGETS)
  set(done 0)
  foreach(target IN LISTS targets)
    if(NOT target MATCHES "^ggml-cpu")
      continue()
    endif()
    get_target_property(sources ${target} SOURCES)
    list(FIND sources "ggml-cpu/llamafile/sgemm.cpp" i)
    if(i EQUAL -1)
      continue()
    endif()
    list(REMOVE_AT sources ${i})
    list(APPEND sources "${patched}")
    set_property(TARGET ${target} PROPERTY SOURCES ${sources})
    target_include_directories(${target} PRIVATE "${src_dir}/ggml-cpu/llamafile")
    math(EXPR done "${done} + 1")
  endforeach()
  if(done EQUAL 0)
    message(FATAL_ERROR "amd-lsp: GGML_LLAMAFILE is on but no ggml-cpu target compiles "
      "ggml-cpu/llamafile/sgemm.cpp; check cmake/ggml-batch-invariant.cmake")
  endif()
  message(STATUS "amd-lsp: llamafile sgemm for every batch size (${done} target(s))")
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL amd_lsp_patch_sgemm)
