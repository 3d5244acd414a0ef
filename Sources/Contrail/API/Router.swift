/// Routes requests by method and path; gRPC requests (content-type application/grpc) go to the gRPC
/// server. Unknown paths get 404 and known paths with another method 405, both with a JSON body.
public final class Router: HTTPResponder, @unchecked Sendable {
    public typealias Handler = @Sendable (HTTPRequest, ResponseWriter) -> Void
    // Written during setup, read-only once serving starts.
    private var routes: [String: [String: (handler: Handler, protected: Bool)]] = [:]
    public var grpc: GRPCServer?
    /// Checked on protected routes (generation); empty: everything is open.
    public var apiKeys = APIKeys([])

    public init() {}

    /// `protected`: the route requires an API key when keys are configured.
    public func add(_ method: String, _ path: String, protected: Bool = false, _ handler: @escaping Handler) {
        routes[path, default: [:]][method] = (handler, protected)
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
        if let route = methods[request.method] ?? (request.method == "HEAD" ? methods["GET"] : nil) {
            if route.protected && !apiKeys.allows(request.headers) {
                let body: JSON = request.path.hasPrefix("/v1/")
                    ? .object([("error", .object([("message", .string(APIKeys.message)), ("type", .string("authentication_error")),
                                                  ("param", .null), ("code", .string("invalid_api_key"))]))])
                    : .object([("detail", .string(APIKeys.message))])
                writer.respond(status: 401, headers: ["www-authenticate": "Bearer"], json: body)
                return
            }
            route.handler(request, writer)
            return
        }
        let allowed = methods.keys.sorted().joined(separator: ", ")
        writer.respond(status: 405, headers: ["allow": allowed], json: .object([("detail", .string("Method Not Allowed"))]))
    }
}
