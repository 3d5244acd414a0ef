import CKernels

#if canImport(Glibc)
import Glibc
#endif

/// The CPU backend: llama2.c's shape — `config`, `weights`, a preallocated `RunState` — executing the
/// one `ModelConfig` description for every family (Llama, SmolLM2, Gemma 1/2/3). Weight matrices are
/// read in their stored format by the C kernels; only norm vectors and int8 scales are expanded at load.
public final class CPUEngine: Engine {
    public let config: ModelConfig
    public let slotCount: Int
    public let maxPrefillLength: Int
    public let maxCacheLength: Int
    let weights: ModelWeights
    private let norms: NormVectors
    private var state: RunState
    private var slots: [Slot]
    let pool: ThreadPool
    private let prefillChunk: Int
    /// Rotary frequencies of global and local layers, computed once.
    private let ropeFrequencies: [[Double]]
    public let activations: ActivationPrecision
    /// With int8 activations: how many matrices were packed for the eight-row kernels, and their bytes.
    public var packedWeights: (count: Int, bytes: Int) { state.int8.map { ($0.packedCount, $0.packedBytes) } ?? (0, 0) }

    /// Weight bytes one decode step reads (each matrix once: the packed copy where there is one, else the
    /// stored tensor), and the stored tensors' own bytes (what an engine reading the file's formats reads).
    /// Single-stream decode cannot outrun memory bandwidth divided by these.
    public var decodeWeightBytes: (read: Int, stored: Int) {
        var seen = Set<String>(), read = 0, stored = 0
        for m in weights.productMatrices where seen.insert(m.tensor.name).inserted {
            let own = m.tensor.rows * m.tensor.rowBytes
            stored += own
            read += state.int8?.packedSize(m) ?? own
        }
        return (read, stored)
    }

    /// One sequence's KV cache: per layer, `capacity` rows of kvDim keys and values, stored as `storage`
    /// says (int8 rows with one scale each).
    final class KVCache {
        let capacity: Int
        let storage: KVCacheStorage
        let kvDim: Int
        /// Bytes per element.
        let width: Int
        let keys: [UnsafeMutableRawPointer], values: [UnsafeMutableRawPointer]
        /// Per layer, one scale per row (int8 only).
        let keyScales: [UnsafeMutablePointer<Float>], valueScales: [UnsafeMutablePointer<Float>]

        init(layers: Int, capacity: Int, kvDim: Int, storage: KVCacheStorage = .f32) {
            self.capacity = capacity
            self.storage = storage
            self.kvDim = kvDim
            width = storage == .f32 ? 4 : storage == .bf16 ? 2 : 1
            let bytes = capacity * kvDim * width
            keys = (0..<layers).map { _ in .allocate(byteCount: bytes, alignment: 64) }
            values = (0..<layers).map { _ in .allocate(byteCount: bytes, alignment: 64) }
            let scaled = storage == .int8 ? layers : 0
            keyScales = (0..<scaled).map { _ in .allocate(capacity: capacity) }
            valueScales = (0..<scaled).map { _ in .allocate(capacity: capacity) }
        }

        deinit {
            for p in keys + values { p.deallocate() }
            for p in keyScales + valueScales { p.deallocate() }
        }

        var kernelType: Int32 {
            switch storage {
            case .f32: Int32(CK_KV_F32)
            case .bf16: Int32(CK_KV_BF16)
            case .int8: Int32(CK_KV_I8)
            }
        }

        /// Stores layer `l`'s key and value rows (f32, kvDim each) at `position`.
        func store(layer l: Int, position: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
            let scaled = storage == .int8
            ck_kv_store(kernelType, key, Int64(kvDim), keys[l] + position * kvDim * width, scaled ? keyScales[l] + position : nil)
            ck_kv_store(kernelType, value, Int64(kvDim), values[l] + position * kvDim * width, scaled ? valueScales[l] + position : nil)
        }

        /// Layer `l`'s rows from `start`, offset by `column` elements: keys, their scales, values, theirs.
        func rows(layer l: Int, from start: Int, column: Int)
            -> (UnsafeRawPointer, UnsafePointer<Float>?, UnsafeRawPointer, UnsafePointer<Float>?)
        {
            let offset = (start * kvDim + column) * width
            let scaled = storage == .int8
            return (UnsafeRawPointer(keys[l] + offset), scaled ? UnsafePointer(keyScales[l] + start) : nil,
                    UnsafeRawPointer(values[l] + offset), scaled ? UnsafePointer(valueScales[l] + start) : nil)
        }

