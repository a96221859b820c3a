import Foundation
import Testing
@testable import SpawnGate
#if canImport(Glibc)
import Glibc
#endif

/// Issue 25, class 2: `handoff` and `agent.handoff` run git in the agent's working tree, as the operator, outside
/// any sandbox. Whatever the agent wrote into its repository (config, includes, hooks, attributes, index,
/// submodules) must not choose a program that runs, nor make the status wrong.
///
/// Each case plants a setting in a real repository whose program would create a marker file, then asks
/// ``GitWorktree/status(_:)``: no marker, and the right answer. Then the control: plain `git status --porcelain`
/// in the same repository runs the planted program (`.runs`) or gives a wrong answer (`.misreports`), so each such
/// case fails without the defence; `.neither` cases are members of the family that git 2.39's plain status does
/// not run (kept so that a git which starts running them is caught).
@Suite("Hostile seams: the operator's git runs nothing the agent planted")
struct GitWorktreeHostileTests {
    /// A repository as an agent leaves it: `file.txt` (and `.gitattributes` when the case wants one) committed,
    /// every file's mtime an old fixed one in the index; scripts, included files and the marker outside it.
    struct Lab: Sendable {
        let dir: String
        let repo: String
        let marker: String
        /// `#!/bin/sh` + `touch marker`, executable.
        let script: String
        static let committed = timespec(tv_sec: 1_000_000_000, tv_nsec: 0)
        static let later = timespec(tv_sec: 1_100_000_000, tv_nsec: 0)

        init(_ label: String, attributes: String? = nil, initArgs: [String] = []) throws {
            dir = TestSupport.tempDir("githostile")
            repo = dir + "/repo"
            marker = dir + "/MARKER"
            script = dir + "/planted.sh"
            try "#!/bin/sh\ntouch '\(marker)'\n".write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
            try Self.git(dir, ["init", "-q"] + initArgs + ["repo"])
            try "data\n".write(toFile: repo + "/file.txt", atomically: true, encoding: .utf8)
            var files = ["file.txt"]
            if let attributes {
                try attributes.write(toFile: repo + "/.gitattributes", atomically: true, encoding: .utf8)
                files.append(".gitattributes")
            }
            for f in files { Self.touch(repo + "/" + f, Self.committed) }
            try Self.git(repo, ["add", "."])
            try commit("first")
        }

        /// git from its fixed path, none of this machine's configuration.
        static let environment = ["PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/nonexistent",
                                  "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"]

        @discardableResult
        static func git(_ dir: String, _ args: [String]) throws -> String {
            let out = try TestSupport.run("/usr/bin/git", ["-C", dir] + args, environment: environment)
            try #require(out.status == 0, "git \(args): \(out.stderr)")
            return out.stdout
        }

        func git(_ args: [String]) throws { try Self.git(repo, args) }

        func commit(_ message: String) throws {
            try Self.git(repo, ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", message])
        }

        static func touch(_ path: String, _ time: timespec) {
            var times = [time, time]
            _ = utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
        }

        /// Appends to the repository's own `.git/config`, as the agent would.
        func config(_ text: String) throws { try append(repo + "/.git/config", text) }

        func append(_ path: String, _ text: String) throws {
            let old = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            try (old + text).write(toFile: path, atomically: false, encoding: .utf8)
        }

        /// An executable copy of the planted script at `path`.
        func plantScript(_ path: String) throws {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: script, toPath: path)
            chmod(path, 0o755)
        }

        /// The tracked files' stat no longer matches the index, so status must read them (through the clean filter
        /// git would run) and may refresh and write the index (running the index hook).
        func stale() {
            for f in ["file.txt", ".gitattributes"] { Self.touch(repo + "/" + f, Self.later) }
        }

        /// Plain `git status --porcelain` in the repository, as an operator would type it.
        func plainStatus() throws -> TestSupport.Output {
            try TestSupport.run("/usr/bin/git", ["-C", repo, "status", "--porcelain"], environment: Self.environment)
        }

        var ran: Bool { FileManager.default.fileExists(atPath: marker) }
    }

