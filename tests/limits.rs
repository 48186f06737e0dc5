//! A gear's limits hold under attack, and the neighbour keeps working: memory, pids, cpu, disk
//! and bandwidth, each measured from the kernel's own accounting.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn http_ok(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    b.starts_with("HTTP/1.0 200")
}

/// Starts a web server in `app` and returns its address once it answers.
fn serve(n: &TestNode, app: &str) -> String {
    let ip = n.show(app)["gears"][0]["ip"].as_str().unwrap().to_string();
    let (code, _, err) = n.sh(app, "nohup python3 -m http.server 8080 >/dev/null 2>&1 &");
    assert_eq!(code, 0, "{err}");
    let addr = format!("{ip}:8080");
    assert!(
        eventually(Duration::from_secs(10), || http_ok(&addr)),
        "{app} does not serve on {addr}"
    );
    addr
}

fn tiny_pair(n: &TestNode) -> String {
    n.add_profile("tiny", "64M", 0.2, 64, "16M", "8mbit");
    n.ok(&["app", "create", "hog", "--cartridge", "python", "--profile", "tiny"]);
    n.create_app("calm");
    serve(n, "calm")
}

#[test]
fn memory_hog_is_oom_killed_and_the_neighbour_answers() {
    require_root!();
    let n = TestNode::new();
    let calm = tiny_pair(&n);
    let (code, _, _) = n.sh(
        "hog",
        "python3 -c 'b=[]\nfor _ in range(400): b.append(bytearray(1<<20))\nprint(len(b))'",
    );
    assert_eq!(code, 137, "the hog was not killed by the OOM killer");
    let hog = n.show("hog");
    assert!(
        hog["gears"][0]["oom_kills"].as_u64().unwrap() >= 1,
        "no OOM kill recorded: {hog}"
    );
    assert_eq!(hog["gears"][0]["memory_limit"].as_u64().unwrap(), 64 << 20);
    assert!(http_ok(&calm), "the neighbour stopped answering");
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    require_root!();
    let n = TestNode::new();
    let calm = tiny_pair(&n);
    let bomb = "import os,time\nn=0\nwhile n<1000:\n  try:\n    pid=os.fork()\n  except OSError as e:\n    print(\"blocked\",e.errno,n,flush=True);break\n  if pid==0:\n    os.close(1);os.close(2);time.sleep(60);os._exit(0)\n  n+=1\nelse:\n  print(\"unbounded\",n)\nos._exit(0)";
    let (code, out, err) = n.sh("hog", &format!("python3 -c '{bomb}'"));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("blocked 11"), "fork bomb was not stopped: {out}");
    let hog = n.show("hog");
    let pids = hog["gears"][0]["pids"].as_u64().unwrap();
    assert!(pids <= 64, "{pids} tasks in a gear limited to 64");
    assert!(
        std::process::Command::new("true").status().unwrap().success(),
        "the host cannot start processes"
    );
    assert_eq!(
        n.sh("calm", "echo alive").1,
        "alive\n",
        "the neighbour cannot start processes"
    );
    assert!(http_ok(&calm));
    n.ok(&["app", "destroy", "hog", "--confirm", "hog"]);
}

#[test]
fn busy_loop_stays_within_its_cpu_quota() {
    require_root!();
    let n = TestNode::new();
    n.add_profile("tiny", "64M", 0.2, 64, "16M", "8mbit");
    n.ok(&["app", "create", "spin", "--cartridge", "python", "--profile", "tiny"]);
    let before = n.show("spin")["gears"][0]["cpu_usage_usec"].as_u64().unwrap();
    let t = Instant::now();
    // Two busy loops for 3 s: without the quota they would use up to 6 cpu-seconds.
    let (code, _, err) = n.sh(
        "spin",
        "timeout 3 sh -c 'while :; do :; done' & timeout 3 sh -c 'while :; do :; done'; wait; true",
    );
    assert_eq!(code, 0, "{err}");
    let wall = t.elapsed().as_secs_f64();
    let s = n.show("spin");
    let used = (s["gears"][0]["cpu_usage_usec"].as_u64().unwrap() - before) as f64 / 1e6;
    let share = used / wall;
    eprintln!("cpu: {used:.2}s over {wall:.2}s = {share:.3} cores (quota 0.2)");
    assert!(share <= 0.2 * 1.25, "the gear used {share:.3} cores with a 0.2 quota");
    assert!(
        share >= 0.1,
        "the busy loop barely ran ({share:.3} cores): measurement broken?"
    );
    assert!(
        s["gears"][0]["cpu_throttled"].as_u64().unwrap() > 0,
        "no throttling recorded"
    );
}

