import Foundation
import Testing
@testable import SpawnGate

/// The hand-written client's response framing (the stand-in broker only ever answers with Content-Length).
@Suite("Loopback HTTP client framing")
struct HTTPClientTests {
    @Test func bodiesAreDelimitedAsTheHeadersSay() throws {
        let sized = try HTTPClient.parse(Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello-and-more".utf8))
        #expect(sized.status == 200 && sized.body == Array("hello".utf8))
        let chunked = try HTTPClient.parse(Array("HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n".utf8))
        #expect(chunked.status == 201 && chunked.body == Array("{\"a\":1}".utf8))
        let toEnd = try HTTPClient.parse(Array("HTTP/1.0 401 Unauthorized\r\n\r\nno".utf8))
        #expect(toEnd.status == 401 && toEnd.body == Array("no".utf8))
    }

    @Test func whatIsNotHTTPIsRefused() {
        #expect(throws: GatewayFailure.self) { try HTTPClient.parse(Array("SSH-2.0-OpenSSH_9.2\r\n".utf8)) }
        #expect(throws: GatewayFailure.self) { try HTTPClient.parse(Array("garbage\r\n\r\n".utf8)) }
        #expect(throws: GatewayFailure.self) { try HTTPClient.parse(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".utf8)) }
        #expect(throws: GatewayFailure.self) { try HTTPClient.parse(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort\r\n".utf8)) }
    }

    /// `AGENT_RELAY_STATE_DIR` wins; else the nearest project directory at or above the cwd with either
    /// version's connection file (v6 `.agent-relay/`, v14 `.agentworkforce/relay/`).
    @Test func theBrokerIsFoundWhereAgentRelayLooks() throws {
        let dir = TestSupport.tempDir("relay-lookup")
        let fm = FileManager.default
        func write(_ path: String, port: Int) throws {
            try fm.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try #"{"url":"http://127.0.0.1:\#(port)","api_key":"k"}"#.write(toFile: path, atomically: true, encoding: .utf8)
        }
        try write(dir + "/.agentworkforce/relay/connection.json", port: 1)
        try write(dir + "/app/.agent-relay/connection.json", port: 2)
        try write(dir + "/state/connection.json", port: 3)
        try fm.createDirectory(atPath: dir + "/app/sub", withIntermediateDirectories: true)
        #expect(try AgentRelayConnection.find(cwd: dir + "/app/sub", environment: [:]).url.port == 2)
        #expect(try AgentRelayConnection.find(cwd: dir + "/other", environment: [:]).layout == "v14")
        #expect(try AgentRelayConnection.find(cwd: dir + "/app", environment: ["AGENT_RELAY_STATE_DIR": dir + "/state"]).url.port == 3)
    }
}
