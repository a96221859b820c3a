import Foundation
import Testing
@testable import SpawnGate

func parsePolicy(_ text: String) -> Result<Policy, PolicyLoadError> { PolicyLoader.parse(text, file: "p.yaml") }

func policyErrors(_ text: String) -> [String] {
    switch parsePolicy(text) {
    case .success: return []
    case .failure(let e): return e.diagnostics.map(\.description)
    }
}

@Suite("Policy loading and its error messages")
struct PolicyLoaderTests {
    static let base = """
        version: 1
        accept_remote_spawn: true
        clis:
          claude:
            path: /usr/local/bin/claude
            args: [[]]
        rules:
          - name: r
            brokers: [mac-laptop]
            clis: [claude]
            cwd: [/w/**]

        """

    @Test func baseIsValid() throws {
        let p = try parsePolicy(Self.base).get()
        #expect(p.acceptRemoteSpawn)
        #expect(p.rules.map(\.name) == ["r"])
        #expect(p.window == .defaults)
    }

    /// A rule may not ask for more than its profile enforces: no network namespace outside strict. Agent Relay's
    /// broker takes any profile: its worker is spawngate's launcher, which applies it.
    @Test func profilesAndBackendsThatWouldNotEnforceTheRuleAreErrors() throws {
        #expect(policyErrors(Self.base + "    network: none\n") == [
            "p.yaml:12:14: error: rule 'r': network: none needs sandbox: strict (only strict has its own network namespace); set sandbox: strict or remove network",
        ])
        #expect(try parsePolicy(Self.base + "    spawner: agent-relay\n").get().rules[0].spawner == .agentRelay)
        #expect(policyErrors(Self.base + "    startup_check: 2m\n").first?.contains("startup_check must be a duration") == true)
        #expect(try parsePolicy(Self.base + "    startup_check: 0s\n").get().rules[0].startupCheck == 0)
        let ok = try parsePolicy(Self.base + "    sandbox: strict\n    network: none\n").get()
        #expect(ok.rules[0].network == .none)
        #expect(try parsePolicy(Self.base + "    sandbox: none\n    spawner: agent-relay\n").get().rules[0].spawner == .agentRelay)
    }

    // Snapshot of each message: file:line:column, what is wrong, what is expected.
    @Test func yamlSyntaxError() {
        #expect(policyErrors("version: 1\nrules:\n  - name: \"x\n") == [
            "p.yaml:4:1: error: YAML syntax: found unexpected end of stream (while scanning a quoted scalar at 3:11)",
        ])
    }

    @Test func unknownKeyWithSuggestion() {
        let text = Self.base.replacingOccurrences(of: "    args: [[]]", with: "    args: [[]]\n    deny_arg: [x]")
        #expect(policyErrors(text) == [
            "p.yaml:7:5: error: unknown key 'deny_arg' in clis.claude (did you mean 'deny_args'?); allowed keys: path, sha256, args, deny_args, env, task, model_flag, split_equals, writable, protected",
        ])
        #expect(policyErrors("version: 1\naccept_remote_spawns: true\n") == [
            "p.yaml:2:1: error: unknown key 'accept_remote_spawns' in the policy (did you mean 'accept_remote_spawn'?); allowed keys: version, accept_remote_spawn, max_ttl, clock_skew, hook_users, clis, rules, tests",
        ])
    }

    @Test func wrongType() {
        #expect(policyErrors(Self.base + "    max_concurrent: many\n") == [
            "p.yaml:12:21: error: rule 'r': max_concurrent must be a whole number from 1 to 100000",
        ])
        #expect(policyErrors("version: 1\naccept_remote_spawn: yes\n") == [
            "p.yaml:2:22: error: accept_remote_spawn must be true or false (not yes/no/on/off, not quoted)",
        ])
        #expect(policyErrors(Self.base.replacingOccurrences(of: "brokers: [mac-laptop]", with: "brokers: mac-laptop")) == [
            "p.yaml:9:14: error: rule 'r': brokers must be a list ([a, b] or lines starting with '- '), found the value 'mac-laptop'",
        ])
    }

    @Test func badDuration() {
        #expect(policyErrors("version: 1\nmax_ttl: 5 minutes\n") == [
            "p.yaml:2:10: error: max_ttl must be a duration like 30s, 2m, 1h or 1d, from 1s to 86400s; got '5 minutes'",
        ])
        #expect(policyErrors("version: 1\nclock_skew: 30\n") == [
            "p.yaml:2:13: error: clock_skew must be a duration like 30s, 2m, 1h or 1d, from 0s to 600s; got '30'",
        ])
    }

    @Test func ruleNamingAnUndefinedCLI() {
        #expect(policyErrors(Self.base.replacingOccurrences(of: "clis: [claude]", with: "clis: [claud]")) == [
            "p.yaml:10:12: error: rule 'r': clis: 'claud' is not defined under clis: (did you mean 'claude'?)",
        ])
    }

    @Test func duplicateKeyPointsAtTheSecond() {
        #expect(policyErrors("version: 1\naccept_remote_spawn: false\nversion: 1\n") == [
            "p.yaml:3:1: error: duplicate key 'version' (first at line 1): each key may appear once in a mapping",
        ])
    }

    @Test func anchorsAndAliasesAreRefused() {
        #expect(policyErrors("version: 1\nclis: &c {}\ntests: *c\n").first?.contains("anchors (&name) and aliases (*name) are not allowed") == true)
    }

    /// T15: no denylisted variable can be listed, in any CLI.
    @Test("every denylisted environment variable is refused", arguments: [
        "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "DYLD_LIBRARY_PATH", "BASH_ENV", "ENV",
        "NODE_OPTIONS", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PERL5OPT", "PERL5LIB", "RUBYOPT", "JAVA_TOOL_OPTIONS",
        "IFS", "SHELLOPTS", "PS4", "GIT_SSH_COMMAND", "GIT_CONFIG_PARAMETERS", "BASH_FUNC_x%%", "PATH", "HOME", "lower", "1X",
    ])
    func envDenylist(_ name: String) {
        let text = Self.base.replacingOccurrences(of: "    args: [[]]", with: "    args: [[]]\n    env: [OK_VAR, \"\(name)\"]")
        let errors = policyErrors(text)
        #expect(errors.count == 1)
        #expect(errors.first?.hasPrefix("p.yaml:7:19: error: clis.claude.env: ") == true, "\(errors)")
    }

    /// T44: every family of variables that makes a program load or run code, or read configuration that names
    /// commands, is refused both in `env:` (values from the gateway) and in `task: env:NAME` (the value comes from
    /// the request), with file:line:column, the variable and why. The API keys agents need stay allowed.
    @Test func envDenylistCoversEachFamily() {
        let families: [(why: String, names: [String])] = [
            ("dynamic loader", ["LD_PRELOAD", "LD_AUDIT", "GLIBC_TUNABLES", "GCONV_PATH", "LOCPATH", "MALLOC_CONF", "DYLD_INSERT_LIBRARIES"]),
            ("shell", ["BASH_ENV", "ENV", "ZDOTDIR", "PROMPT_COMMAND", "PS1", "PS4", "SHELLOPTS", "BASH_FUNC_LS", "INPUTRC"]),
            ("git runs commands", ["GIT_EXEC_PATH", "GIT_EDITOR", "GIT_PAGER", "GIT_ASKPASS", "GIT_SSH", "GIT_SSH_COMMAND",
                                   "GIT_EXTERNAL_DIFF", "GIT_PROXY_COMMAND", "GIT_CONFIG", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_COUNT",
                                   "GIT_TEMPLATE_DIR", "GIT_DIR", "GIT_WORK_TREE", "GIT_ANYTHING_NEW"]),
            ("as a command", ["LESSOPEN", "LESSCLOSE", "PAGER", "EDITOR", "VISUAL", "MANPAGER", "BROWSER", "SSH_ASKPASS",
                              "SUDO_ASKPASS", "VIMINIT", "EXINIT", "MYVIMRC", "EMACSLOADPATH", "GNUPGHOME"]),
            ("configuration or data", ["XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CONFIG_DIRS", "TERMINFO", "TERMINFO_DIRS"]),
            ("OpenSSL", ["OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE"]),
            ("language runtime", ["PYTHONPATH", "PYTHONSTARTUP", "PERL5OPT", "PERLLIB", "RUBYOPT", "NODE_OPTIONS", "NODE_PATH",
                                  "NPM_CONFIG_SCRIPT_SHELL", "YARN_RC_FILENAME", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS",
                                  "JDK_JAVA_OPTIONS", "CLASSPATH", "DOTNET_STARTUP_HOOKS", "COREHOST_TRACE",
                                  "CORECLR_PROFILER_PATH", "R_PROFILE_USER", "LUA_INIT", "TCLLIBPATH", "PHPRC", "DENO_DIR",
                                  "BUN_INSTALL", "PIP_INDEX_URL"]),
            ("build tool", ["CC", "CXX", "LD", "CFLAGS", "MAKEFLAGS", "MAKEFILES", "RUSTC_WRAPPER", "RUSTFLAGS",
                            "CARGO_BUILD_RUSTC_WRAPPER", "GOFLAGS", "GOTOOLCHAIN", "CGO_CFLAGS", "PKG_CONFIG_PATH"]),
            ("host name lookups", ["HOSTALIASES", "RES_OPTIONS", "LOCALDOMAIN", "KRB5_CONFIG"]),
            ("spawner sets it", ["PATH", "HOME", "SHELL", "TMPDIR"]),
        ]
        for (why, names) in families {
            for name in names {
                let listed = policyErrors(Self.base.replacingOccurrences(of: "    args: [[]]", with: "    args: [[]]\n    env: [\"\(name)\"]"))
                #expect(listed.count == 1 && listed.first?.hasPrefix("p.yaml:7:11: error: clis.claude.env: \(name) can never be passed to an agent: ") == true
                        && listed.first?.contains(why) == true && listed.first?.contains("wrapper script") == true, "\(name): \(listed)")
                let task = policyErrors(Self.base.replacingOccurrences(of: "    args: [[]]", with: "    args: [[]]\n    task: \"env:\(name)\""))
                #expect(task.count == 1 && task.first?.hasPrefix("p.yaml:7:11: error: clis.claude.task: \(name) can never be passed to an agent: ") == true
                        && task.first?.contains(why) == true, "task: env:\(name): \(task)")
            }
        }
        // npm reads npm_config_* in any case; lower-case names are not variable names here at all.
        #expect(policyErrors(Self.base.replacingOccurrences(of: "    args: [[]]", with: "    args: [[]]\n    env: [npm_config_script_shell]")).first?.contains("is not a variable name") == true)
        for name in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_CLOUD_PROJECT", "AWS_REGION",
                     "HTTPS_PROXY", "NO_PROXY", "TERM", "LANG", "CLAUDE_TASK"] {
            #expect(policyErrors(Self.base.replacingOccurrences(of: "    args: [[]]", with: "    args: [[]]\n    env: [\(name)]\n    task: env:CLAUDE_TASK")).isEmpty, "\(name) stays allowed")
        }
    }

    /// T45: a deny rule for "mac‐laptop" (U+2010) passed its own embedded test while the real mac-laptop was
    /// allowed. Broker names in `brokers:` and in tests' `from` must be names enrollment accepts, ASCII only.
    @Test func brokerNamesMustBeEnrollableASCII() {
        let lookAlikes = ["mac\u{2010}laptop", "m\u{430}c-laptop", "mac-laptop\u{200B}", "mac-laptop\u{202E}", "caf\u{E9}", "mac laptop", "-x", ".x",
                          String(repeating: "a", count: 65)]
        for name in lookAlikes {
            let rule = policyErrors(Self.base.replacingOccurrences(of: "[mac-laptop]", with: "[ok-broker, \"\(name)\"]"))
            #expect(rule.count == 1 && rule.first?.hasPrefix("p.yaml:9:26: error: rule 'r': brokers: '") == true
                    && rule.first?.contains("is not a broker name enrollment would accept") == true, "\(name): \(rule)")
            let test = policyErrors(Self.base + "tests:\n  - request: {from: \"\(name)\", cli: claude, cwd: /w/x}\n    expect: no_matching_rule\n")
            #expect(test.count == 1 && test.first?.hasPrefix("p.yaml:13:21: error: tests[0].request.from: '") == true, "\(name): \(test)")
        }
        let hyphen = policyErrors(Self.base.replacingOccurrences(of: "[mac-laptop]", with: "[\"mac\u{2010}laptop\"]"))
        #expect(hyphen.first?.contains("'mac?laptop'") == true && hyphen.first?.contains("U+2010") == true, "the message shows the look-alike safely: \(hyphen)")
        #expect(policyErrors(Self.base.replacingOccurrences(of: "[mac-laptop]", with: "[mac-laptop, mini_pc.2, VPS]")).isEmpty)
    }

    /// T42 as written (no file system): a binary inside a cwd an allow rule can name, or a writable: path.
    @Test func binaryWhereAnAgentCanWriteIsAnError() {
        let inside = policyErrors(Self.base.replacingOccurrences(of: "/usr/local/bin/claude", with: "/w/tools/claude"))
        #expect(inside == ["p.yaml:5:11: error: clis.claude.path: /w/tools/claude lies inside /w, a working directory that rule 'r' allows (/w/**): an agent started there could replace the binary, and the next spawn of 'claude' would run its code; install the CLI outside every allowed cwd and writable: path (for example in /usr/local/bin, owned by root) and point path: at it, or narrow the rule's cwd"], "\(inside)")
        #expect(policyErrors(Self.base.replacingOccurrences(of: "[/w/**]", with: "[/**]")).first?.contains("lies inside /, a working directory") == true)
        #expect(policyErrors(Self.base.replacingOccurrences(of: "[/w/**]", with: "[/usr/local/bin]")).first?.contains("lies inside /usr/local/bin") == true)
        let writable = policyErrors(Self.base.replacingOccurrences(of: "    args: [[]]", with: "    args: [[]]\n    writable: [/usr/local//]"))
        #expect(writable.first?.hasPrefix("p.yaml:5:11: error: clis.claude.path: /usr/local/bin/claude lies inside /usr/local, which clis.claude.writable lists ('/usr/local//')") == true, "\(writable)")
        // Deny rules do not let agents work anywhere.
        #expect(policyErrors(Self.base + "  - name: d\n    effect: deny\n    brokers: [\"*\"]\n    cwd: [/usr/**]\n").isEmpty)
    }

    @Test func onlyTheBareStarIsABrokerWildcard() {
        #expect(policyErrors(Self.base.replacingOccurrences(of: "[mac-laptop]", with: "[\"mac-*\"]")).first?.contains("the only wildcard for brokers") == true)
        #expect(policyErrors(Self.base.replacingOccurrences(of: "[mac-laptop]", with: "[\"*\", mac-laptop]")).first?.contains("list it alone") == true)
        #expect(policyErrors(Self.base.replacingOccurrences(of: "[mac-laptop]", with: "[\"*\"]")).isEmpty)
    }

    @Test func pathsMustBeAbsoluteAndPlain() {
        #expect(policyErrors(Self.base.replacingOccurrences(of: "/usr/local/bin/claude", with: "claude")).first?.contains("never looked up in PATH") == true)
        #expect(policyErrors(Self.base.replacingOccurrences(of: "/usr/local/bin/claude", with: "/usr/../tmp/claude")).first?.contains("without '.', '..'") == true)
        #expect(policyErrors(Self.base.replacingOccurrences(of: "[/w/**]", with: "[/w/../etc]")).first?.contains("contains '..'") == true)
        #expect(policyErrors(Self.base.replacingOccurrences(of: "[/w/**]", with: "[/w/**/x]")).first?.contains("only as the last component") == true)
    }

    @Test func allowRulesMustSayWhatAndWhere() {
        #expect(policyErrors(Self.base.replacingOccurrences(of: "    cwd: [/w/**]\n", with: "")).first?.contains("needs 'cwd'") == true)
        #expect(policyErrors(Self.base.replacingOccurrences(of: "    clis: [claude]\n", with: "")).first?.contains("needs 'clis'") == true)
        #expect(policyErrors(Self.base.replacingOccurrences(of: "    args: [[]]\n", with: "")).first?.contains("clis.claude needs 'args'") == true)
    }

    @Test func denyRulesCarryNoLimits() {
        let text = Self.base + "  - name: d\n    effect: deny\n    brokers: [\"*\"]\n    rate: 1/hour\n"
        #expect(policyErrors(text) == ["p.yaml:15:5: error: rule 'd': 'rate' has no meaning on a deny rule; remove it"])
    }

    @Test func testsMayExpectOnlyPolicyReasons() {
        let text = Self.base + "tests:\n  - request: {from: a, cli: claude}\n    expect: replay\n"
        #expect(policyErrors(text).first?.hasPrefix("p.yaml:14:13: error: tests[0].expect must be allow, pending (a rule that says approve:) or a reason the policy can give") == true)
    }

    @Test func limitsAndRatesParse() throws {
        let text = Self.base + "    rate: 10/minute\n    burst: 3\n    max_concurrent: 2\n    sandbox: strict\n    max_runtime: 2h\n    limits: {memory: 4GiB, cpu: 30m, open_files: 1024, processes: 64, file_size: 100M}\n"
        let r = try parsePolicy(text).get().rules[0]
        #expect(r.rate == Rate(count: 10, periodSeconds: 60))
        #expect(r.rate?.intervalMilliseconds == 6000)
        #expect(r.burst == 3 && r.maxConcurrent == 2 && r.sandbox == .strict && r.maxRuntime == 7200)
        #expect(r.limits.memoryBytes == 4 << 30 && r.limits.cpuSeconds == 1800 && r.limits.fileSizeBytes == 100 << 20)
    }

    /// F19: a policy others could change is refused, as is one owned by another user.
    @Test func refusesPolicyOthersCanChange() throws {
        let dir = TestSupport.tempDir("pol")
        let path = dir + "/policy.yaml"
        try Files.writeAtomically(path, Array(Self.base.utf8), mode: 0o600)
        #expect(throws: Never.self) { try PolicyLoader.load(path).get() }
        chmod(path, 0o620)
        #expect(PolicyLoader.load(path).failureText.contains("run 'chmod go-w \(path)'"))
        chmod(path, 0o600)
        chmod(dir, 0o777)
        #expect(PolicyLoader.load(path).failureText.contains("other users can change it"))
        chmod(dir, 0o700)
        if geteuid() == 0 {
            chown(path, 65534, 65534)
            #expect(PolicyLoader.load(path).failureText.contains("owned by uid 65534"))
        }
    }

    /// The file itself: too large, not UTF-8, or holding a NUL byte is refused before parsing.
    @Test func refusesOversizedBinaryOrNULFiles() throws {
        let dir = TestSupport.tempDir("polfile")
        let path = dir + "/policy.yaml"
        try Files.writeAtomically(path, Array(Self.base.utf8) + Array(repeating: UInt8(ascii: "#"), count: PolicyLoader.maxSize), mode: 0o600)
        #expect(PolicyLoader.load(path).failureText.contains("larger than \(PolicyLoader.maxSize) bytes"))
        try Files.writeAtomically(path, Array(Self.base.utf8) + [0xC0, 0xAF, 0x0A], mode: 0o600)
        #expect(PolicyLoader.load(path).failureText.contains("not valid UTF-8"))
        try Files.writeAtomically(path, Array(Self.base.utf8) + [0x23, 0x00, 0x0A], mode: 0o600)
        #expect(PolicyLoader.load(path).failureText.contains("NUL byte"))
    }

    /// Every policy this repository ships loads and passes its own tests.
    @Test func shippedPoliciesPass() throws {
        let root = TestSupport.packageRoot + "/policy"
        var files = ["\(root)/policy.yaml"]
        files += try FileManager.default.contentsOfDirectory(atPath: root + "/examples").filter { $0.hasSuffix(".yaml") }.map { "\(root)/examples/\($0)" }
        #expect(files.count >= 4)
        for f in files {
            let text = try String(contentsOfFile: f, encoding: .utf8)
            let p = try PolicyLoader.parse(text, file: f).get()
            let failed = PolicyTestRunner.run(p).filter { !$0.passed }
            #expect(failed.isEmpty, "\(failed.map { $0.line(file: f) })")
        }
    }
}

extension Result where Failure == PolicyLoadError {
    var failureText: String { if case .failure(let e) = self { return e.description }; return "" }
}
