#!/usr/bin/env bash
# The CUDA run, on a lent NVIDIA GPU machine (an H200 here). That machine has nvcc, CMake and
# ninja but no Rust and no network, so the work is split:
#   here (any Linux machine with Rust):  tests/gpu/cuda-bundle.sh
#       builds amd-lsp, the engine's exactness tests and the decode bench against llama.cpp as
#       shared libraries (LLAMA_BUILD_SHARED_LIBS=1), and packs them with the llama.cpp source
#       (the same tree, plus its llama-bench) into .gpu/ (git-ignored; carried to the GPU machine)
#   there:  tests/gpu/cuda-h200.sh [PHASE…]      (default: build tests decode spec)
#       builds llama.cpp with CUDA for sm_90 as the same shared libraries, and runs our binaries
#       on them with every layer offloaded (a build linked with a GPU llama.cpp offloads by default).
# Phases: build (llama.cpp + llama-bench with CUDA), tests (KV reuse = cold, speculative =
# target alone, with all layers on the GPU), decode (135M shape, Q8_0 and F16: ours against
# llama-bench), spec (bench spec on the stacked 96-layer pair and on a CodeLlama-7b-shaped
# target: verify cost for batches of 2-9, speedup against Leviathan's prediction).
# Everything it measures goes to $OUT (default target/gpu-out): summary.md, logs, JSON.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/target/gpu-out}
mkdir -p "$OUT"
RUN=$PWD/target/gpu-run
BENCH=$PWD/target/bench-models
phases=${*:-build tests decode spec}
say() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.md"; }
has() { [[ " $phases " == *" $1 "* ]]; }

# The test binaries look for fixtures and scratch space where they were built.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
mkdir -p "$RUN" "$BENCH" target/tmp
if [ ! -x "$RUN/bin/amd-lsp" ]; then
  tar xJf .gpu/llama.cpp.tar.xz -C "$RUN" && tar xJf .gpu/bin.tar.xz -C "$RUN" || { say "unpack failed"; exit 1; }
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
nproc >> "$OUT/gpu.txt"

if has build; then
  say "build llama.cpp (CUDA, sm_90, shared)"
  echo 'add_subdirectory(llama-bench)' > "$RUN/llama.cpp/tools/CMakeLists.txt"
  t=$(date +%s)
  cmake -S "$RUN/llama.cpp" -B "$RUN/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_LLAMAFILE=OFF -DGGML_OPENMP=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON >"$OUT/cmake.log" 2>&1 \
    && cmake --build "$RUN/build" -j"$(nproc)" --target llama-bench >"$OUT/build.log" 2>&1
  rc=$?
  say "build rc=$rc in $(( $(date +%s) - t )) s"
  tail -5 "$OUT/build.log"
  [ $rc -eq 0 ] || exit 1
fi
libdirs=$(find "$RUN/build" -name 'libllama.so*' -o -name 'libggml-cuda.so*' | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}"
"$RUN/bin/amd-lsp" --version | tee -a "$OUT/summary.md"
ldd "$RUN/bin/amd-lsp" | grep -E "llama|ggml|cuda|cublas" >"$OUT/ldd.txt"

if has tests; then
  for t in kv_reuse kv_shift speculative decoding; do
    say "test $t (all layers offloaded)"
    "$RUN/bin/$t" --test-threads 1 --nocapture >"$OUT/test-$t.log" 2>&1
    say "test $t rc=$? $(grep -E '^test result' "$OUT/test-$t.log")"
    grep -E "identical|near-tie|margin|differ|α|alpha" "$OUT/test-$t.log" | head -8 | tee -a "$OUT/summary.md"
  done
fi

if has decode; then
  say "decode bench, 135M shape (ours, and llama-cpp-2 directly)"
  "$RUN/bin/decode" --types q8_0,f16 --threads 8 --chunks 512 --fa off --keys q8_0 \
      --gen 128 --reps 3 >"$OUT/decode.md" 2>&1
  tail -12 "$OUT/decode.md" | tee -a "$OUT/summary.md"
  for t in q8_0 f16; do
    m=$BENCH/amd135m-random-$t.gguf
    say "llama-bench $t"
    "$RUN/build/bin/llama-bench" -m "$m" -p 512 -n 128 -ngl 99 -fa 0 -ctk q8_0 -r 5 -t 8 -o md \
      2>>"$OUT/llama-bench.err" | tee -a "$OUT/summary.md"
  done
fi

if has spec; then
  lsp="$RUN/bin/amd-lsp"
  tasks=tests/fixtures/humaneval/HumanEval.jsonl.gz
  [ -f "$BENCH/amd135m-random-q8_0.gguf" ] || "$lsp" dev make-model --size 135m --type q8_0 -o "$BENCH/amd135m-random-q8_0.gguf"
  [ -f "$BENCH/amd135m-random-f16.gguf" ] || "$lsp" dev make-model --size 135m --type f16 -o "$BENCH/amd135m-random-f16.gguf"
  stacked=$BENCH/stacked96-s0.05-q8_0.gguf
  [ -f "$stacked" ] || "$lsp" dev make-model --stack-on "$BENCH/amd135m-random-f16.gguf" --extra-layers 84 \
      --scale 0.05 --codellama-vocab --type q8_0 -o "$stacked" 2>>"$OUT/spec.err"
  say "bench spec, stacked 96-layer target (729M, α≈0.7) drafted by the 135M shape"
  "$lsp" bench spec --target "$stacked" --draft "$BENCH/amd135m-random-q8_0.gguf" --tasks "$tasks" \
      --limit 6 --max-tokens 96 --k 1,2,4,8,auto --gpu-layers 99 --json "$OUT/spec-stacked.json" \
      >"$OUT/spec-stacked.md" 2>>"$OUT/spec.err"
  tail -14 "$OUT/spec-stacked.md" | tee -a "$OUT/summary.md"
  big=$BENCH/codellama7b-shape-q8_0.gguf
  t=$(date +%s)
  [ -f "$big" ] || "$lsp" dev make-model --size codellama-7b --type q8_0 -o "$big" 2>>"$OUT/spec.err"
  say "7B-shaped target made in $(( $(date +%s) - t )) s"
  say "bench spec, CodeLlama-7b-shaped target (tiled noise: costs only), 135M-shaped draft"
  "$lsp" bench spec --target "$big" --draft "$BENCH/amd135m-random-q8_0.gguf" --tasks "$tasks" \
      --limit 2 --max-tokens 64 --k 1,2,3,4,5,6,7,8 --gpu-layers 99 --json "$OUT/spec-7b.json" \
      >"$OUT/spec-7b.md" 2>>"$OUT/spec.err"
  tail -14 "$OUT/spec-7b.md" | tee -a "$OUT/summary.md"
  "$RUN/build/bin/llama-bench" -m "$big" -p 1,2,3,4,5,6,7,8,9 -n 64 -ngl 99 -fa 0 -r 3 -o md \
      2>>"$OUT/llama-bench.err" | tee -a "$OUT/summary.md"
fi
say "done"
