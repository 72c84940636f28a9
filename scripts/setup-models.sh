#!/usr/bin/env bash
# Idempotent setup of everything posture-farm's pose estimator needs, taken
# from registry packages (PyPI) at setup time, never from a model hub at run
# time:
#
#   $MODELS_DIR/pose_detection.onnx       BlazePose detector        (mediapipe==0.10.21 wheel, converted)
#   $MODELS_DIR/pose_landmark_full.onnx   BlazePose full landmarks  (mediapipe==0.10.21 wheel, converted)
#   $MODELS_DIR/libonnxruntime.so         ONNX Runtime 1.22.1       (onnxruntime wheel, for the target arch)
#   $MODELS_DIR/samples/*.png|jpg         photos for tests and the local demo
#                                         (scikit-image, matplotlib wheels)
#
# With --gpu (x86_64 only), also ONNX Runtime's GPU build and the CUDA
# libraries its CUDA provider needs (~2.4 GB unpacked, ~1.6 GB of wheels):
#
#   $MODELS_DIR/gpu/libonnxruntime*.so        onnxruntime-gpu 1.22.0 (CUDA and TensorRT providers)
#   $MODELS_DIR/gpu/libcu*.so.*, libnvrtc*    CUDA 12.4 runtime, cuBLAS, cuFFT, cuRAND, NVRTC
#   $MODELS_DIR/gpu/libcudnn*.so.9            cuDNN 9.1          (nvidia-*-cu12 wheels)
#
# TensorRT itself (libnvinfer.so.10) is not fetched: see the README. On a
# Jetson there is no such wheel on PyPI: use JetPack's onnxruntime library
# through ORT_DYLIB_PATH (README, "GPU inference").
#
# Every file is checked against scripts/models/manifest.txt (size + sha256),
# and with --gpu against scripts/models/manifest-gpu.txt. When all files are
# present and valid the script does nothing.
#
# Usage: scripts/setup-models.sh [--models-dir DIR] [--arch x86_64|aarch64] [--gpu] [--check]
# Environment: POSTURE_MODELS_DIR (default ./models), POSTURE_SETUP_CACHE
# (download/venv cache, default ./.cache/pose-setup), PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
manifest="$here/models/manifest.txt"
gpu_manifest="$here/models/manifest-gpu.txt"
models_dir="${POSTURE_MODELS_DIR:-./models}"
cache="${POSTURE_SETUP_CACHE:-$repo/.cache/pose-setup}"
python="${PYTHON:-python3}"
arch="$(uname -m)"
check_only=0
gpu=0

while [ $# -gt 0 ]; do
  case "$1" in
    --models-dir) models_dir="$2"; shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    --check) check_only=1; shift ;;
    --gpu) gpu=1; shift ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-models: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$arch" in
  x86_64|amd64) arch=x86_64 ;;
  aarch64|arm64) arch=aarch64 ;;
  *) echo "setup-models: unsupported architecture $arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac

log() { echo "setup-models: $*" >&2; }

if [ "$gpu" = 1 ] && [ "$arch" != x86_64 ]; then
  log "--gpu: ONNX Runtime's GPU build on PyPI is for x86_64 Linux only; on a Jetson use the"
  log "onnxruntime library built for your JetPack and set ORT_DYLIB_PATH to it (README, \"GPU inference\")"
  exit 2
fi

