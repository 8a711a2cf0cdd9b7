//! Budgets: runaway loops and memory bombs are stopped and the state carries on.

use super::*;

#[test]
fn runaway_loop_is_cut_off_within_budget_and_the_state_stays_usable() {
    let budget = Duration::from_millis(30);
    let (engine, runs) = engine_with(HookConfig {
        call_budget: budget,
        ..HookConfig::default()
    });
    let spin = one(
        &engine,
        "spin.lua",
        "function on_request(req)\n  while true do end\nend\n",
    );
    let sneaky = one(
        &engine,
        "sneaky.lua",
        "function on_request(req)\n  while true do pcall(function() while true do end end) end\nend\n",
    );
    let fine = one(
        &engine,
        "fine.lua",
        r#"function on_request(req) req.headers:set("x-ok", "1") end"#,
    );
    for hooks in [&spin, &sneaky] {
        let started = Instant::now();
        let err = on_request_error(hooks);
        let took = started.elapsed();
        assert_eq!(err.kind, HookFailure::Timeout, "{err}");
        assert_eq!(err.result(), RunResult::Timeout);
        assert!(
            err.message.contains("hook exceeded its time budget"),
            "{err}"
        );
        assert_eq!(err.line, Some(2), "{err}");
        // Generous upper bound: this machine is shared; the cut-off itself is within microseconds.
        assert!(took >= budget && took < budget * 10, "took {took:?}");
        let mut req = request();
        hooks_ok(&fine, &mut req);
        assert_eq!(req.headers["x-ok"], "1");
    }
    assert_eq!(runs.count(Phase::OnRequest, RunResult::Timeout), 2);
}

#[test]
fn memory_bomb_is_stopped_and_the_state_stays_usable() {
    // A generous time budget, so that the memory limit is what stops the bomb.
    let config = HookConfig {
        memory_limit: 8 * 1024 * 1024,
        call_budget: Duration::from_secs(5),
        ..HookConfig::default()
    };
    let (engine, _) = engine_with(config);
    let bomb = one(
        &engine,
        "bomb.lua",
        "function on_request(req)\n  local t = {}\n  for i = 1, 1e9 do t[i] = string.rep('x', 64) .. i end\nend\n",
    );
    let keeper = one(
        &engine,
        "keeper.lua",
        "kept = {}\nfunction on_request(req)\n  for i = 1, 1e9 do kept[#kept + 1] = string.rep('y', 64) .. i end\nend\n",
    );
    let fine = one(
        &engine,
        "fine.lua",
        r#"function on_request(req) req.headers:set("x-ok", string.rep("z", 3)) end"#,
    );
    for hooks in [&bomb, &keeper, &bomb] {
        let err = on_request_error(hooks);
        assert_eq!(err.kind, HookFailure::Memory, "{err}");
        assert_eq!(err.result(), RunResult::Error);
        let mut req = request();
        hooks_ok(&fine, &mut req);
        assert_eq!(req.headers["x-ok"], "zzz");
    }
}
