import Testing

@testable import Contrail

/// The PJRT runtime layer on the real XLA CPU plugin (`make fixtures` fetches it from PyPI).
@Suite("PJRT runtime (XLA CPU plugin)", .serialized)
struct PJRTTests {
    static let pluginPath = ModelLocation.fixtures + "/pjrt_c_api_cpu_plugin.so"

    static let program = """
        module @smoke {
          func.func public @main(%a: tensor<4xf32>, %b: tensor<4xf32>, %m: tensor<2x3xf32>, %v: tensor<3xf32>, %i: tensor<3xi32>)
              -> (tensor<4xf32>, tensor<2xf32>, tensor<3xi32>) {
            %s = stablehlo.add %a, %b : tensor<4xf32>
            %d = stablehlo.dot_general %m, %v, contracting_dims = [1] x [0] : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2xf32>
            %j = stablehlo.multiply %i, %i : tensor<3xi32>
            return %s, %d, %j : tensor<4xf32>, tensor<2xf32>, tensor<3xi32>
          }
        }
        """

    @Test func compilesAndRunsOnTwoDevices() throws {
        let plugin = try PJRTPlugin.load(Self.pluginPath)
        #expect(plugin.apiVersion.major == 0 && plugin.apiVersion.minor >= 81)
        let client = try PJRTClient(plugin: plugin, cpuDeviceCount: 2)
        #expect(client.platform == "cpu" && client.deviceCount == 2)
        let exe = try client.compile(Self.program)
        #expect(exe.outputCount == 3)
        #expect(try client.compile(Self.program) === exe, "the same text compiles once")
        for device in 0..<2 {
            let args = [try client.upload([1, 2, 3, 4] as [Float], shape: [4], device: device),
                        try client.upload([10, 20, 30, 40] as [Float], shape: [4], device: device),
                        try client.upload([1, 2, 3, 4, 5, 6] as [Float], shape: [2, 3], device: device),
                        try client.upload([1, 0, -1] as [Float], shape: [3], device: device),
                        try client.upload([2, -3, 7] as [Int32], shape: [3], device: device)]
            // The executable was compiled for one device (device 0); run it there only.
            guard device == 0 else { continue }
            let out = try exe.execute(args)
            #expect(out.count == 3)
            #expect(try out[0].download(as: Float.self) == [11, 22, 33, 44])
            #expect(try out[1].download(as: Float.self) == [-2, -2])
            #expect(try out[2].download(as: Int32.self) == [4, 9, 49])
        }
    }

    @Test func clearErrors() throws {
        let missing = #expect(throws: PJRTError.self) { try PJRTPlugin.load("/nonexistent/libtpu.so") }
        #expect(missing?.message.contains("cannot load PJRT plugin /nonexistent/libtpu.so") == true)
        // A shared library that is not a plugin.
        let notPlugin = #expect(throws: PJRTError.self) { try PJRTPlugin.load("libz.so.1") }
        #expect(notPlugin?.message.contains("exports no GetPjrtApi") == true)
        // A file that is not a shared library at all.
        let text = #expect(throws: PJRTError.self) { try PJRTPlugin.load(ModelLocation.fixtures + "/tokenizer_llama3.tiktoken") }
        #expect(text?.message.contains("cannot load PJRT plugin") == true)

        let client = try PJRTClient(plugin: try PJRTPlugin.load(Self.pluginPath), cpuDeviceCount: 1)
        let bad = #expect(throws: PJRTError.self) { try client.compile("module { func.func public @main() -> tensor<2xf32> { nonsense } }") }
        #expect(bad.map { $0.code > 0 && $0.message.hasPrefix("PJRT_Client_Compile: ") } == true)
        let shape = #expect(throws: PJRTError.self) { try client.upload([1, 2, 3] as [Float], shape: [2, 2]) }
        #expect(shape?.message.contains("do not fill shape [2, 2]") == true)
        // Wrong argument count: the plugin's own message, not a crash.
        let exe = try client.compile(Self.program)
        let wrong = #expect(throws: PJRTError.self) { try exe.execute([try client.upload([1] as [Float], shape: [1])]) }
        #expect(wrong.map { $0.code > 0 } == true)
    }
}

/// The lowered model on the XLA CPU plugin against the CPU engine: the same logits for the same prompt.
@Suite("PJRT model parity (XLA CPU plugin)", .serialized)
struct PJRTParityTests {
    static let smolLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"