        /// Layer `l`'s first `n` key (or value) rows as f32 (an f32 cache's own rows).
        func floats(layer l: Int, values: Bool, count n: Int) -> [Float] {
            precondition(storage == .f32, "prefixes are read from f32 caches")
            return Array(UnsafeBufferPointer(start: (values ? self.values : keys)[l].assumingMemoryBound(to: Float.self), count: n * kvDim))
        }
    }

    struct Slot {
        var cache: KVCache
        var live = false
        var length = 0
        var lastToken: Int32 = 0
        var sampler = Sampler(.greedy)
    }

    /// `threads`: compute threads (default: one per core); `kvCache`: how slots keep their KV caches
    /// (prefill computes in f32; a prefix is converted as it is inserted); `activations`: what the matrix
    /// products read (prefill and decode alike, so batching never changes a sequence's arithmetic).
    public init(_ checkpoint: Checkpoint, slots: Int = 1, maxCacheLength: Int? = nil, maxPrefillLength: Int? = nil,
                threads: Int = ServerConfig.cores, kvCache: KVCacheStorage = .f32, activations: ActivationPrecision = .f32) throws {
        pool = ThreadPool(threads: threads)
        CPUKernels.applyISAOverride()
        let weights = try ModelWeights(checkpoint)
        self.weights = weights
        config = checkpoint.config
        slotCount = max(1, slots)
        self.maxCacheLength = min(maxCacheLength ?? 2048, config.contextLength)
        self.maxPrefillLength = min(maxPrefillLength ?? self.maxCacheLength, self.maxCacheLength)
        let norms = NormVectors(weights)
        self.norms = norms
        ropeFrequencies = [false, true].map { checkpoint.config.ropeFrequencies(local: $0, frequencyFactors: norms.ropeFactors) }
        // Prefill runs in chunks of up to 64 tokens; decode batches one token per slot.
        prefillChunk = 64
        state = RunState(config, maxCache: self.maxCacheLength, maxBatch: max(slotCount, prefillChunk), slots: slotCount,
                         threads: pool.threads,
                         int8: activations == .f32 ? nil
                             : Int8Products(weights, columns: max(config.dim, config.qDim, config.ffnDim), batch: max(slotCount, prefillChunk),
                                            parts: activations == .int8x2 ? 2 : 1))
        self.activations = activations
        let c = config
        let capacity = self.maxCacheLength
        self.slots = (0..<slotCount).map { _ in Slot(cache: KVCache(layers: c.layerCount, capacity: capacity, kvDim: c.kvDim, storage: kvCache)) }
    }

    // MARK: Engine

    public var compilesPerShape: Bool { false }

    public func prefill(_ padded: [Int32], trueLength: Int, sampling: SamplingParams) throws -> Prefix {
        // Padding is never computed: causal attention means it cannot change the real positions.
        let tokens = Array(padded.prefix(max(0, trueLength)))
        guard !tokens.isEmpty else { throw EngineError.emptyPrompt }
        guard tokens.count <= maxPrefillLength else { throw EngineError.promptTooLong(tokens.count, max: maxPrefillLength) }
        for t in tokens where t < 0 || Int(t) >= config.vocabSize { throw EngineError.tokenOutOfRange(t, vocab: config.vocabSize) }
        let cache = KVCache(layers: config.layerCount, capacity: tokens.count, kvDim: config.kvDim)
        var done = 0
        while done < tokens.count {
            let n = min(prefillChunk, tokens.count - done)
            let last = done + n == tokens.count
            forward(tokens: Array(tokens[done..<done + n]), positions: Array(done..<done + n),
                    caches: Array(repeating: cache, count: n), logitsFor: last ? [n - 1] : [])
            done += n
        }
        var sampler = Sampler(sampling, prompt: tokens)
        let logits = UnsafeMutableBufferPointer(start: state.logits, count: config.vocabSize)
        let firstLogits = Array(logits)
        let first = sampler.sample(logits)
        let layers = 0..<config.layerCount
        return Prefix(length: tokens.count, firstToken: first, firstLogits: firstLogits, sampler: sampler,
                      keys: layers.map { cache.floats(layer: $0, values: false, count: tokens.count) },
                      values: layers.map { cache.floats(layer: $0, values: true, count: tokens.count) })
    }

