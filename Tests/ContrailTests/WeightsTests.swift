import Foundation
import Testing

@testable import Contrail

@Suite("GGUF fixtures")
struct GGUFFixtureTests {
    @Test func smolLM2Config() throws {
        let ckpt = try Checkpoint.open(Fixtures.path(Fixtures.smol))
        let c = ckpt.config
        #expect(c.architecture == .llama)
        #expect((c.dim, c.layerCount, c.headCount, c.kvHeadCount, c.vocabSize) == (576, 30, 9, 3, 49152))
        #expect((c.headDim, c.ffnDim, c.contextLength) == (64, 1536, 8192))
        #expect(c.ropeTheta == 100_000)
        #expect(c.tiedEmbeddings)
        #expect(c.activation == .silu && !c.scaleEmbeddings && c.slidingWindow == nil)
        #expect(ckpt.ropeLayout == .interleaved)
        let w = try ModelWeights(ckpt)
        #expect(w.layers.count == 30)
        #expect(w.output.tensor.name == "token_embd.weight")
        #expect(w.layers[0].wk.tensor.shape == [192, 576])
    }

    @Test func gemma3Config() throws {
        let ckpt = try Checkpoint.open(Fixtures.path(Fixtures.gemma))
        let c = ckpt.config
        #expect(c.architecture == .gemma3)
        #expect((c.dim, c.layerCount, c.headCount, c.kvHeadCount, c.headDim) == (640, 18, 4, 1, 256))
        #expect((c.ffnDim, c.vocabSize) == (2048, 262_144))
        #expect(c.ropeTheta == 1_000_000 && c.ropeLocalTheta == 10_000)
        #expect(c.slidingWindow == 512)
        #expect((0..<18).filter { !c.isLocal(layer: $0) } == [5, 11, 17])
        #expect(c.ropeTheta(layer: 0) == 10_000 && c.ropeTheta(layer: 5) == 1_000_000)
        #expect(c.qkNorm && c.postNorms && c.scaleEmbeddings && c.tiedEmbeddings && c.activation == .geluTanh)
        #expect(c.queryPreAttnScalar == 256)
        #expect(ckpt.ropeLayout == .halfSplit && !ckpt.normWeightsNeedOffset)
        let w = try ModelWeights(ckpt)
        #expect(w.layers[0].qNorm?.shape == [256])
        #expect(w.layers[17].postFfnNorm != nil)
    }

    /// Every tensor of both fixtures (F32, Q8_0, Q4_1, Q5_0, Q4_K, Q6_K) against the `gguf` package's
    /// dequantizer, on the rows make_references.py sampled. Same arithmetic order, so we expect exact
    /// equality; the tolerance only absorbs a possible fused multiply-add in the reference.
    @Test(arguments: [Fixtures.smol, Fixtures.gemma])
    func dequantizationMatchesReference(_ fixture: String) throws {
        let gguf = try GGUFFile(path: Fixtures.path(fixture))
        let ref = try SafetensorsFile(path: Fixtures.reference("dequant-\(fixture).safetensors"))
        var typesSeen: Set<TensorType> = []
        var worst: Float = 0
        for t in gguf.tensors {
            let expected = try #require(ref.tensorsByName[t.name], "reference lacks \(t.name)")
            let rows = try #require(ref.tensorsByName[t.name + ".rows"]).floats().map { Int($0) }
            let values = expected.floats()
            #expect(values.count == rows.count * t.columns)
            var row = [Float](repeating: 0, count: t.columns)
            for (k, r) in rows.enumerated() {
                row.withUnsafeMutableBufferPointer { t.dequantizeRow(r, into: $0.baseAddress!) }
                for j in 0..<t.columns {
                    let e = values[k * t.columns + j]
                    let d = abs(row[j] - e)
                    worst = max(worst, d / max(1, abs(e)))
                }
            }
            typesSeen.insert(t.type)
        }
        #expect(worst <= 1e-6, "largest relative difference \(worst)")
        let expectedTypes: Set<TensorType> = fixture == Fixtures.smol ? [.f32, .q8_0, .q4_1] : [.f32, .q8_0, .q5_0, .q4_K, .q6_K]
        #expect(typesSeen == expectedTypes)
    }
}

@Suite("safetensors checkpoints")
struct SafetensorsCheckpointTests {
    /// make_references.py wrote the SmolLM2 fixture as a sharded Hugging Face checkpoint (q/k rows in HF's
    /// half-split rope order); every tensor must read back bit-identical to our GGUF dequantization.
    @Test func huggingFaceRoundTripIsExact() throws {
        let gguf = try Checkpoint.open(Fixtures.path(Fixtures.smol))
        let hf = try Checkpoint.open(Fixtures.reference("smollm2-hf"))
        #expect(hf.format == .huggingFace)
        #expect(hf.config == gguf.config)
        #expect(hf.ropeLayout == .halfSplit)
        #expect(Set(hf.tensors.keys) == Set(gguf.tensors.keys))
        _ = try ModelWeights(hf)
        for (name, g) in gguf.tensors {
            let h = try #require(hf.tensors[name])
            #expect(h.type == .f32 && h.shape == g.shape, "\(name)")
            let gv = g.floats(), hv = h.floats()
            let isRope = name.hasSuffix("attn_q.weight") || name.hasSuffix("attn_k.weight")
            var mismatches = 0
            for r in 0..<g.rows {
                let hr = isRope ? RopeLayout.halfSplitRow(ofInterleaved: r, headDim: gguf.config.headDim) : r
                for j in 0..<g.columns where gv[r * g.columns + j] != hv[hr * g.columns + j] { mismatches += 1 }
            }
            #expect(mismatches == 0, "\(name): \(mismatches) values differ")
        }
    }

