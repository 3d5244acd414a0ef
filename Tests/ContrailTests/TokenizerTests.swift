import Foundation
import Testing

@testable import Contrail

/// Tokenizers are loaded once per file: the Gemma vocabularies take a moment.
enum Tokenizers {
    nonisolated(unsafe) private static var cache: [String: Tokenizer] = [:]
    private static let lock = NSLock()

    static func load(_ fixture: String) throws -> Tokenizer {
        let path = try Fixtures.path(fixture)
        lock.lock()
        defer { lock.unlock() }
        if let t = cache[path] { return t }
        let t = try Tokenizer.load(path: path)
        cache[path] = t
        return t
    }
}

struct VocabCase: Sendable, CustomTestStringConvertible {
    let text: String
    let ids: [Int32]
    var testDescription: String { String(reflecting: text.prefix(40)) }
}

/// llama.cpp's tokenizer test vectors: inputs separated by `\n__ggml_vocab_test__\n`, one line of ids each.
func llamaCppVectors(_ name: String) throws -> [VocabCase] {
    let inp = try String(contentsOfFile: Fixtures.path("ggml-vocab-\(name).gguf.inp"), encoding: .utf8)
    let out = try String(contentsOfFile: Fixtures.path("ggml-vocab-\(name).gguf.out"), encoding: .utf8)
    var texts = inp.components(separatedBy: "\n__ggml_vocab_test__\n")
    if texts.last == "" { texts.removeLast() }
    let lines = out.components(separatedBy: "\n")
    return texts.enumerated().map { i, t in
        VocabCase(text: t, ids: lines[i].split(separator: " ").map { Int32($0)! })
    }
}

struct ReferenceCase: Sendable, CustomTestStringConvertible {
    let tokenizer: String
    let text: String
    let ids: [Int32]
    let decoded: String
    var testDescription: String { "\(tokenizer): \(String(reflecting: text.prefix(30)))" }
}

/// Written by make_references.py from the `sentencepiece` and `tokenizers` packages.
func referenceCases() throws -> [ReferenceCase] {
    let json = try JSON.parse(Array(Data(contentsOf: URL(fileURLWithPath: Fixtures.reference("tokenizer-vectors.json")))))
    return (json["cases"]?.array ?? []).map {
        ReferenceCase(tokenizer: $0["tokenizer"]!.string!, text: $0["text"]!.string!,
                      ids: $0["ids"]!.array!.map { Int32($0.int!) }, decoded: $0["decoded"]!.string!)
    }
}

@Suite("tokenizers")
struct TokenizerTests {
    @Test func llamaSPMVectors() throws {
        let tok = try Tokenizers.load("tokenizer.llama2")
        let cases = try llamaCppVectors("llama-spm")
        #expect(cases.count == 46)
        for c in cases {
            #expect(tok.encode(c.text, addBOS: false) == c.ids, "\(String(reflecting: c.text))")
        }
    }

    @Test(arguments: ["llama3-tokenizer.json", "tokenizer_llama3.tiktoken"])
    func llamaBPEVectors(_ fixture: String) throws {
        let tok = try Tokenizers.load(fixture)
        let cases = try llamaCppVectors("llama-bpe")
        #expect(cases.count == 46)
        for c in cases {
            let ids = tok.encode(c.text, addBOS: false)
            #expect(ids == c.ids, "\(String(reflecting: c.text))")
            // Byte-level BPE is lossless.
            #expect(tok.decode(ids) == c.text)
        }
    }

    @Test func matchesUpstreamPackages() throws {
        let cases = try referenceCases()
        #expect(cases.count > 200)
        var byTokenizer: [String: Int] = [:]
        for c in cases {
            let tok = try Tokenizers.load(c.tokenizer)
            let ids = tok.encode(c.text, addBOS: false)
            #expect(ids == c.ids, "\(c.testDescription)")
            #expect(tok.decode(c.ids) == c.decoded, "decode \(c.testDescription)")
            byTokenizer[c.tokenizer, default: 0] += 1
        }
        // Gemma, Gemma 3 (file and GGUF), Llama 2, Llama 3 (json, tiktoken), SmolLM2.
        #expect(byTokenizer.count == 7)
    }