    public func insert(_ prefix: Prefix, slot: Int) throws {
        guard slot >= 0 && slot < slotCount else { throw EngineError.badSlot(slot) }
        guard !slots[slot].live else { throw EngineError.slotBusy(slot) }
        guard prefix.length < maxCacheLength else { throw EngineError.cacheFull(slot: slot) }
        let cache = slots[slot].cache, kvDim = config.kvDim
        for l in 0..<config.layerCount {
            prefix.keys[l].withUnsafeBufferPointer { k in
                prefix.values[l].withUnsafeBufferPointer { v in
                    for t in 0..<prefix.length {
                        cache.store(layer: l, position: t, key: k.baseAddress! + t * kvDim, value: v.baseAddress! + t * kvDim)
                    }
                }
            }
        }
        slots[slot].live = true
        slots[slot].length = prefix.length
        slots[slot].lastToken = prefix.firstToken
        slots[slot].sampler = prefix.sampler
    }

    public func generate() throws -> [SlotToken] {
        let live = (0..<slotCount).filter { slots[$0].live }
        guard !live.isEmpty else { return [] }
        for s in live where slots[s].length >= maxCacheLength { throw EngineError.cacheFull(slot: s) }
        forward(tokens: live.map { slots[$0].lastToken }, positions: live.map { slots[$0].length },
                caches: live.map { slots[$0].cache }, logitsFor: Array(0..<live.count))
        var out: [SlotToken] = []
        for (j, s) in live.enumerated() {
            slots[s].length += 1
            let next = slots[s].sampler.sample(UnsafeMutableBufferPointer(start: state.logits + j * config.vocabSize, count: config.vocabSize))
            slots[s].lastToken = next
            out.append(SlotToken(slot: s, token: next, logprobs: slots[s].sampler.lastLogprobs))
        }
        return out
    }

    public func free(slot: Int) {
        guard slot >= 0 && slot < slotCount else { return }
        slots[slot].live = false
        slots[slot].length = 0
    }

    /// Logits of the last forward step (vocab floats).
    public var lastLogits: [Float] { Array(UnsafeBufferPointer(start: state.logits, count: config.vocabSize)) }

    // MARK: the forward pass

