import CJetStream

/// JetStream's health surfaces: `GET /healthcheck` (jetstream-http) and gRPC `Orchestrator/HealthCheck`.
public enum HealthAPI {
    /// Probes arrive every few seconds from every kubelet and load balancer: the ready answer is prebuilt.
    static let readyBody = Array(JSON.object([("response", .object([("is_live", .bool(true))]))]).serialized.utf8)
    static let jsonHeaders: HTTPHeaders = ["content-type": "application/json"]

    public static func install(on router: Router, grpc: GRPCServer, state: ServerState) {
        router.add("GET", "/healthcheck") { _, writer in
            if state.isReady {
                writer.respond(status: 200, headers: jsonHeaders, body: readyBody)
            } else {
                writer.respond(status: 503, headers: ["retry-after": "1"],
                               json: .object([("response", .object([("is_live", .bool(false))])),
                                              ("detail", .string("server is \(state.current.name)"))]))
            }
        }
        grpc.register("jetstream_proto.Orchestrator", "HealthCheck") { call in
            // Validate the (empty) request like any other message.
            let parsed = call.message.withUnsafeBufferPointer {
                jetstream_proto__health_check_request__unpack(nil, $0.count, $0.baseAddress)
            }
            guard let parsed else {
                call.finish(GRPCStatus(GRPCStatus.invalidArgument, "malformed HealthCheckRequest"))
                return
            }
            jetstream_proto__health_check_request__free_unpacked(parsed, nil)
            var response = JetstreamProto__HealthCheckResponse()
            jetstream_proto__health_check_response__init(&response)
            response.is_live = state.isReady ? 1 : 0
            var out = [UInt8](repeating: 0, count: jetstream_proto__health_check_response__get_packed_size(&response))
            _ = jetstream_proto__health_check_response__pack(&response, &out)
            call.send(out)
            call.finish()
        }
    }
}
