/// The one table from serving errors to what each protocol says (TGI keeps a single such table too).
extension ServingError {
    public var httpStatus: Int {
        switch self {
        case .invalidRequest, .promptTooLong: return 400
        case .overloaded, .unavailable: return 503
        case .unimplemented: return 501
        case .slowClient: return 408
        case .engine: return 500
        }
    }

    public var grpcCode: Int {
        switch self {
        case .invalidRequest, .promptTooLong: return GRPCStatus.invalidArgument
        case .overloaded, .slowClient: return GRPCStatus.resourceExhausted
        case .unavailable: return GRPCStatus.unavailable
        case .unimplemented: return GRPCStatus.unimplemented
        case .engine: return GRPCStatus.internal
        }
    }

    /// Extra response headers: 503s tell clients when to come back.
    public var httpHeaders: HTTPHeaders {
        switch self {
        case .overloaded, .unavailable: return ["retry-after": "1"]
        default: return [:]
        }
    }

    var grpcStatus: GRPCStatus { GRPCStatus(grpcCode, description) }

    /// `{"detail": "…"}` with the status and headers above.
    func respond(_ writer: ResponseWriter) {
        writer.respond(status: httpStatus, headers: httpHeaders, json: .object([("detail", .string(description))]))
    }
}
