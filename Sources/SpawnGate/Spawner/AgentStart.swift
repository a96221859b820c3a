#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Starting an authorized spawn the way every entry point must (`exec`, `serve`): the agent is recorded in the
/// state store with its lease, or it does not keep running; and a start that fails frees the slot it took.
extension LocalSpawner {
    /// Starts `spawn` in its sandbox and records it. `stdin` nil: the task through a pipe when the CLI takes it
    /// there, else /dev/null; `inheritStdin`: this process's standard input instead (a terminal).
    public func startRecorded(_ spawn: AuthorizedSpawn, state: StateStore, output: Output,
                              inheritStdin: Bool = false) throws(GatewayFailure) -> (SpawnedAgent, AgentRecord) {
        var stdinFD: Int32? = inheritStdin ? 0 : nil
        do {
            if let task = spawn.match.stdinTask { stdinFD = try LocalSpawner.taskInput(task) }
        } catch { throw freeing(spawn, state, error) }
        defer { if let fd = stdinFD, fd != 0 { close(fd) } }
        let agent: SpawnedAgent
        do { agent = try start(spawn, output: output, stdin: stdinFD) } catch { throw freeing(spawn, state, error) }
        let record = AgentRecord(agent, of: spawn, startedAt: SystemClock().now())
        do { try state.recordStart(record, leaseID: spawn.leaseID) } catch {
            // An agent the gateway cannot track is one nobody can release: it does not keep running.
            _ = Supervisor.stop(agent.process, grace: 0)
            _ = waitpid(agent.pid, nil, 0)
            throw freeing(spawn, state, GatewayFailure("the agent was stopped at once: the state store did not record it: \(error.message)"))
        }
        return (agent, record)
    }

    private func freeing(_ spawn: AuthorizedSpawn, _ state: StateStore, _ error: GatewayFailure) -> GatewayFailure {
        if let lease = spawn.leaseID { _ = try? state.releaseLease(requestID: lease) }
        return error
    }
}

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
