#!/usr/bin/env python3
"""An independent numpy forward pass for the GGUF fixtures (Llama/SmolLM2 and Gemma 3), written from the
architectures' published definitions, with weights read and dequantized by the `gguf` package.

`python reference_model.py OUT.json` writes golden greedy token ids and first-step logits for a few
prompts (raw and chat-formatted) that the Swift engine must reproduce."""
import json
import os
import sys

import numpy as np
import gguf

HOME = os.environ.get("CONTRAIL_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "contrail")
FIX = os.path.join(HOME, "fixtures")


class Model:
    def __init__(self, path):
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

    def rmsnorm(self, x, w):
        return (x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + self.eps)).astype(np.float32) * w

    def rope(self, x, pos, theta, interleaved):
        """Rotates pairs of each head: adjacent (2i, 2i+1) when interleaved (GGUF Llama), else (i, i+d/2)."""
        d = self.head_dim
        freqs = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
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
        return self.arch == "gemma3" and (layer + 1) % 6 != 0

    def new_cache(self):
        return [[] for _ in range(self.layers)], [[] for _ in range(self.layers)]

    def forward(self, tokens, cache=None, start_pos=0):
        """Logits after each token of `tokens`, processed one by one with a KV cache (extended in place)."""
        gemma = self.arch == "gemma3"
        k_cache, v_cache = cache if cache is not None else self.new_cache()
        group = self.heads // self.kv_heads
        all_logits = []
        for i, tok in enumerate(tokens):
            pos = start_pos + i
            x = self.w["token_embd.weight"][tok].copy()
            if gemma:
                x = x * np.float32(np.sqrt(self.dim))
            for l in range(self.layers):
                p = f"blk.{l}."
                h = self.rmsnorm(x, self.w[p + "attn_norm.weight"])
                q = self.w[p + "attn_q.weight"] @ h
                k = self.w[p + "attn_k.weight"] @ h
                v = self.w[p + "attn_v.weight"] @ h
                q = q.reshape(self.heads, self.head_dim)
                k = k.reshape(self.kv_heads, self.head_dim)
                if gemma:
                    q = self.rmsnorm(q, self.w[p + "attn_q_norm.weight"])
                    k = self.rmsnorm(k, self.w[p + "attn_k_norm.weight"])
                theta = 10000.0 if self.is_local(l) else self.theta
                q = self.rope(q, pos, theta, interleaved=not gemma)
                k = self.rope(k, pos, theta, interleaved=not gemma)
                k_cache[l].append(k)
                v_cache[l].append(v.reshape(self.kv_heads, self.head_dim))
                K = np.stack(k_cache[l])  # [t, kvh, d]
                V = np.stack(v_cache[l])
                start = 0
                if self.is_local(l) and self.window:
                    start = max(0, pos + 1 - self.window)
                out = np.zeros((self.heads, self.head_dim), dtype=np.float32)
                scale = 1.0 / np.sqrt(self.head_dim)
                for hh in range(self.heads):
                    kv = hh // group
                    s = (K[start:, kv, :] @ q[hh]) * scale
                    s = np.exp(s - s.max())
                    s = s / s.sum()
                    out[hh] = s @ V[start:, kv, :]
                attn = self.w[p + "attn_output.weight"] @ out.reshape(-1)
                if gemma:
                    attn = self.rmsnorm(attn, self.w[p + "post_attention_norm.weight"])
                x = x + attn
                h = self.rmsnorm(x, self.w[p + "ffn_norm.weight"])
                g = self.w[p + "ffn_gate.weight"] @ h
                u = self.w[p + "ffn_up.weight"] @ h
                if gemma:
                    act = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))
                else:
                    act = g / (1 + np.exp(-g))
                f = self.w[p + "ffn_down.weight"] @ (act * u)
                if gemma:
                    f = self.rmsnorm(f, self.w[p + "post_ffw_norm.weight"])
                x = x + f
            x = self.rmsnorm(x, self.w["output_norm.weight"])
            all_logits.append(self.output @ x)
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
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
