/// Element types of the weight formats we load: GGUF's ggml types and safetensors' dtypes.
/// Block-quantized types store `blockElements` values in `blockBytes` bytes.
public enum TensorType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", i8 = "I8"
    case q4_0 = "Q4_0", q4_1 = "Q4_1", q5_0 = "Q5_0", q5_1 = "Q5_1", q8_0 = "Q8_0"
    case q4_K = "Q4_K", q5_K = "Q5_K", q6_K = "Q6_K"

    /// ggml's type numbers (a fact of the GGUF format).
    public init?(ggmlType: UInt32) {
        switch ggmlType {
        case 0: self = .f32
        case 1: self = .f16
        case 2: self = .q4_0
        case 3: self = .q4_1
        case 6: self = .q5_0
        case 7: self = .q5_1
        case 8: self = .q8_0
        case 12: self = .q4_K
        case 13: self = .q5_K
        case 14: self = .q6_K
        case 24: self = .i8
        case 30: self = .bf16
        default: return nil
        }
    }

    /// Names of ggml types we know of but do not execute, for error messages.
    static func ggmlName(_ type: UInt32) -> String {
        let names: [UInt32: String] = [4: "Q4_2", 5: "Q4_3", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 15: "Q8_K",
                                       16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL",
                                       21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 25: "I16", 26: "I32", 27: "I64",
                                       28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"]
        return names[type] ?? "unknown"
    }

    /// safetensors dtype strings.
    public init?(safetensorsDType: String) {
        switch safetensorsDType {
        case "F32": self = .f32
        case "F16": self = .f16
        case "BF16": self = .bf16
        case "I8": self = .i8
        default: return nil
        }
    }

    public var blockElements: Int {
        switch self {
        case .f32, .f16, .bf16, .i8: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: return 32
        case .q4_K, .q5_K, .q6_K: return 256
        }
    }

    public var blockBytes: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .i8: return 1
        case .q4_0: return 18
        case .q4_1: return 20
        case .q5_0: return 22
        case .q5_1: return 24
        case .q8_0: return 34
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        }
    }

    public var isQuantized: Bool { blockElements > 1 }

    /// Bytes for `elements` values, or nil when `elements` is not a whole number of blocks.
    public func byteCount(elements: Int) -> Int? {
        guard elements % blockElements == 0 else { return nil }
        let (bytes, overflow) = (elements / blockElements).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }
}