    /// One step for a batch: entry b runs `tokens[b]` at `positions[b]` against `caches[b]` (writing its
    /// K/V there). Decode batches one token per live slot; prefill batches consecutive prompt tokens of one
    /// cache (causal: each reads only positions up to its own). Every weight is read once per step.
    /// Logits are computed for the entries in `logitsFor`, into `state.logits` rows in that order.
    func forward(tokens: [Int32], positions: [Int], caches: [KVCache], logitsFor: [Int]) {
        let c = config
        let s = state
        let B = tokens.count
        let dim = c.dim, hd = c.headDim, kvDim = c.kvDim, qDim = c.qDim, ffn = c.ffnDim
        let w0 = s.width
        let eps = Float(c.normEps)
        // Per-entry vector work (embedding rows, norms, rope, residuals) split across the threads when there
        // are enough entries to pay for the hand-off (a prefill); a decode step's few entries run here.
        func eachEntry(_ body: (Int) -> Void) {
            pool.parallelFor(B, minimumPerThread: 32) { r in for b in r { body(b) } }
        }
        eachEntry { b in
            CPUKernels.row(weights.tokenEmbedding, Int(tokens[b]), into: s.x + b * w0, scales: norms.scales(of: weights.tokenEmbedding))
            if c.scaleEmbeddings {
                let scale = Float(Double(dim).squareRoot())
                for i in 0..<dim { s.x[b * w0 + i] *= scale }
            }
        }
        let attnScale = Float(1 / c.queryPreAttnScalar.squareRoot())
        let prefillBlock = B > 1 && caches.allSatisfy { $0 === caches[0] } && positions.indices.allSatisfy { positions[$0] == positions[0] + $0 }
        s.fillRopeTables(positions: positions, config: c, frequencies: ropeFrequencies, pool: pool)
        // Decode attention's jobs, for global and local (sliding-window) layers.
        func plan(window: Int?) -> DecodeAttentionPlan {
            DecodeAttentionPlan(positions: positions, window: window, keyHeads: c.kvHeadCount, queryHeadsPerKey: c.kvGroupSize, threads: pool.threads)
        }
        let plans = prefillBlock ? nil : (global: plan(window: nil), local: plan(window: c.slidingWindow))
        for l in 0..<c.layerCount {
            let w = weights.layers[l], n = norms.layers[l]
            eachEntry { b in CPUKernels.rmsnorm(s.x + b * w0, n.attn, s.xb + b * w0, dim, eps: eps) }
            CPUKernels.matmul([.init(w: w.wq, y: s.q, yStride: qDim, scales: norms.scales(of: w.wq)),
                               .init(w: w.wk, y: s.k, yStride: kvDim, scales: norms.scales(of: w.wk)),
                               .init(w: w.wv, y: s.v, yStride: kvDim, scales: norms.scales(of: w.wv))],
                              s.xb, xStride: w0, batch: B, int8: s.int8, pool: pool)
            let local = c.isLocal(layer: l)
            eachEntry { b in
                let q = s.q + b * qDim, k = s.k + b * kvDim
                if let qn = n.q, let kn = n.k {
                    for h in 0..<c.headCount { CPUKernels.rmsnorm(q + h * hd, qn, q + h * hd, hd, eps: eps) }
                    for h in 0..<c.kvHeadCount { CPUKernels.rmsnorm(k + h * hd, kn, k + h * hd, hd, eps: eps) }
                }
                let (cos, sin) = s.rope(entry: b, local: local)
                CPUKernels.rope(q, heads: c.headCount, headDim: hd, cos: cos, sin: sin, layout: weights.ropeLayout)
                CPUKernels.rope(k, heads: c.kvHeadCount, headDim: hd, cos: cos, sin: sin, layout: weights.ropeLayout)
                caches[b].store(layer: l, position: positions[b], key: k, value: s.v + b * kvDim)
            }
            // Attention over the cache (the sliding window on local layers), GQA. A prefill's entries share one
            // cache at consecutive positions: jobs are (head, block of entries), each key read once per block.
            // A decode step's entries each have their own cache: jobs are (entry, head). Pieces are taken from
            // the last job down: later prefill entries attend to more positions, so the threads' last pieces
            // are the cheapest and none is left with a long one at the end.
            let window = local ? c.slidingWindow : nil
            let softcap = c.attnLogitSoftcap.map { Float($0) } ?? 0
            if prefillBlock {
                let blocks = (B + RunState.queryBlock - 1) / RunState.queryBlock, cache = caches[0]
                let jobs = blocks * c.headCount
                pool.parallelFor(jobs) { thread, range in
                    for j in range {
                        let job = jobs - 1 - j
                        let block = job / c.headCount, h = job % c.headCount
                        let first = block * RunState.queryBlock, count = min(RunState.queryBlock, B - first)
                        let (keys, keyScales, values, valueScales) = cache.rows(layer: l, from: 0, column: (h / c.kvGroupSize) * hd)
                        ck_attention_causal(cache.kernelType, s.q + first * qDim + h * hd, Int64(qDim), Int64(count), Int64(positions[first]),
                                            Int64(window ?? 0), keys, keyScales, values, valueScales, Int64(kvDim), Int64(hd), attnScale,
                                            softcap, s.att + thread * s.attScratch, s.xb2 + first * w0 + h * hd, Int64(w0))
                    }
                }
            } else {
                // Decode: each entry attends to its own cache. A job is (entry, key head, piece of the span):
                // the key head's query heads run one after another over the piece while its rows are cached,
                // so each row is read from memory once rather than once per query head, and a long span's
                // pieces keep all threads busy however few key heads there are. Pieces depend only on the
                // span (an entry's result is the same at any batch size); a one-piece span is ck_attention.
                let plan = local ? plans!.local : plans!.global
                let heads = c.headCount
                precondition(B <= s.slots, "decode attention's piece scratch holds \(s.slots) entries")
                pool.parallelFor(plan.jobs) { thread, range in
                    var b = 0
                    for j in range {
                        let job = plan.job(j, from: &b), parts = plan.parts[job.entry]
                        let cache = caches[job.entry], span = job.positions
                        let (keys, keyScales, values, valueScales) = cache.rows(layer: l, from: span.lowerBound, column: job.keyHead * hd)
                        for h in job.heads {
                            let q = s.q + job.entry * qDim + h * hd, scores = s.att + thread * s.attScratch
                            if parts == 1 {
                                ck_attention(cache.kernelType, q, keys, keyScales, values, valueScales, Int64(kvDim), Int64(span.count), Int64(hd),
                                             attnScale, softcap, scores, s.xb2 + job.entry * w0 + h * hd)
                            } else {
                                let at = (job.entry * heads + h) * RunState.attentionPieces + job.piece
                                ck_attention_part(cache.kernelType, q, keys, keyScales, values, valueScales, Int64(kvDim), Int64(span.count),
                                                  Int64(hd), attnScale, softcap, scores, s.pieceOut + at * hd, s.pieceStats + 2 * at)
                            }
                        }
                    }
                }
                if plan.parts.contains(where: { $0 > 1 }) {
                    pool.parallelFor(B * heads, minimumPerThread: 16) { r in
                        for j in r where plan.parts[j / heads] > 1 {
                            let b = j / heads, h = j % heads, at = j * RunState.attentionPieces
                            ck_attention_merge(s.pieceOut + at * hd, Int64(hd), s.pieceStats + 2 * at, Int64(plan.parts[b]), Int64(hd),
                                               s.xb2 + b * w0 + h * hd)
                        }
                    }
                }
            }
            CPUKernels.matmul(w.wo, s.xb2, xStride: w0, s.xb, yStride: w0, batch: B, scales: norms.scales(of: w.wo), int8: s.int8, pool: pool)
            eachEntry { b in
                let xb = s.xb + b * w0, x = s.x + b * w0
                if let post = n.postAttn { CPUKernels.rmsnorm(xb, post, xb, dim, eps: eps) }
                for i in 0..<dim { x[i] += xb[i] }
                CPUKernels.rmsnorm(x, n.ffn, xb, dim, eps: eps)
            }
            CPUKernels.matmul([.init(w: w.gate, y: s.hb, yStride: ffn, scales: norms.scales(of: w.gate)),
                               .init(w: w.up, y: s.hb2, yStride: ffn, scales: norms.scales(of: w.up))],
                              s.xb, xStride: w0, batch: B, int8: s.int8, pool: pool)
            // Elementwise, but B × ffn exponentials: split across the threads for prefill and batches.
            let activation = Int32(c.activation == .silu ? CK_ACT_SILU : CK_ACT_GELU_TANH)
            pool.parallelFor(B * ffn, minimumPerThread: 4096) { r in
                ck_gated_activation(activation, s.hb + r.lowerBound, s.hb2 + r.lowerBound, Int64(r.count))
            }
            CPUKernels.matmul(w.down, s.hb, xStride: ffn, s.xb, yStride: w0, batch: B, scales: norms.scales(of: w.down), int8: s.int8, pool: pool)
            eachEntry { b in
                let xb = s.xb + b * w0, x = s.x + b * w0
                if let post = n.postFfn { CPUKernels.rmsnorm(xb, post, xb, dim, eps: eps) }
                for i in 0..<dim { x[i] += xb[i] }
            }
        }
        guard !logitsFor.isEmpty else { return }
        for (j, b) in logitsFor.enumerated() { CPUKernels.rmsnorm(s.x + b * w0, norms.output, s.xb + j * w0, dim, eps: eps) }
        CPUKernels.matmul(weights.output, s.xb, xStride: w0, s.logits, yStride: c.vocabSize, batch: logitsFor.count,
                          scales: norms.scales(of: weights.output), int8: s.int8, pool: pool)
        if let cap = c.finalLogitSoftcap {
            for i in 0..<logitsFor.count * c.vocabSize { s.logits[i] = Float(cap) * tanhf(s.logits[i] / Float(cap)) }
        }
    }
}

