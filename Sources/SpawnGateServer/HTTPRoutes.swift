import CSpawn
import Foundation
import Hummingbird
import NIOCore
import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// The gateway's HTTP surface. Every handler reads at most `bodyLimit` bytes, refusing a larger declared length
/// before reading any of it, and hands the bytes to ``Gateway``; no decision logic lives here.
enum HTTPRoutes {
    /// The largest request body accepted (the sealed envelope), as issue #6 and PRODUCT.md's 64 KiB bound say.
    static let bodyLimit = 64 * 1024

    static func network(_ gateway: Gateway) -> Router<GateRequestContext> {
        let router = Router(context: GateRequestContext.self)
        // Each remote request first takes a token of its source's pre-authentication allowance: a source that
        // spent it gets 429 before its body is read.
        router.post("/v1/spawn") { request, context in
            if let refused = gateway.admit(context.source) { return response(refused) }
            return try await answer { body in await gateway.spawn(body: body, source: context.source) } reading: { try await read(request) }
        }
        router.post("/v1/release") { request, context in
            if let refused = gateway.admit(context.source) { return response(refused) }
            return try await answer { body in await gateway.release(body: body, source: context.source) } reading: { try await read(request) }
        }
        router.get("/v1/agents") { request, context in
            if let refused = gateway.admit(context.source) { return response(refused) }
            let header = request.headers.first { $0.name.canonicalName == "spawngate-request" }?.value
            return response(await gateway.agents(header: header, source: context.source))
        }
        router.post("/v1/enroll") { request, context in
            if let refused = gateway.admit(context.source) { return response(refused) }
            return try await answer { body in await gateway.enroll(body: body, source: context.source) } reading: { try await read(request) }
        }
        router.get("/v1/identity") { _, _ in response(gateway.identityLine) }
        router.get("/v1/logs") { request, context in
            if let refused = gateway.admit(context.source) { return response(refused) }
            let header = request.headers.first { $0.name.canonicalName == "spawngate-request" }?.value
            return response(await gateway.logs(header: header, source: context.source))
        }
        common(router, gateway)
        return router
    }

    private static func common(_ router: Router<GateRequestContext>, _ gateway: Gateway) {
        router.get("/healthz") { _, _ in response(gateway.health) }
        router.get("/metrics") { _, _ in response(gateway.metricsText) }
    }

    /// Reads the body, or answers 413 without reading it when it is (or turns out) too large.
    private static func answer(_ handle: ([UInt8]) async -> WireAnswer, reading: () async throws -> [UInt8]?) async throws -> Response {
        guard let body = try await reading() else {
            return response(.error(413, "the request body is over \(bodyLimit) bytes; a gateway accepts at most 64 KiB (shorten the task)"))
        }
        return response(await handle(body))
    }

    private static func read(_ request: Request) async throws -> [UInt8]? {
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > bodyLimit { return nil }
        do {
            let buffer = try await request.body.collect(upTo: bodyLimit)
            return Array(buffer.readableBytesView)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            return nil
        }
    }

    static func response(_ a: WireAnswer) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = a.contentType
        return Response(status: .init(code: a.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: a.body)))
    }
}
