/// Per-slot sampling inside the decode program, so only token ids cross to the host: the host `Sampler`'s
/// rule (min-p floor, then top-k, then top-p over what is left, at the slot's temperature) with the choice
/// made by the Gumbel-max trick — argmax(logit / T + Gumbel noise) over the kept tokens draws exactly from
/// their renormalized distribution. The noise is hashed from (seed, position, token id), so a request
/// reproduces its tokens whatever else shares the batch. A temperature of 0 is plain argmax.
enum DeviceSampling {
    /// `logits` [B, V]; per slot: `temperature` f32, `topK` i32 (0: all), `topP` f32 (≥ 1: all), `minP`
    /// f32 (0: off), `seed` ui32, `positions` i32. Returns the chosen ids, i32 [B].
    static func sample(_ w: inout StableHLOWriter, _ logits: HLOValue, temperature: HLOValue, topK: HLOValue, topP: HLOValue, minP: HLOValue,
                       seed: HLOValue, positions: HLOValue) -> HLOValue {
        let (B, V) = (logits.shape[0], logits.shape[1])
        let hot = w.compare(temperature, w.constant(0, [B]), "GT")
        let t = w.select(hot, temperature, w.constant(1, [B]))
        let sorted = w.sortDescending(logits)
        let rank = w.iota([B, V], dimension: 1)
        func perRow(_ v: HLOValue) -> HLOValue { w.broadcast(v, to: [B, V], dims: [0]) }
        let top = perRow(w.reshape(w.slice(sorted, start: [0, 0], limit: [B, 1]), [B]))
        // min-p: logit ≥ top + T·ln(minP) (probability ≥ minP × the top one); off at minP ≤ 0.
        let useMinP = w.compare(minP, w.constant(0, [B]), "GT")
        let floor = w.select(useMinP, w.mul(t, w.unary("log", w.select(useMinP, minP, w.constant(1, [B])))), w.constant(-Float.infinity, [B]))
        var candidate = w.compare(w.sub(sorted, top), perRow(floor), "GE")
        // top-k: the first k of the sorted row (k ≤ 0 or ≥ V: all).
        let k = w.select(w.binary("or", w.compare(topK, w.broadcast(w.index(0), to: [B], dims: []), "LE"),
                                  w.compare(topK, w.broadcast(w.index(V), to: [B], dims: []), "GT")),
                         w.broadcast(w.index(V), to: [B], dims: []), topK)
        candidate = w.binary("and", candidate, w.compare(rank, perRow(k), "LT"))
        // top-p: keep a sorted token while the mass before it is below topP (the first always stays).
        let weights = w.select(candidate, w.unary("exponential", w.div(w.sub(sorted, top), perRow(t))), w.constant(0, [B, V]))
        let total = w.reduce(weights, "add", dimensions: [1], initial: 0)
        let before = w.div(w.sub(prefixSum(&w, weights), weights), perRow(total))
        let p = w.select(w.compare(topP, w.constant(1, [B]), "GE"), w.constant(Float.infinity, [B]), topP)
        let kept = w.binary("and", candidate, w.compare(before, perRow(p), "LT"))
        // The smallest kept logit; every token at or above it is allowed (ties at the edge stay together).
        let threshold = w.reduce(w.select(kept, sorted, w.constant(Float.infinity, [B, V])), "minimum", dimensions: [1], initial: Float.infinity)
        let allowed = w.compare(logits, perRow(threshold), "GE")
        let scored = w.add(w.div(logits, perRow(t)), gumbel(&w, seed: seed, positions: positions, shape: [B, V]))
        let sampled = w.argmax(w.select(allowed, scored, w.constant(-Float.infinity, [B, V])))
        return w.select(hot, sampled, w.argmax(logits))
    }

    /// Inclusive prefix sums along the last dimension of [B, V], in ⌈log₂ V⌉ shifted additions.
    static func prefixSum(_ w: inout StableHLOWriter, _ x: HLOValue) -> HLOValue {
        let (B, V) = (x.shape[0], x.shape[1])
        var s = x
        var shift = 1
        while shift < V {
            let moved = w.concatenate([w.constant(0, [B, shift]), w.slice(s, start: [0, 0], limit: [B, V - shift])], dimension: 1)
            s = w.add(s, moved)
            shift *= 2
        }
        return s
    }

    /// Gumbel noise −ln(−ln u), u in (0, 1) from a 32-bit hash of (seed, position, token id).
    static func gumbel(_ w: inout StableHLOWriter, seed: HLOValue, positions: HLOValue, shape: [Int]) -> HLOValue {
        func u(_ v: UInt32) -> HLOValue { w.broadcast(w.unsigned(v), to: shape, dims: []) }
        let id = w.convert(w.iota(shape, dimension: 1), to: "ui32")
        let pos = w.broadcast(w.convert(positions, to: "ui32"), to: shape, dims: [0])
        var h = w.binary("xor", w.broadcast(seed, to: shape, dims: [0]), w.mul(id, u(0x9E37_79B9)))
        h = w.binary("xor", h, w.mul(pos, u(0x85EB_CA6B)))
        for (shift, factor) in [(UInt32(16), UInt32(0x7FEB_352D)), (15, 0x846C_A68B)] {
            h = w.mul(w.binary("xor", h, w.binary("shift_right_logical", h, u(shift))), u(factor))
        }
        h = w.binary("xor", h, w.binary("shift_right_logical", h, u(16)))
        let unit = w.add(w.mul(w.convert(w.binary("shift_right_logical", h, u(8)), to: "f32"), w.constant(1.0 / 16_777_216, shape)),
                         w.constant(1.0 / 33_554_432, shape))
        return w.unary("negate", w.unary("log", w.unary("negate", w.unary("log", unit))))
    }
}