/// How a decode step's attention splits into jobs (entry, key head, piece, query heads): entry b attends
/// to positions start[b] ..< start[b] + span[b] in parts[b] pieces of about equal length, at least
/// RunState.attentionPieceLength each and at most RunState.attentionPieces. The pieces fix the arithmetic
/// and depend only on the span; which of a key head's query heads share a job does not change any result,
/// so when there are few (entry, key head, piece) triples their query heads are spread over more jobs to
/// keep `threads` busy.
struct DecodeAttentionPlan {
    let start, span, parts: [Int]
    /// Entry b's jobs are firstJob[b] ..< firstJob[b + 1]: key head by key head, piece by piece, then
    /// `headsPerJob` of the key head's query heads at a time.
    let firstJob: [Int]
    let group, headsPerJob, jobsPerPiece: Int
    var jobs: Int { firstJob.last! }

    init(positions: [Int], window: Int?, keyHeads: Int, queryHeadsPerKey group: Int, threads: Int) {
        let start = positions.map { p in window.map { max(0, p + 1 - $0) } ?? 0 }
        let span = positions.indices.map { positions[$0] + 1 - start[$0] }
        parts = span.map { min(RunState.attentionPieces, max(1, $0 / RunState.attentionPieceLength)) }
        self.start = start
        self.span = span
        self.group = group
        let pieces = keyHeads * parts.reduce(0, +)
        let split = min(group, max(1, (2 * threads + pieces - 1) / pieces))
        headsPerJob = (group + split - 1) / split
        jobsPerPiece = (group + headsPerJob - 1) / headsPerJob
        var first = [0]
        for n in parts { first.append(first.last! + keyHeads * n * jobsPerPiece) }
        firstJob = first
    }

