import ArgumentParser
import Contrail

#if canImport(Glibc)
import Glibc
#endif

/// Prints `contrail: error: …` to stderr and exits 1 — a clear message for users, never a trap.
func fail(_ message: String) -> ExitCode {
    var err = "contrail: error: \(message)\n"
    err.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    return ExitCode.failure
}

/// Runs `body`, turning model-file and JSON errors into clean CLI failures.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ModelFileError {
        throw fail(e.description)
    } catch let e as JSONError {
        throw fail(e.description)
    }
}

func formatBytes(_ n: Int) -> String {
    if n >= 1 << 30 { return String(format1(Double(n) / Double(1 << 30))) + " GiB" }
    if n >= 1 << 20 { return String(format1(Double(n) / Double(1 << 20))) + " MiB" }
    if n >= 1 << 10 { return String(format1(Double(n) / Double(1 << 10))) + " KiB" }
    return "\(n) B"
}

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }

/// The sampling flags `generate` and `serve` share (for `serve`, the default of APIs that carry none).
struct SamplingOptions: ParsableArguments {
    @Option(name: .long, help: "Sampling temperature (0: greedy).") var temperature: Float = 0
    @Option(name: .long, help: "Keep only the k most likely tokens (0: all).") var topK = 0
    @Option(name: .long, help: "Nucleus sampling mass.") var topP: Float = 1
    @Option(name: .long, help: "Drop tokens below this fraction of the top probability.") var minP: Float = 0
    @Option(name: .long, help: "Random seed for sampling.") var seed: UInt64 = 0

    func validate() throws {
        if temperature < 0 { throw ValidationError("--temperature must not be negative") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
    }

    var params: SamplingParams { SamplingParams(temperature: temperature, topK: topK, topP: topP, minP: minP, seed: seed) }
}

extension ActivationPrecision: ExpressibleByArgument {}
