#!/usr/bin/env python3
"""Independent reference data for the Swift tests, computed with upstream Python packages:

- dequant-<fixture>.safetensors: rows of every GGUF fixture tensor dequantized by the `gguf` package;
- smollm2-hf/: the SmolLM2 fixture written as a Hugging Face checkpoint (config.json, two shards + index);
- smollm2-jetstream/: the same as a jetstream-pytorch checkpoint (params.json, int8 weights + weight_scaler);
- tokenizer-vectors.json: ids and decodes from `sentencepiece` and `tokenizers` for a set of hard strings.

Writes into $CONTRAIL_HOME/references; skips work whose inputs and this script are unchanged.
"""
import hashlib
import json
import os
import sys

import numpy as np
import gguf
from safetensors.numpy import save_file

HOME = os.environ.get("CONTRAIL_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "contrail")
FIX = os.path.join(HOME, "fixtures")
OUT = os.path.join(HOME, "references")
SMOL = os.path.join(FIX, "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA = os.path.join(FIX, "gemma-3-270m-q4_k_m.gguf")

with open(__file__, "rb") as f:
    SCRIPT_HASH = hashlib.sha256(f.read()).hexdigest()[:16]


def fresh(name):
    """True when `name` was produced by this exact script version."""
    stamp = os.path.join(OUT, name + ".stamp")
    return os.path.exists(stamp) and open(stamp).read() == SCRIPT_HASH


def mark(name):
    with open(os.path.join(OUT, name + ".stamp"), "w") as f:
        f.write(SCRIPT_HASH)


def sample_rows(rows):
    """The rows we compare: the first 64, the last 64 and 64 spread between (the Swift test recomputes this)."""
    picked = set(range(min(rows, 64))) | set(range(max(0, rows - 64), rows))
    step = max(1, rows // 64)
    picked |= set(range(0, rows, step))
    return sorted(picked)


def dequantized(t):
    data = gguf.quants.dequantize(t.data, t.tensor_type)
    shape = [int(d) for d in reversed(t.shape)]
    return np.ascontiguousarray(data.reshape(shape).astype(np.float32))


def dequant_references():
    for path in (SMOL, GEMMA):
        name = "dequant-" + os.path.basename(path) + ".safetensors"
        if fresh(name):
            continue
        reader = gguf.GGUFReader(path)
        out = {}
        for t in reader.tensors:
            full = dequantized(t)
            m = full.reshape(-1, full.shape[-1]) if full.ndim > 1 else full.reshape(1, -1)
            rows = sample_rows(m.shape[0])
            out[t.name] = np.ascontiguousarray(m[rows])
            out[t.name + ".rows"] = np.array(rows, dtype=np.float32)
            out[t.name + ".type"] = np.array([int(t.tensor_type)], dtype=np.float32)
        save_file(out, os.path.join(OUT, name))
        mark(name)
        print(f"references: {name} ({len(reader.tensors)} tensors)", file=sys.stderr)


def to_half_split(w, head_dim):
    """GGUF/Meta interleaved rope rows → Hugging Face half-split rows (the inverse of llama.cpp's permute)."""
    heads = w.shape[0] // head_dim
    return np.ascontiguousarray(w.reshape(heads, head_dim // 2, 2, -1).swapaxes(1, 2).reshape(w.shape))


def checkpoints():
    hf_dir = os.path.join(OUT, "smollm2-hf")
    js_dir = os.path.join(OUT, "smollm2-jetstream")
    if fresh("smollm2-checkpoints"):
        return
    os.makedirs(hf_dir, exist_ok=True)
    os.makedirs(js_dir, exist_ok=True)
    reader = gguf.GGUFReader(SMOL)
    f = {k: v for k, v in reader.fields.items()}

    def meta(key):
        return f[key].contents()

    dim = meta("llama.embedding_length")
    heads = meta("llama.attention.head_count")
    kv_heads = meta("llama.attention.head_count_kv")
    head_dim = dim // heads
    tensors = {t.name: dequantized(t) for t in reader.tensors}

    hf_names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    js_names = {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight"}
    per_layer_hf = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
                    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    per_layer_js = {"attn_norm": "attention_norm", "attn_q": "attention.wq", "attn_k": "attention.wk",
                    "attn_v": "attention.wv", "attn_output": "attention.wo", "ffn_norm": "ffn_norm",
                    "ffn_gate": "feed_forward.w1", "ffn_up": "feed_forward.w3", "ffn_down": "feed_forward.w2"}
    hf, js = {}, {}
    for name, w in tensors.items():
        if name.startswith("blk."):
            _, layer, role, _ = name.split(".")
            hf_name = f"model.layers.{layer}.{per_layer_hf[role]}.weight"
            js_name = f"layers.{layer}.{per_layer_js[role]}.weight"
            hf[hf_name] = to_half_split(w, head_dim) if role in ("attn_q", "attn_k") else w
            if w.ndim == 2:
                # jetstream-pytorch int8: symmetric per output channel, scale = max|w| / 127.
                scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
                js[js_name] = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
                js[js_name + "_scaler"] = scale.astype(np.float32)
            else:
                js[js_name] = w
        else:
            hf[hf_names[name]] = w
            js[js_names[name]] = w

    # Two shards and an index, like real Hugging Face checkpoints.
    names = sorted(hf)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: hf[k] for k in keys}, os.path.join(hf_dir, shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in keys})
    with open(os.path.join(hf_dir, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": sum(v.nbytes for v in hf.values())}, "weight_map": weight_map}, fh, indent=1)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
              "intermediate_size": meta("llama.feed_forward_length"), "num_hidden_layers": meta("llama.block_count"),
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": meta("llama.vocab_size"),
              "rms_norm_eps": float(meta("llama.attention.layer_norm_rms_epsilon")),
              "rope_theta": float(meta("llama.rope.freq_base")), "max_position_embeddings": meta("llama.context_length"),
              "tie_word_embeddings": True, "rope_scaling": None, "torch_dtype": "float32"}
    with open(os.path.join(hf_dir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=1)

    save_file(js, os.path.join(js_dir, "model.safetensors"))
    params = {"dim": dim, "n_layers": meta("llama.block_count"), "n_heads": heads, "n_kv_heads": kv_heads,
              "vocab_size": -1, "multiple_of": 256, "norm_eps": float(meta("llama.attention.layer_norm_rms_epsilon")),
              "rope_theta": float(meta("llama.rope.freq_base")), "max_seq_len": meta("llama.context_length")}
    with open(os.path.join(js_dir, "params.json"), "w") as fh:
        json.dump(params, fh, indent=1)
    mark("smollm2-checkpoints")
    print("references: smollm2-hf/ and smollm2-jetstream/", file=sys.stderr)


HARD = [
    "Hello, world!", " leading space", "trailing space ", "  two leading spaces", "multiple   spaces   inside",
    "tabs\tand\nnewlines\n\n\n", "\r\n windows line \r\n", "1234567890 3.14159 1,000,000 007", "½ ¾ ٣٤٥ ৩ Ⅻ",
    "héllo wörld ñandú façade", "日本語のテキストです。", "한국어 텍스트", "Привет, мир!", "Ελληνικά κείμενα",
    "emoji 🎉🚀 family 👨‍👩‍👧‍👦 flag 🇫🇷 ok", "I'm can't we've THEY'LL it's O'Neil 'quoted'",
    "<b>html</b> &amp; <div class=\"x\">", "```python\ndef f(x):\n    return x**2\n```\n",
    "a\u00a0b non-breaking\u2003em space", "    indented code\n\tand tab", "", " ", "\n", "   ", "\n\n \n",
    "The capital of France is Paris.", "zero-width\u200bjoiner\u200d here", "mixed123abc456 x1y2z3",
    "!!!???...,,,;;;", "a" * 40 + " " + "ab" * 20, "ÀÉÎÕÜ àéîõü ß ẞ", "\u0301combining e\u0301",
]
SPECIAL = {
    "chatml": ["<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
               "text<|im_end|>more<|endoftext|>"],
    "llama3": ["<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
               "a<|eot_id|>b<|reserved_special_token_7|>c"],
    "gemma": ["<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n", "x<end_of_turn>y"],
}


def smollm2_hf_tokenizer():
    """SmolLM2's Hugging Face tokenizer rebuilt from the GGUF vocabulary: BPE + Digits(individual) + ByteLevel."""
    from tokenizers import Tokenizer, AddedToken, decoders, pre_tokenizers
    from tokenizers.models import BPE
    reader = gguf.GGUFReader(SMOL)
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    tt = reader.fields["tokenizer.ggml.token_type"]
    types = [int(tt.parts[i][0]) for i in tt.data]
    mf = reader.fields["tokenizer.ggml.merges"]
    merges = [tuple(bytes(mf.parts[i]).decode("utf-8").split(" ", 1)) for i in mf.data]
    tok = Tokenizer(BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, unk_token=tokens[0]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3])
    return tok


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
]


def chat_references():
    """SmolLM2's own Jinja chat template (from its GGUF) rendered by jinja2."""
    import jinja2
    reader = gguf.GGUFReader(SMOL)
    template = reader.fields["tokenizer.chat_template"].contents()
    env = jinja2.Environment()
    out = []
    for conv in CONVERSATIONS:
        text = env.from_string(template).render(messages=conv, add_generation_prompt=True)
        out.append({"tokenizer": os.path.basename(SMOL), "messages": conv, "prompt": text})
    return out


def tokenizer_vectors():
    name = "tokenizer-vectors.json"
    if fresh(name):
        return
    import sentencepiece as spm
    from tokenizers import Tokenizer
    cases = []
    for fixture, family in (("tokenizer.gemma", "gemma"), ("tokenizer.gemma3", "gemma"), ("tokenizer.llama2", None)):
        sp = spm.SentencePieceProcessor(model_file=os.path.join(FIX, fixture))
        texts = HARD + (SPECIAL[family] if family else [])
        for text in texts:
            ids = sp.encode(text)
            cases.append({"tokenizer": fixture, "text": text, "ids": ids, "decoded": sp.decode(ids)})
        # The Gemma 3 GGUF carries the same vocabulary as tokenizer.gemma3.
        if fixture == "tokenizer.gemma3":
            cases += [dict(c, tokenizer=os.path.basename(GEMMA)) for c in cases if c["tokenizer"] == fixture]
    hf_llama3 = Tokenizer.from_file(os.path.join(FIX, "llama3-tokenizer.json"))
    for fixture, tok, family in (("llama3-tokenizer.json", hf_llama3, "llama3"),
                                 ("tokenizer_llama3.tiktoken", hf_llama3, "llama3"),
                                 (os.path.basename(SMOL), smollm2_hf_tokenizer(), "chatml")):
        for text in HARD + SPECIAL[family]:
            ids = tok.encode(text, add_special_tokens=False).ids
            cases.append({"tokenizer": fixture, "text": text, "ids": ids,
                          "decoded": tok.decode(ids, skip_special_tokens=False)})
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as fh:
        json.dump({"cases": cases, "chat": chat_references()}, fh, ensure_ascii=False, indent=0)
    mark(name)
    print(f"references: {name} ({len(cases)} cases)", file=sys.stderr)


def engine_golden():
    """Greedy ids and first-step logits from the numpy reference forward pass (reference_model.py)."""
    name = "engine-golden.json"
    model_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_model.py")
    with open(model_script, "rb") as f:
        stamp_hash = hashlib.sha256(f.read()).hexdigest()[:16]
    stamp = os.path.join(OUT, name + ".stamp")
    if os.path.exists(stamp) and open(stamp).read() == SCRIPT_HASH + stamp_hash:
        return
    import reference_model
    reference_model.main_to(os.path.join(OUT, name))
    with open(stamp, "w") as f:
        f.write(SCRIPT_HASH + stamp_hash)


def main():
    os.makedirs(OUT, exist_ok=True)
    for p in (SMOL, GEMMA):
        if not os.path.exists(p):
            sys.exit(f"references: {p} missing; run `make fixtures` first")
    tokenizer_vectors()
    checkpoints()
    dequant_references()
    engine_golden()


if __name__ == "__main__":
    main()
