#if canImport(Glibc)
import Glibc
#endif

/// One request of a workload: its text (HTTP routes), its token ids (gRPC token_content) and how many
/// tokens to ask for.
public struct BenchPrompt: Sendable {
    public var text: String
    public var ids: [Int32]
    public var outputTokens: Int
}

/// Builds the prompts a benchmark sends: synthetic ones of a given token length, or a JSONL file.
public enum BenchWorkload {
    /// `count` prompts of `inputLength` tokens (± `spread` × length, uniformly, when spread > 0) asking
    /// for `outputLength` tokens (same spread). Texts are random common English words, cut to the exact
    /// length with `tokenizer` when one is given (every server still tokenizes the text itself; counts
    /// may differ by a token or two across tokenizers and BOS handling). Reproducible for a seed.
    public static func synthetic(count: Int, inputLength: Int, outputLength: Int, spread: Double, seed: UInt64,
                                 tokenizer: Tokenizer?) -> [BenchPrompt] {
        var rng = SeededGenerator(seed: seed)
        func sampled(_ n: Int) -> Int {
            guard spread > 0 else { return n }
            let lo = max(1, Int((Double(n) * (1 - spread)).rounded())), hi = max(lo, Int((Double(n) * (1 + spread)).rounded()))
            return Int.random(in: lo...hi, using: &rng)
        }
        return (0..<count).map { _ in
            let inLength = sampled(inputLength), outLength = sampled(outputLength)
            // Words first (each common word is about one token), then trim to the exact token count.
            var words: [String] = []
            for _ in 0..<(inLength + 8) { words.append(commonWords[Int.random(in: 0..<commonWords.count, using: &rng)]) }
            var text = words.joined(separator: " ")
            var ids: [Int32] = []
            if let tokenizer {
                ids = Array(tokenizer.encode(text, addBOS: false, parseSpecial: false).prefix(inLength))
                text = tokenizer.decode(ids)
            } else {
                text = words.prefix(inLength).joined(separator: " ")
            }
            return BenchPrompt(text: text, ids: ids, outputTokens: outLength)
        }
    }

    /// Prompts from a JSONL file: one object per line with `prompt` (a string) and optionally
    /// `output_len` (or `max_tokens`); lines without an output length use `defaultOutput`.
    public static func load(path: String, defaultOutput: Int, tokenizer: Tokenizer?) throws -> [BenchPrompt] {
        let file = try MappedFile(path: path)
        let text = String(decoding: file.bytes, as: UTF8.self)
        var prompts: [BenchPrompt] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = String(line).trimmingWhitespace()
            guard !trimmed.isEmpty else { continue }
            let where_ = "\(path):\(n + 1)"
            let json: JSON
            do { json = try JSON.parse(trimmed) } catch { throw BenchWorkloadError("\(where_): \(error)") }
            guard let prompt = json["prompt"]?.string else { throw BenchWorkloadError("\(where_): `prompt` must be a string") }
            var output = defaultOutput
            if let v = json["output_len"] ?? json["max_tokens"], !v.isNull {
                guard let o = v.int, o >= 1 else { throw BenchWorkloadError("\(where_): `output_len` must be a positive integer") }
                output = o
            }
            let ids = tokenizer?.encode(prompt) ?? []
            prompts.append(BenchPrompt(text: prompt, ids: ids, outputTokens: output))
        }
        guard !prompts.isEmpty else { throw BenchWorkloadError("\(path): no prompts (one JSON object per line with a `prompt`)") }
        return prompts
    }

    /// Mostly single-token words in the Llama, Gemma and SmolLM2 vocabularies.
    static let commonWords = """
        the of and to in is was for that on as with by he it at from his an are were which this be or first new \
        had their one not also after its has but they her two who been other into all time she more over \
        city year world game about only team state between during most where when would three later \
        there many some these while then made under used known like part people both such since before \
        work through life school music film house light water river north south early long small great
        """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
}

public struct BenchWorkloadError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
