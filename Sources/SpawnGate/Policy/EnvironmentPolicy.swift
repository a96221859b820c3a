/// Variables that may never be passed to an agent, whatever the policy says. A CLI entry's `env:` copies them from
/// the gateway's environment, and `task: env:NAME` sets NAME to text the *request* chooses, so a name on this list
/// would let the operator's file, or a remote requester, decide which code the agent's programs load or run (or
/// where they read configuration that names commands): "run claude" would become "run anything".
///
/// The list is by family, prefixes plus exact names, and errs towards refusing: an operator who really needs one
/// sets it in a wrapper script that the policy names as the CLI's `path`. Modelled on sudo's
/// `initial_badenv_table`, widened to the tools an agent runs (git, editors, pagers, language runtimes, builds).
public enum EnvironmentPolicy {
    struct Family {
        let why: String
        let names: Set<String>
        let prefixes: [String]
        func covers(_ name: String) -> Bool { names.contains(name) || prefixes.contains { name.hasPrefix($0) } }
    }

    static let families: [Family] = [
        Family(why: "it makes the dynamic loader or the C library load code (preloads, audit modules, charset and locale modules, allocator hooks)",
               names: ["GCONV_PATH", "LOCPATH", "NLSPATH", "GLIBC_TUNABLES"],
               prefixes: ["LD_", "DYLD_", "_RLD", "MALLOC_"]),
        Family(why: "a shell runs it, or reads start-up files and functions from where it points",
               names: ["BASH_ENV", "ENV", "ZDOTDIR", "FPATH", "IFS", "SHELLOPTS", "BASHOPTS", "PS0", "PS1", "PS2", "PS3", "PS4",
                       "PROMPT_COMMAND", "CDPATH", "GLOBIGNORE", "INPUTRC", "HISTFILE"],
               prefixes: ["BASH_FUNC_"]),
        Family(why: "git runs commands from it (editor, pager, askpass, ssh, diff and merge drivers) or takes its configuration, hooks and repository from it; every GIT_ variable is refused",
               names: [], prefixes: ["GIT_"]),
        Family(why: "programs run it as a command (editor, pager, askpass, browser) or read commands from it",
               names: ["EDITOR", "VISUAL", "PAGER", "MANPAGER", "MANOPT", "MANPATH", "MANROFFOPT", "BROWSER", "SSH_ASKPASS",
                       "SSH_ASKPASS_REQUIRE", "SUDO_ASKPASS", "TERMINAL", "TERMCAP", "VIMINIT", "EXINIT", "MYVIMRC",
                       "MYGVIMRC", "GVIMINIT", "GNUPGHOME"],
               prefixes: ["LESS", "SYSTEMD_", "VIM", "EMACS"]),
        Family(why: "it chooses where programs read configuration or data that can name commands (XDG directories, terminfo)",
               names: [], prefixes: ["XDG_", "TERMINFO"]),
        Family(why: "OpenSSL loads engines and providers named by its configuration; trust roots decide whom the agent's TLS (and its API key) is sent to, so a request must not choose them",
               names: ["SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE"],
               prefixes: ["OPENSSL_"]),
        Family(why: "a language runtime loads code from it (start-up files, module paths, preloads, options)",
               names: ["CLASSPATH", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "TCLLIBPATH", "TCL_LIBRARY", "TK_LIBRARY",
                       "VIRTUAL_ENV", "CONDA_PREFIX"],
               prefixes: ["PYTHON", "PERL", "RUBY", "GEM_", "BUNDLE_", "NODE_", "NPM_CONFIG_", "YARN_", "PNPM_",
                          "COREPACK_", "BUN_", "DENO_", "JAVA_", "JDK_", "MAVEN_", "GRADLE_", "DOTNET_", "COREHOST_",
                          "CORECLR_", "R_PROFILE", "R_ENVIRON", "R_LIBS", "LUA_", "PHP", "PIP_", "UV_", "JULIA_", "ERL_"]),
        Family(why: "a build tool runs it, or takes flags, wrappers or toolchains from it (compilers, linkers, Go, Cargo, make)",
               names: ["CC", "CXX", "CPP", "LD", "AR", "AS", "NM", "RANLIB", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "MAKE",
                       "MAKEFLAGS", "MFLAGS", "MAKEFILES", "GOFLAGS", "GOTOOLCHAIN", "GOENV", "GOPROXY", "GOPATH", "GOROOT",
                       "GOBIN", "GOEXPERIMENT", "GOCACHE", "GOMODCACHE", "GOINSECURE", "GONOSUMDB", "GOPRIVATE"],
               prefixes: ["CGO_", "CARGO_", "RUST", "PKG_CONFIG", "CMAKE_"]),
        Family(why: "it redirects host name lookups or Kerberos configuration (which loads plugins)",
               names: ["HOSTALIASES", "RESOLV_HOST_CONF", "RES_OPTIONS", "LOCALDOMAIN"],
               prefixes: ["KRB5"]),
        Family(why: "the spawner sets it itself (PATH, HOME, SHELL, and the agent's private TMPDIR)",
               names: ["PATH", "HOME", "SHELL", "TMPDIR"], prefixes: []),
    ]

    /// nil when `name` may be listed; otherwise why not, as the end of a sentence that starts with the name.
    public static func refusal(_ name: String) -> String? {
        let valid = !name.isEmpty && name.unicodeScalars.allSatisfy { ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
            && !("0"..."9").contains(name.unicodeScalars.first!)
        guard valid else { return "'\(name)' is not a variable name (use A–Z, 0–9 and _)" }
        if let family = families.first(where: { $0.covers(name) }) {
            return "\(name) can never be passed to an agent: \(family.why). If the CLI needs it, set it in a wrapper script and name that script as the CLI's path"
        }
        return nil
    }
}
