#!/usr/bin/env python3
"""An independent numpy forward pass for the GGUF fixtures (Llama/SmolLM2 and Gemma 3), written from the
architectures' published definitions, with weights read and dequantized by the `gguf` package.

`python reference_model.py OUT.json` writes golden greedy token ids and first-step logits for a few
prompts (raw and chat-formatted) that the Swift engine must reproduce."""
import json
import zlib
import os
import sys

import numpy as np
import gguf

HOME = os.environ.get("CONTRAIL_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "contrail")
FIX = os.path.join(HOME, "fixtures")


class Model:
    """Fields: arch, dim, layers, heads, kv_heads, head_dim, eps, theta, window, w (canonical GGUF names),
    output; and the family switches set below (interleaved rope for GGUF Llama, Gemma features)."""

    def __init__(self, path=None):
        if path is None:
            return
        r = gguf.GGUFReader(path)
        self.arch = r.fields["general.architecture"].contents()
        a = self.arch

        def meta(key, default=None):
            f = r.fields.get(f"{a}.{key}")
            return f.contents() if f is not None else default

        self.dim = meta("embedding_length")
        self.layers = meta("block_count")
        self.heads = meta("attention.head_count")
        self.kv_heads = meta("attention.head_count_kv", self.heads)
        self.head_dim = meta("attention.key_length", self.dim // self.heads)
        self.eps = float(meta("attention.layer_norm_rms_epsilon"))
        self.theta = float(meta("rope.freq_base", 10000.0))
        self.window = meta("attention.sliding_window")
        self.w = {}
        for t in r.tensors:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
            self.w[t.name] = np.ascontiguousarray(data.reshape([int(d) for d in reversed(t.shape)]).astype(np.float32))
        self.output = self.w.get("output.weight", self.w["token_embd.weight"])
        self.set_family(interleaved=self.arch == "llama")

    def set_family(self, interleaved, query_scalar=None, attn_softcap=None, final_softcap=None, local_theta=10000.0,
                   rope_scaling=None, pattern=None):
        gemma = self.arch.startswith("gemma")
        self.interleaved = interleaved
        self.embed_scale = gemma
        self.geglu = gemma
        self.post_norms = self.arch in ("gemma2", "gemma3")
        self.qk_norm = self.arch == "gemma3"
        self.query_scalar = query_scalar or self.head_dim
        self.attn_softcap = attn_softcap
        self.final_softcap = final_softcap
        self.local_theta = local_theta
        self.rope_scaling = rope_scaling
        if pattern is not None:
            self.local = pattern
        elif self.arch == "gemma3":
            self.local = [(l + 1) % 6 != 0 for l in range(self.layers)]
        elif self.arch == "gemma2":
            self.local = [l % 2 == 0 for l in range(self.layers)]
        else:
            self.local = [False] * self.layers

    @staticmethod
    def from_hf(directory):
        """A Hugging Face checkpoint (config.json + model.safetensors), weights renamed to canonical names."""
        from safetensors.numpy import load_file
        cfg = json.load(open(os.path.join(directory, "config.json")))
        m = Model()
        m.arch = {"gemma3_text": "gemma3"}.get(cfg["model_type"], cfg["model_type"])
        m.dim, m.layers = cfg["hidden_size"], cfg["num_hidden_layers"]
        m.heads = cfg["num_attention_heads"]
        m.kv_heads = cfg.get("num_key_value_heads", m.heads)
        m.head_dim = cfg.get("head_dim", m.dim // m.heads)
        m.eps = cfg.get("rms_norm_eps", 1e-6)
        m.theta = cfg.get("rope_theta", 10000.0)
        m.window = cfg.get("sliding_window")
        raw = load_file(os.path.join(directory, "model.safetensors"))
        names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
                 "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down", "pre_feedforward_layernorm": "ffn_norm",
                 "post_feedforward_layernorm": "post_ffw_norm",
                 "post_attention_layernorm": "post_attention_norm" if m.arch in ("gemma2", "gemma3") else "ffn_norm"}
        gemma = m.arch.startswith("gemma")
        m.w = {}
        for k, v in raw.items():
            v = v.astype(np.float32)
            if k == "model.embed_tokens.weight":
                m.w["token_embd.weight"] = v
            elif k == "model.norm.weight":
                m.w["output_norm.weight"] = v + 1 if gemma else v
            elif k == "lm_head.weight":
                m.w["output.weight"] = v
            else:
                layer, role = k[len("model.layers."):].split(".", 1)
                canon = names[role.rsplit(".", 1)[0]]
                m.w[f"blk.{layer}.{canon}.weight"] = v + 1 if gemma and canon.endswith("norm") else v
        m.output = m.w.get("output.weight", m.w["token_embd.weight"])
        pattern = None
        if "layer_types" in cfg:
            pattern = [t == "sliding_attention" for t in cfg["layer_types"]]
        m.set_family(interleaved=False, query_scalar=cfg.get("query_pre_attn_scalar"),
                     attn_softcap=cfg.get("attn_logit_softcapping"), final_softcap=cfg.get("final_logit_softcapping"),
                     local_theta=cfg.get("rope_local_base_freq", 10000.0), rope_scaling=cfg.get("rope_scaling"), pattern=pattern)
        return m

    def rmsnorm(self, x, w):
        return (x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + self.eps)).astype(np.float32) * w

    def rope(self, x, pos, theta, interleaved, scaled=True):
        """Rotates pairs of each head: adjacent (2i, 2i+1) when interleaved (GGUF Llama), else (i, i+d/2)."""
        d = self.head_dim
        freqs = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        rs = self.rope_scaling if scaled else None
        if rs and rs.get("rope_type", rs.get("type")) == "llama3":
            factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            orig = rs["original_max_position_embeddings"]
            wavelen = 2 * np.pi / freqs
            smooth = (orig / wavelen - low) / (high - low)
            scaled_f = np.where(wavelen > orig / low, freqs / factor,
                                np.where(wavelen < orig / high, freqs, (1 - smooth) * freqs / factor + smooth * freqs))
            freqs = scaled_f
        elif rs and rs.get("rope_type", rs.get("type")) == "linear":
            pos = pos / rs["factor"]
        ang = pos * freqs
        cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        x = x.reshape(-1, d)
        if interleaved:
            a, b = x[:, 0::2], x[:, 1::2]
            out = np.empty_like(x)
            out[:, 0::2] = a * cos - b * sin
            out[:, 1::2] = a * sin + b * cos
        else:
            a, b = x[:, : d // 2], x[:, d // 2:]
            out = np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=1)
        return out

    def is_local(self, layer):
        return self.local[layer]

    def new_cache(self):
        return [[] for _ in range(self.layers)], [[] for _ in range(self.layers)]

    def forward(self, tokens, cache=None, start_pos=0):
        """Logits after each token of `tokens`, processed one by one with a KV cache (extended in place)."""
        k_cache, v_cache = cache if cache is not None else self.new_cache()
        group = self.heads // self.kv_heads
        all_logits = []
        for i, tok in enumerate(tokens):
            pos = start_pos + i
            x = self.w["token_embd.weight"][tok].copy()
            if self.embed_scale:
                x = x * np.float32(np.sqrt(self.dim))
            for l in range(self.layers):
                p = f"blk.{l}."
                h = self.rmsnorm(x, self.w[p + "attn_norm.weight"])
                q = self.w[p + "attn_q.weight"] @ h
                k = self.w[p + "attn_k.weight"] @ h
                v = self.w[p + "attn_v.weight"] @ h
                q = q.reshape(self.heads, self.head_dim)
                k = k.reshape(self.kv_heads, self.head_dim)
                if self.qk_norm:
                    q = self.rmsnorm(q, self.w[p + "attn_q_norm.weight"])
                    k = self.rmsnorm(k, self.w[p + "attn_k_norm.weight"])
                local = self.is_local(l)
                theta = self.local_theta if local and self.arch == "gemma3" else self.theta
                # Gemma 3 scales only its global layers' positions.
                scaled = not (local and self.arch == "gemma3")
                q = self.rope(q, pos, theta, self.interleaved, scaled)
                k = self.rope(k, pos, theta, self.interleaved, scaled)
                k_cache[l].append(k)
                v_cache[l].append(v.reshape(self.kv_heads, self.head_dim))
                K = np.stack(k_cache[l])  # [t, kvh, d]
                V = np.stack(v_cache[l])
                start = 0
                if self.is_local(l) and self.window:
                    start = max(0, pos + 1 - self.window)
                out = np.zeros((self.heads, self.head_dim), dtype=np.float32)
                scale = 1.0 / np.sqrt(self.query_scalar)
                for hh in range(self.heads):
                    kv = hh // group
                    s = (K[start:, kv, :] @ q[hh]) * scale
                    if self.attn_softcap:
                        s = self.attn_softcap * np.tanh(s / self.attn_softcap)
                    s = np.exp(s - s.max())
                    s = s / s.sum()
                    out[hh] = s @ V[start:, kv, :]
                attn = self.w[p + "attn_output.weight"] @ out.reshape(-1)
                if self.post_norms:
                    attn = self.rmsnorm(attn, self.w[p + "post_attention_norm.weight"])
                x = x + attn
                h = self.rmsnorm(x, self.w[p + "ffn_norm.weight"])
                g = self.w[p + "ffn_gate.weight"] @ h
                u = self.w[p + "ffn_up.weight"] @ h
                if self.geglu:
                    act = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))
                else:
                    act = g / (1 + np.exp(-g))
                f = self.w[p + "ffn_down.weight"] @ (act * u)
                if self.post_norms:
                    f = self.rmsnorm(f, self.w[p + "post_ffw_norm.weight"])
                x = x + f
            x = self.rmsnorm(x, self.w["output_norm.weight"])
            logits = self.output @ x
            if self.final_softcap:
                logits = self.final_softcap * np.tanh(logits / self.final_softcap)
            all_logits.append(logits)
        return all_logits

    def greedy(self, prompt, n):
        cache = self.new_cache()
        first = self.forward(prompt, cache)[-1]
        out = []
        nxt = int(np.argmax(first))
        for _ in range(n):
            out.append(nxt)
            nxt = int(np.argmax(self.forward([nxt], cache, start_pos=len(prompt) + len(out) - 1)[-1]))
        return first, out


