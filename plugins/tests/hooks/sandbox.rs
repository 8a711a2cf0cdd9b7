//! What a script cannot reach, and what a broken script reports at compile time.

use super::*;

#[test]
fn the_sandbox_has_no_way_out() {
    let (engine, _) = engine_with(HookConfig::default());
    for (i, probe) in [
        "os.execute('touch /tmp/strangler-pwned')",
        "io.open('/etc/passwd')",
        "require('os')",
        "load('return 1')()",
        "loadstring('return 1')()",
        "dofile('/etc/passwd')",
        "loadfile('/etc/passwd')",
        "getfenv(0).os.execute('true')",
        "setfenv(1, {})",
        "debug.getregistry()",
        "package.loadlib('x', 'y')",
        "collectgarbage('stop')",
        "string.dump(function() end)",
        "(''):dump()",
        "getmetatable('').__index.dump(print)",
        "coroutine.create(print)",
        "jit.on()",
        "newproxy(true)",
        "module('x')",
    ]
    .into_iter()
    .enumerate()
    {
        let source = format!("function on_request(req)\n  {probe}\nend\n");
        let hooks = one(&engine, &format!("probe{i}.lua"), &source);
        let err = on_request_error(&hooks);
        assert_eq!(err.kind, HookFailure::Error, "{probe}: {err}");
        assert_eq!(err.line, Some(2), "{probe}: {err}");
    }
    assert!(!Path::new("/tmp/strangler-pwned").exists());
    // What is there works.
    let hooks = one(
        &engine,
        "allowed.lua",
        r##"
        function on_request(req)
          local t = { 3, 1, 2 }
          table.sort(t)
          assert(t[1] == 1 and math.max(1, 5) == 5 and string.upper("a") == "A" and ("b"):upper() == "B")
          assert(bit.band(6, 3) == 2 and type(os.time()) == "number" and type(os.clock()) == "number")
          assert(select("#", pcall(error, "x")) == 2 and _G.on_request == on_request)
          local ok, err = pcall(error, "caught")
          assert(not ok and err:find("caught"))
          log.info("hello from", req.id)
          print("print goes to log.info")
          string.upper = nil -- only this script's copy
        end
        "##,
    );
    let mut req = request();
    hooks_ok(&hooks, &mut req);
    let other = one(
        &engine,
        "other.lua",
        r#"function on_request(req) assert(string.upper("a") == "A") end"#,
    );
    hooks_ok(&other, &mut req);
}

#[test]
fn compile_errors_name_the_script_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loyalty.lua");
    std::fs::write(&path, "function on_request(req)\n  local x = = 1\nend\n").unwrap();
    let err = HookScript::compile(&path).unwrap_err();
    assert_eq!(err.script, path);
    assert_eq!(err.line, Some(2));
    assert!(matches!(err.kind, PluginErrorKind::Syntax(_)), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("loyalty.lua:2: syntax error"), "{shown}");

    let missing = HookScript::compile(&dir.path().join("missing.lua")).unwrap_err();
    assert!(matches!(missing.kind, PluginErrorKind::Io(_)), "{missing}");

    let cases = [
        ("error('top level', 1)\n", "load"),
        ("on_request = 5\n", "not a function"),
        ("local x = 1\n", "no hooks"),
        ("\nwhile true do end\n", "timeout"),
        ("print(os.getenv('HOME'))\n", "load"),
    ];
    for (source, want) in cases {
        let err = HookScript::from_source(Path::new("bad.lua"), source.to_string()).unwrap_err();
        let ok = match want {
            "load" => matches!(err.kind, PluginErrorKind::Load(_)) && err.line == Some(1),
            "not a function" => matches!(
                err.kind,
                PluginErrorKind::NotAFunction {
                    name: "on_request",
                    ..
                }
            ),
            "no hooks" => matches!(err.kind, PluginErrorKind::NoHooks),
            _ => matches!(err.kind, PluginErrorKind::Timeout) && err.line == Some(2),
        };
        assert!(ok, "{source:?}: {err:?}");
    }

    let good = script(
        "all.lua",
        "function on_request() end\nfunction after_response() end\n",
    );
    assert!(good.phases().on_request && !good.phases().on_response && good.phases().after_response);
}
