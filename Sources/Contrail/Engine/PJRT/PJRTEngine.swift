import CShims

/// The PJRT backend behind the Engine protocol: prefill runs a program per padded length, insert
/// copies the prefix into its slot of the device caches, and a decode step runs one program over all
/// slots with the caches donated (updated in place, never copied). Logits come back to the host, where
/// the same `Sampler` as the CPU backend picks each slot's token (penalties, top-k/p, seeds, logprobs).
public final class PJRTEngine: Engine {
    public let config: ModelConfig
    public let slotCount: Int
    public let maxPrefillLength: Int
    public let maxCacheLength: Int
    public var compilesPerShape: Bool { true }
    public let model: PJRTModel
    private var keyCache: PJRTBuffer
    private var valueCache: PJRTBuffer
    private var slots: [Slot]
    /// Bytes of the two KV caches on the device.
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

    /// The prefix's keys and values on a device, [layers, padded length, kvDim].
    final class DevicePrefix {
        let keys: PJRTBuffer, values: PJRTBuffer
        let paddedLength: Int
        let device: Int
        init(keys: PJRTBuffer, values: PJRTBuffer, paddedLength: Int, device: Int) {
            self.keys = keys
            self.values = values
            self.paddedLength = paddedLength
            self.device = device
        }

        /// The same prefix on `target` (device-to-device copies; itself when already there).
        func moved(to target: Int) throws(PJRTError) -> DevicePrefix {
            target == device ? self : DevicePrefix(keys: try keys.copy(to: target), values: try values.copy(to: target), paddedLength: paddedLength, device: target)
        }
    }

    /// Disaggregated serving: the transfer thread moves the prefix to the generate device.
    public func transfer(_ prefix: Prefix) throws -> Prefix {
        guard let p = prefix.device as? DevicePrefix, p.device != generateDevice else { return prefix }
        return Prefix(length: prefix.length, firstToken: prefix.firstToken, firstLogits: prefix.firstLogits, sampler: prefix.sampler,
                      device: try p.moved(to: generateDevice))
    }

    /// Where prompts are prefilled and where the decode steps run (indices into the client's devices).
    /// Different devices serve disaggregated, as JetStream does: a prefix moves from one to the other
    /// in `transfer`, and prefill never waits for a decode step's device.
    public let prefillDevice: Int, generateDevice: Int

    /// `weights`: f32, bf16 or int8 (per-row scales) on the device.
    public init(_ checkpoint: Checkpoint, client: PJRTClient, slots: Int = 1, maxCacheLength: Int? = nil,
                maxPrefillLength: Int? = nil, weights: String = "f32", prefillDevice: Int = 0, generateDevice: Int = 0) throws {
        guard prefillDevice < client.deviceCount, generateDevice < client.deviceCount else {
            throw PJRTError(code: -1, message: "devices \(prefillDevice) and \(generateDevice) asked for, the \(client.platform) client has \(client.deviceCount)")
        }
        self.prefillDevice = prefillDevice
        self.generateDevice = generateDevice
        model = try PJRTModel(checkpoint, client: client, weights: weights, devices: [prefillDevice, generateDevice])
        config = checkpoint.config
        slotCount = max(1, slots)
        self.maxCacheLength = min(maxCacheLength ?? 2048, config.contextLength)
        self.maxPrefillLength = min(maxPrefillLength ?? self.maxCacheLength, self.maxCacheLength)
        let n = config.layerCount * slotCount * self.maxCacheLength * config.kvDim
        cacheBytes = 2 * 4 * n
        let shape = [config.layerCount, slotCount, self.maxCacheLength, config.kvDim]
        keyCache = try client.upload([Float](repeating: 0, count: n), shape: shape, device: generateDevice)
        valueCache = try client.upload([Float](repeating: 0, count: n), shape: shape, device: generateDevice)
        self.slots = Array(repeating: Slot(), count: slotCount)
    }

    public func prefill(_ tokens: [Int32], trueLength: Int, sampling: SamplingParams) throws -> Prefix {
        guard trueLength >= 1 else { throw EngineError.emptyPrompt }
        guard trueLength <= maxPrefillLength, tokens.count <= maxCacheLength else {
            throw EngineError.promptTooLong(trueLength, max: maxPrefillLength)
        }
        for t in tokens.prefix(trueLength) where t < 0 || Int(t) >= config.vocabSize { throw EngineError.tokenOutOfRange(t, vocab: config.vocabSize) }
        let (logits, keys, values) = try model.prefill(tokens, trueLength: trueLength, device: prefillDevice)
        var sampler = Sampler(sampling, prompt: Array(tokens.prefix(trueLength)))
        var copy = logits
        let first = copy.withUnsafeMutableBufferPointer { sampler.sample($0) }
        return Prefix(length: trueLength, firstToken: first, firstLogits: logits, sampler: sampler,
                      device: DevicePrefix(keys: keys, values: values, paddedLength: tokens.count, device: prefillDevice))
    }

