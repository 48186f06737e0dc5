//! Destroying an app, then the node, leaves nothing behind: processes, cgroups, netns, veth,
//! firewall table, quota subvolume, mounts, loop device, files.

mod common;
use common::*;
use std::process::Command;

fn sh(cmd: &str) -> String {
    String::from_utf8_lossy(&Command::new("sh").arg("-c").arg(cmd).output().unwrap().stdout).into_owned()
}

#[test]
fn destroy_leaves_nothing_behind() {
    require_root!();
    let n = TestNode::new();
    let app = n.create_app("gone");
    let g = &app["gears"][0];
    let (uid, id) = (g["uid"].as_u64().unwrap(), g["id"].as_str().unwrap().to_string());
    let (netns, veth, home) = (
        g["netns"].as_str().unwrap().to_string(),
        g["veth"].as_str().unwrap().to_string(),
        g["home"].as_str().unwrap().to_string(),
    );
    n.sh("gone", "nohup sleep 1000 >/dev/null 2>&1 &");
    let cgroups = || sh(&format!("find /sys/fs/cgroup -type d -path '*gearshift-{}*'", n.name));
    // Everything exists while the app lives.
    assert!(!sh(&format!("pgrep -u {uid}")).trim().is_empty(), "no gear processes");
    assert!(cgroups().contains("gone-0"));
    assert!(sh("ip netns list").contains(&netns));
    assert!(sh("ip -o link").contains(&veth));
    assert!(std::path::Path::new(&home).exists());

    n.ok(&["app", "destroy", "gone", "--confirm", "gone"]);
    // Zombies waiting for the host's init to reap them are dead already.
    assert_eq!(
        sh(&format!("ps -u {uid} -o stat= | grep -v Z")).trim(),
        "",
        "gear processes survived"
    );
    assert!(!cgroups().contains("gone-0"), "cgroups left: {}", cgroups());
    assert!(!sh("ip netns list").contains(&netns), "netns left");
    assert!(!sh("ip -o link").contains(&veth), "veth left");
    assert!(!std::path::Path::new(&home).exists(), "home left");
    assert!(
        !sh(&format!("btrfs subvolume list {}/gears 2>/dev/null", n.root.display())).contains(&id),
        "subvolume left"
    );
    assert!(!n.root.join("run/gears").join(&id).exists(), "gear metadata left");
    assert!(n.ok(&["app", "list", "--json"]).trim() == "[]");

    // The node itself.
    let image = n.root.join("gears.img");
    n.ok(&["node", "destroy", "--confirm", &n.name]);
    assert!(cgroups().trim().is_empty(), "node cgroups left: {}", cgroups());
    assert!(!sh("ip -o link").contains(&format!(" {}:", n.name)), "bridge left");
    assert!(
        !sh("nft list tables 2>/dev/null").contains(&format!("gearshift_{}", n.name)),
        "nft table left"
    );
    assert!(
        !sh("cat /proc/self/mountinfo").contains(n.root.to_str().unwrap()),
        "mounts left"
    );
    assert!(
        sh(&format!("losetup -j {}", image.display())).trim().is_empty(),
        "loop device left"
    );
    assert!(!n.root.exists(), "data root left");
    assert!(!n.config.exists(), "config left");
}
