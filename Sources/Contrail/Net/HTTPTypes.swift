/// Header fields in arrival order; names are lowercase (HTTP/2 requires it, HTTP/1.1 is case-insensitive).
public struct HTTPHeaders: Sendable, Sequence, ExpressibleByDictionaryLiteral, Equatable {
    public var fields: [(name: String, value: String)]

    public init(_ fields: [(String, String)] = []) {
        self.fields = fields.map { (name: HTTPHeaders.lowercase($0.0), value: $0.1) }
    }

    /// Lowercases only when needed (names are almost always lowercase already).
    @inline(__always) static func lowercase(_ name: String) -> String {
        name.utf8.contains(where: { $0 >= 0x41 && $0 <= 0x5A }) ? name.lowercased() : name
    }
    public init(dictionaryLiteral elements: (String, String)...) { self.init(elements) }

    public static func == (a: HTTPHeaders, b: HTTPHeaders) -> Bool {
        a.fields.count == b.fields.count && zip(a.fields, b.fields).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }

    /// The first value of `name` (lowercase).
    public subscript(name: String) -> String? { fields.first { $0.name == name }?.value }

    public func values(_ name: String) -> [String] { fields.filter { $0.name == name }.map(\.value) }

    public mutating func add(_ name: String, _ value: String) { fields.append((name: HTTPHeaders.lowercase(name), value: value)) }

    public mutating func replace(_ name: String, _ value: String) {
        let n = HTTPHeaders.lowercase(name)
        fields.removeAll { $0.name == n }
        fields.append((name: n, value: value))
    }

    public func contains(_ name: String) -> Bool { fields.contains { $0.name == name } }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }
}

public enum HTTPVersion: String, Sendable {
    case http1_0 = "HTTP/1.0"
    case http1_1 = "HTTP/1.1"
    case http2 = "HTTP/2"
}

/// A complete request as handlers see it, whatever protocol carried it.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path without the query string.
    public var path: String
    public var query: String?
    public var headers: HTTPHeaders
    public var body: [UInt8]
    public var version: HTTPVersion
    public var isTLS: Bool

    public init(method: String, path: String, query: String? = nil, headers: HTTPHeaders = [:], body: [UInt8] = [],
                version: HTTPVersion = .http1_1, isTLS: Bool = false) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.version = version
        self.isTLS = isTLS
    }

    /// Splits a request target into path and query.
    static func splitTarget(_ target: String) -> (String, String?) {
        guard let q = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return (target, nil) }
        return (String(target[..<q]), String(target[target.utf8.index(after: q)...]))
    }
}

public enum HTTPStatus {
    public static func reason(_ code: Int) -> String {
        switch code {
        case 100: return "Continue"
        case 101: return "Switching Protocols"
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 415: return "Unsupported Media Type"
        case 422: return "Unprocessable Content"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Status \(code)"
        }
    }
}