    public func insert(_ prefix: Prefix, slot: Int) throws {
        guard slot >= 0 && slot < slotCount else { throw EngineError.badSlot(slot) }
        guard !slots[slot].live else { throw EngineError.slotBusy(slot) }
        guard prefix.length < maxCacheLength else { throw EngineError.cacheFull(slot: slot) }
        guard let stored = prefix.device as? DevicePrefix else { throw EngineError.unsupportedWeights("a prefix from another backend") }
        let p = try stored.moved(to: generateDevice)  // normally done by `transfer` already
        let (B, S) = (slotCount, maxCacheLength)
        let exe = try model.program("insert \(p.paddedLength)") { $0.insert(length: p.paddedLength, slots: B, cacheLength: S) }
        let out = try exe.execute([keyCache, valueCache, p.keys, p.values, model.client.upload([Int32(slot)], shape: [], device: generateDevice)],
                                  device: generateDevice)
        keyCache = out[0]
        valueCache = out[1]
        slots[slot] = Slot(live: true, length: prefix.length, lastToken: prefix.firstToken, sampler: prefix.sampler)
    }

    public func generate() throws -> [SlotToken] {
        let start = contrail_now_ns()
        defer { stepNanos += contrail_now_ns() - start }
        let live = (0..<slotCount).filter { slots[$0].live }
        guard !live.isEmpty else { return [] }
        for s in live where slots[s].length >= maxCacheLength { throw EngineError.cacheFull(slot: s) }
        let (B, S) = (slotCount, maxCacheLength)
        // Greedy, temperature and top-k sampling pick each slot's token on the device; only ids come back.
        // Anything else brings the logits to the host's Sampler.
        let params = live.map { slots[$0].sampler.params }
        let mode: ModelLowering.StepSampling
        if params.allSatisfy({ $0.temperature == 0 && !$0.hasPenalties && $0.logprobs == nil }) {
            mode = .greedy
        } else if params.allSatisfy({ !$0.hasPenalties && $0.logprobs == nil && $0.topP >= 1 && $0.minP <= 0 }) {
            mode = .device  // temperature and top-k on the device
        } else {
            mode = .hostLogits  // top-p, min-p, penalties, log-probabilities: the host Sampler
        }
        let exe = try model.program("generate \(B)x\(S) \(mode)") { $0.generate(slots: B, cacheLength: S, sampling: mode) }
        let tokens = slots.map { $0.live ? $0.lastToken : 0 }
        let positions = slots.map { Int32($0.live ? $0.length : 0) }
        let d = generateDevice
        var arguments = try model.weights(on: d)
            + [keyCache, valueCache, try model.client.upload(tokens, shape: [slotCount], device: d),
               try model.client.upload(positions, shape: [slotCount], device: d)]
        if mode == .device {
            arguments += [try model.client.upload(slots.map { $0.live ? $0.sampler.params.temperature : 0 }, shape: [slotCount], device: d),
                          try model.client.upload(slots.map { Int32(clamping: $0.live ? $0.sampler.params.topK : 0) }, shape: [slotCount], device: d),
                          try model.client.upload(slots.map { UInt32(truncatingIfNeeded: $0.sampler.params.seed ^ ($0.sampler.params.seed >> 32)) },
                                                  shape: [slotCount], device: d)]
        }
        let executeStart = contrail_now_ns()
        let out = try exe.execute(arguments, device: d)
        executeNanos += contrail_now_ns() - executeStart
        keyCache = out[1]
        valueCache = out[2]
        var result: [SlotToken] = []
        if mode != .hostLogits {
            let ids = try out[0].download(as: Int32.self)
            for s in live {
                slots[s].length += 1
                slots[s].lastToken = ids[s]
                result.append(SlotToken(slot: s, token: ids[s]))
            }
            return result
        }
        var logits = try out[0].download(as: Float.self)
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

    public func free(slot: Int) {
        guard slot >= 0 && slot < slotCount else { return }
        slots[slot] = Slot()
    }
}