#[test]
fn disk_quota_stops_writes_with_edquot_and_the_neighbour_can_write() {
    require_root!();
    let n = TestNode::new();
    tiny_pair(&n);
    let (code, _, err) = n.sh("hog", "dd if=/dev/zero of=$HOME/big bs=1M count=64 conv=fsync");
    assert_ne!(code, 0, "64M written into a 16M quota");
    assert!(err.contains("Disk quota exceeded"), "not EDQUOT: {err}");
    let (code, _, err) = n.sh("calm", "dd if=/dev/zero of=$HOME/ok bs=1M count=4 conv=fsync");
    assert_eq!(code, 0, "the neighbour cannot write: {err}");
    let hog = n.show("hog");
    let used = hog["gears"][0]["disk_bytes"].as_u64().unwrap();
    assert!(used <= 17 << 20, "usage {used} beyond the 16M quota");

    // A nested subvolume would get its own, unlimited qgroup: the btrfs ioctls are refused.
    let (code, out, err) = n.sh("hog", "rm -f $HOME/big; btrfs subvolume create $HOME/sub");
    assert_ne!(code, 0, "a gear created a btrfs subvolume: {out}");
    assert!(err.contains("Operation not permitted"), "{err}");
}

/// Moves `bytes` through the gear's veth in one direction and returns the rate in kbit/s.
fn transfer_kbit(n: &TestNode, app: &str, ip: &str, port: u16, out_of_gear: bool, bytes: usize) -> f64 {
    let script = if out_of_gear {
        format!("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',{port}));s.listen(1)\nc,_=s.accept()\nc.sendall(b'x'*{bytes});c.close()")
    } else {
        format!("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',{port}));s.listen(1)\nc,_=s.accept()\nn=0\nwhile n<{bytes}:\n  d=c.recv(65536)\n  if not d: break\n  n+=len(d)\nc.sendall(b'done');c.close()")
    };
    let mut server = n
        .cmd()
        .args(["run", app, "--", "python3", "-c", &script])
        .spawn()
        .unwrap();
    let addr = format!("{ip}:{port}");
    let mut last = Err(std::io::Error::other("not tried"));
    eventually(Duration::from_secs(30), || {
        last = TcpStream::connect(&addr);
        last.is_ok()
    });
    let mut s = last.unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let t = Instant::now();
    if out_of_gear {
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        assert_eq!(buf.len(), bytes);
    } else {
        s.write_all(&vec![b'y'; bytes]).unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(&ack, b"done");
    }
    let secs = t.elapsed().as_secs_f64();
    server.wait().unwrap();
    (bytes as f64 * 8.0 / 1000.0) / secs
}

#[test]
fn bandwidth_is_shaped_both_ways() {
    require_root!();
    let n = TestNode::new();
    n.add_profile("tiny", "128M", 1.0, 64, "16M", "8mbit");
    n.ok(&["app", "create", "bulk", "--cartridge", "python", "--profile", "tiny"]);
    let ip = n.show("bulk")["gears"][0]["ip"].as_str().unwrap().to_string();
    let out = transfer_kbit(&n, "bulk", &ip, 9001, true, 3_000_000);
    let inn = transfer_kbit(&n, "bulk", &ip, 9002, false, 3_000_000);
    eprintln!("bandwidth: out of gear {out:.0} kbit/s, into gear {inn:.0} kbit/s (profile 8000)");
    for (what, rate) in [("out of", out), ("into", inn)] {
        assert!(
            (6400.0..=9600.0).contains(&rate),
            "{what} the gear: {rate:.0} kbit/s, expected 8000 ±20%"
        );
    }
}
