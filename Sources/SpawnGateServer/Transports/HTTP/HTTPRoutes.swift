import CSpawn
import Foundation
import Hummingbird
import NIOCore
import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// The gateway's HTTP surface: a route for each operation of ``GatewayOperation`` answered on the network. Every
/// handler reads at most `bodyLimit` bytes, refusing a larger declared length before reading any of it, and hands
/// the bytes to ``GatewayService/answer(_:input:source:)``; no decision logic, and no list of operations, lives here.
enum HTTPRoutes {
    /// The largest request body accepted (the sealed envelope), as issue #6 and PRODUCT.md's 64 KiB bound say.
    static let bodyLimit = 64 * 1024

    static func network(_ gateway: GatewayService) -> Router<GateRequestContext> {
        let router = Router(context: GateRequestContext.self)
        for op in GatewayOperation.allCases where op.onNetwork {
            let handler: @Sendable (Request, GateRequestContext) async throws -> Response = { request, context in
                // A remote request first takes a token of its source's pre-authentication allowance: a source that
                // spent it gets 429 before its body is read.
                if op.spendsAllowance, let refused = gateway.admit(context.source) { return response(refused) }
                switch op.input {
                case .body:
                    return try await answer { body in await gateway.answer(op, input: body, source: context.source) } reading: { try await read(request) }
                case .requestHeader:
                    let header = request.headers.first { $0.name.canonicalName == "spawngate-request" }?.value
                    return response(await gateway.answer(op, input: Array((header ?? "").utf8), source: context.source))
                case .none:
                    return response(await gateway.answer(op, input: [], source: context.source))
                }
            }
            switch op.method {
            case "POST": router.post(RouterPath(op.path), use: handler)
            default: router.get(RouterPath(op.path), use: handler)
            }
        }
        return router
    }

    /// Reads the body, or answers 413 without reading it when it is (or turns out) too large.
    private static func answer(_ handle: ([UInt8]) async -> GatewayAnswer, reading: () async throws -> [UInt8]?) async throws -> Response {
        guard let body = try await reading() else {
            return response(.refused(.tooLarge, "the request body is over \(bodyLimit) bytes; a gateway accepts at most 64 KiB (shorten the task)"))
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

    static func response(_ a: GatewayAnswer) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = a.contentType
        return Response(status: .init(code: a.wireStatus), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: a.wireBody)))
    }
}
