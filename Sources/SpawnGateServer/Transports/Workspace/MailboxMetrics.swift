import Prometheus

/// `GET /_spawngate/metrics` on the relay guard: what its workspace mailbox has done since it started, in
/// Prometheus text. Relaycast's message budget is per workspace and anyone with the key can spend it, so sends and
/// refusals are what an operator watches here.
enum MailboxMetrics {
    static func text(_ s: RelayMailbox.Stats, withheld: Int) -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        func counter(_ name: String, _ help: String, _ value: Int, labels: [(String, String)] = []) {
            registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "spawngate_mailbox", metricName: name, unitName: "total", helpText: help),
                                 labels: labels).increment(by: Int64(value))
        }
        counter("messages_sent", "Direct messages Relaycast accepted from the mailbox", s.sent)
        counter("send_failures", "Posts of a direct message that failed (each retry counts)", s.sendFailures)
        counter("rate_limited", "Posts Relaycast refused with 429 (the workspace's message rate limit)", s.rateLimited)
        counter("requests", "Requests this machine sent through the workspace", s.requests)
        counter("answers", "Answers this gateway sent through the workspace", s.answers)
        counter("duplicates", "Retried requests answered again without a second decision", s.duplicates)
        counter("resyncs", "Reconnections that asked Relaycast for the events missed", s.resyncs)
        counter("replayed", "Events Relaycast replayed on those reconnections", s.replayed)
        counter("token_replaced", "Times the mailbox's token stopped working without this guard replacing it", s.tokenReplaced)
        counter("withheld", "Workspace messages and frames withheld or dropped (each audited, within the audit cap)", withheld)
        for (sender, n) in s.unverified.sorted(by: { $0.key < $1.key }) {
            counter("unverified", "Workspace messages that did not verify, by sender", n, labels: [("sender", sender)])
        }
        return registry.emitToBuffer()
    }
}
