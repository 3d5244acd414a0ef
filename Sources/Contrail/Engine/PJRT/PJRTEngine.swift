import CShims

/// The PJRT backend behind the Engine protocol: prefill runs a program per padded length, insert
/// copies the prefix into its slot of the device caches, and a decode step runs one program over all
/// slots with the caches donated (updated in place, never copied). Greedy and temperature/top-k/top-p/
/// min-p sampling happen on the device; penalties and log-probabilities bring the logits to the host's
/// `Sampler`, as on the CPU backend. Each program runs on one device or, tensor-parallel, on a group of
/// devices holding a part of every weight and of the caches.
public final class PJRTEngine: Engine {
    public let config: ModelConfig
    public let slotCount: Int
    public let maxPrefillLength: Int
    public let maxCacheLength: Int
    public var compilesPerShape: Bool { true }
    public let model: PJRTModel
    /// The decode caches' arrays on the generate devices (keys then values; int8 ones with their scales).
    private var caches: [DeviceArray]
    private var slots: [Slot]
    /// Bytes of the KV caches on each generate device.
    public let cacheBytes: Int
    /// Decode steps since `resetStepTimes`: whole-step and Execute-only nanoseconds.
    private var stepNanos: UInt64 = 0, executeNanos: UInt64 = 0

    /// The fraction of decode-step time spent outside Execute (host work: uploads, the logits download,
    /// sampling) since the last reset.
    public var hostOverhead: Double { stepNanos == 0 ? 0 : 1 - Double(executeNanos) / Double(stepNanos) }
    public func resetStepTimes() { (stepNanos, executeNanos) = (0, 0) }

    struct Slot {
        var live = false
        var length = 0
        var lastToken: Int32 = 0
        var sampler = Sampler(.greedy)
    }

    /// The prefix's keys and values on a device group, [layers, padded length, kvDim] (cut by KV head
    /// when tensor-parallel).
    final class DevicePrefix {
        let keys: DeviceArray, values: DeviceArray
        let paddedLength: Int
        let group: [Int]
        init(keys: DeviceArray, values: DeviceArray, paddedLength: Int, group: [Int]) {
            self.keys = keys
            self.values = values
            self.paddedLength = paddedLength
            self.group = group
        }

        /// The same prefix on `target` (each device's part copied to the same position of the other group;
        /// itself when already there).
        func moved(to target: [Int]) throws(PJRTError) -> DevicePrefix {
            guard target != group else { return self }
            guard target.count == group.count else { throw PJRTError(code: -1, message: "a prefix on \(group) cannot move to \(target)") }
            func copy(_ a: DeviceArray) throws(PJRTError) -> DeviceArray {
                DeviceArray(try zip(a.parts, target).map { part, device throws(PJRTError) in try part.copy(to: device) })
            }
            return DevicePrefix(keys: try copy(keys), values: try copy(values), paddedLength: paddedLength, group: target)
        }
    }

    /// Disaggregated serving: the transfer thread moves the prefix to the generate devices.
    public func transfer(_ prefix: Prefix) throws -> Prefix {
        guard let p = prefix.device as? DevicePrefix, p.group != generateDevices else { return prefix }
        return Prefix(length: prefix.length, firstToken: prefix.firstToken, firstLogits: prefix.firstLogits, sampler: prefix.sampler,
                      device: try p.moved(to: generateDevices))
    }

    /// Where prompts are prefilled and where the decode steps run (indices into the client's devices; more
    /// than one: tensor-parallel over them). Different groups serve disaggregated, as JetStream does: a
    /// prefix moves from one to the other in `transfer`, and prefill never waits for a decode step.
    public let prefillDevices: [Int], generateDevices: [Int]

    /// `weights`: f32, bf16 or int8 (per-row scales) on the devices; `kvCache`: f32, bf16 or int8 (per-token
    /// scales). `prefillDevices` and `generateDevices` are groups of one size: the tensor-parallel degree.
    public init(_ checkpoint: Checkpoint, client: PJRTClient, slots: Int = 1, maxCacheLength: Int? = nil,
                maxPrefillLength: Int? = nil, weights: String = "f32", kvCache: KVCacheStorage = .f32, prefillDevices: [Int] = [0],
                generateDevices: [Int] = [0]) throws {
        guard prefillDevices.count == generateDevices.count else {
            throw PJRTError(code: -1, message: "prefill devices \(prefillDevices) and generate devices \(generateDevices) must be groups of one size")
        }
        self.prefillDevices = prefillDevices
        self.generateDevices = generateDevices
        model = try PJRTModel(checkpoint, client: client, weights: weights, kvCache: kvCache, groups: [prefillDevices, generateDevices])
        config = checkpoint.config
        slotCount = max(1, slots)
        self.maxCacheLength = min(maxCacheLength ?? 2048, config.contextLength)
        self.maxPrefillLength = min(maxPrefillLength ?? self.maxCacheLength, self.maxCacheLength)
        let kv = model.lowering.kvCache(slots: slotCount, cacheLength: self.maxCacheLength)
        cacheBytes = kv.bytes(devices: generateDevices.count)
        caches = try kv.arrays.map { a throws(PJRTError) in try client.zeros(a.shape, a.element, a.sharding, on: generateDevices) }
        self.slots = Array(repeating: Slot(), count: slotCount)
    }

