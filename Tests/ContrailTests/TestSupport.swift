import Foundation
import Testing

@testable import Contrail

/// Fixture and reference files (`make fixtures`, `make references`). A missing file fails the test with
/// the command that makes it, rather than skipping silently.
enum Fixtures {
    static var dir: String { ModelLocation.fixtures }
    static var references: String { ModelLocation.home + "/references" }

    static func path(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try existing(dir + "/" + name, makeTarget: "fixtures", sourceLocation)
    }

    static func reference(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try existing(references + "/" + name, makeTarget: "references", sourceLocation)
    }

    private static func existing(_ p: String, makeTarget: String, _ sourceLocation: SourceLocation) throws -> String {
        guard FileManager.default.fileExists(atPath: p) else {
            Issue.record("\(p) is missing: run `make \(makeTarget)`", sourceLocation: sourceLocation)
            throw MissingFile()
        }
        return p
    }

    static let smol = "SmolLM2-135M-Instruct.Q4_1.gguf"
    static let gemma = "gemma-3-270m-q4_k_m.gguf"

    struct MissingFile: Error {}
}

/// A scratch directory removed when the value goes away.
final class TempDir {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "contrail-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let p = path + "/" + name
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }

    @discardableResult
    func write(_ name: String, _ text: String) -> String { write(name, Array(text.utf8)) }
}

/// Builds small GGUF files for malformed-input and synthetic-model tests.
struct GGUFBuilder {
    enum Value {
        case u32(UInt32), i32(Int32), f32(Float), bool(Bool), string(String), strings([String])
    }

    struct TensorSpec {
        var name: String
        var dims: [UInt64]  // GGUF order: innermost first
        var type: UInt32
        var data: [UInt8]
        var offset: UInt64? = nil  // override to corrupt
    }

    var version: UInt32 = 3
    var metadata: [(String, Value)] = []
    var tensors: [TensorSpec] = []

    static func string(_ s: String, into out: inout [UInt8]) {
        append(UInt64(s.utf8.count), &out)
        out += Array(s.utf8)
    }

    static func append<T: FixedWidthInteger>(_ v: T, _ out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out += $0 }
    }

    func build() -> [UInt8] {
        var out: [UInt8] = Array("GGUF".utf8)
        Self.append(version, &out)
        Self.append(UInt64(tensors.count), &out)
        Self.append(UInt64(metadata.count), &out)
        for (key, value) in metadata {
            Self.string(key, into: &out)
            switch value {
            case .u32(let v): Self.append(UInt32(4), &out); Self.append(v, &out)
            case .i32(let v): Self.append(UInt32(5), &out); Self.append(v, &out)
            case .f32(let v): Self.append(UInt32(6), &out); Self.append(v.bitPattern, &out)
            case .bool(let v): Self.append(UInt32(7), &out); out.append(v ? 1 : 0)
            case .string(let s): Self.append(UInt32(8), &out); Self.string(s, into: &out)
            case .strings(let a):
                Self.append(UInt32(9), &out); Self.append(UInt32(8), &out); Self.append(UInt64(a.count), &out)
                for s in a { Self.string(s, into: &out) }
            }
        }
        var offsets: [UInt64] = []
        var next: UInt64 = 0
        for t in tensors {
            offsets.append(next)
            next += (UInt64(t.data.count) + 31) / 32 * 32
        }
        for (i, t) in tensors.enumerated() {
            Self.string(t.name, into: &out)
            Self.append(UInt32(t.dims.count), &out)
            for d in t.dims { Self.append(d, &out) }
            Self.append(t.type, &out)
            Self.append(t.offset ?? offsets[i], &out)
        }
        while out.count % 32 != 0 { out.append(0) }
        for t in tensors {
            out += t.data
            while out.count % 32 != 0 { out.append(0) }
        }
        return out
    }

    static func f32Tensor(_ name: String, _ values: [Float], dims: [UInt64]) -> TensorSpec {
        var data: [UInt8] = []
        for v in values { append(v.bitPattern, &data) }
        return TensorSpec(name: name, dims: dims, type: 0, data: data)
    }

    /// A tiny but complete Llama GGUF: every tensor ModelWeights needs, with the given sizes.
    static func tinyLlama(dim: Int = 8, layers: Int = 2, heads: Int = 2, kvHeads: Int = 1, ffn: Int = 16, vocab: Int = 32,
                          omit: String? = nil) -> GGUFBuilder {
        var b = GGUFBuilder()
        b.metadata = [
            ("general.architecture", .string("llama")),
            ("llama.embedding_length", .u32(UInt32(dim))),
            ("llama.block_count", .u32(UInt32(layers))),
            ("llama.attention.head_count", .u32(UInt32(heads))),
            ("llama.attention.head_count_kv", .u32(UInt32(kvHeads))),
            ("llama.feed_forward_length", .u32(UInt32(ffn))),
            ("llama.context_length", .u32(256)),
            ("llama.rope.freq_base", .f32(10000)),
            ("llama.attention.layer_norm_rms_epsilon", .f32(1e-5)),
        ]
        let headDim = dim / heads
        func matrix(_ name: String, _ rows: Int, _ cols: Int) -> TensorSpec {
            f32Tensor(name, (0..<rows * cols).map { Float($0 % 7) * 0.125 }, dims: [UInt64(cols), UInt64(rows)])
        }
        var t: [TensorSpec] = [matrix("token_embd.weight", vocab, dim),
                               f32Tensor("output_norm.weight", Array(repeating: 1, count: dim), dims: [UInt64(dim)])]
        for l in 0..<layers {
            let p = "blk.\(l)."
            t += [f32Tensor(p + "attn_norm.weight", Array(repeating: 1, count: dim), dims: [UInt64(dim)]),
                  matrix(p + "attn_q.weight", heads * headDim, dim), matrix(p + "attn_k.weight", kvHeads * headDim, dim),
                  matrix(p + "attn_v.weight", kvHeads * headDim, dim), matrix(p + "attn_output.weight", dim, heads * headDim),
                  f32Tensor(p + "ffn_norm.weight", Array(repeating: 1, count: dim), dims: [UInt64(dim)]),
                  matrix(p + "ffn_gate.weight", ffn, dim), matrix(p + "ffn_up.weight", ffn, dim), matrix(p + "ffn_down.weight", dim, ffn)]
        }
        b.tensors = t.filter { $0.name != omit }
        return b
    }
}

/// Expects `body` to throw a ModelFileError that names `file` and contains `fragment`.
func expectModelError(file: String, contains fragment: String, sourceLocation: SourceLocation = #_sourceLocation,
                      _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error mentioning \"\(fragment)\"", sourceLocation: sourceLocation)
    } catch let e as ModelFileError {
        #expect(e.file == file, "error names \(e.file), expected \(file)", sourceLocation: sourceLocation)
        #expect(e.description.contains(fragment), "\"\(e.description)\" lacks \"\(fragment)\"", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}
