import Foundation
import SpawnGate

/// `--listen HOST:PORT`, and whether it is a place a gateway should listen.
public struct ListenAddress: Sendable, Equatable {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) { self.host = host; self.port = port }

    /// `127.0.0.1:7717`, `[::1]:7717`, `100.64.0.2:7717`, `localhost:0` (0: any free port).
    public static func parse(_ text: String) -> Result<ListenAddress, ListenError> {
        let host: Substring, portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return .failure(ListenError("--listen '\(text)': an IPv6 address goes in brackets, like [::1]:7717"))
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                return .failure(ListenError("--listen '\(text)' needs HOST:PORT, like 127.0.0.1:7717"))
            }
            host = text[..<colon]; portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else {
            return .failure(ListenError("--listen '\(text)' needs HOST:PORT with a port from 0 to 65535, like 127.0.0.1:7717"))
        }
        return .success(ListenAddress(host: String(host), port: port))
    }

    /// nil for loopback and Tailscale addresses (100.64.0.0/10, fd7a:115c:a1e0::/48); otherwise the warning to
    /// print: anyone who can reach the port can reach the gateway (it still verifies every request).
    public var exposureWarning: String? {
        if IPAddress.namesLoopback(host) { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            let a = UInt32(bigEndian: v4.s_addr)
            if a & 0xFFC0_0000 == 0x6440_0000 { return nil }   // 100.64.0.0/10, Tailscale's CGNAT range
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            let b = withUnsafeBytes(of: v6) { Array($0) }
            if Array(b[0..<6]) == [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0] { return nil }
        }
        return "listening on \(host):\(port), which is neither loopback nor a Tailscale address (100.64.0.0/10, fd7a:115c:a1e0::/48): anyone who can reach this port can send requests. Each one is still verified, but bind to the tailnet address if you can."
    }
}

public struct ListenError: Error, Sendable, CustomStringConvertible {
    public let message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}