    public func prefill(_ tokens: [Int32], trueLength: Int, sampling: SamplingParams) throws -> Prefix {
        guard trueLength >= 1 else { throw EngineError.emptyPrompt }
        guard trueLength <= maxPrefillLength, tokens.count <= maxCacheLength else {
            throw EngineError.promptTooLong(trueLength, max: maxPrefillLength)
        }
        for t in tokens.prefix(trueLength) where t < 0 || Int(t) >= config.vocabSize { throw EngineError.tokenOutOfRange(t, vocab: config.vocabSize) }
        let (logits, keys, values) = try model.prefill(tokens, trueLength: trueLength, on: prefillDevices)
        var sampler = Sampler(sampling, prompt: Array(tokens.prefix(trueLength)))
        var copy = logits
        let first = copy.withUnsafeMutableBufferPointer { sampler.sample($0) }
        return Prefix(length: trueLength, firstToken: first, firstLogits: logits, sampler: sampler,
                      device: DevicePrefix(keys: keys, values: values, paddedLength: tokens.count, group: prefillDevices))
    }

    public func insert(_ prefix: Prefix, slot: Int) throws {
        guard slot >= 0 && slot < slotCount else { throw EngineError.badSlot(slot) }
        guard !slots[slot].live else { throw EngineError.slotBusy(slot) }
        guard prefix.length < maxCacheLength else { throw EngineError.cacheFull(slot: slot) }
        guard let stored = prefix.device as? DevicePrefix else { throw EngineError.unsupportedWeights("a prefix from another backend") }
        let p = try stored.moved(to: generateDevices)  // normally done by `transfer` already
        let (B, S) = (slotCount, maxCacheLength)
        let exe = try model.program("insert \(p.paddedLength)", on: generateDevices) { $0.insert(length: p.paddedLength, slots: B, cacheLength: S) }
        caches = try exe.execute(caches + [p.keys, p.values, model.client.upload([Int32(slot)], shape: [], on: generateDevices)],
                                 devices: generateDevices)
        slots[slot] = Slot(live: true, length: prefix.length, lastToken: prefix.firstToken, sampler: prefix.sampler)
    }

    public func generate() throws -> [SlotToken] {
        let start = contrail_now_ns()
        defer { stepNanos += contrail_now_ns() - start }
        let live = (0..<slotCount).filter { slots[$0].live }
        guard !live.isEmpty else { return [] }
        for s in live where slots[s].length >= maxCacheLength { throw EngineError.cacheFull(slot: s) }
        // Sampling happens on the device (only ids come back) unless a slot needs penalties or
        // log-probabilities, which bring the logits to the host's Sampler.
        let params = live.map { slots[$0].sampler.params }
        let mode: ModelLowering.StepSampling
        if params.contains(where: { $0.hasPenalties || $0.logprobs != nil }) {
            mode = .hostLogits
        } else {
            mode = params.allSatisfy(\.isGreedy) ? .greedy : .device
        }
        let group = generateDevices
        let exe = try stepProgram(mode)
        let tokens = slots.map { $0.live ? $0.lastToken : 0 }
        let positions = slots.map { Int32($0.live ? $0.length : 0) }
        var arguments = try model.weights(on: group)
            + caches + [try model.client.upload(tokens, shape: [slotCount], on: group), try model.client.upload(positions, shape: [slotCount], on: group)]
        if mode == .device {
            // Free slots sample greedily (temperature 0); nobody reads their tokens.
            let p = slots.map { $0.live ? $0.sampler.params : .greedy }
            let c = model.client
            arguments += [try c.upload(p.map(\.temperature), shape: [slotCount], on: group),
                          try c.upload(p.map { Int32(clamping: $0.topK) }, shape: [slotCount], on: group),
                          try c.upload(p.map(\.topP), shape: [slotCount], on: group),
                          try c.upload(p.map(\.minP), shape: [slotCount], on: group),
                          try c.upload(p.map { UInt32(truncatingIfNeeded: $0.seed ^ ($0.seed >> 32)) }, shape: [slotCount], on: group)]
        }
        let executeStart = contrail_now_ns()
        let out = try exe.execute(arguments, devices: group)
        executeNanos += contrail_now_ns() - executeStart
        caches = Array(out[1...])
        var result: [SlotToken] = []
        if mode != .hostLogits {
            let ids = try out[0].parts[0].download(as: Int32.self)
            for s in live {
                slots[s].length += 1
                slots[s].lastToken = ids[s]
                result.append(SlotToken(slot: s, token: ids[s]))
            }
            return result
        }
        var logits = try out[0].parts[0].download(as: Float.self)
        let V = config.vocabSize
        logits.withUnsafeMutableBufferPointer { all in
            for s in live {
                slots[s].length += 1
                let next = slots[s].sampler.sample(UnsafeMutableBufferPointer(rebasing: all[s * V..<(s + 1) * V]))
                slots[s].lastToken = next
                result.append(SlotToken(slot: s, token: next, logprobs: slots[s].sampler.lastLogprobs))
            }
        }
        return result
    }

    /// Compiles the decode step for each way a step can sample (greedy, on the device, host logits), so a
    /// sampled request after warm-up never waits for a compile in the generate loop.
    public func prepare() throws {
        for mode in [ModelLowering.StepSampling.greedy, .device, .hostLogits] { _ = try stepProgram(mode) }
    }

    /// The decode step over all slots on the generate devices, sampling as `mode` says.
    private func stepProgram(_ mode: ModelLowering.StepSampling) throws(PJRTError) -> PJRTExecutable {
        let (B, S) = (slotCount, maxCacheLength)
        return try model.program("generate \(B)x\(S) \(mode)", on: generateDevices) { $0.generate(slots: B, cacheLength: S, sampling: mode) }
    }

    public func free(slot: Int) {
        guard slot >= 0 && slot < slotCount else { return }
        slots[slot] = Slot()
    }
}