    @Test func losslessRoundTrip() throws {
        let texts = try referenceCases().map(\.text) + ["x\u{10FFFF}y", "\u{1F469}\u{200D}\u{1F4BB}", String(repeating: "é", count: 100)]
        // Byte-level BPE and byte-fallback SentencePiece without a dummy prefix are lossless for any text.
        for fixture in ["llama3-tokenizer.json", "tokenizer_llama3.tiktoken", Fixtures.smol, "tokenizer.gemma3", Fixtures.gemma, "tokenizer.gemma"] {
            let tok = try Tokenizers.load(fixture)
            for t in texts {
                #expect(tok.decode(tok.encode(t, addBOS: false)) == t, "\(fixture): \(String(reflecting: t))")
            }
        }
        // Llama 2's dummy prefix is removed again on decode, so text without leading spaces round-trips.
        let llama2 = try Tokenizers.load("tokenizer.llama2")
        for t in texts where !t.hasPrefix(" ") && !t.isEmpty {
            #expect(llama2.decode(llama2.encode(t, addBOS: false)) == t, "\(String(reflecting: t))")
        }
    }

    @Test func streamingPiecesConcatenateToFullDecode() throws {
        let texts = ["emoji 🎉🚀 family 👨‍👩‍👧‍👦 ok", "日本語のテキストです。", "naïve café ½", "plain ascii", "\u{10FFFF}\u{0301}"]
        for fixture in ["tokenizer.llama2", "tokenizer.gemma3", Fixtures.smol, "tokenizer_llama3.tiktoken"] {
            let tok = try Tokenizers.load(fixture)
            for t in texts {
                let ids = tok.encode(t, addBOS: true)
                var d = StreamingDetokenizer(tokenizer: tok)
                var pieces: [String] = []
                for id in ids { pieces.append(d.push(id)) }
                pieces.append(d.finish())
                #expect(pieces.joined() == tok.decode(ids), "\(fixture)")
                #expect(pieces.joined(separator: "") .contains(t), "\(fixture): \(pieces)")
            }
        }
    }

    @Test func streamingHoldsIncompleteCharacters() throws {
        // Llama 2 spells 🎉 (F0 9F 8E 89) as four byte-fallback tokens; nothing is emitted until the last.
        let tok = try Tokenizers.load("tokenizer.llama2")
        let bytes = ["<0xF0>", "<0x9F>", "<0x8E>", "<0x89>"].map { tok.vocabulary.id(of: $0)! }
        var d = StreamingDetokenizer(tokenizer: tok)
        #expect(bytes.dropLast().map { d.push($0) } == ["", "", ""])
        #expect(d.push(bytes[3]) == "🎉")
        // A sequence that can never complete is emitted (as U+FFFD) at once, like a full decode.
        var e = StreamingDetokenizer(tokenizer: tok)
        #expect(e.push(bytes[1]) == "\u{FFFD}")
        var f = StreamingDetokenizer(tokenizer: tok)
        _ = f.push(bytes[0])
        #expect(f.finish() == "\u{FFFD}")
        #expect(tok.decode(bytes.prefix(2)) == "\u{FFFD}")
    }

    @Test func specialTokensInText() throws {
        let smol = try Tokenizers.load(Fixtures.smol)
        let imStart = try #require(smol.vocabulary.id(of: "<|im_start|>"))
        #expect(smol.encode("<|im_start|>user").first == imStart)
        #expect(smol.encode("<|im_start|>user", parseSpecial: false).first != imStart)
        #expect(smol.decode(smol.encode("<|im_start|>user", parseSpecial: false)) == "<|im_start|>user")
        let llama3 = try Tokenizers.load("llama3-tokenizer.json")
        #expect(llama3.encode("hi<|eot_id|>", addBOS: false).last == 128009)
        let gemma = try Tokenizers.load("tokenizer.gemma")
        #expect(gemma.encode("<start_of_turn>user", addBOS: false).first == gemma.vocabulary.id(of: "<start_of_turn>"))
        #expect(gemma.encode("<bos>x", addBOS: false).first == 2)
    }

    @Test func bosAndStopTokens() throws {
        let smol = try Tokenizers.load(Fixtures.smol)
        #expect(!smol.addsBOS && smol.family == .chatML)
        #expect(smol.stopIds.contains(smol.vocabulary.id(of: "<|im_end|>")!))
        for fixture in ["tokenizer.llama2", "tokenizer.gemma", "tokenizer.gemma3", Fixtures.gemma] {
            let tok = try Tokenizers.load(fixture)
            #expect(tok.addsBOS, "\(fixture)")
            #expect(tok.encode("hello").first == tok.bosId, "\(fixture)")
        }
        let gemma3 = try Tokenizers.load(Fixtures.gemma)
        #expect(gemma3.family == .gemma && gemma3.stopIds == [1, 106])
        for fixture in ["llama3-tokenizer.json", "tokenizer_llama3.tiktoken"] {
            let tok = try Tokenizers.load(fixture)
            #expect(tok.addsBOS && tok.bosId == 128000 && tok.family == .llama3)
            #expect(tok.stopIds == [128001, 128009])
        }
        #expect(try Tokenizers.load("tokenizer.llama2").family == .llama2)
    }