    @Test func jetstreamPytorchInt8Layout() throws {
        let gguf = try Checkpoint.open(Fixtures.path(Fixtures.smol))
        let js = try Checkpoint.open(Fixtures.reference("smollm2-jetstream"))
        #expect(js.format == .jetstreamPytorch)
        #expect(js.ropeLayout == .interleaved)
        // params.json derives the FFN width (2/3·4·dim rounded to multiple_of) and takes vocab from the embedding.
        #expect(js.config.ffnDim == 1536 && js.config.vocabSize == 49152 && js.config.kvHeadCount == 3)
        let w = try ModelWeights(js)
        let q = w.layers[3].wq
        #expect(q.tensor.type == .i8)
        let scales = try #require(q.scales).floats()
        let ints = q.tensor.floats(), reference = try #require(gguf.tensor("blk.3.attn_q.weight")).floats()
        for r in 0..<q.rows {
            for j in 0..<q.columns {
                let x = ints[r * q.columns + j] * scales[r]
                #expect(abs(x - reference[r * q.columns + j]) <= scales[r] * 0.5001)
            }
        }
    }

    @Test func readsEveryDType() throws {
        let dir = TempDir()
        // F32 1.5, F16 0x3E00 = 1.5, BF16 0x3FC0 = 1.5, I8 -3.
        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[1],"data_offsets":[4,6]},"c":{"dtype":"BF16","shape":[1],"data_offsets":[6,8]},"d":{"dtype":"I8","shape":[1],"data_offsets":[8,9]},"__metadata__":{"format":"pt"}}"#
        var bytes: [UInt8] = []
        GGUFBuilder.append(UInt64(header.utf8.count), &bytes)
        bytes += Array(header.utf8)
        GGUFBuilder.append(Float(1.5).bitPattern, &bytes)
        GGUFBuilder.append(UInt16(0x3E00), &bytes)
        GGUFBuilder.append(UInt16(0x3FC0), &bytes)
        bytes.append(UInt8(bitPattern: -3))
        let f = try SafetensorsFile(path: dir.write("x.safetensors", bytes))
        #expect(f.tensorsByName["a"]?.floats() == [1.5])
        #expect(f.tensorsByName["b"]?.floats() == [1.5])
        #expect(f.tensorsByName["c"]?.floats() == [1.5])
        #expect(f.tensorsByName["d"]?.floats() == [-3])
        #expect(f.metadata["format"] == "pt")
    }
}

@Suite("malformed model files")
struct MalformedFileTests {
    let dir = TempDir()

    @Test func wrongMagic() {
        let p = dir.write("bad.gguf", Array("GGUX rest of a file".utf8))
        expectModelError(file: p, contains: "bad magic") { _ = try GGUFFile(path: p) }
        expectModelError(file: p, contains: "bad magic") { _ = try Checkpoint.open(p) }
    }

    @Test func emptyAndMissingFiles() {
        let p = dir.write("empty.gguf", [UInt8]())
        expectModelError(file: p, contains: "not a GGUF file") { _ = try GGUFFile(path: p) }
        let missing = dir.path + "/nope.gguf"
        expectModelError(file: missing, contains: "no such file") { _ = try Checkpoint.open(missing) }
        expectModelError(file: missing, contains: "cannot open") { _ = try GGUFFile(path: missing) }
    }

    @Test func truncatedAtEveryPointOfTheHeader() {
        let full = GGUFBuilder.tinyLlama().build()
        // Cut inside the header, metadata and tensor table: always a clean "truncated" error.
        let headerEnd = full.count - 100
        for cut in stride(from: 4, to: headerEnd, by: 7) {
            let p = dir.write("cut\(cut).gguf", Array(full[0..<cut]))
            do {
                _ = try GGUFFile(path: p)
                Issue.record("cut at \(cut) parsed")
            } catch let e as ModelFileError {
                #expect(e.file == p)
                #expect(e.problem.contains("truncated") || e.problem.contains("past the end"), "\(e)")
            } catch {
                Issue.record("\(error)")
            }
        }
    }

