import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SpawnGate

/// Every request to the dashboard passes here before any route, and every answer leaves with the security headers.
/// In order:
/// 1. **Host** must be exactly the listen address (`127.0.0.1:PORT`), given once: a hostile site whose name a
///    rebinding DNS server points at 127.0.0.1 sends its own name as Host, and is refused (DNS rebinding).
/// 2. **Origin**, when present, must be the page's own origin (`http://127.0.0.1:PORT`): a request a hostile page
///    makes from its own origin is refused (cross-site requests).
/// 3. Under `/api/`, the **secret** of this start must come in the `X-Spawngate-Secret` header (compared in constant
///    time); a site that guesses the port still does not have it, and a custom header cannot be sent cross-site
///    without a CORS preflight, which nothing here answers.
/// 4. A **POST** must say `Content-Type: application/json` (the body is read as strict JSON, at most 64 KiB).
/// The page itself (`/`, `/app.js`, `/app.css`) needs no secret: it holds no data, and reads the secret from the
/// URL's fragment, which the browser never sends anywhere.
struct DashboardGuard<Context: RequestContext>: RouterMiddleware {
    let address: BoundAddress
    let secret: [UInt8]


    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        if let refused = refusal(request) {
            response = refused
        } else {
            do { response = try await next(request, context) } catch let e as HTTPError where e.status == .notFound {
                response = DashboardAPI.error(404, "not found: \(request.method.rawValue) \(request.uri.path.prefix(200))")
            } catch let e as HTTPError {
                response = DashboardAPI.error(Int(e.status.code), e.body ?? e.status.reasonPhrase)
            } catch {
                response = DashboardAPI.error(500, "internal error: \(error)")
            }
        }
        DashboardHeaders.secure(&response.headers)
        return response
    }

    /// The first rule the request breaks, as the answer to give; nil when it may go on.
    func refusal(_ request: Request) -> Response? {
        guard let authority = address.authority else { return DashboardAPI.error(503, "not listening yet") }
        guard request.head.authority == authority, request.headers[values: DashboardHeaders.host].isEmpty else {
            return DashboardAPI.error(403, "refused: the Host header must be \(authority) (this dashboard answers on its loopback address only)")
        }
        for origin in request.headers[values: .origin] where origin != "http://" + authority {
            return DashboardAPI.error(403, "refused: a request from another origin (\(origin.prefix(100)))")
        }
        guard request.uri.path.hasPrefix("/api/") else { return nil }
        let given = request.headers[values: DashboardHeaders.secret]
        guard given.count == 1, Self.constantTimeEqual(Array(given[0].utf8), secret) else {
            return DashboardAPI.error(401, given.isEmpty ? "refused: no secret; open the URL that 'spawngate dashboard' printed" : "refused: wrong secret; open the URL that 'spawngate dashboard' printed at its last start")
        }
        if request.method == .post {
            let type = request.headers[values: .contentType]
            let json = type.count == 1 && type[0].split(separator: ";").first.map {
                $0.trimmingCharacters(in: .whitespaces).lowercased() == "application/json"
            } == true
            guard json else { return DashboardAPI.error(415, "refused: a POST must have Content-Type: application/json") }
        }
        return nil
    }

    /// Equal length and equal bytes, in time that depends on the length only.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

/// The header names the guard reads, and the headers every answer carries.
enum DashboardHeaders {
    static let secret = HTTPField.Name("X-Spawngate-Secret")!
    static let host = HTTPField.Name("Host")!

    /// Nothing but this origin's own files runs, loads or frames the page; nothing is cached or leaks in a Referer.
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static func secure(_ headers: inout HTTPFields) {
        headers[HTTPField.Name("Content-Security-Policy")!] = contentSecurityPolicy
        headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Cross-Origin-Opener-Policy")!] = "same-origin"
        headers[HTTPField.Name("Cross-Origin-Resource-Policy")!] = "same-origin"
        headers[.cacheControl] = "no-store"
    }
}
