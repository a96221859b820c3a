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

    /// `AGENT_RELAY_STATE_DIR` wins over the cwd's `.agent-relay/`, as in Agent Relay's own client.
    @Test func theBrokerIsFoundWhereAgentRelayLooks() {
        #expect(AgentRelayConnection.file(cwd: "/srv/app", environment: [:]) == "/srv/app/.agent-relay/connection.json")
        #expect(AgentRelayConnection.file(cwd: "/srv/app", environment: ["AGENT_RELAY_STATE_DIR": "/run/relay"]) == "/run/relay/connection.json")
    }
}
