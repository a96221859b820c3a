import Foundation
import Testing
@testable import SpawnGate

/// `make install` (through scripts/install.sh, run here on the debug binaries the tests already built), and
/// the service files in contrib/.
@Suite("Install and service files")
struct InstallTests {
    static var contrib: String { TestSupport.packageRoot + "/contrib" }

    @Test func installIntoATempPrefixWorks() throws {
        let dir = TestSupport.tempDir("install")
        let from = (TestSupport.binary as NSString).deletingLastPathComponent
        let prefix = dir + "/prefix"
        let out = try TestSupport.run("/bin/bash", [TestSupport.packageRoot + "/scripts/install.sh", prefix, from])
        #expect(out.status == 0, "\(out.stdout)\(out.stderr)")

        let installed = prefix + "/bin/spawngate"
        let version = try TestSupport.run(installed, ["--version"])
        #expect(version.status == 0 && version.stdout == SpawnGateVersion.current + "\n")
        #expect(try TestSupport.run(prefix + "/bin/spawngate-serve", ["--version"]).stdout == SpawnGateVersion.current + "\n")
        // `spawngate serve` runs the spawngate-serve installed next to it.
        let help = try TestSupport.run(installed, ["serve", "--help"])
        #expect(help.status == 0 && help.stdout.contains("--listen"), "\(help.stdout)\(help.stderr)")
        #expect(!FileManager.default.fileExists(atPath: prefix + "/bin/spawngate-bench"), "the benchmark is not a server tool")
        #expect(access(prefix + "/bin/spawngate-init", X_OK) == 0, "every agent's init goes in with the gateway")
        #expect(access(prefix + "/bin/spawngate-launch", X_OK) == 0, "the relay launcher goes in with the gateway")

        for (file, word) in [("share/bash-completion/completions/spawngate", "_spawngate"),
                             ("share/zsh/site-functions/_spawngate", "#compdef spawngate"),
                             ("share/fish/vendor_completions.d/spawngate.fish", "complete -c 'spawngate'")] {
            let text = (try? String(contentsOfFile: prefix + "/" + file, encoding: .utf8)) ?? ""
            #expect(text.contains(word) && text.contains("policy"), "\(file)")
        }
    }

    @Test func installWithoutTheServerBinarySaysWhatToDo() throws {
        let dir = TestSupport.tempDir("install2")
        let out = try TestSupport.run("/bin/bash", [TestSupport.packageRoot + "/scripts/install.sh", dir + "/prefix", dir])
        #expect(out.status == 1)
        #expect(out.stderr.contains("run 'make release' first"))
    }

    /// The unit's hardening is there, and nothing that would break the agents' sandbox is.
    @Test func systemdUnitKeys() throws {
        let path = Self.contrib + "/systemd/spawngate.service"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var keys: [String: [String]] = [:]
        var section = ""
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") { section = line; continue }
            let kv = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            keys["\(section)\(kv[0])", default: []].append(kv.count > 1 ? kv[1] : "")
        }
        func value(_ k: String) -> String? { keys["[Service]" + k]?.last }
        #expect(value("User") == "spawngate" && value("Group") == "spawngate", "a dedicated user, never root")
        for (k, v) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"),
                       ("ProtectControlGroups", "yes"), ("RestrictSUIDSGID", "yes"), ("LockPersonality", "yes"),
                       ("StateDirectory", "spawngate"), ("UMask", "0077"), ("CapabilityBoundingSet", ""),
                       ("KillMode", "process")] {
            #expect(value(k) == v, "\(k)=\(value(k) ?? "unset")")
        }
        #expect(value("ExecStart")?.split(separator: " ").first?.hasSuffix("/spawngate-serve") == true)
        #expect(value("ExecStart")?.contains("--home /var/lib/spawngate") == true, "the home is the state directory")
        #expect(value("RestrictAddressFamilies")?.contains("AF_NETLINK") == true, "bubblewrap sets up loopback over netlink")
        for broken in ["RestrictNamespaces", "SystemCallFilter", "PrivateUsers", "ProcSubset", "MemoryDenyWriteExecute"] {
            #expect(value(broken) == nil, "\(broken) would break the agents' sandbox or the agents")
        }
        #expect(keys["[Install]WantedBy"] == ["multi-user.target"])

        // systemd's own check, where it is installed, with ExecStart pointing at a binary that exists.
        let analyze = "/usr/bin/systemd-analyze"
        guard FileManager.default.isExecutableFile(atPath: analyze) else { return }
        let dir = TestSupport.tempDir("unit")
        let serve = (TestSupport.binary as NSString).deletingLastPathComponent + "/spawngate-serve"
        try text.replacingOccurrences(of: "/usr/local/bin/spawngate-serve", with: serve)
            .write(toFile: dir + "/spawngate.service", atomically: true, encoding: .utf8)
        let verify = try TestSupport.run(analyze, ["verify", dir + "/spawngate.service"])
        #expect(verify.status == 0 && verify.stderr.isEmpty, "\(verify.stdout)\(verify.stderr)")
    }

    @Test func launchdPlistParses() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.contrib + "/launchd/dev.spawngate.serve.plist"))
        let plist = try #require(try PropertyListSerialization.propertyList(from: data, format: nil) as? [String: Any])
        #expect(plist["Label"] as? String == "dev.spawngate.serve")
        let args = try #require(plist["ProgramArguments"] as? [String])
        #expect(args.first?.hasSuffix("/spawngate-serve") == true)
        #expect(args.contains("127.0.0.1:7717"), "loopback: a Mac does not start agents for others")
        #expect(plist["RunAtLoad"] as? Bool == true)
        #expect((plist["KeepAlive"] as? [String: Any])?["SuccessfulExit"] as? Bool == false)
        #expect(plist["Umask"] as? Int == 0o077)
        #expect(plist["UserName"] == nil, "a per-user agent, never root")
    }
}
