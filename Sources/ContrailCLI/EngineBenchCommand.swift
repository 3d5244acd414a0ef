import ArgumentParser
import CShims
import Contrail

/// Measures the engine alone (no server): prefill, single-stream decode and aggregate batched decode,
/// printed as JSON for scripts/bench_engine.py (`make bench-engine`). A benchmark, not a test.
struct EngineBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine-bench",
        abstract: "Measure the engine's prefill and decode tokens/s on a model (JSON on stdout).")

    @Option(name: .long, help: "Model file or checkpoint directory (default: the SmolLM2 fixture).") var model: String?
    @Option(name: .long, help: "Compute threads.") var threads = ServerConfig.cores
    @Option(name: .long, help: "Prompt tokens for the prefill measurement.") var promptTokens = 512
    @Option(name: .long, help: "Tokens for the single-stream decode measurement.") var genTokens = 128
    @Option(name: .long, parsing: .upToNextOption, help: "Batch sizes for aggregate decode.") var batch: [Int] = [4, 16]
    @Option(name: .long, help: "Decode steps per batch measurement.") var steps = 32
    @Option(name: .long, help: "Backend: cpu or pjrt.") var backend = "cpu"
    @Option(name: .customLong("pjrt-plugin"), help: "PJRT plugin for --backend pjrt.") var pjrtPlugin: String?
    @Option(name: .long, help: "What the CPU backend's matrix products read: f32, int8 or int8x2 activations.") var activations = ActivationPrecision.f32
    @Flag(name: .long, help: "Also measure the threads' memory read rate (GB/s) and report the weight bytes a decode step reads.")
    var memory = false

    func run() throws {
        try reportingErrors {
            let checkpoint = try Checkpoint.open(model ?? ModelLocation.defaultModel)
            let maxBatch = batch.max() ?? 1
            let cache = promptTokens + genTokens + steps + 32
            let engine: any Engine
            var pjrt: PJRTEngine?
            if backend == "pjrt" {
                guard let pjrtPlugin else { throw fail("--backend pjrt needs --pjrt-plugin") }
                let client: PJRTClient
                do { client = try PJRTClient(plugin: try PJRTPlugin.load(pjrtPlugin)) } catch { throw fail("\(error)") }
                pjrt = try PJRTEngine(checkpoint, client: client, slots: max(1, maxBatch), maxCacheLength: cache)
                engine = pjrt!
            } else {
                engine = try CPUEngine(checkpoint, slots: max(1, maxBatch), maxCacheLength: cache, threads: threads, activations: activations)
            }
            var rng = SeededGenerator(seed: 1)
            func tokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.next() % UInt64(min(checkpoint.config.vocabSize, 30_000))) + 100 } }
            func seconds(_ body: () throws -> Void) rethrows -> Double {
                let t0 = contrail_now_ns()
                try body()
                return Double(contrail_now_ns() - t0) / 1e9
            }
            var result: [(String, JSON)] = [("threads", .number(Double(threads))), ("activations", .string(activations.rawValue))]
            // Prefill (pp): one prompt of promptTokens.
            let prompt = tokens(promptTokens)
            if engine.compilesPerShape {
                // Compile outside the measurements: each shape's first run, and the decode step.
                try engine.insert(engine.prefill(tokens(promptTokens), sampling: .greedy), slot: 0)
                engine.free(slot: 0)
                try engine.insert(engine.prefill(tokens(16), sampling: .greedy), slot: 0)
                _ = try engine.generate()
                engine.free(slot: 0)
                pjrt?.resetStepTimes()
            }
            let pp = try seconds { _ = try engine.prefill(prompt, sampling: .greedy) }
            result.append(("pp\(promptTokens)", .number(Double(promptTokens) / pp)))
            // Single-stream decode (tg).
            let p1 = try engine.prefill(tokens(engine.compilesPerShape ? 16 : 8), sampling: .greedy)
            try engine.insert(p1, slot: 0)
            let tg = try seconds { for _ in 0..<genTokens { _ = try engine.generate() } }
            engine.free(slot: 0)
            result.append(("tg\(genTokens)", .number(Double(genTokens) / tg)))
            // Aggregate decode over B live slots.
            for b in batch where b >= 1 {
                for s in 0..<b { try engine.insert(engine.prefill(tokens(16), sampling: .greedy), slot: s) }
                pjrt?.resetStepTimes()
                let t = try seconds { for _ in 0..<steps { _ = try engine.generate() } }
                for s in 0..<b { engine.free(slot: s) }
                result.append(("batch\(b)", .number(Double(b * steps) / t)))
                if let pjrt {
                    // Time outside PJRT_LoadedExecutable_Execute per decode step (uploads, logits download, sampling).
                    result.append(("host_overhead_batch\(b)", .number(pjrt.hostOverhead)))
                }
            }
            if memory, let cpu = engine as? CPUEngine {
                // Single-stream decode reads every weight once per token: these bound tg from above.
                let bytes = cpu.decodeWeightBytes
                result.append(("weight_bytes_per_token", .number(Double(bytes.read))))
                result.append(("stored_weight_bytes_per_token", .number(Double(bytes.stored))))
                result.append(("read_gbps", .number(MemoryBandwidth.read(threads: threads))))
            }
            print(JSON.object(result).serialized)
        }
    }
}
