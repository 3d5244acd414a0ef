/// `GET /metrics`: Prometheus text (JetStream's metric names plus Contrail's own).
public enum MetricsAPI {
    public static func install(on router: Router, service: ModelService) {
        router.add("GET", "/metrics") { _, writer in
            let text = service.metrics.render(service.orchestrator?.gauges() ?? Metrics.Gauges())
            writer.respond(status: 200, headers: ["content-type": "text/plain; version=0.0.4; charset=utf-8"],
                           body: Array(text.utf8))
        }
    }
}
