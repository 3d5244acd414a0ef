import Testing

@testable import Contrail

@Suite("model configs")
struct ConfigTests {
    func hf(_ text: String) throws -> ModelConfig { try ModelConfig(huggingFace: JSON.parse(text), file: "config.json") }

    @Test func llama31RopeScaling() throws {
        let c = try hf(#"{"model_type":"llama","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,"rms_norm_eps":1e-05,"rope_theta":500000.0,"max_position_embeddings":131072,"tie_word_embeddings":false,"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}}"#)
        #expect(c.architecture == .llama && c.kvGroupSize == 4 && c.headDim == 128 && !c.tiedEmbeddings)
        #expect(c.ropeScaling == .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContextLength: 8192))
    }

    @Test func gemma2Defaults() throws {
        let c = try hf(#"{"model_type":"gemma2","hidden_size":2304,"intermediate_size":9216,"num_hidden_layers":26,"num_attention_heads":8,"num_key_value_heads":4,"head_dim":256,"vocab_size":256000,"query_pre_attn_scalar":256,"sliding_window":4096,"attn_logit_softcapping":50.0,"final_logit_softcapping":30.0}"#)
        #expect(c.architecture == .gemma2 && c.postNorms && !c.qkNorm && c.scaleEmbeddings)
        #expect(c.attnLogitSoftcap == 50 && c.finalLogitSoftcap == 30 && c.slidingWindow == 4096)
        #expect(c.isLocal(layer: 0) && !c.isLocal(layer: 1) && c.isLocal(layer: 24))
    }

    @Test func gemma3MultimodalTextConfig() throws {
        let c = try hf(#"{"model_type":"gemma3","text_config":{"model_type":"gemma3_text","hidden_size":2560,"intermediate_size":10240,"num_hidden_layers":34,"num_attention_heads":8,"num_key_value_heads":4,"head_dim":256,"vocab_size":262208,"rope_theta":1000000.0,"rope_local_base_freq":10000.0,"sliding_window":1024,"sliding_window_pattern":6,"rope_scaling":{"factor":8.0,"rope_type":"linear"},"query_pre_attn_scalar":256}}"#)
        #expect(c.architecture == .gemma3 && c.qkNorm && c.slidingWindow == 1024)
        #expect(c.ropeScaling == .linear(factor: 8))
        #expect((0..<34).filter { !c.isLocal(layer: $0) } == [5, 11, 17, 23, 29])
    }

    @Test func metaParams() throws {
        let c = try ModelConfig(meta: JSON.parse(#"{"dim":4096,"n_layers":32,"n_heads":32,"n_kv_heads":8,"vocab_size":128256,"multiple_of":1024,"ffn_dim_multiplier":1.3,"norm_eps":1e-05,"rope_theta":500000.0,"use_scaled_rope":true}"#), file: "params.json", embeddingRows: nil)
        #expect(c.ffnDim == 14336)  // Llama 3.1 8B
        #expect(c.ropeScaling != nil && c.kvHeadCount == 8)
        let llama2 = try ModelConfig(meta: JSON.parse(#"{"dim":4096,"multiple_of":256,"n_heads":32,"n_layers":32,"norm_eps":1e-05,"vocab_size":-1}"#), file: "params.json", embeddingRows: 32000)
        #expect(llama2.ffnDim == 11008 && llama2.vocabSize == 32000 && llama2.ropeTheta == 10000)
    }

    @Test func rejectsBadConfigs() {
        #expect(throws: ModelFileError("config.json", "unsupported model_type mamba (supported: llama, gemma, gemma2, gemma3)")) {
            _ = try hf(#"{"model_type":"mamba"}"#)
        }
        #expect(throws: ModelFileError("config.json", "head count 6 is not a multiple of KV head count 4")) {
            _ = try hf(#"{"model_type":"llama","hidden_size":48,"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":6,"num_key_value_heads":4,"vocab_size":10}"#)
        }
    }

    @Test func ropeRowMapping() {
        // Interleaved pairs (0,1),(2,3) of a head of 8 sit at half-split rows (0,4),(1,5).
        #expect((0..<8).map { RopeLayout.halfSplitRow(ofInterleaved: $0, headDim: 8) } == [0, 4, 1, 5, 2, 6, 3, 7])
        #expect(RopeLayout.halfSplitRow(ofInterleaved: 9, headDim: 8) == 12)
    }
}

@Suite("JSON")
struct JSONTests {
    @Test func parsesAndSerializes() throws {
        let v = try JSON.parse(#" {"a": [1, 2.5, -3e2, true, false, null], "s": "x\"\\\n\u00e9\ud83d\ude00", "o": {}} "#)
        #expect(v["a"] == .array([.number(1), .number(2.5), .number(-300), .bool(true), .bool(false), .null]))
        #expect(v["s"]?.string == "x\"\\\né😀")
        #expect(v.serialized == #"{"a":[1,2.5,-300,true,false,null],"s":"x\"\\\né😀","o":{}}"#)
    }

    @Test(arguments: [#"{"a":1,}"#, "[1 2]", #""\ud800""#, "01", "1.", "tru", #"{"a"}"#, "[" , #""\x""#, "\"a\u{01}\"", "1 2"])
    func rejectsInvalid(_ text: String) {
        #expect(throws: JSONError.self) { _ = try JSON.parse(text) }
    }

    @Test func depthLimit() {
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        #expect(throws: JSONError.self) { _ = try JSON.parse(deep) }
    }
}
