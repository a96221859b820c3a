import Prometheus
import SpawnGate

/// `GET /metrics`, Prometheus text: decisions by reason, decision latency, live agents, policy reloads, and group
/// commits (decisions per commit is how many fsyncs the grouping saved).
public final class GatewayMetrics: GatewayMetricsRecording {
    public let registry = PrometheusCollectorRegistry()
    private let latency: DurationHistogram
    private let live: Gauge
    private let reloadOK: Counter
    private let reloadFailed: Counter
    private let byReason: [ReasonCode: Counter]
    private let commitGroups: Gauge
    private let commitDecisions: Gauge

    public init() {
        var counters: [ReasonCode: Counter] = [:]
        for reason in ReasonCode.allCases {
            counters[reason] = registry.makeCounter(
                descriptor: MetricNameDescriptor(namespace: "spawngate", metricName: "decisions", unitName: "total",
                                                 helpText: "Decisions made, by reason code"),
                labels: [("reason", reason.rawValue)])
        }
        byReason = counters
        latency = registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(namespace: "spawngate", metricName: "spawn_request", unitName: "seconds",
                                             helpText: "Time from a spawn request's arrival to its receipt (decision and start)"),
            buckets: [.microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
                      .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1)])
        live = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "spawngate", metricName: "live_agents", unitName: "",
                                                                   helpText: "Agents this gateway process started that are still running"))
        commitGroups = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "spawngate", metricName: "commit_groups", unitName: "total",
            helpText: "Commits of the state store and audit log (each one transaction and one fsync of each)"))
        commitDecisions = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "spawngate", metricName: "committed_decisions", unitName: "total",
            helpText: "Decisions those commits recorded"))
        reloadOK = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "spawngate", metricName: "policy_reloads", unitName: "total",
                                                                         helpText: "Policy reloads"), labels: [("result", "ok")])
        reloadFailed = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "spawngate", metricName: "policy_reloads", unitName: "total",
                                                                             helpText: "Policy reloads"), labels: [("result", "refused")])
    }

    public func count(_ reason: ReasonCode) { byReason[reason]?.increment() }
    public func observe(duration: Duration) { latency.record(duration) }
    public func liveAgents(_ n: Int) { live.set(Double(n)) }
    public func commits(groups: Int, decisions: Int) { commitGroups.set(Double(groups)); commitDecisions.set(Double(decisions)) }
    public func reloads(ok: Bool) { (ok ? reloadOK : reloadFailed).increment() }

    public func text() -> [UInt8] { registry.emitToBuffer() }
    public var contentType: String { "text/plain; version=0.0.4" }
}