    @Test func pieceAndSkipSpecial() throws {
        let tok = try Tokenizers.load("tokenizer.llama2")
        let ids = tok.encode("Hello")
        #expect(tok.piece(ids[1]) == "▁Hello")
        #expect(tok.decode(ids) == "<s>Hello")
        #expect(tok.decode(ids, skipSpecial: true) == "Hello")
        #expect(tok.piece(-1) == nil && tok.piece(1_000_000) == nil)
    }

    @Test func malformedTokenizerFiles() {
        let dir = TempDir()
        let junk = dir.write("junk.model", [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        expectModelError(file: junk, contains: "not a SentencePiece model") { _ = try Tokenizer.load(path: junk) }
        let json = dir.write("tokenizer.json", #"{"model": {"type": "WordPiece"}}"#)
        expectModelError(file: json, contains: "only byte-level BPE") { _ = try Tokenizer.load(path: json) }
        let badJSON = dir.write("t.json", "{ not json")
        expectModelError(file: badJSON, contains: "not a tokenizer.json") { _ = try Tokenizer.load(path: badJSON) }
        let tik = dir.write("t.tiktoken", "IQ== 0\nIg== 5\n")
        expectModelError(file: tik, contains: "rank 5 out of order") { _ = try Tokenizer.load(path: tik) }
        let noTok = dir.write("model.gguf", GGUFBuilder.tinyLlama().build())
        expectModelError(file: noTok, contains: "no tokenizer in this GGUF") { _ = try Tokenizer.load(path: noTok) }
    }
}

@Suite("chat templates")
struct ChatTemplateTests {
    @Test func smolLM2MatchesItsJinjaTemplate() throws {
        let json = try JSON.parse(Array(Data(contentsOf: URL(fileURLWithPath: Fixtures.reference("tokenizer-vectors.json")))))
        let tok = try Tokenizers.load(Fixtures.smol)
        let chats = try #require(json["chat"]?.array)
        #expect(chats.count == 2)
        for c in chats {
            let messages = c["messages"]!.array!.map { ChatMessage(role: $0["role"]!.string!, content: $0["content"]!.string!) }
            #expect(tok.chatTemplate.render(messages) == c["prompt"]!.string!)
        }
    }

    @Test func llama3AndGemmaFormats() throws {
        let msgs = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi ")]
        let llama3 = try Tokenizers.load("tokenizer_llama3.tiktoken")
        #expect(llama3.chatTemplate.render(msgs) == "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        let ids = llama3.encode(llama3.chatTemplate.render(msgs))
        #expect(ids.first == 128000 && ids.filter { $0 == 128009 }.count == 2)
        let gemma = try Tokenizers.load(Fixtures.gemma)
        #expect(gemma.chatTemplate.render(msgs) == "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n")
        #expect(gemma.encode(gemma.chatTemplate.render(msgs)).prefix(2) == [2, 105])
    }
}

@Suite("pre-tokenizers")
struct PreTokenizerTests {
    func split(_ p: PreTokenizer, _ s: String) -> [String] {
        var s = s
        return s.withUTF8 { u in p.split(u).map { String(decoding: u[$0], as: UTF8.self) } }
    }

    @Test func llama3Rules() {
        #expect(split(.llama3, "Hello world") == ["Hello", " world"])
        #expect(split(.llama3, "I'M here") == ["I", "'M", " here"])
        #expect(split(.llama3, "12345") == ["123", "45"])
        #expect(split(.llama3, "a  b") == ["a", " ", " b"])
        #expect(split(.llama3, "x \n\n y") == ["x", " \n\n", " y"])
        #expect(split(.llama3, "ok!!\n\nnext") == ["ok", "!!\n\n", "next"])
        #expect(split(.llama3, "end   ") == ["end", "   "])
    }

    @Test func gpt2AndSmolLMRules() {
        #expect(split(.gpt2, "Hello world 2024!") == ["Hello", " world", " 2024", "!"])
        #expect(split(.smollm, "Hello world 2024!") == ["Hello", " world", " ", "2", "0", "2", "4", "!"])
        #expect(split(.gpt2, "a\nb") == ["a", "\n", "b"])
        #expect(split(.gpt2, "they're") == ["they", "'re"])
    }
}