# verify MANIFEST [quiet]: every entry for this arch exists with the right size and sha256.
verify() {
  local manifest="$1" quiet="${2:-}" ok=0 n=0 sha size path farch actual_size actual_sha
  while read -r sha size path farch; do
    case "$sha" in ''|'#'*) continue ;; esac
    if [ -n "${farch:-}" ] && [ "$farch" != "$arch" ]; then continue; fi
    n=$((n + 1))
    if [ ! -f "$models_dir/$path" ]; then
      [ -n "$quiet" ] || log "missing: $models_dir/$path"
      ok=1; continue
    fi
    actual_size="$(stat -c %s "$models_dir/$path")"
    if [ "$actual_size" != "$size" ]; then
      [ -n "$quiet" ] || log "wrong size: $models_dir/$path is $actual_size bytes, expected $size"
      ok=1; continue
    fi
    actual_sha="$(sha256sum "$models_dir/$path" | cut -d' ' -f1)"
    if [ "$actual_sha" != "$sha" ]; then
      [ -n "$quiet" ] || log "wrong sha256: $models_dir/$path is $actual_sha, expected $sha"
      ok=1
    fi
  done < "$manifest"
  [ "$n" -gt 0 ] || { [ -n "$quiet" ] || log "empty manifest $manifest"; return 1; }
  return $ok
}

# all_valid [quiet]: the CPU files, and with --gpu the GPU files, match their manifests.
all_valid() {
  local ok=0
  verify "$manifest" "${1:-}" || ok=1
  if [ "$gpu" = 1 ]; then verify "$gpu_manifest" "${1:-}" || ok=1; fi
  return $ok
}

if all_valid quiet; then
  log "all files in $models_dir are present and match the manifest; nothing to do"
  exit 0
fi
if [ "$check_only" = 1 ]; then
  all_valid || true
  exit 1
fi

command -v "$python" >/dev/null || { log "needs $python (set PYTHON=...)"; exit 1; }
# The converter's pinned packages (requirements-convert.txt) have wheels for
# CPython 3.9-3.12; refuse others up front instead of compiling numpy.
if ! "$python" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 12)))'; then
  log "needs Python 3.9-3.12 with pip and venv; $python is $("$python" -V 2>&1) (set PYTHON=...)"
  exit 1
fi
mkdir -p "$models_dir/samples" "$cache/wheels"

# 1. Wheels, by exact version and hash, for CPython 3.11 manylinux (the files
#    we take from them do not depend on the Python version).
download() { # download PLATFORM_ARCH REQUIREMENTS_FILE
  "$python" -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform "manylinux_2_28_$1" --platform "manylinux2014_$1" \
    -d "$cache/wheels" -r "$2"
}
if ! verify "$manifest" quiet; then
  log "downloading wheels into $cache/wheels"
  download x86_64 "$here/models/requirements-data.txt"
  download "$arch" "$here/models/requirements-onnxruntime.txt"

  # 2. Take the files out of the wheels (wheels are zip files).
  log "extracting models, ONNX Runtime and sample photos"
  "$python" - "$cache/wheels" "$cache/tflite" "$models_dir" "$arch" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, tfl, out, arch = sys.argv[1:]
os.makedirs(tfl, exist_ok=True)

