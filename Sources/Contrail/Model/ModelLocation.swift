#if canImport(Glibc)
import Glibc
#endif

/// Where fixtures and the default model live: `${CONTRAIL_HOME:-$HOME/.cache/contrail}/fixtures`
/// (filled by `make fixtures`, never by the server itself).
public enum ModelLocation {
    public static var home: String {
        if let h = getenv("CONTRAIL_HOME"), h.pointee != 0 { return String(cString: h) }
        let user = getenv("HOME").map { String(cString: $0) } ?? "/tmp"
        return user + "/.cache/contrail"
    }

    public static var fixtures: String { home + "/fixtures" }

    /// The model `contrail serve` and friends use when none is named: SmolLM2-135M-Instruct.
    public static var defaultModel: String { fixtures + "/SmolLM2-135M-Instruct.Q4_1.gguf" }
}