SYNTHETIC = {
    # Llama 3.1: GQA, llama3 rope scaling (original context 16 so the short test positions cross the
    # smoothing band), an untied LM head.
    "llama31": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 96, "rms_norm_eps": 1e-5,
                "rope_theta": 500000.0, "max_position_embeddings": 64, "tie_word_embeddings": False,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 16}},
    # Gemma 1: GeGLU, √dim embedding scale, (1 + w) norms stored as w, MQA.
    "gemma1": {"model_type": "gemma", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 96,
               "rms_norm_eps": 1e-6, "max_position_embeddings": 64},
    # Gemma 2: attention and final soft-capping, alternating 4-token sliding window, pre/post norms.
    "gemma2": {"model_type": "gemma2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 96,
               "rms_norm_eps": 1e-6, "max_position_embeddings": 64, "query_pre_attn_scalar": 16,
               "sliding_window": 4, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0},
    # Gemma 3: QK-norm, local/global rope bases, linear scaling of global layers, 5:1 pattern.
    "gemma3": {"model_type": "gemma3_text", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 6,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 96,
               "rms_norm_eps": 1e-6, "max_position_embeddings": 64, "sliding_window": 4, "rope_theta": 1000000.0,
               "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 4.0},
               "query_pre_attn_scalar": 16, "sliding_window_pattern": 6},
}


