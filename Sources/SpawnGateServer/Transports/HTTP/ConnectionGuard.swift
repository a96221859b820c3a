import Foundation
import NIOCore
import NIOHTTPTypes

/// Open connections per source address, shared by every connection's guard.
// @unchecked: `open` is read and written only under `lock`.
public final class SourceTable: @unchecked Sendable {
    public let perSource: Int
    private let lock = NSLock()
    private var open: [String: Int] = [:]

    public init(perSource: Int = 16) { self.perSource = perSource }

    /// Counts a new connection from `source`; false (and nothing counted) when it already holds its share.
    func admit(_ source: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        let n = open[source, default: 0]
        guard n < perSource else { return false }
        open[source] = n + 1
        return true
    }

    func release(_ source: String) {
        lock.lock(); defer { lock.unlock() }
        let n = (open[source] ?? 1) - 1
        open[source] = n > 0 ? n : nil
    }
}

/// Per-connection limits the HTTP framework does not have: a share of connections per source address, and
/// deadlines that a slow client cannot stretch by trickling bytes (an idle timeout resets on every byte).
/// A request's head must arrive within `headerTimeout` of the connection opening or of the previous answer, and
/// its body must end within `bodyTimeout` of the head. The connection is closed otherwise.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let table: SourceTable
    private let headerTimeout: TimeAmount
    private let bodyTimeout: TimeAmount
    private var source: String?
    private var counted = false
    private var deadline: Scheduled<Void>?

    init(table: SourceTable, headerTimeout: TimeAmount, bodyTimeout: TimeAmount) {
        self.table = table; self.headerTimeout = headerTimeout; self.bodyTimeout = bodyTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { activate(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context)
        context.fireChannelActive()
    }

    private func activate(_ context: ChannelHandlerContext) {
        guard source == nil else { return }
        let s = Self.source(of: context.channel)
        source = s
        guard table.admit(s) else { context.close(promise: nil); return }
        counted = true
        arm(context, headerTimeout)
    }

    static func source(of channel: any Channel) -> String {
        channel.remoteAddress?.ipAddress ?? "local"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: arm(context, bodyTimeout)
        case .body: break
        case .end: deadline?.cancel(); deadline = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(context, headerTimeout) }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel(); deadline = nil
        if counted, let source { table.release(source); counted = false }
        context.fireChannelInactive()
    }

    private func arm(_ context: ChannelHandlerContext, _ timeout: TimeAmount) {
        deadline?.cancel()
        let loop = context.eventLoop.assumeIsolated()
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = loop.scheduleTask(in: timeout) { ctx.value.close(promise: nil) }
    }
}
