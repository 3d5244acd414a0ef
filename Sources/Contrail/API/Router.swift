/// Routes requests by method and path; gRPC requests (content-type application/grpc) go to the gRPC
/// server. Unknown paths get 404 and known paths with another method 405, both with a JSON body.
public final class Router: HTTPResponder, @unchecked Sendable {
    public typealias Handler = @Sendable (HTTPRequest, ResponseWriter) -> Void
    // Written during setup, read-only once serving starts.
    private var routes: [String: [String: Handler]] = [:]
    public var grpc: GRPCServer?

    public init() {}

    public func add(_ method: String, _ path: String, _ handler: @escaping Handler) {
        routes[path, default: [:]][method] = handler
    }

    public func respond(to request: HTTPRequest, writer: ResponseWriter) {
        if let grpc, request.headers["content-type"]?.hasPrefix("application/grpc") == true {
            grpc.handle(request, writer: writer)
            return
        }
        guard let methods = routes[request.path] else {
            writer.respond(status: 404, json: .object([("detail", .string("Not Found"))]))
            return
        }
        if let h = methods[request.method] ?? (request.method == "HEAD" ? methods["GET"] : nil) {
            h(request, writer)
            return
        }
        let allowed = methods.keys.sorted().joined(separator: ", ")
        writer.respond(status: 405, headers: ["allow": allowed], json: .object([("detail", .string("Method Not Allowed"))]))
    }
}
