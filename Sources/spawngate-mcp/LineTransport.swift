import Foundation
import Logging
import MCP
#if canImport(Glibc)
import Glibc
#endif

/// MCP over stdio, newline-delimited JSON-RPC as the SDK's `StdioTransport` speaks it, without its polling: that
/// transport makes standard input non-blocking and sleeps 10 ms whenever nothing is there, which added up to
/// 10 ms to every tool call (issue 19 measured agent.add at 20 ms against 8 ms of gateway time). Here a thread of
/// its own blocks in read(2), so a message is handled as soon as it arrives. A line over `maxMessage` bytes ends
/// the session with an error on standard error rather than growing without bound. A tool call goes to
/// ``toolCalls`` instead of the SDK (``ToolCall`` says why).
actor LineTransport: Transport {
    nonisolated let logger: Logger
    static let maxMessage = 4 << 20

    private let input: Int32
    private let output: Int32
    private let messages: AsyncThrowingStream<Data, Swift.Error>
    private let continuation: AsyncThrowingStream<Data, Swift.Error>.Continuation
    private let writer = DispatchQueue(label: "spawngate.mcp.stdout")
    private var started = false

    /// Tool calls, in the order they arrived, for the caller to answer with ``send(_:)``.
    nonisolated let toolCalls: AsyncStream<ToolCall>
    private let calls: AsyncStream<ToolCall>.Continuation

    init(input: Int32 = 0, output: Int32 = 1, logger: Logger) {
        self.input = input
        self.output = output
        self.logger = logger
        (messages, continuation) = AsyncThrowingStream.makeStream(of: Data.self)
        (toolCalls, calls) = AsyncStream.makeStream(of: ToolCall.self)
    }

    func connect() async throws {
        guard !started else { return }
        started = true
        let (fd, sink, calls, log) = (input, continuation, calls, logger)
        // Blocking reads on a thread of its own (not the cooperative pool); it ends at end of input.
        let reader = Thread { Self.readLines(fd, into: sink, calls: calls, logger: log) }
        reader.stackSize = 256 * 1024
        reader.start()
    }

    func disconnect() async {
        continuation.finish()
        calls.finish()
    }

    func send(_ data: Data) async throws {
        let bytes = [UInt8](data) + [10]
        let fd = output
        let failure: Int32? = await withCheckedContinuation { done in
            writer.async {
                var sent = 0
                while sent < bytes.count {
                    let n = bytes[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { done.resume(returning: errno); return }
                    sent += n
                }
                done.resume(returning: nil)
            }
        }
        if let failure { throw MCPError.transportError(POSIXError(POSIXErrorCode(rawValue: failure) ?? .EIO)) }
    }

    func receive() -> AsyncThrowingStream<Data, Swift.Error> { messages }

    private static func readLines(_ fd: Int32, into sink: AsyncThrowingStream<Data, Swift.Error>.Continuation,
                                  calls: AsyncStream<ToolCall>.Continuation, logger: Logger) {
        defer { calls.finish() }
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            // Only the new bytes are searched for newlines: a long line costs linear time, not quadratic.
            let scanFrom = pending.count
            pending += chunk[0..<n]
            var start = 0
            while let nl = pending[max(start, scanFrom)...].firstIndex(of: 10) {
                if nl > start {
                    let line = Array(pending[start..<nl])
                    if let call = ToolCall.parse(line) { calls.yield(call) } else { sink.yield(Data(line)) }
                }
                start = nl + 1
            }
            pending.removeFirst(start)
            guard pending.count <= maxMessage else {
                logger.error("a message on standard input is over \(maxMessage) bytes without a newline; the session ends")
                sink.finish(throwing: MCPError.parseError("a message over \(maxMessage) bytes"))
                return
            }
        }
        sink.finish()
    }
}
