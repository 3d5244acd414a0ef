"""llama.cpp for the benchmarks' anchors: built once from the llama.cpp vendored in the
llama-cpp-python==0.3.36 source archive (fetched by scripts/fixtures.py) and cached in
$CONTRAIL_HOME/llama.cpp-build, one build per instruction set. Built without -march=native (the AMX build
dies with SIGILL on VMs that advertise AMX): AVX2/FMA/F16C, plus AVX-512 where the CPU has it (these VMs
come as Intel with AVX-512 and AMD Zen 3 without it)."""
import os
import subprocess
import sys
import tarfile

HOME = os.environ.get("CONTRAIL_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "contrail")
BUILD = os.path.join(HOME, "llama.cpp-build")
SDIST = os.path.join(HOME, "downloads", "llama-cpp-python-0.3.36", "llama_cpp_python-0.3.36.tar.gz")


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


AVX512 = {"avx512f", "avx512bw", "avx512vl"} <= cpu_flags()
ISA = "avx512" if AVX512 else "avx2"
FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
         "-DGGML_F16C=ON", f"-DGGML_AVX512={'ON' if AVX512 else 'OFF'}", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
         "-DGGML_OPENMP=OFF"]


def tools(*targets):
    """Paths of the llama.cpp executables `targets` (e.g. "llama-bench"), building what is missing."""
    src = os.path.join(BUILD, "src")
    build = os.path.join(src, "build-" + ISA)
    paths = [os.path.join(build, "bin", t) for t in targets]
    missing = [t for t, p in zip(targets, paths) if not os.path.exists(p)]
    if not missing:
        return paths
    if not os.path.exists(os.path.join(src, "CMakeLists.txt")):
        if not os.path.exists(SDIST):
            sys.exit(f"llama.cpp: {SDIST} missing (make fixtures downloads it)")
        print("llama.cpp: extracting the vendored sources", file=sys.stderr)
        prefix = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
        with tarfile.open(SDIST) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(src, members=[m for m in members if m.name])
    print(f"llama.cpp: building {', '.join(missing)} for {ISA} (minutes, once)", file=sys.stderr)
    subprocess.run(["cmake", "-S", src, "-B", build] + FLAGS, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build, "-j2", "--target"] + missing, check=True, stdout=subprocess.DEVNULL)
    return paths
