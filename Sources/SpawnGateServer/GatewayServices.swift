import Foundation
import Logging
import ServiceLifecycle
import SpawnGate
import UnixSignals

/// Reloads the policy on SIGHUP and when the file changes (checked every `interval`). A policy that fails to load
/// or to pass its own tests is logged and ignored: the last good one stays in force.
struct PolicyWatcher: Service {
    let gateway: GatewayService
    var watchFile = true
    var interval: Duration = .milliseconds(500)

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in hangups.cancelOnGracefulShutdown() {
                    gateway.logger.notice("SIGHUP: reloading the policy")
                    gateway.reload()
                }
            }
            if watchFile { group.addTask {
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
                    if gateway.policyChanged {
                        gateway.logger.notice("policy file changed: reloading")
                        gateway.reload()
                    }
                }
            } }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }
}

/// Reaps agents that exited (children of this process) and stops those past their rule's max_runtime.
struct Reaper: Service {
    let gateway: GatewayService
    var interval: Duration = .milliseconds(200)

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            gateway.reap()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