    @Test func truncatedFixtureData() throws {
        let full = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path(Fixtures.smol)))
        let p = dir.write("short.gguf", Array(full.prefix(full.count - 1000)))
        expectModelError(file: p, contains: "extends past the end of the file") { _ = try GGUFFile(path: p) }
    }

    @Test func tensorPastEndOfFile() {
        var b = GGUFBuilder.tinyLlama()
        b.tensors[1].offset = 1 << 40
        let p = dir.write("past.gguf", b.build())
        expectModelError(file: p, contains: "output_norm.weight extends past the end of the file") { _ = try GGUFFile(path: p) }
    }

    @Test func unknownTensorType() {
        var b = GGUFBuilder.tinyLlama()
        b.tensors[0].type = 99
        let p = dir.write("type.gguf", b.build())
        expectModelError(file: p, contains: "token_embd.weight has unsupported type 99") { _ = try GGUFFile(path: p) }
        b.tensors[0].type = 11  // Q3_K: known to ggml, not to us
        let q = dir.write("q3k.gguf", b.build())
        expectModelError(file: q, contains: "unsupported type 11 (Q3_K)") { _ = try GGUFFile(path: q) }
    }

    @Test func unsupportedVersionAndArchitecture() {
        var b = GGUFBuilder.tinyLlama()
        b.version = 1
        let p = dir.write("v1.gguf", b.build())
        expectModelError(file: p, contains: "unsupported GGUF version 1") { _ = try GGUFFile(path: p) }
        var c = GGUFBuilder.tinyLlama()
        c.metadata[0] = ("general.architecture", .string("mamba"))
        let q = dir.write("mamba.gguf", c.build())
        expectModelError(file: q, contains: "unsupported architecture mamba") { _ = try Checkpoint.open(q) }
    }

    @Test func missingMetadataKey() {
        var b = GGUFBuilder.tinyLlama()
        b.metadata.removeAll { $0.0 == "llama.block_count" }
        let p = dir.write("nokey.gguf", b.build())
        expectModelError(file: p, contains: "llama.block_count missing") { _ = try Checkpoint.open(p) }
    }

    @Test func missingTensor() throws {
        let ok = dir.write("ok.gguf", GGUFBuilder.tinyLlama().build())
        let weights = try ModelWeights(Checkpoint.open(ok))
        #expect(weights.layers.count == 2)
        let p = dir.write("missing.gguf", GGUFBuilder.tinyLlama(omit: "blk.1.ffn_up.weight").build())
        expectModelError(file: p, contains: "missing tensor blk.1.ffn_up.weight") { _ = try ModelWeights(Checkpoint.open(p)) }
    }

    @Test func misshapenTensor() {
        var b = GGUFBuilder.tinyLlama()
        let i = b.tensors.firstIndex { $0.name == "blk.0.attn_k.weight" }!
        b.tensors[i].dims = [4, 8]  // 8 rows of 4 instead of 4 rows of 8 (same byte count)
        let p = dir.write("shape.gguf", b.build())
        expectModelError(file: p, contains: "blk.0.attn_k.weight has shape [8, 4], expected [4, 8]") { _ = try ModelWeights(Checkpoint.open(p)) }
    }

    @Test func corruptCounts() {
        var bytes = GGUFBuilder.tinyLlama().build()
        for k in 8..<16 { bytes[k] = 0xFF }  // tensor count
        let p = dir.write("count.gguf", bytes)
        expectModelError(file: p, contains: "corrupt header") { _ = try GGUFFile(path: p) }
    }

    func safetensors(_ header: String, data: [UInt8] = [0, 0, 0, 0]) -> [UInt8] {
        var bytes: [UInt8] = []
        GGUFBuilder.append(UInt64(header.utf8.count), &bytes)
        return bytes + Array(header.utf8) + data
    }

    @Test func malformedSafetensors() {
        let p1 = dir.write("a.safetensors", safetensors(#"{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#))
        expectModelError(file: p1, contains: "tensor w has unsupported dtype F8_E4M3") { _ = try SafetensorsFile(path: p1) }
        let p2 = dir.write("b.safetensors", safetensors(#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#))
        expectModelError(file: p2, contains: "tensor w extends past the end of the file") { _ = try SafetensorsFile(path: p2) }
        let p3 = dir.write("c.safetensors", safetensors(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#))
        expectModelError(file: p3, contains: "needs 8 bytes but has 4") { _ = try SafetensorsFile(path: p3) }
        let p4 = dir.write("d.safetensors", safetensors(#"{"w": oops}"#))
        expectModelError(file: p4, contains: "header is not JSON") { _ = try SafetensorsFile(path: p4) }
        let p5 = dir.write("e.safetensors", [1, 2, 3])
        expectModelError(file: p5, contains: "truncated") { _ = try SafetensorsFile(path: p5) }
        var huge: [UInt8] = []
        GGUFBuilder.append(UInt64(1) << 50, &huge)
        let p6 = dir.write("f.safetensors", huge)
        expectModelError(file: p6, contains: "implausible") { _ = try SafetensorsFile(path: p6) }
    }

    @Test func checkpointDirectoryWithoutConfig() {
        let sub = dir.path + "/ckpt"
        try? FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        dir.write("ckpt/model.safetensors", safetensors(#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#))
        expectModelError(file: sub, contains: "no config.json") { _ = try Checkpoint.open(sub) }
        dir.write("ckpt/config.json", #"{"model_type": "llama", "hidden_size": 8}"#)
        expectModelError(file: sub + "/config.json", contains: "num_attention_heads missing") { _ = try Checkpoint.open(sub) }
    }
}