    enum Change: Sendable { case none, modified, untracked }
    enum Expect: Sendable, Equatable { case clean, dirty, unknown }
    /// What plain `git status --porcelain` (git 2.39) does with the case's planting.
    enum Control: Sendable { case runs, misreports, neither }

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        var attributes: String? = nil
        var change: Change = .none
        var expect: Expect = .clean
        let control: Control
        let plant: @Sendable (Lab) throws -> Void
        var testDescription: String { name }
    }

    static func kind(_ s: GitWorktree.Status) -> Expect {
        switch s { case .clean: .clean; case .dirty: .dirty; case .unknown: .unknown }
    }

    static let cases: [Case] = [
        Case(name: "filter.X.clean", attributes: "* filter=x\n", control: .runs) { lab in
            try lab.config("[filter \"x\"]\n\tclean = \(lab.script)\n\trequired = true\n")
        },
        Case(name: "filter.X.process", attributes: "* filter=x\n", change: .modified, expect: .dirty, control: .runs) { lab in
            try lab.config("[filter \"x\"]\n\tprocess = \(lab.script)\n")
        },
        Case(name: "filter.X.smudge", attributes: "* filter=x\n", control: .neither) { lab in
            try lab.config("[filter \"x\"]\n\tsmudge = \(lab.script)\n")
        },
        Case(name: "a filter whose name has dots", attributes: "* filter=a.b.c\n", control: .runs) { lab in
            try lab.config("[filter \"a.b.c\"]\n\tclean = \(lab.script)\n")
        },
        // `-c filter.a=b.clean=` is the key `filter.a` to git: a name with `=` cannot be overridden by naming it.
        Case(name: "a filter whose name has '='", attributes: "* filter=a=b\n", control: .runs) { lab in
            try lab.config("[filter \"a=b\"]\n\tclean = \(lab.script)\n")
        },
        Case(name: "a filter whose name has a quote", attributes: "* filter=q\"x\n", change: .modified, expect: .dirty, control: .runs) { lab in
            try lab.config("[filter \"q\\\"x\"]\n\tclean = \(lab.script)\n")
        },
        Case(name: "a value continued on the next line", attributes: "* filter=x\n", control: .runs) { lab in
            let cut = lab.script.index(lab.script.endIndex, offsetBy: -3)
            try lab.config("[filter \"x\"]\n\tclean = \(lab.script[..<cut])\\\n\(lab.script[cut...])\n")
        },
        Case(name: "mixed-case section and key", attributes: "* filter=x\n", control: .runs) { lab in
            try lab.config("[FILTER \"x\"]\n\tCLEAN = \(lab.script)\n")
        },
        Case(name: "core.fsmonitor = a program", control: .runs) { lab in
            try lab.config("[core]\n\tfsmonitor = \(lab.script)\n\tfsmonitorHookVersion = 1\n")
        },
        Case(name: "core.fsmonitor = true with a hook", change: .untracked, expect: .dirty, control: .neither) { lab in
            try lab.plantScript(lab.repo + "/.git/hooks/fsmonitor-watchman")
            try lab.config("[core]\n\tfsmonitor = true\n")
        },
        Case(name: "post-index-change in .git/hooks", control: .runs) { lab in
            try lab.plantScript(lab.repo + "/.git/hooks/post-index-change")
        },
        Case(name: "core.hooksPath to a directory of hooks", change: .untracked, expect: .dirty, control: .runs) { lab in
            try lab.plantScript(lab.dir + "/hooks/post-index-change")
            try lab.config("[core]\n\thooksPath = \(lab.dir)/hooks\n")
        },
        Case(name: "include.path to a file with an fsmonitor", control: .runs) { lab in
            try "[core]\n\tfsmonitor = \(lab.script)\n".write(toFile: lab.dir + "/included", atomically: true, encoding: .utf8)
            try lab.config("[include]\n\tpath = \(lab.dir)/included\n")
        },
        Case(name: "includeIf gitdir to a file with a filter", attributes: "* filter=x\n", control: .runs) { lab in
            try "[filter \"x\"]\n\tclean = \(lab.script)\n".write(toFile: lab.dir + "/included", atomically: true, encoding: .utf8)
            try lab.config("[includeIf \"gitdir:\(lab.repo)/.git\"]\n\tpath = \(lab.dir)/included\n")
        },
        Case(name: "config.worktree with an fsmonitor (extensions.worktreeConfig)", control: .runs) { lab in
            try lab.config("[core]\n\trepositoryformatversion = 1\n[extensions]\n\tworktreeConfig = true\n")
            try "[core]\n\tfsmonitor = \(lab.script)\n".write(toFile: lab.repo + "/.git/config.worktree", atomically: true, encoding: .utf8)
        },
        Case(name: "diff.X.textconv and diff.X.command", attributes: "* diff=x\n", change: .modified, expect: .dirty, control: .neither) { lab in
            try lab.config("[diff \"x\"]\n\ttextconv = \(lab.script)\n\tcommand = \(lab.script)\n")
        },
        Case(name: "core programs, credential helper, external diff", change: .modified, expect: .dirty, control: .neither) { lab in
            let s = lab.script
            try lab.config("[core]\n\tpager = \(s)\n\teditor = \(s)\n\tsshCommand = \(s)\n\taskPass = \(s)\n\tgitProxy = \(s)\n\talternateRefsCommand = \(s)\n"
                           + "[credential]\n\thelper = !\(s)\n[diff]\n\texternal = \(s)\n[gpg]\n\tprogram = \(s)\n[sequence]\n\teditor = \(s)\n")
        },
        // The untracked cache trusts a directory's mtime; with ctime not trusted, setting it back hides a new file.
        Case(name: "core.untrackedCache with the directory's mtime set back", change: .none, expect: .dirty, control: .misreports) { lab in
            try lab.config("[core]\n\tuntrackedCache = true\n\ttrustctime = false\n\tcheckstat = minimal\n")
            Lab.touch(lab.repo, Lab.committed)
            try lab.git(["update-index", "--untracked-cache"])
            _ = try lab.plainStatus()
            try "new\n".write(toFile: lab.repo + "/new.txt", atomically: false, encoding: .utf8)
            Lab.touch(lab.repo, Lab.committed)
        },
        // With only mtime and size checked, a new file of the same size with its mtime set back is invisible to
        // stat: the shadow copies neither checkstat nor trustctime, so git compares the inode too, and re-reads.
        Case(name: "core.checkstat = minimal with a file's mtime set back", change: .none, expect: .dirty, control: .misreports) { lab in
            try lab.config("[core]\n\ttrustctime = false\n\tcheckstat = minimal\n")
            try "DATA\n".write(toFile: lab.repo + "/file.txt", atomically: true, encoding: .utf8)
            Lab.touch(lab.repo + "/file.txt", Lab.committed)
        },
        Case(name: "status.* settings", change: .untracked, expect: .dirty, control: .misreports) { lab in
            try lab.config("[status]\n\tshowUntrackedFiles = no\n\tsubmoduleSummary = true\n\trelativePaths = false\n[diff]\n\tignoreSubmodules = dirty\n")
        },
        // Plain status runs `git status` in each submodule, which reads the submodule's own config.
        Case(name: "a submodule with its own fsmonitor and submodule.* settings", control: .runs) { lab in
            let sub = lab.repo + "/sub"
            try Lab.git(lab.repo, ["init", "-q", "sub"])
            try "inner\n".write(toFile: sub + "/inner.txt", atomically: true, encoding: .utf8)
            try Lab.git(sub, ["add", "."])
            try Lab.git(sub, ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "inner"])
            try lab.git(["add", "sub"])
            try lab.commit("sub")
            try lab.append(sub + "/.git/config", "[core]\n\tfsmonitor = \(lab.script)\n")
            Lab.touch(sub + "/inner.txt", Lab.later)
            try lab.config("[submodule \"sub\"]\n\tupdate = !\(lab.script)\n\tignore = none\n\tactive = true\n\turl = \(lab.dir)/nowhere\n")
        },
        // A promisor remote: a missing object is fetched, and a local fetch runs remote.origin.uploadpack.
        Case(name: "a partial clone's lazy fetch", change: .none, expect: .unknown, control: .runs) { lab in
            let tree = try Lab.git(lab.repo, ["rev-parse", "HEAD^{tree}"]).trimmingCharacters(in: .whitespacesAndNewlines)
            try FileManager.default.removeItem(atPath: lab.repo + "/.git/objects/\(tree.prefix(2))/\(tree.dropFirst(2))")
            try lab.config("[core]\n\trepositoryformatversion = 1\n[extensions]\n\tpartialClone = origin\n"
                           + "[remote \"origin\"]\n\turl = \(lab.dir)/nowhere\n\tuploadpack = \(lab.script)\n\tpromisor = true\n")
        },
        // core.worktree elsewhere (a clean copy there): plain git reports that tree, not the agent's.
        Case(name: "core.worktree pointing elsewhere", change: .modified, expect: .dirty, control: .misreports) { lab in
            try FileManager.default.createDirectory(atPath: lab.dir + "/elsewhere", withIntermediateDirectories: true)
            try "data\n".write(toFile: lab.dir + "/elsewhere/file.txt", atomically: true, encoding: .utf8)
            try lab.config("[core]\n\tworktree = \(lab.dir)/elsewhere\n")
        },
    ]

    @Test(arguments: cases)
    func plantedSettingRunsNothing(_ c: Case) throws {
        let lab = try Lab(c.name, attributes: c.attributes)
        defer { try? FileManager.default.removeItem(atPath: lab.dir) }
        try c.plant(lab)
        switch c.change {
        case .none: break
        case .modified: try "DATA\n".write(toFile: lab.repo + "/file.txt", atomically: false, encoding: .utf8)
        case .untracked: try "new\n".write(toFile: lab.repo + "/new.txt", atomically: false, encoding: .utf8)
        }
        if c.control != .misreports { lab.stale() }
        let status = GitWorktree.status(lab.repo)
        #expect(!lab.ran, "\(c.name): the planted program ran")
        #expect(Self.kind(status) == c.expect, "\(c.name): \(status)")

        // The control: the same repository under plain git status.
        let plain = try lab.plainStatus()
        switch c.control {
        case .runs: #expect(lab.ran, "\(c.name): plain git status would have run it (\(plain.stderr))")
        case .misreports: #expect(plain.status == 0 && plain.stdout.isEmpty, "\(c.name): plain git status would have said clean: \(plain.stdout) \(plain.stderr)")
        case .neither: break
        }
    }

    // MARK: - What the shadow directory must still get right

    @Test func cleanCheckoutIsCleanAndChangesAreDirty() throws {
        let lab = try Lab("clean", attributes: "*.txt text eol=lf\n")
        defer { try? FileManager.default.removeItem(atPath: lab.dir) }
        #expect(GitWorktree.status(lab.repo) == .clean)
        lab.stale()
        #expect(GitWorktree.status(lab.repo) == .clean, "a changed stat alone is no change")
        try FileManager.default.createDirectory(atPath: lab.repo + "/sub/deeper", withIntermediateDirectories: true)
        try "x\n".write(toFile: lab.repo + "/sub/deeper/kept.txt", atomically: true, encoding: .utf8)
        try lab.git(["add", "."])
        try lab.commit("sub")
        #expect(GitWorktree.status(lab.repo + "/sub/deeper") == .clean, "from a subdirectory")
        try "DATA\n".write(toFile: lab.repo + "/file.txt", atomically: false, encoding: .utf8)
        #expect(GitWorktree.status(lab.repo + "/sub") == .dirty([" M file.txt"]), "the whole repository, paths from its top")
        try lab.git(["checkout", "--", "file.txt"])
        try "n\n".write(toFile: lab.repo + "/sub/new.txt", atomically: true, encoding: .utf8)
        #expect(GitWorktree.status(lab.repo) == .dirty(["?? sub/new.txt"]))
        // Excludes are data and still count: the repository's info/exclude.
        try lab.append(lab.repo + "/.git/info/exclude", "new.txt\n")
        #expect(GitWorktree.status(lab.repo) == .clean)
        // Staged, deleted.
        try FileManager.default.removeItem(atPath: lab.repo + "/sub/deeper/kept.txt")
        #expect(GitWorktree.status(lab.repo) == .dirty([" D sub/deeper/kept.txt"]))
    }

    @Test func linkedWorktreeWorksAndItsCommonConfigRunsNothing() throws {
        let lab = try Lab("worktree", attributes: "* filter=x\n")
        defer { try? FileManager.default.removeItem(atPath: lab.dir) }
        let wt = lab.dir + "/wt"
        try lab.git(["worktree", "add", "-q", wt])
        try lab.git(["pack-refs", "--all"])  // the branch only in packed-refs of the common directory
        try lab.config("[filter \"x\"]\n\tclean = \(lab.script)\n[core]\n\tfsmonitor = \(lab.script)\n")
        try lab.plantScript(lab.repo + "/.git/hooks/post-index-change")
        for f in ["file.txt", ".gitattributes"] { Lab.touch(wt + "/" + f, Lab.later) }
        #expect(GitWorktree.status(wt) == .clean)
        try "DATA\n".write(toFile: wt + "/file.txt", atomically: false, encoding: .utf8)
        #expect(GitWorktree.status(wt) == .dirty([" M file.txt"]))
        #expect(GitWorktree.status(lab.repo) == .clean, "the main tree is its own")
        #expect(!lab.ran)
        _ = try TestSupport.run("/usr/bin/git", ["-C", wt, "status", "--porcelain"], environment: Lab.environment)
        #expect(lab.ran, "the control: plain git status in the worktree runs the common config's programs")
    }

    @Test func clonedSharedAndSplitIndexRepositoriesWork() throws {
        let lab = try Lab("clone")
        defer { try? FileManager.default.removeItem(atPath: lab.dir) }
        try Lab.git(lab.dir, ["clone", "-q", lab.repo, "clone"])
        try Lab.git(lab.dir, ["clone", "-q", "--shared", lab.repo, "shared"])  // objects through info/alternates
        for name in ["clone", "shared"] {
            let tree = lab.dir + "/" + name
            #expect(GitWorktree.status(tree) == .clean, "\(name)")
            Lab.touch(tree + "/file.txt", Lab.later)
            #expect(GitWorktree.status(tree) == .clean, "\(name), stat changed")
            try "DATA\n".write(toFile: tree + "/file.txt", atomically: false, encoding: .utf8)
            #expect(GitWorktree.status(tree) == .dirty([" M file.txt"]), "\(name)")
        }
        try lab.git(["update-index", "--split-index"])
        let shared = try FileManager.default.contentsOfDirectory(atPath: lab.repo + "/.git").filter { $0.hasPrefix("sharedindex.") }
        try #require(!shared.isEmpty, "a split index")
        lab.stale()
        #expect(GitWorktree.status(lab.repo) == .clean)
        try "n\n".write(toFile: lab.repo + "/new.txt", atomically: true, encoding: .utf8)
        #expect(GitWorktree.status(lab.repo) == .dirty(["?? new.txt"]))
    }

    @Test func sha256RepositoryWorks() throws {
        let lab = try Lab("sha256", initArgs: ["--object-format=sha256"])
        defer { try? FileManager.default.removeItem(atPath: lab.dir) }
        #expect(GitWorktree.status(lab.repo) == .clean)
        lab.stale()
        #expect(GitWorktree.status(lab.repo) == .clean)
        try "DATA\n".write(toFile: lab.repo + "/file.txt", atomically: false, encoding: .utf8)
        #expect(GitWorktree.status(lab.repo) == .dirty([" M file.txt"]))
    }

    @Test func detachedUnbornAndEmptyRepositories() throws {
        let lab = try Lab("heads")
        defer { try? FileManager.default.removeItem(atPath: lab.dir) }
        try lab.git(["checkout", "-q", "--detach"])
        #expect(GitWorktree.status(lab.repo) == .clean)
        try Lab.git(lab.dir, ["init", "-q", "empty"])
        #expect(GitWorktree.status(lab.dir + "/empty") == .clean, "nothing at all")
        try "n\n".write(toFile: lab.dir + "/empty/new.txt", atomically: true, encoding: .utf8)
        #expect(GitWorktree.status(lab.dir + "/empty") == .dirty(["?? new.txt"]), "an unborn branch: everything is new")
        try Lab.git(lab.dir + "/empty", ["add", "new.txt"])
        #expect(GitWorktree.status(lab.dir + "/empty") == .dirty(["A  new.txt"]))
        // An empty `.git` (what strict leaves in a cwd that had none) is passed over, as git passes over it.
        try FileManager.default.createDirectory(atPath: lab.repo + "/sub/.git", withIntermediateDirectories: true)
        try "x\n".write(toFile: lab.repo + "/sub/kept.txt", atomically: true, encoding: .utf8)
        try lab.git(["add", "sub/kept.txt"])
        try lab.commit("sub")
        #expect(GitWorktree.status(lab.repo + "/sub") == .clean)
    }

    @Test func repositoriesThisCheckCannotReadAreUnknown() throws {
        let lab = try Lab("odd")
        defer { try? FileManager.default.removeItem(atPath: lab.dir) }
        func unknown(_ why: String, _ comment: Comment) {
            let s = GitWorktree.status(lab.repo)
            guard case .unknown(let text) = s else { Issue.record("\(comment): \(s)"); return }
            #expect(text.contains(why), "\(comment): \(text)")
        }
        // An extension this check does not know: refused, not guessed.
        let config = try String(contentsOfFile: lab.repo + "/.git/config", encoding: .utf8)
        try lab.config("[core]\n\trepositoryformatversion = 1\n[extensions]\n\trefStorage = reftable\n")
        unknown("extension 'refstorage'", "unknown extension")
        try config.write(toFile: lab.repo + "/.git/config", atomically: true, encoding: .utf8)
        try lab.config("[core]\n\trepositoryformatversion = 1\n[extensions]\n\trefStorage = files # the default\n\tnoop = x\n")
        #expect(GitWorktree.status(lab.repo) == .clean, "extensions that change nothing status reads")
        try config.write(toFile: lab.repo + "/.git/config", atomically: true, encoding: .utf8)
        try lab.config("[core]\n\trepositoryformatversion = 2\n")
        unknown("repositoryformatversion", "a format version from the future")
        try config.write(toFile: lab.repo + "/.git/config", atomically: true, encoding: .utf8)
        #expect(GitWorktree.status(lab.repo) == .clean)

        // An index too large to copy (sparse: no time), a FIFO for an index (must not hang), garbage in it.
        let index = lab.repo + "/.git/index"
        let saved = try Data(contentsOf: URL(fileURLWithPath: index))
        try FileManager.default.removeItem(atPath: index)
        #expect(FileManager.default.createFile(atPath: index, contents: nil))
        #expect(truncate(index, off_t(GitWorktree.indexLimit) + 1) == 0)
        unknown("larger than", "a huge index")
        try FileManager.default.removeItem(atPath: index)
        #expect(mkfifo(index, 0o600) == 0)
        unknown("not a regular file", "a FIFO index")
        try FileManager.default.removeItem(atPath: index)
        try Data("DIRC garbage".utf8).write(to: URL(fileURLWithPath: index))
        unknown("git status failed", "a corrupt index")
        try FileManager.default.removeItem(atPath: index)
        try saved.write(to: URL(fileURLWithPath: index))
        #expect(GitWorktree.status(lab.repo) == .clean)

        // HEAD: garbage, a ref name that climbs out, a ref that is not a commit id, a long chain, a FIFO.
        let head = lab.repo + "/.git/HEAD"
        let branch = try String(contentsOfFile: head, encoding: .utf8)
        for (text, why) in [("garbage\n", "neither a branch nor a commit"),
                            ("ref: refs/heads/../../../../../etc/passwd\n", "not a ref name"),
                            ("ref: refs/heads/x\n", "neither a branch nor a commit"),
                            ("ref: refs/heads/loop\n", "too long")] {
            try text.write(toFile: head, atomically: false, encoding: .utf8)
            if text.contains("refs/heads/x") { try "not an id\n".write(toFile: lab.repo + "/.git/refs/heads/x", atomically: true, encoding: .utf8) }
            if text.contains("loop") { try "ref: refs/heads/loop\n".write(toFile: lab.repo + "/.git/refs/heads/loop", atomically: true, encoding: .utf8) }
            unknown(why, "HEAD \(text)")
        }
        try FileManager.default.removeItem(atPath: head)
        #expect(mkfifo(head, 0o600) == 0)
        #expect(GitWorktree.status(lab.repo) == .unknown("\(lab.repo) is not in a git repository"), "a HEAD git would not take: not a repository")
        try FileManager.default.removeItem(atPath: head)
        try branch.write(toFile: head, atomically: false, encoding: .utf8)
        #expect(GitWorktree.status(lab.repo) == .clean)

        // A `.git` file that names nothing, or no git directory.
        let bare = lab.dir + "/elsewhere"
        try FileManager.default.createDirectory(atPath: bare, withIntermediateDirectories: true)
        try "not a gitdir line\n".write(toFile: bare + "/.git", atomically: true, encoding: .utf8)
        #expect(GitWorktree.status(bare) == .unknown("\(bare)/.git is a file that names no git directory"))
        try "gitdir: /nonexistent\n".write(toFile: bare + "/.git", atomically: true, encoding: .utf8)
        #expect(GitWorktree.status(bare) == .unknown("\(bare)/.git names /nonexistent, which is not a git directory"))
    }

    @Test func operatorsGlobalExcludesFileIsFound() throws {
        let home = TestSupport.tempDir("gitglobal")
        defer { try? FileManager.default.removeItem(atPath: home) }
        #expect(GitWorktree.Shadow.globalExcludes(["HOME": home]) == home + "/.config/git/ignore")
        #expect(GitWorktree.Shadow.globalExcludes(["HOME": home, "XDG_CONFIG_HOME": "/x"]) == "/x/git/ignore")
        try "[core]\n\texcludesFile = ~/.gitignore_global\n".write(toFile: home + "/.gitconfig", atomically: true, encoding: .utf8)
        #expect(GitWorktree.Shadow.globalExcludes(["HOME": home]) == home + "/.gitignore_global")
        #expect(GitWorktree.Shadow.globalExcludes([:]) == nil)
    }
}