def take(pattern, member, dest):
    matches = sorted(glob.glob(os.path.join(wheels, pattern)))
    if not matches:
        sys.exit(f"setup-models: no wheel matching {pattern}")
    with zipfile.ZipFile(matches[0]) as z, z.open(member) as src, open(dest + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(dest + ".tmp", dest)

mp = "mediapipe-0.10.21-*x86_64.whl"
take(mp, "mediapipe/modules/pose_detection/pose_detection.tflite", os.path.join(tfl, "pose_detection.tflite"))
take(mp, "mediapipe/modules/pose_landmark/pose_landmark_full.tflite", os.path.join(tfl, "pose_landmark_full.tflite"))
take(f"onnxruntime-1.22.1-*{arch}.whl", "onnxruntime/capi/libonnxruntime.so.1.22.1", os.path.join(out, "libonnxruntime.so"))
for name in ["astronaut.png", "camera.png", "coffee.png"]:
    take("scikit_image-0.24.0-*.whl", f"skimage/data/{name}", os.path.join(out, "samples", name))
take("matplotlib-3.9.2-*.whl", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", os.path.join(out, "samples", "grace_hopper.jpg"))
PY

  # 3. Convert the .tflite models to ONNX with our converter in a pinned venv.
  venv="$cache/venv"
  if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/models/requirements-convert.txt" "$venv/requirements-convert.txt"; then
    log "creating converter venv in $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --only-binary=:all: -r "$here/models/requirements-convert.txt"
    cp "$here/models/requirements-convert.txt" "$venv/requirements-convert.txt"
  fi
  log "converting tflite -> onnx"
  "$venv/bin/python" "$here/models/tflite2onnx.py" "$cache/tflite/pose_detection.tflite" "$models_dir/pose_detection.onnx.tmp"
  mv "$models_dir/pose_detection.onnx.tmp" "$models_dir/pose_detection.onnx"
  "$venv/bin/python" "$here/models/tflite2onnx.py" "$cache/tflite/pose_landmark_full.tflite" "$models_dir/pose_landmark_full.onnx.tmp" \
    --outputs Identity,Identity_1,Identity_3
  mv "$models_dir/pose_landmark_full.onnx.tmp" "$models_dir/pose_landmark_full.onnx"
fi

# 4. With --gpu: ONNX Runtime's GPU build and its CUDA libraries (x86_64).
if [ "$gpu" = 1 ] && ! verify "$gpu_manifest" quiet; then
  log "downloading ONNX Runtime GPU and CUDA wheels (~1.6 GB) into $cache/wheels"
  download x86_64 "$here/models/requirements-gpu.txt"
  log "extracting the GPU runtime into $models_dir/gpu"
  mkdir -p "$models_dir/gpu"
  "$python" - "$cache/wheels" "$models_dir/gpu" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, out = sys.argv[1:]
# wheel pattern -> [(member, file name in <models>/gpu)]
files = {
    "onnxruntime_gpu-1.22.0-*.whl": [
        ("onnxruntime/capi/libonnxruntime.so.1.22.0", "libonnxruntime.so"),
        ("onnxruntime/capi/libonnxruntime_providers_shared.so", "libonnxruntime_providers_shared.so"),
        ("onnxruntime/capi/libonnxruntime_providers_cuda.so", "libonnxruntime_providers_cuda.so"),
        ("onnxruntime/capi/libonnxruntime_providers_tensorrt.so", "libonnxruntime_providers_tensorrt.so"),
    ],
    "nvidia_cuda_runtime_cu12-12.4.127-*.whl": [("nvidia/cuda_runtime/lib/libcudart.so.12", None)],
    "nvidia_cublas_cu12-12.4.5.8-*.whl": [
        ("nvidia/cublas/lib/libcublas.so.12", None), ("nvidia/cublas/lib/libcublasLt.so.12", None)],
    "nvidia_curand_cu12-10.3.5.147-*.whl": [("nvidia/curand/lib/libcurand.so.10", None)],
    "nvidia_cufft_cu12-11.2.1.3-*.whl": [("nvidia/cufft/lib/libcufft.so.11", None)],
    "nvidia_cuda_nvrtc_cu12-12.4.127-*.whl": [
        ("nvidia/cuda_nvrtc/lib/libnvrtc.so.12", None), ("nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.4", None)],
    "nvidia_cudnn_cu12-9.1.0.70-*.whl": [
        (f"nvidia/cudnn/lib/libcudnn{part}.so.9", None)
        for part in ["", "_adv", "_cnn", "_engines_precompiled", "_engines_runtime_compiled",
                     "_graph", "_heuristic", "_ops"]],
}
for pattern, members in files.items():
    matches = sorted(glob.glob(os.path.join(wheels, pattern)))
    if not matches:
        sys.exit(f"setup-models: no wheel matching {pattern}")
    with zipfile.ZipFile(matches[0]) as z:
        for member, name in members:
            dest = os.path.join(out, name or os.path.basename(member))
            with z.open(member) as src, open(dest + ".tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(dest + ".tmp", dest)
PY
fi

# 5. Check what we produced.
if all_valid; then
  log "done: $models_dir is complete and matches the manifest"
else
  log "FAILED: files in $models_dir do not match $manifest$( [ "$gpu" = 1 ] && echo " / $gpu_manifest")"
  exit 1
fi