    /// Job `job`'s entry (searched from `b`, for jobs taken in increasing order), key head, piece and its
    /// positions, and query heads.
    func job(_ job: Int, from b: inout Int) -> (entry: Int, keyHead: Int, piece: Int, positions: Range<Int>, heads: Range<Int>) {
        while firstJob[b + 1] <= job { b += 1 }
        let local = job - firstJob[b], n = parts[b]
        let g = local / (n * jobsPerPiece), part = local / jobsPerPiece % n, sub = local % jobsPerPiece
        let lo = start[b] + span[b] * part / n, hi = start[b] + span[b] * (part + 1) / n
        let first = g * group + sub * headsPerJob
        return (b, g, part, lo..<hi, first..<min(first + headsPerJob, (g + 1) * group))
    }
}

/// Activation buffers for up to `maxBatch` entries, allocated once (llama2.c's RunState).
final class RunState {
    let maxCache: Int
    /// Prefill queries per attention job (ck_attention_causal's block).
    static let queryBlock = 16
    /// Floats of attention scratch per thread (`att`): a block's scores and a transposed key tile.
    let attScratch: Int
    /// At most this many pieces per decode span (DecodeAttentionPlan), each at least `attentionPieceLength`.
    static let attentionPieces = 16, attentionPieceLength = 32
    /// Row width of x/xb/xb2: max(dim, qDim).
    let width: Int
    let x, xb, xb2, q, k, v, hb, hb2, att, logits: UnsafeMutablePointer<Float>
    /// Decode attention's pieces: [entry][query head][piece] outputs (headDim each) and (max, sum) stats, for
    /// up to `slots` entries (only slots decode: a prefill of two or more tokens attends by blocks instead).
    let pieceOut, pieceStats: UnsafeMutablePointer<Float>
    /// Decode entries (and rows of `logits`) at most: the engine's slots.
    let slots: Int
    /// Rotary cos and sin per entry of the step: [global, local][entry][headDim / 2].
    let cos, sin: UnsafeMutablePointer<Float>
    private let ropeHalf, ropeSet: Int
    /// The matrix products' int8 inputs and packed weights (ActivationPrecision.int8 / .int8x2 only).
    let int8: Int8Products?
    private var all: [UnsafeMutablePointer<Float>] = []

