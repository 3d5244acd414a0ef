/// One chat message.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The chat formats of the families we serve, written out rather than run through a Jinja engine.
/// BOS is not part of the text: `Tokenizer.encode` adds it where the tokenizer says so.
public struct ChatTemplate: Sendable, Equatable {
    public let family: ChatFamily
    /// The system prompt a model's own template inserts when the conversation has none
    /// (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
    public let defaultSystem: String?

    public init(family: ChatFamily, defaultSystem: String? = nil) {
        self.family = family
        self.defaultSystem = defaultSystem
    }

    /// Reads the default system prompt out of a ChatML Jinja template (`'<|im_start|>system\n…<|im_end|>`).
    init(family: ChatFamily, jinja: String?) {
        var system: String? = nil
        if family == .chatML, let jinja, let start = jinja.firstRange(of: "<|im_start|>system\n") {
            let rest = jinja[start.upperBound...]
            if let end = rest.firstRange(of: "<|im_end|>") {
                let text = String(rest[..<end.lowerBound])
                if !text.contains("{") && !text.contains("'") { system = text }
            }
        }
        self.init(family: family, defaultSystem: system)
    }

    /// The prompt text for `messages`; with `addGenerationPrompt`, it ends where the assistant's reply begins.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var out = ""
        switch family {
        case .chatML:
            if let s = defaultSystem, messages.first?.role != "system" {
                out += "<|im_start|>system\n\(s)<|im_end|>\n"
            }
            for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        case .llama3:
            for m in messages {
                out += "<|start_header_id|>\(m.role)<|end_header_id|>\n\n\(m.content.trimmingWhitespace())<|eot_id|>"
            }
            if addGenerationPrompt { out += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        case .gemma:
            // Gemma has no system role: the system text leads the first user turn.
            var system: String? = nil
            for m in messages {
                if m.role == "system" { system = m.content; continue }
                var content = m.content.trimmingWhitespace()
                if let s = system, m.role == "user" {
                    content = s + "\n\n" + content
                    system = nil
                }
                out += "<start_of_turn>\(m.role == "assistant" ? "model" : m.role)\n\(content)<end_of_turn>\n"
            }
            if addGenerationPrompt { out += "<start_of_turn>model\n" }
        case .llama2:
            var system: String? = nil
            var first = true
            for m in messages {
                switch m.role {
                case "system": system = m.content
                case "user":
                    if !first { out += "<s>" }
                    var content = m.content.trimmingWhitespace()
                    if let s = system { content = "<<SYS>>\n\(s)\n<</SYS>>\n\n" + content; system = nil }
                    out += "[INST] \(content) [/INST]"
                    first = false
                default: out += " \(m.content.trimmingWhitespace()) </s>"
                }
            }
        }
        return out
    }
}

extension String {
    /// Without leading and trailing whitespace.
    public func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let end = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(scalars[start...end])
    }
}
