import ArgumentParser
import CShims
import Contrail

#if canImport(Glibc)
import Glibc
#endif

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from a prompt on the CPU engine, streaming it to the terminal.",
        discussion: "Ends with a summary line: prompt tokens, generated tokens, prefill and decode tokens/s.")

    @Option(name: .long, help: "Model file or checkpoint directory (default: the SmolLM2 fixture).") var model: String?
    @Option(name: .long, help: "Tokenizer file (default: the one inside the GGUF model).") var tokenizer: String?
    @Option(name: .long, help: "Most tokens to generate.") var maxTokens = 128
    @OptionGroup(title: "Sampling") var sampling: SamplingOptions
    @Option(name: .long, help: "What the matrix products read: f32 activations (exact), int8 (fastest; llama.cpp's scheme), or int8x2 (within 0.01 of f32).")
    var activations = ActivationPrecision.f32
    @Flag(name: .long, help: "Wrap the prompt as a user message in the model's chat template.") var chat = false
    @Argument(help: "The prompt.") var prompt: String

    func validate() throws {
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1") }
    }

    func run() throws {
        try reportingErrors {
            let path = model ?? ModelLocation.defaultModel
            let checkpoint = try Checkpoint.open(path)
            let tok = try Tokenizer.load(path: tokenizer ?? path)
            let text = chat ? tok.chatTemplate.render([ChatMessage(role: "user", content: prompt)]) : prompt
            let ids = tok.encode(text)
            let engine = try CPUEngine(checkpoint, slots: 1, maxCacheLength: ids.count + maxTokens + 1, activations: activations)
            let t0 = contrail_now_ns()
            let prefix: Prefix
            do { prefix = try engine.prefill(ids, sampling: sampling.params) } catch { throw fail("\(error)") }
            let t1 = contrail_now_ns()
            try engine.insert(prefix, slot: 0)
            var detok = StreamingDetokenizer(tokenizer: tok, skipSpecial: true, atStart: false)
            var generated = 0
            var next = prefix.firstToken
            while generated < maxTokens {
                if tok.stopIds.contains(next) { break }
                emit(detok.push(next))
                generated += 1
                if generated == maxTokens { break }
                guard let step = try engine.generate().first else { break }
                next = step.token
            }
            emit(detok.finish())
            let t2 = contrail_now_ns()
            let prefillRate = Double(ids.count) / max(1e-9, Double(t1 - t0) / 1e9)
            let decodeRate = Double(max(0, generated - 1)) / max(1e-9, Double(t2 - t1) / 1e9)
            emit("\n")
            log("prompt \(ids.count) tokens, generated \(generated) tokens, prefill \(format1(prefillRate)) tok/s, decode \(format1(decodeRate)) tok/s")
        }
    }

    func emit(_ s: String) {
        guard !s.isEmpty else { return }
        s.withCString { _ = write(1, $0, strlen($0)) }
    }
}