    init(_ c: ModelConfig, maxCache: Int, maxBatch: Int, slots: Int, threads: Int, int8: Int8Products? = nil) {
        func buf(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            p.initialize(repeating: 0, count: max(n, 1))
            return p
        }
        self.maxCache = maxCache
        width = max(c.dim, c.qDim)
        x = buf(maxBatch * width); xb = buf(maxBatch * width); xb2 = buf(maxBatch * width)
        q = buf(maxBatch * c.qDim); k = buf(maxBatch * c.kvDim); v = buf(maxBatch * c.kvDim)
        hb = buf(maxBatch * c.ffnDim); hb2 = buf(maxBatch * c.ffnDim)
        attScratch = Self.queryBlock * (maxCache + 16) + 16 * c.headDim
        att = buf(threads * attScratch); logits = buf(slots * c.vocabSize)
        self.slots = slots
        pieceOut = buf(slots * c.headCount * Self.attentionPieces * c.headDim)
        pieceStats = buf(slots * c.headCount * Self.attentionPieces * 2)
        ropeHalf = c.headDim / 2
        ropeSet = maxBatch * ropeHalf
        cos = buf(2 * ropeSet); sin = buf(2 * ropeSet)
        self.int8 = int8
        all = [x, xb, xb2, q, k, v, hb, hb2, att, logits, pieceOut, pieceStats, cos, sin]
    }

    deinit { for p in all { p.deallocate() } }

    /// cos/sin of each entry's position × each rotary frequency (`frequencies[0]` global, `[1]` local), once
    /// per step rather than per layer.
    func fillRopeTables(positions: [Int], config c: ModelConfig, frequencies: [[Double]], pool: ThreadPool) {
        let sets = c.localLayers.contains(true) ? [false, true] : [false]
        let half = ropeHalf
        pool.parallelFor(positions.count, minimumPerThread: 32) { r in
            for local in sets {
                let freq = frequencies[local ? 1 : 0]
                let factor = c.linearRopeFactor(local: local)
                for b in r {
                    var p = Double(positions[b])
                    if let factor { p /= factor }
                    let (cos, sin) = rope(entry: b, local: local)
                    for i in 0..<half {
                        cos[i] = Float(Glibc.cos(p * freq[i]))
                        sin[i] = Float(Glibc.sin(p * freq[i]))
                    }
                }
            }
        }
    }

    /// Entry `b`'s rotary table for global or local layers.
    func rope(entry b: Int, local: Bool) -> (cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>) {
        let o = (local ? ropeSet : 0) + b * ropeHalf
        return (cos + o, sin + o)
    }
}

/// Norm weights (with Gemma's +1 when the checkpoint stores raw w) and int8 scales as f32, expanded once.
final class NormVectors {
    struct Layer {
        let attn, ffn: UnsafeMutablePointer<Float>
        let q, k, postAttn, postFfn: UnsafeMutablePointer<Float>?
    }

    let layers: [Layer]
    let output: UnsafeMutablePointer<Float>
    let ropeFactors: [Float]?
    private let scaleTable: [String: UnsafeMutablePointer<Float>]
    private var owned: [UnsafeMutablePointer<Float>] = []

    deinit { for p in owned { p.deallocate() } }

    init(_ w: ModelWeights) {
        let offset: Float = w.normWeightsNeedOffset ? 1 : 0
        var owned: [UnsafeMutablePointer<Float>] = []
        func vec(_ t: Tensor) -> UnsafeMutablePointer<Float> {
            let v = t.floats()
            let p = UnsafeMutablePointer<Float>.allocate(capacity: v.count)
            for i in 0..<v.count { p[i] = v[i] + offset }
            owned.append(p)
            return p
        }
        layers = w.layers.map {
            Layer(attn: vec($0.attnNorm), ffn: vec($0.ffnNorm), q: $0.qNorm.map(vec), k: $0.kNorm.map(vec),
                  postAttn: $0.postAttnNorm.map(vec), postFfn: $0.postFfnNorm.map(vec))
        }
        output = vec(w.outputNorm)
        ropeFactors = w.ropeFrequencyFactors?.floats()
        var table: [String: UnsafeMutablePointer<Float>] = [:]
        let matrices = [w.tokenEmbedding] + w.productMatrices
        for m in matrices {
            guard let s = m.scales, table[m.tensor.name] == nil else { continue }
            let v = s.floats()
            let p = UnsafeMutablePointer<Float>.allocate(capacity: v.count)
            p.update(from: v, count: v.count)
            owned.append(p)
            table[m.tensor.name] = p
        }
        scaleTable = table
        self.owned = owned
    }

    func scales(of m: WeightMatrix) -> UnsafePointer<Float>? {
        m.scales == nil ? nil : UnsafePointer(scaleTable[m.tensor.name])
    }
}
