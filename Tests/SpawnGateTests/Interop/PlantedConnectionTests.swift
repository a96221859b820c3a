import Foundation
import Testing
@testable import SpawnGate

#if canImport(Glibc)
import Glibc
#endif

extension RealRelayTests {
/// Issue 25's class 2 at another place the operator's side reads an agent's tree: the broker's connection file, found
/// at or above the agent's cwd, where the agent may write. A file planted below the real one is found first; it must
/// not hand the task and the launch ticket to a listener of the agent's, nor hang the start.
@Suite("Hostile seams: a planted Agent Relay connection file")
struct PlantedConnectionTests {
    @Test func aPlantedFileIsRefusedAndCannotHangTheStart() throws {
        let relay = try RealRelay(.v6)
        defer { relay.stop() }
        let genuine = try AgentRelayConnection.find(cwd: relay.project, environment: [:])
        let pid = try #require(genuine.pid, "the real broker names its pid")

        // The real broker's pid beside a port the agent listens on: refused (before, it was accepted).
        let (listener, port) = try TestSupport.loopbackListener()
        defer { close(listener) }
        let sub = relay.project + "/agent-work"
        try FileManager.default.createDirectory(atPath: sub + "/.agent-relay", withIntermediateDirectories: true)
        try #"{"url":"http://127.0.0.1:\#(port)","port":\#(port),"api_key":"planted","pid":\#(pid)}"#
            .write(toFile: sub + "/.agent-relay/connection.json", atomically: true, encoding: .utf8)
        do {
            _ = try AgentRelayConnection.find(cwd: sub, environment: [:])
            Issue.record("a planted connection file naming port \(port) was accepted")
        } catch {
            #expect(error.message.contains("on which that process does not listen"), "\(error.message)")
        }

        // A FIFO in its place: refused at once, not waited on.
        try FileManager.default.removeItem(atPath: sub + "/.agent-relay/connection.json")
        #expect(mkfifo(sub + "/.agent-relay/connection.json", 0o600) == 0)
        do {
            _ = try AgentRelayConnection.find(cwd: sub, environment: [:])
            Issue.record("a FIFO was read as a connection file")
        } catch {
            #expect(error.message.contains("not a regular file"), "\(error.message)")
        }
    }
}
}
