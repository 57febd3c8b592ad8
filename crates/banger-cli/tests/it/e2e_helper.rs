//! A user's daemon and the root helper it depends on: SIGKILL of
//! `banger-helper` at random points of `vm create` and `vm delete` leaves
//! nothing behind once a new helper (and daemon) are back. Only for a world
//! run as a user (`BANGER_E2E_USER`; `scripts/test.sh` runs the suite so
//! when root): a root daemon has no helper.

use std::process::Stdio;
use std::time::Duration;

use banger_testkit::{Prerequisite, SimEnv, e2e_ready, skip};
use serde_json::Value;

fn vms(sim: &SimEnv) -> Vec<Value> {
    serde_json::from_str(&sim.ok(["vm", "list", "--json"]).stdout).unwrap()
}

/// Per round: SIGKILL of the helper a random time into a create (the
/// rounds' kill points spread over the time a create takes here), a new
/// helper and a new daemon (which reconciles), then the same during a
/// delete. Each victim ends either absent, or listed in a state from which
/// it works or deletes cleanly; a VM made before all this keeps working;
/// and at the end the host holds nothing of the world.
#[test]
fn a_helper_killed_during_create_and_delete_leaves_nothing_once_back() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    if sim.user().is_none() {
        skip(
            "a_helper_killed_during_create_and_delete_leaves_nothing_once_back",
            "a root daemon has no helper; set BANGER_E2E_USER (scripts/test.sh does)",
            Prerequisite::NotInCi,
        );
        return;
    }
    sim.import_fixture();
    // How long a create and a delete take here: the kills are spread over
    // them (one per slice of the span, at a random point of it).
    let timed = |args: &[&str]| {
        let started = std::time::Instant::now();
        sim.ok(args);
        started.elapsed()
    };
    timed(&["vm", "create", "--name", "probe"]);
    let delete_span = timed(&["vm", "delete", "probe"]);
    let create_span = timed(&["vm", "create", "--name", "survivor"]);
    let mut random = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    ) | 1;
    let rounds = 6u32;
    // A point in slice `round` of `span`.
    let mut kill_point = |span: Duration, round: u32| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let slice = span / rounds;
        slice * round + slice * u32::try_from(random % 1000).unwrap() / 1000
    };
    let mut outcomes = Vec::new();
    // Brings both back: a new helper, and a new daemon (its start
    // reconciles what the killed helper left half done).
    let back = |round: u32| {
        assert!(
            sim.helper_pid().is_none(),
            "round {round}: the helper survived SIGKILL"
        );
        sim.start_helper();
        sim.env.stop_daemon();
        sim.ok(["daemon", "start"]);
    };
    for round in 0..rounds {
        let name = format!("victim{round}");

        // During create.
        let delay = kill_point(create_span, round);
        let mut create = sim.banger_command();
        create
            .args(["vm", "create", "--name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = create.spawn().unwrap();
        std::thread::sleep(delay);
        sim.kill_helper();
        let created = child.wait_with_output().unwrap();
        back(round);
        let after_create = settle(&sim, &name, round);
        outcomes.push(format!(
            "create +{delay:.0?} of {create_span:.0?}: banger exit {:?}, then {after_create}",
            created.status.code()
        ));

        // During delete (of the victim if it lived, else of a fresh VM).
        if after_create == "absent" {
            sim.ok(["vm", "create", "--name", &name]);
        }
        let delay = kill_point(delete_span, round);
        let mut delete = sim.banger_command();
        delete
            .args(["vm", "delete", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = delete.spawn().unwrap();
        std::thread::sleep(delay);
        sim.kill_helper();
        let deleted = child.wait().unwrap();
        back(round);
        let after_delete = settle(&sim, &name, round);
        outcomes.push(format!(
            "delete +{delay:.0?} of {delete_span:.0?}: banger exit {:?}, then {after_delete}",
            deleted.code()
        ));
        if after_delete != "absent" {
            sim.ok(["vm", "delete", &name]);
        }
        let names: Vec<String> = vms(&sim)
            .iter()
            .map(|vm| vm["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["survivor"], "round {round}\n{}", sim.diagnostics());
    }
    println!("SIGKILL of banger-helper, {rounds} rounds:");
    for outcome in &outcomes {
        println!("  {outcome}");
    }
    // The VM made before all this was never touched.
    assert_eq!(
        sim.ok(["vm", "ssh", "survivor", "--", "hostname"])
            .stdout
            .trim(),
        "survivor",
        "{}",
        sim.diagnostics()
    );
    sim.ok(["vm", "delete", "survivor"]);
    sim.assert_clean();
}

/// What became of `name` once both are back: `absent`, or its state after
/// checking that a running VM answers over SSH. Any other state must
/// still delete (the caller deletes it).
fn settle(sim: &SimEnv, name: &str, round: u32) -> String {
    let listed = vms(sim);
    let Some(vm) = listed.iter().find(|vm| vm["name"] == name) else {
        return "absent".to_owned();
    };
    let state = vm["state"].as_str().unwrap_or_default().to_owned();
    match state.as_str() {
        "running" => {
            let out = sim.banger(["vm", "ssh", name, "--", "hostname"]);
            assert_eq!(
                out.stdout.trim(),
                name,
                "round {round}: {name} is listed running but does not answer:\n{out}\n{}",
                sim.diagnostics()
            );
        }
        "stopped" | "error" => {}
        other => panic!(
            "round {round}: {name} was left {other}\n{}",
            sim.diagnostics()
        ),
    }
    state
}
