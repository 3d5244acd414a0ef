import ArgumentParser
import Contrail

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of a text as JSON (or, with --decode, the text of ids).",
        discussion: "--tokenizer takes a GGUF model (its embedded vocabulary), a tokenizer.json, a tiktoken file or a SentencePiece model. Special tokens written in the text (<|im_start|>, <start_of_turn>) become their ids unless --no-special.")

    @Option(name: .long, help: "Tokenizer or model file (default: the SmolLM2 fixture).")
    var tokenizer: String?

    @Flag(name: .long, help: "Treat the input as ids (a JSON array or space/comma separated) and print their text.")
    var decode = false

    @Flag(name: .customLong("no-special"), help: "Encode special-token text as plain text.")
    var noSpecial = false

    @Option(name: .long, help: "Prepend BOS (true/false); default: the tokenizer's configuration.")
    var bos: Bool?

    @Flag(name: .long, help: "Wrap the text as a user message in the model's chat template first.")
    var chat = false

    @Flag(name: .long, help: "Print each token's piece next to its id.")
    var pieces = false

    @Argument(help: "The text (or ids with --decode).")
    var input: String

    func run() throws {
        try reportingErrors {
            let tok = try Tokenizer.load(path: tokenizer ?? ModelLocation.defaultModel)
            if decode {
                let fields = input.split(whereSeparator: { " ,[]\n\t".contains($0) })
                var ids: [Int32] = []
                for f in fields {
                    guard let id = Int32(f) else { throw fail("--decode: \"\(f)\" is not a token id") }
                    guard id >= 0 && Int(id) < tok.vocabSize else { throw fail("--decode: id \(id) is outside the vocabulary (size \(tok.vocabSize))") }
                    ids.append(id)
                }
                print(tok.decode(ids))
                return
            }
            let text = chat ? tok.chatTemplate.render([ChatMessage(role: "user", content: input)]) : input
            let ids = tok.encode(text, addBOS: bos, parseSpecial: !noSpecial)
            if pieces {
                let items = ids.map { JSON.array([.number(Double($0)), .string(tok.piece($0) ?? "")]) }
                print(JSON.array(items).serialized)
            } else {
                print(JSON.array(ids.map { .number(Double($0)) }).serialized)
            }
        }
    }
}
