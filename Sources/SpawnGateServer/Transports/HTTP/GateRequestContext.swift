import Hummingbird
import NIOCore

/// Hummingbird's request context plus who is on the other end: the source address (for per-source limits) and
/// the channel (for the Unix socket's peer credentials).
struct GateRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let source: String
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        self.source = ConnectionGuard.source(of: source.channel)
        channel = source.channel
    }
}