    /// A fixture model and its tokenizer.
    static func fixture(_ file: String) throws -> (Checkpoint, Tokenizer) {
        let path = ModelLocation.fixtures + "/" + file
        return (try Checkpoint.open(path), try Tokenizer.load(path: path))
    }

    /// A client of the XLA CPU plugin with `devices` devices.
    static func client(devices: Int) throws -> PJRTClient {
        try PJRTClient(plugin: try PJRTPlugin.load(PJRTTests.pluginPath), cpuDeviceCount: devices)
    }

    @Test(arguments: ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"])
    func prefillLogitsMatchTheCPUEngine(_ file: String) throws {
        let (checkpoint, tokenizer) = try Self.fixture(file)
        let prompt = tokenizer.encode("The capital of France is")
        let cpu = try CPUEngine(checkpoint, slots: 1, maxCacheLength: 64).prefill(prompt, sampling: .greedy)
        let client = try Self.client(devices: 1)
        let model = try PJRTModel(checkpoint, client: client)
        let (logits, keys, _) = try model.prefill(prompt + [0, 0, 0], trueLength: prompt.count)  // padded, as buckets are
        #expect(logits.count == checkpoint.config.vocabSize)
        var worst: Float = 0
        for i in logits.indices { worst = max(worst, abs(logits[i] - cpu.firstLogits[i])) }
        // Both are f32 forward passes; summation order differs (XLA's dots vs the CPU kernels).
        #expect(worst < 2e-3, "\(file): max |Δlogit| \(worst)")
        #expect(logits.indices.max { logits[$0] < logits[$1] } == Int(cpu.firstToken))
        let kv = try keys.download(as: Float.self)
        #expect(kv.count == checkpoint.config.layerCount * (prompt.count + 3) * checkpoint.config.kvDim)
        // Layer 0's keys equal the CPU engine's cache.
        for i in 0..<prompt.count * checkpoint.config.kvDim { worst = max(worst, abs(kv[i] - cpu.keys[0][i])) }
        #expect(worst < 2e-3, "\(file): keys differ by \(worst)")
        print("PJRT parity \(file): max |Δlogit| \(worst)")
    }
}

extension PJRTParityTests {
    /// Continuous batching on the device: two prompts in different slots, greedy, give the CPU engine's tokens.
    @Test(arguments: ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"])
    func greedyGenerationMatchesTheCPUEngine(_ file: String) throws {
        let (checkpoint, tokenizer) = try Self.fixture(file)
        let prompts = ["The capital of France is", "One, two, three, four,"].map { tokenizer.encode($0) }
        let client = try Self.client(devices: 1)
        let pjrt = try PJRTEngine(checkpoint, client: client, slots: 3, maxCacheLength: 48)
        // Greedy picks tokens on the device; asking for log-probabilities brings the logits to the host sampler.
        var hostSampled = SamplingParams.greedy
        hostSampled.logprobs = 0
        let runs: [(any Engine, SamplingParams)] = [(try CPUEngine(checkpoint, slots: 3, maxCacheLength: 48), .greedy),
                                                    (pjrt, .greedy), (pjrt, hostSampled)]
        var outputs: [[[Int32]]] = []
        for (engine, sampling) in runs {
            var tokens: [[Int32]] = [[], []]
            for (i, p) in prompts.enumerated() {
                let padded = p + [Int32](repeating: 0, count: 16 - p.count)  // a 16-token bucket
                let prefix = try engine.prefill(engine.compilesPerShape ? padded : p, trueLength: p.count, sampling: sampling)
                try engine.insert(prefix, slot: 2 * i)  // slots 0 and 2; slot 1 stays free
                tokens[i].append(prefix.firstToken)
            }
            for _ in 0..<12 {
                for t in try engine.generate() { tokens[t.slot / 2].append(t.token) }
            }
            for s in 0..<engine.slotCount { engine.free(slot: s) }
            outputs.append(tokens)
        }
        #expect(outputs[0] == outputs[1], "\(file): CPU \(outputs[0]) vs PJRT on-device greedy \(outputs[1])")
        #expect(outputs[0] == outputs[2], "\(file): CPU \(outputs[0]) vs PJRT host sampler \(outputs[2])")
        print("PJRT generation \(file): \(prompts.indices.map { tokenizer.decode(outputs[1][$0]) })")
    }
}

extension PJRTParityTests {
    /// Temperature and top-k sampling on the device: a seed reproduces a request's tokens whatever shares
    /// the batch; another seed changes them; top-k 1 is greedy.
    @Test func deviceSamplingIsSeededAndBatchIndependent() throws {
        let (checkpoint, tokenizer) = try Self.fixture(Self.smolLM2)
        let prompt = tokenizer.encode("Once upon a time")
        let client = try Self.client(devices: 1)
        let engine = try PJRTEngine(checkpoint, client: client, slots: 3, maxCacheLength: 48)
        func params(seed: UInt64, temperature: Float = 0.9, topK: Int = 40) -> SamplingParams {
            var p = SamplingParams.greedy
            (p.seed, p.temperature, p.topK) = (seed, temperature, topK)
            return p
        }
        func run(_ perSlot: [SamplingParams]) throws -> [[Int32]] {
            var out = [[Int32]](repeating: [], count: perSlot.count)
            for (s, p) in perSlot.enumerated() {
                let prefix = try engine.prefill(prompt + [Int32](repeating: 0, count: 16 - prompt.count), trueLength: prompt.count, sampling: p)
                try engine.insert(prefix, slot: s)
            }
            for _ in 0..<10 { for t in try engine.generate() { out[t.slot].append(t.token) } }
            for s in perSlot.indices { engine.free(slot: s) }
            return out
        }
        let together = try run([params(seed: 7), params(seed: 7), params(seed: 8)])
        #expect(together[0] == together[1], "the same seed in two slots of one batch")
        #expect(together[0] != together[2], "another seed")
        let alone = try run([params(seed: 7)])
        #expect(alone[0] == together[0], "alone or among others")
        let greedy = try run([.greedy, params(seed: 3, temperature: 1, topK: 1)])
        #expect(greedy[0] == greedy[1], "top-k 1 is greedy")
        #expect(together.joined().allSatisfy { $0 >= 0 && Int($0) < checkpoint.config.vocabSize })
    }
}

extension PJRTParityTests {
    /// Narrower weight storage on the device: the same greedy token, logits within what the rounding of
    /// the weights explains (bf16: 8 mantissa bits; int8: 127 steps per row).
    @Test(arguments: [("bf16", Float(0.25)), ("int8", Float(1.0))])
    func narrowWeightsStayClose(_ storage: String, _ tolerance: Float) throws {
        let (checkpoint, tokenizer) = try Self.fixture(Self.smolLM2)
        let prompt = tokenizer.encode("The capital of France is")
        let cpu = try CPUEngine(checkpoint, slots: 1, maxCacheLength: 64).prefill(prompt, sampling: .greedy)
        let client = try Self.client(devices: 1)
        let (logits, _, _) = try PJRTModel(checkpoint, client: client, weights: storage).prefill(prompt)
        var worst: Float = 0
        for i in logits.indices { worst = max(worst, abs(logits[i] - cpu.firstLogits[i])) }
        print("PJRT \(storage) weights: max |Δlogit| \(worst)")
        #expect(worst < tolerance, "\(storage): max |Δlogit| \(worst)")
        #expect(logits.indices.max { logits[$0] < logits[$1] } == Int(cpu.firstToken))
        #expect(throws: PJRTError.self) { try PJRTModel(checkpoint, client: client, weights: "fp4") }
    }
}

extension PJRTParityTests {
    /// Disaggregated serving on two CPU devices: prefill on device 0, decode on device 1, the prefix moved
    /// by `transfer` — the same tokens as one device doing both.
    @Test func disaggregatedEqualsInterleaved() throws {
        let (checkpoint, tokenizer) = try Self.fixture(Self.smolLM2)
        let prompts = ["The capital of France is", "One, two, three, four,"].map { tokenizer.encode($0) }
        let client = try Self.client(devices: 2)
        var outputs: [[[Int32]]] = []
        for (prefillDevice, generateDevice) in [(0, 0), (0, 1)] {
            let engine = try PJRTEngine(checkpoint, client: client, slots: 2, maxCacheLength: 40, prefillDevice: prefillDevice,
                                        generateDevice: generateDevice)
            var tokens: [[Int32]] = [[], []]
            for (i, p) in prompts.enumerated() {
                let prefix = try engine.prefill(p + [Int32](repeating: 0, count: 16 - p.count), trueLength: p.count, sampling: .greedy)
                try engine.insert(try engine.transfer(prefix), slot: i)
                tokens[i].append(prefix.firstToken)
            }
            for _ in 0..<8 { for t in try engine.generate() { tokens[t.slot].append(t.token) } }
            outputs.append(tokens)
        }
        #expect(outputs[0] == outputs[1])
        #expect(throws: PJRTError.self) { try PJRTEngine(checkpoint, client: client, slots: 1, generateDevice: 5) }
    }
}
