import Foundation
import Testing
@testable import SpawnGate

/// The relay launcher's report reaches the waiting gateway as a signal, not by the gateway looking at state.db
/// every millisecond (issue 27). Each wait below is bounded at 20 s and must end long before: without the signal
/// it would last the whole bound.
@Suite("Launch signal")
struct LaunchSignalTests {
    static func home() -> Home {
        let dir = TestSupport.tempDir("signal")
        return Home(root: dir)
    }

    @Test func aReportWakesTheWaitingGateway() throws {
        let home = Self.home()
        let path = LaunchSignal.path(home: home, requestID: String(repeating: "ab", count: 32))
        let listener = try #require(LaunchSignal.Listener(path: path))
        for _ in 0..<3 {
            let t0 = Supervisor.monotonic()
            let sender = Thread { usleep(50_000); LaunchSignal.notify(path) }
            sender.start()
            listener.wait(20)
            #expect(Supervisor.monotonic() - t0 < 10, "the wait ended on the signal, not its bound")
        }
    }

    @Test func aSignalSentBeforeTheWaitIsKept() throws {
        let home = Self.home()
        let path = LaunchSignal.path(home: home, requestID: "0123456789abcdef0123")
        let listener = try #require(LaunchSignal.Listener(path: path))
        LaunchSignal.notify(path)
        LaunchSignal.notify(path)
        let t0 = Supervisor.monotonic()
        listener.wait(20)
        #expect(Supervisor.monotonic() - t0 < 10)
        // Both were taken at once: the next wait lasts its bound (short here).
        let t1 = Supervisor.monotonic()
        listener.wait(0.2)
        #expect(Supervisor.monotonic() - t1 >= 0.15)
    }

    @Test func theSocketIsGoneWithItsListenerAndATooLongPathPolls() throws {
        let home = Self.home()
        let path = LaunchSignal.path(home: home, requestID: "fedcba9876543210")
        do {
            let listener = try #require(LaunchSignal.Listener(path: path))
            #expect(FileManager.default.fileExists(atPath: path))
            _ = listener
        }
        #expect(!FileManager.default.fileExists(atPath: path))
        // No socket address holds this path: no listener, and the gateway looks at state.db instead.
        let long = home.root + "/" + String(repeating: "d", count: 120) + "/launch-x.sock"
        #expect(LaunchSignal.Listener(path: long) == nil)
        LaunchSignal.notify(long)  // and the launcher's notify is a no-op
    }
}
