import Logging
import ServiceLifecycle

/// How each long-running executable (`serve`, `relay guard`, `dashboard`) runs its services, as swift-service-lifecycle's
/// anchors do: one ServiceGroup whose array order is the start order and whose reverse is the stop order.
///
/// - Background services first, listeners last: a listener starts once what it relies on runs, and on SIGTERM or
///   SIGINT it is the first to stop accepting and to finish the requests it has, while the services behind it
///   (the relay mailbox that carries a listener's relay calls, the reaper, the policy watcher) still run; they stop
///   after it, each in turn.
/// - Shutdown has a time budget (``budget``, 10 s): a graceful shutdown still running then is escalated to task
///   cancellation, which closes the connections left. A client that trickles its request cannot hold a stopping
///   gateway longer than that (systemd's own stop timeout is 90 s, then SIGKILL). Agents keep running either way.
/// - Any service that ends or fails before shutdown cancels the group (the default termination behaviours): a
///   gateway without its listener, its reaper (max_runtime) or its policy watcher stops, it does not run half.
public enum Lifecycle {
    /// How long a graceful shutdown may take before it is escalated to cancellation.
    public static let budget: Duration = .seconds(10)

    /// The group: `background` services (started first, stopped last), then `listeners`.
    static func group(background: [any Service], listeners: [any Service], budget: Duration = Lifecycle.budget,
                      logger: Logger) -> ServiceGroup {
        var configuration = ServiceGroupConfiguration(
            services: (background + listeners).map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        configuration.maximumGracefulShutdownDuration = budget
        return ServiceGroup(configuration: configuration)
    }
}
