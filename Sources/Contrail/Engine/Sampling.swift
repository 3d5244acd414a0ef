/// Per-request sampling: penalties first, then greedy when temperature is 0, otherwise temperature,
/// top-k, top-p (nucleus) and min-p filtering, drawn from a seeded generator so a seed reproduces exactly.
public struct SamplingParams: Sendable, Equatable {
    public var temperature: Float = 0
    public var topK: Int = 0
    public var topP: Float = 1
    public var minP: Float = 0
    public var seed: UInt64 = 0
    /// OpenAI's: subtracted once from the logit of every token generated so far.
    public var presencePenalty: Float = 0
    /// OpenAI's: subtracted per occurrence in the generated tokens.
    public var frequencyPenalty: Float = 0
    /// Hugging Face's / vLLM's: logits of tokens in the prompt or generated so far are divided by it
    /// (multiplied when negative). 1 is off.
    public var repetitionPenalty: Float = 1
    /// Report log-probabilities: nil off; n: the chosen token's and the n most likely tokens' (0…20), from
    /// the model's distribution before penalties and temperature.
    public var logprobs: Int? = nil

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, minP: Float = 0, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.seed = seed
    }

    public static let greedy = SamplingParams()
    public var isGreedy: Bool { temperature <= 0 || topK == 1 }
    public var hasPenalties: Bool { presencePenalty != 0 || frequencyPenalty != 0 || repetitionPenalty != 1 }
}

/// xoshiro256** seeded through splitmix64: small, fast, and reproducible across platforms.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// Uniform in [0, 1).
    public mutating func nextUnit() -> Float { Float(next() >> 40) / Float(1 << 24) }
}

/// A token's log-probability and the most likely alternatives at its position.
public struct TokenLogprobs: Sendable, Equatable {
    public struct Alternative: Sendable, Equatable {
        public let id: Int32
        public let logprob: Float
    }

    public let logprob: Float
    public let top: [Alternative]

    /// Log-softmax of `logits` at `chosen` (whose logit was `chosenLogit`) and the `n` largest.
    static func of(_ logits: UnsafeBufferPointer<Float>, chosenLogit: Float, n: Int) -> TokenLogprobs {
        var maxLogit = -Float.infinity
        for l in logits where l > maxLogit { maxLogit = l }
        var sum: Double = 0
        for l in logits { sum += Double(expf(l - maxLogit)) }
        let lse = maxLogit + Float(log(sum))
        var top: [Alternative] = []
        if n > 0 {
            // A small sorted list of the n largest: one pass, no full sort of the vocabulary.
            for i in 0..<logits.count where top.count < n || logits[i] > top[top.count - 1].logprob {
                let a = Alternative(id: Int32(i), logprob: logits[i])
                let at = top.firstIndex { $0.logprob < a.logprob } ?? top.count
                top.insert(a, at: at)
                if top.count > n { top.removeLast() }
            }
        }
        return TokenLogprobs(logprob: chosenLogit - lse, top: top.map { Alternative(id: $0.id, logprob: $0.logprob - lse) })
    }
}

/// Picks the next token from logits; remembers what it picked (and the prompt) for the penalties.
public struct Sampler: Sendable {
    public let params: SamplingParams
    private var rng: SeededGenerator
    private var candidates: [(id: Int32, logit: Float)] = []
    /// Occurrences of each generated token (kept only when a penalty is on).
    private var generated: [Int32: Int] = [:]
    private var prompt: Set<Int32> = []
    /// Of the last choice, when `params.logprobs` asks for them.
    public private(set) var lastLogprobs: TokenLogprobs?

    public init(_ params: SamplingParams, prompt: [Int32] = []) {
        self.params = params
        rng = SeededGenerator(seed: params.seed)
        if params.repetitionPenalty != 1 { self.prompt = Set(prompt) }
    }

    /// Applies the penalties to `logits` in place, samples, and records the choice.
    public mutating func sample(_ logits: UnsafeMutableBufferPointer<Float>) -> Int32 {
        guard let n = params.logprobs else { return choose(logits) }
        // Log-probabilities describe the model's own distribution: taken before the penalties change it.
        let raw = Array(logits)
        let token = choose(logits)
        lastLogprobs = raw.withUnsafeBufferPointer { TokenLogprobs.of($0, chosenLogit: $0[Int(token)], n: min(n, 20)) }
        return token
    }

    private mutating func choose(_ logits: UnsafeMutableBufferPointer<Float>) -> Int32 {
        guard params.hasPenalties else { return sample(UnsafeBufferPointer(logits)) }
        let p = params
        if p.repetitionPenalty != 1 {
            for t in prompt.union(generated.keys) where Int(t) < logits.count {
                let l = logits[Int(t)]
                logits[Int(t)] = l > 0 ? l / p.repetitionPenalty : l * p.repetitionPenalty
            }
        }
        for (t, n) in generated where Int(t) < logits.count {
            logits[Int(t)] -= p.presencePenalty + p.frequencyPenalty * Float(n)
        }
        let token = sample(UnsafeBufferPointer(logits))
        generated[token, default: 0] += 1
        return token
    }

    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        var best = 0
        var bestValue = -Float.infinity
        for i in 0..<logits.count where logits[i] > bestValue {
            bestValue = logits[i]
            best = i
        }
        return Int32(best)
    }

    /// Samples without penalties (the logits are left as they are).
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        if params.isGreedy { return Self.argmax(logits) }
        let t = params.temperature
        candidates.removeAll(keepingCapacity: true)
        let maxLogit = logits.max() ?? 0
        // min-p: drop tokens whose probability is below minP × the top probability.
        let floor = params.minP > 0 ? maxLogit + t * logf(params.minP) : -Float.infinity
        for i in 0..<logits.count where logits[i] >= floor { candidates.append((Int32(i), logits[i])) }
        candidates.sort { $0.logit > $1.logit }
        if params.topK > 0 && candidates.count > params.topK { candidates.removeLast(candidates.count - params.topK) }
        var probs = candidates.map { expf(($0.logit - maxLogit) / t) }
        var total = probs.reduce(0, +)
        if params.topP < 1 {
            var cumulative: Float = 0
            var keep = probs.count
            for (i, p) in probs.enumerated() {
                cumulative += p / total
                if cumulative >= params.topP {
                    keep = i + 1
                    break
                }
            }
            probs.removeLast(probs.count - keep)
            total = probs.reduce(0, +)
        }
        var r = rng.nextUnit() * total
        for (i, p) in probs.enumerated() {
            r -= p
            if r <= 0 { return candidates[i].id }
        }
        return candidates[probs.count - 1].id
    }
}

#if canImport(Glibc)
import Glibc
#endif
