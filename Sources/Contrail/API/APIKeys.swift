/// Optional API keys (`contrail serve --api-key`, `--api-key-file`): generation routes and gRPC Decode
/// then require `Authorization: Bearer <key>`; probes and /metrics stay open. A refusal never says
/// whether the key was missing or wrong.
public struct APIKeys: Sendable {
    private let keys: [[UInt8]]

    public init(_ keys: [String]) { self.keys = keys.filter { !$0.isEmpty }.map { Array($0.utf8) } }

    public var isEmpty: Bool { keys.isEmpty }

    public func allows(_ headers: HTTPHeaders) -> Bool {
        guard !keys.isEmpty else { return true }
        guard let value = headers["authorization"] else { return false }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return false }
        let given = Array(parts[1].utf8)
        // Compare against every key in time independent of where the bytes differ.
        var match = false
        for key in keys { match = Self.equal(key, given) || match }
        return match
    }

    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for i in 0..<max(a.count, b.count) { diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0) }
        return diff == 0
    }

    public static let message = "a valid API key is required (Authorization: Bearer <key>)"
}