def write_synthetic(name, cfg, directory):
    """Random f32 weights in Hugging Face layout."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim", d // cfg["num_attention_heads"])
    qd, kvd = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    gemma = cfg["model_type"].startswith("gemma")

    def mat(r, c):
        return (rng.standard_normal((r, c)) * 0.3).astype(np.float32)

    def norm(n):
        return (rng.standard_normal(n) * 0.2 + (0.0 if gemma else 1.0)).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(v, d), "model.norm.weight": norm(d)}
    if not cfg.get("tie_word_embeddings", gemma):
        w["lm_head.weight"] = mat(v, d)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w.update({p + "input_layernorm.weight": norm(d), p + "self_attn.q_proj.weight": mat(qd, d),
                  p + "self_attn.k_proj.weight": mat(kvd, d), p + "self_attn.v_proj.weight": mat(kvd, d),
                  p + "self_attn.o_proj.weight": mat(d, qd), p + "mlp.gate_proj.weight": mat(f, d),
                  p + "mlp.up_proj.weight": mat(f, d), p + "mlp.down_proj.weight": mat(d, f),
                  p + "post_attention_layernorm.weight": norm(d)})
        if cfg["model_type"] in ("gemma2", "gemma3_text"):
            w[p + "pre_feedforward_layernorm.weight"] = norm(d)
            w[p + "post_feedforward_layernorm.weight"] = norm(d)
        if cfg["model_type"] == "gemma3_text":
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
    os.makedirs(directory, exist_ok=True)
    save_file(w, os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "config.json"), "w") as fh:
        json.dump(cfg, fh)


def synthetic_golden(out_dir):
    """Small random-weight models for features no fixture exercises, with their reference outputs."""
    results = []
    for name, cfg in SYNTHETIC.items():
        directory = os.path.join(out_dir, "synthetic-" + name)
        write_synthetic(name, cfg, directory)
        m = Model.from_hf(directory)
        prompt = [int(t) for t in np.random.default_rng(len(name)).integers(0, cfg["vocab_size"], 12)]
        first, ids = m.greedy(prompt, 6)
        results.append({"model": "synthetic-" + name, "prompt": prompt, "greedy": ids, "logits": [float(v) for v in first]})
        print(f"reference: synthetic {name} -> {ids}", file=sys.stderr)
    return results


def main():
    main_to(sys.argv[1])


def main_to(out_path):
    import sentencepiece as spm
    from make_references import smollm2_hf_tokenizer, SMOL, GEMMA
    smol_tok = smollm2_hf_tokenizer()
    gemma_tok = spm.SentencePieceProcessor(model_file=os.path.join(FIX, "tokenizer.gemma3"))
    smol_system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    cases = [
        (SMOL, smol_tok.encode("The capital of France is", add_special_tokens=False).ids),
        (SMOL, smol_tok.encode(smol_system + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
                               add_special_tokens=False).ids),
        (GEMMA, [2] + gemma_tok.encode("The capital of France is")),
        (GEMMA, [2] + gemma_tok.encode("<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n")),
    ]
    results = []
    models = {}
    for path, prompt in cases:
        if path not in models:
            models[path] = Model(path)
        first, ids = models[path].greedy(prompt, 8)
        results.append({"model": os.path.basename(path), "prompt": prompt, "greedy": ids,
                        "logits": [float(v) for v in first]})
        print(f"reference: {os.path.basename(path)} {len(prompt)} prompt tokens -> {ids}", file=sys.stderr)
    results += synthetic_golden(os.path.dirname(os.path.abspath(out_path)))
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
