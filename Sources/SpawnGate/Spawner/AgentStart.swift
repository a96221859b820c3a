#if canImport(Glibc)
import Glibc
#endif
import Foundation

extension AgentRelayBackend {
    /// `spawner: agent-relay`: hands `spawn` to the local broker found from its cwd and `environment`. A refusal or
    /// a broker that is down frees the slot; otherwise it lasts until `hook exited` or the rule's max_runtime.
    public static func handOff(_ spawn: AuthorizedSpawn, state: StateStore,
                               environment: [String: String]) throws(GatewayFailure) -> (Accepted, AgentRelayConnection) {
        do {
            let connection = try AgentRelayConnection.load(AgentRelayConnection.file(cwd: spawn.match.cwd, environment: environment))
            return (try AgentRelayBackend(connection: connection).start(spawn), connection)
        } catch {
            if let lease = spawn.leaseID { _ = try? state.releaseLease(requestID: lease) }
            throw error
        }
    }
}
