#!/usr/bin/env python3
"""The escape battery, run inside a gear as its (unprivileged) user.

Each attack prints one line `ATTACK NAME OUTCOME DETAIL`: OUTCOME is the errno name the kernel
answered (EPERM, ENOENT, ...) or a word for what happened (`escaped` when the attack worked,
`contained`, `oom-killed` ...). tests/escape.rs holds what each attack must get.

Usage: attack.py battery KEY=VALUE...
         victim_ip victim_pid victim_home victim_app victim_env (its gear.toml) daemon_pid
         data_root config ssh_port gateway quota_bytes inodes bandwidth_kbit;
         only=A,B runs those attacks alone
       attack.py hook data_root=... config=... host_mark=PATH   (a hostile build hook)
       attack.py watch MARKER CALLER_MARKER   (until stdin closes: take the descriptors of
                 every process that appears in the gear with pidfd_getfd; read its argv, env)
Syscall numbers are x86_64's (the host and the test VM).
"""
import ctypes, errno, os, resource, select, signal, socket, stat, struct, subprocess, sys, time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = dict(ptrace=101, syslog=103, setuid=105, setgroups=116, capset=126, mknod=133,
          pivot_root=155, chroot=161, acct=163, settimeofday=164, mount=165, umount2=166, swapon=167,
          reboot=169, sethostname=170, iopl=172, ioperm=173, init_module=175,
          clock_settime=227, kexec_load=246, add_key=248, keyctl=250, unshare=272,
          perf_event_open=298, open_by_handle_at=304, setns=308, process_vm_readv=310,
          finit_module=313, bpf=321, userfaultfd=323, io_uring_setup=425, pidfd_open=434,
          clone3=435, pidfd_getfd=438, clone=56)


def ename(e):
    return errno.errorcode.get(e, "E%d" % e)


def sys_(name, *args):
    """A raw syscall: (result, errno name or None)."""
    ctypes.set_errno(0)
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(NR[name]), *conv)
    return r, (ename(ctypes.get_errno()) if r == -1 else None)


def report(name, outcome, detail=""):
    print("ATTACK %s %s %s" % (name, outcome, detail.replace("\n", " ")[:300]), flush=True)


def attempt(name, fn):
    """Runs one attack: its outcome, an OSError's errno name, or `error` for a bug in it."""
    try:
        out = fn()
        outcome, detail = out if isinstance(out, tuple) else (out, "")
    except OSError as e:
        outcome, detail = ename(e.errno), str(e)
    except Exception as e:  # a bug in the attack itself: visible, never a pass
        outcome, detail = "error", "%s: %s" % (type(e).__name__, e)
    report(name, outcome, detail)


def expect_fail(name, *args):
    """A syscall that must fail: its errno name, or `escaped` when it succeeded."""
    r, err = sys_(name, *args)
    return err or ("escaped", "returned %d" % r)


def read_file(path):
    with open(path, "rb") as f:
        return ("escaped", "read %d bytes" % len(f.read(4096)))


def write_file(path, data=b"1\n"):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return "escaped", "wrote " + path


def listdir(path):
    return "escaped", "%d entries" % len(os.listdir(path))


def beyond_landlock(path):
    """A file Landlock alone must refuse: its directory is the gear's own to write for the
    kernel's other checks (owner, mode; access(2) does not ask Landlock), but not one Landlock
    opens for writing. A directory the gear may not write anyway proves nothing: reported so."""
    def run():
        d = os.path.dirname(path)
        if not os.access(d, os.W_OK):
            return "not-writable-anyway", "%s is not the gear's to write: nothing for Landlock to refuse" % d
        return write_file(path)
    return run


def pid_own(pid):
    """Whether PID, a host pid, names one of our own processes in the gear's pid namespace
    (then the attack on it is void: report it as not found)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            uid = [l.split()[1] for l in f if l.startswith("Uid:")][0]
        return int(uid) == os.getuid()
    except OSError:
        return False


def on_pid(pid, fn):
    def run():
        if pid_own(pid):
            return "ESRCH", "pid %d is one of our own here" % pid
        return fn()
    return run


def connect(host, port, timeout=3):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return "escaped", "connected to %s:%d" % (host, port)
    except socket.timeout:
        return "ETIMEDOUT", "no answer in %ds" % timeout
    finally:
        s.close()


def in_child(fn):
    """Runs fn() in a forked child (for attacks that may take the process down): its exit."""
    pid = os.fork()
    if pid == 0:
        try:
            code = fn() or 0
        except BaseException:
            code = 3
        os._exit(code)
    _, st = os.waitpid(pid, 0)
    return st


def unshare(flag):
    return lambda: expect_fail("unshare", flag)


def clone_ns(flags):
    def run():
        r, err = sys_("clone", flags | signal.SIGCHLD, 0, 0, 0, 0)
        if r == 0:
            os._exit(0)
        if err:
            return err
        os.waitpid(r, 0)
        return "escaped", "clone returned child %d" % r
    return run


def clone3_ns():
    args = struct.pack("11Q", 0x10000000 | 0x00020000, 0, 0, 0, signal.SIGCHLD, 0, 0, 0, 0, 0, 0)
    buf = ctypes.create_string_buffer(args)
    r, err = sys_("clone3", buf, len(args))
    if r == 0:
        os._exit(0)
    if err:
        return err
    os.waitpid(r, 0)
    return "escaped", "clone3 returned child %d" % r


def setns_net():
    """setns into a network namespace. Where SELinux refuses opening the namespace file itself
    (EACCES: nsfs is not the gear's), a pidfd of our own process names the namespace instead, so
    that setns itself is still tried."""
    try:
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    except PermissionError:
        fd, err = sys_("pidfd_open", os.getpid(), 0)
        if err:
            return err, "the namespace file and a pidfd were both refused"
    try:
        return expect_fail("setns", fd, 0x40000000)
    finally:
        os.close(fd)


def setuid_binary():
    """mempodipper class: start a setuid-root program and see whether it runs as root, then
    try to write its memory."""
    found = [p for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin") if os.path.isdir(d)
             for p in (os.path.join(d, n) for n in sorted(os.listdir(d)))
             if os.path.isfile(p) and os.stat(p).st_mode & stat.S_ISUID and os.stat(p).st_uid == 0]
    target = next((p for p in found if os.path.basename(p) in ("su", "passwd", "chsh")), None)
    if not target:
        return "no-setuid-binaries", "none visible"
    p = subprocess.Popen([target], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        euid = None
        for _ in range(100):  # until it has exec'd (its comm is the target's)
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    st = f.read()
                if ("Name:\t%s" % os.path.basename(target)[:15]) in st:
                    euid = int([l.split()[2] for l in st.splitlines() if l.startswith("Uid:")][0])
                    break
            except OSError:
                break
            time.sleep(0.01)
        if euid == 0:
            return "escaped", "%s runs with euid 0" % target
        try:
            fd = os.open("/proc/%d/mem" % p.pid, os.O_RDWR)
            os.close(fd)
            mem = "its /proc/PID/mem opens (own uid, no privilege)"
        except OSError as e:
            mem = "its mem: " + ename(e.errno)
        return "no-elevation", "%s ran as euid %s; %s; %d setuid-root files" % (target, euid, mem, len(found))
    finally:
        p.kill()
        p.wait()


def foreign_processes():
    me = os.getuid()
    other = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/status" % d) as f:
                    uid = int([l.split()[1] for l in f if l.startswith("Uid:")][0])
                if uid != me:
                    other.append("%s(uid %d)" % (d, uid))
            except (OSError, IndexError):
                pass
    return ("escaped", " ".join(other)) if other else ("none", "every process is ours")


def fork_bomb():
    kids, err = [], None
    while len(kids) < 5000:
        try:
            pid = os.fork()
        except OSError as e:
            err = e.errno
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
    for k in kids:
        os.kill(k, signal.SIGKILL)
    for k in kids:
        os.waitpid(k, 0)
    if err is None:
        return "escaped", "%d processes and no limit" % len(kids)
    return ename(err), "stopped after %d processes" % len(kids)


def memory_bomb():
    def hog():
        b = []
        for _ in range(4096):
            b.append(bytearray(1 << 20))
        return 0
    st = in_child(hog)
    if os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL:
        return "oom-killed", "the child took SIGKILL (OOM) before 4 GiB"
    return "escaped", "the child allocated 4 GiB (status %d)" % st


def syncfs(fd):
    """Writes back the filesystem holding fd (errors ignored: the attack's outcome is the writes').
    An exhaustion attack on disk flushes as it goes, so that what waits for writeback (dirty
    pages, an uncommitted btrfs transaction's inodes), charged to the gear's memory, stays small
    under a slow disk (the VM's emulated one) and the quota, not the memory limit, is what
    refuses the attack. The quota's refusal is what the attack is to get, flushed or not."""
    libc.syncfs(fd)


def fill(path, limit_bytes):
    """Writes PATH until the kernel refuses: (errno name, bytes written), flushing every 8 MiB."""
    chunk, n = b"x" * (1 << 20), 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while n < limit_bytes:
            try:
                n += os.write(fd, chunk)
            except OSError as e:
                return ename(e.errno), n
            if n % (8 << 20) == 0:
                syncfs(fd)
        try:
            os.fsync(fd)
        except OSError as e:
            return ename(e.errno), n
        return "escaped", n
    finally:
        os.close(fd)
        os.unlink(path)


def disk_bomb(quota):
    def run():
        err, n = fill(os.path.expanduser("~/app-root/data/fill"), quota * 4)
        if n > quota * 3 // 2 + (4 << 20):
            err = "escaped"
        return err, "%d MiB written under a %d MiB quota" % (n >> 20, quota >> 20)
    return run


def tmp_bomb():
    """In a child: /tmp is a tmpfs, charged to the gear's memory, so it may end in the OOM killer."""
    r, w = os.pipe()
    st = in_child(lambda: os.write(w, ("%s %d" % fill("/tmp/fill", 8 << 30)).encode()) and 0)
    os.close(w)
    got = os.read(r, 100).decode().split()
    os.close(r)
    if got:
        return got[0], "%d MiB written to /tmp" % (int(got[1]) >> 20)
    if os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL:
        return "oom-killed", "filling /tmp ended in the OOM killer"
    return "error", "the child ended with status %d" % st


BTRFS_MAGIC = 0x9123683E


def fs_type(path):
    """statfs(2)'s f_type of the filesystem holding PATH."""
    buf = ctypes.create_string_buffer(120)
    if libc.statfs(path.encode(), buf) != 0:
        raise OSError(ctypes.get_errno(), "statfs " + path)
    return struct.unpack_from("q", buf, 0)[0]


def inode_bomb(inodes):
    """Files until refused. Where the quota counts inodes (ext4, xfs) they are empty and must stop
    near the profile's inode limit; btrfs has no inode limits (quota/btrfs.rs), so there each
    file holds 1 KiB (inlined in the metadata the qgroup charges) and the byte quota must stop
    them before 4 times the inode limit. The filesystem is flushed every 500 files (syncfs)."""
    def run():
        d = os.path.expanduser("~/app-root/data/inodes")
        btrfs = fs_type(os.path.expanduser("~")) == BTRFS_MAGIC
        data, bound = (b"i" * 1024, inodes * 4) if btrfs else (b"", inodes * 3 // 2)
        os.makedirs(d, exist_ok=True)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        n, err = 0, None
        try:
            while n < inodes * 4:
                try:
                    fd = os.open("%s/%d" % (d, n), os.O_CREAT | os.O_WRONLY, 0o600)
                    try:
                        os.write(fd, data)
                    finally:
                        os.close(fd)
                except OSError as e:
                    err = e.errno
                    break
                n += 1
                if n % 500 == 0:
                    syncfs(dfd)
        finally:
            os.close(dfd)
            for i in range(n + 1):
                try:
                    os.unlink("%s/%d" % (d, i))
                except FileNotFoundError:
                    pass
            os.rmdir(d)
        outcome = ename(err) if err and n <= bound else "escaped"
        how = "btrfs, 1 KiB each, no inode limits" if btrfs else "empty"
        return outcome, "%d files (%s) under an inode limit of %d" % (n, how, inodes)
    return run


def open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = "hard limit %d" % hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard * 2, hard * 2))
        raised = "raised the hard limit to %d" % (hard * 2)
    except (OSError, ValueError):
        pass
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    except (OSError, ValueError):
        pass
    fds, err = [], None
    while len(fds) < 100000:
        try:
            fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as e:
            err = e.errno
            break
    for fd in fds:
        os.close(fd)
    if err is None:
        return "escaped", "100000 files open (%s)" % raised
    return ename(err), "stopped at %d open files (%s)" % (len(fds), raised)


def tx_bytes():
    with open("/sys/class/net/eth0/statistics/tx_bytes") as f:
        return int(f.read())


def flood(gateway, kbit):
    """UDP as fast as we can for 2 s towards the host: what leaves the gear's eth0 (after its
    tbf) must stay near the profile's bandwidth."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    payload = b"f" * 1400
    start_bytes, t0, sent = tx_bytes(), time.time(), 0
    while time.time() - t0 < 2:
        try:
            sent += s.sendto(payload, (gateway, 9))
        except OSError:
            pass
    time.sleep(0.5)  # the queue drains at the shaped rate
    rate = (tx_bytes() - start_bytes) * 8 / 1000 / (time.time() - t0)
    s.close()
    outcome = "shaped" if rate <= kbit * 1.5 + 400 else "escaped"
    return outcome, "%d kbit/s left the gear (limit %d kbit/s; %d MiB offered)" % (rate, kbit, sent >> 20)


def iov(base, length):
    """A struct iovec of one buffer (a ctypes buffer or an address)."""
    addr = ctypes.addressof(base) if not isinstance(base, int) else base
    return ctypes.create_string_buffer(struct.pack("QQ", addr, length))


def perf_event():
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("II", attr, 0, 1, 128)  # PERF_TYPE_SOFTWARE, size
    return expect_fail("perf_event_open", attr, 0, -1, -1, 0)


def battery(ctx):
    vpid, dpid = int(ctx["victim_pid"]), int(ctx["daemon_pid"])
    vhome, root, gw = ctx["victim_home"], ctx["data_root"], ctx["gateway"]
    ssh_port = int(ctx["ssh_port"])
    buf = ctypes.create_string_buffer(256)
    attacks = [
        # another gear: its files, processes and address
        ("read-other-gear-file", lambda: read_file(vhome + "/app-root/repo/page.txt")),
        ("read-other-gear-inner-path", lambda: read_file("/home/%s/app-root/repo/page.txt" % ctx["victim_app"])),
        ("list-other-gear-home", lambda: listdir(vhome)),
        ("write-other-gear-home", lambda: write_file(vhome + "/planted")),
        ("list-gears-dir", lambda: listdir(root + "/gears")),
        ("see-foreign-processes", foreign_processes),
        ("signal-other-gear", on_pid(vpid, lambda: (os.kill(vpid, signal.SIGKILL), ("escaped", "killed"))[1])),
        ("pidfd-open-other-gear", on_pid(vpid, lambda: expect_fail("pidfd_open", vpid, 0))),
        ("ptrace-other-gear", on_pid(vpid, lambda: expect_fail("ptrace", 16, vpid, 0, 0))),
        ("proc-mem-other-gear", on_pid(vpid, lambda: read_file("/proc/%d/mem" % vpid))),
        ("proc-environ-other-gear", on_pid(vpid, lambda: read_file("/proc/%d/environ" % vpid))),
        ("proc-fd-other-gear", on_pid(vpid, lambda: listdir("/proc/%d/fd" % vpid))),
        ("connect-other-gear", lambda: connect(ctx["victim_ip"], 8080)),
        # the daemon (root)
        ("ptrace-daemon", on_pid(dpid, lambda: expect_fail("ptrace", 16, dpid, 0, 0))),
        ("proc-mem-daemon", on_pid(dpid, lambda: read_file("/proc/%d/mem" % dpid))),
        ("proc-environ-daemon", on_pid(dpid, lambda: read_file("/proc/%d/environ" % dpid))),
        ("proc-fd-daemon", on_pid(dpid, lambda: listdir("/proc/%d/fd" % dpid))),
        ("process-vm-readv-daemon", on_pid(dpid, lambda: expect_fail("process_vm_readv", dpid, iov(buf, 16), 1, iov(0x400000, 16), 1, 0))),
        ("connect-daemon-socket", lambda: (socket.socket(socket.AF_UNIX).connect(root + "/run/daemon.sock"), ("escaped", "connected"))[1]),
        # privilege
        ("setuid-binary", setuid_binary),
        ("setuid-root", lambda: expect_fail("setuid", 0)),
        ("setgroups", lambda: expect_fail("setgroups", 0, 0)),
        ("capset-all", lambda: expect_fail("capset", ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0)), ctypes.create_string_buffer(b"\xff" * 24))),
        ("mount-tmpfs", lambda: expect_fail("mount", b"none", b"/tmp", b"tmpfs", 0, 0)),
        ("unshare-user", unshare(0x10000000)),
        ("unshare-mount", unshare(0x00020000)),
        ("unshare-pid", unshare(0x20000000)),
        ("unshare-net", unshare(0x40000000)),
        ("unshare-uts", unshare(0x04000000)),
        ("unshare-ipc", unshare(0x08000000)),
        ("unshare-cgroup", unshare(0x02000000)),
        ("unshare-time", unshare(0x00000080)),
        ("unshare-files-fs-sysvsem", unshare(0x00000400 | 0x00000200 | 0x00040000)),
        ("clone-newuser", clone_ns(0x10000000)),
        ("clone-newns", clone_ns(0x00020000)),
        ("clone3-newuser", clone3_ns),
        ("setns-net", setns_net),
        ("chroot", lambda: expect_fail("chroot", b"/tmp")),
        ("pivot-root", lambda: expect_fail("pivot_root", b"/tmp", b"/tmp")),
        ("mknod-device", lambda: expect_fail("mknod", b"/tmp/sda", stat.S_IFBLK | 0o600, (8 << 8))),
        ("open-by-handle", lambda: expect_fail("open_by_handle_at", 3, ctypes.create_string_buffer(16), 0)),
        # kernel interfaces
        ("init-module", lambda: expect_fail("init_module", buf, 16, b"")),
        ("finit-module", lambda: expect_fail("finit_module", 0, b"", 0)),
        ("kexec-load", lambda: expect_fail("kexec_load", 0, 0, 0, 0)),
        ("reboot", lambda: expect_fail("reboot", 0xfee1dead, 672274793, 0x4321fedc, 0)),
        ("swapon", lambda: expect_fail("swapon", b"/tmp/swap", 0)),
        ("acct", lambda: expect_fail("acct", b"/tmp/acct")),
        ("iopl", lambda: expect_fail("iopl", 3)),
        ("ioperm", lambda: expect_fail("ioperm", 0x60, 1, 1)),
        ("syslog-read", lambda: expect_fail("syslog", 3, buf, 256)),
        ("sethostname", lambda: expect_fail("sethostname", b"pwned", 5)),
        ("settimeofday", lambda: expect_fail("settimeofday", ctypes.create_string_buffer(16), 0)),
        ("keyctl", lambda: expect_fail("keyctl", 0, -3, 1)),
        ("add-key", lambda: expect_fail("add_key", b"user", b"x", b"y", 1, -3)),
        ("bpf-map-create", lambda: expect_fail("bpf", 0, ctypes.create_string_buffer(struct.pack("IIII", 2, 4, 4, 1) + bytes(56)), 72)),
        ("perf-event-open", perf_event),
        ("userfaultfd", lambda: expect_fail("userfaultfd", 0)),
        ("io-uring-setup", lambda: expect_fail("io_uring_setup", 1, ctypes.create_string_buffer(120))),
        ("write-proc-sys", lambda: write_file("/proc/sys/kernel/hostname", b"pwned")),
        ("write-proc-sys-net", lambda: write_file("/proc/sys/net/ipv4/ip_forward", b"0")),
        ("write-sysrq-trigger", lambda: write_file("/proc/sysrq-trigger", b"h")),
        ("write-sys", lambda: write_file("/sys/kernel/mm/transparent_hugepage/enabled", b"never")),
        ("write-root-cgroup", lambda: write_file("/sys/fs/cgroup/cgroup.procs", b"%d" % os.getpid())),
        ("read-kmsg", lambda: read_file("/dev/kmsg")),
        ("read-host-disk", lambda: read_file("/dev/sda")),
        ("read-dev-mem", lambda: read_file("/dev/mem")),
        # Landlock: the gear's /run is its own tmpfs, but only /run/gearshift is written
        ("write-run-beyond-landlock", beyond_landlock("/run/planted")),
        # the gear's /etc: its own read-only files, the host's read-only behind /run/host/etc
        ("write-own-etc-passwd", lambda: write_file("/etc/passwd", b"root::0:0::/:/bin/sh\n")),
        ("plant-in-own-etc", lambda: write_file("/etc/ld.so.preload", b"/tmp/x.so\n")),
        ("write-host-etc", lambda: write_file("/run/host/etc/hostname", b"pwned")),
        ("umount-host-etc", lambda: expect_fail("umount2", b"/run/host/etc", 2)),
        # sockets and ports
        ("socket-raw", lambda: (socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close(), ("escaped", "raw socket"))[1]),
        ("socket-packet", lambda: (socket.socket(17, socket.SOCK_RAW, 0).close(), ("escaped", "packet socket"))[1]),
        ("socket-vsock", lambda: (socket.socket(40, socket.SOCK_STREAM, 0).close(), ("escaped", "vsock socket"))[1]),
        ("socket-netlink-audit", lambda: (socket.socket(16, socket.SOCK_RAW, 9).close(), ("escaped", "audit netlink socket"))[1]),
        ("bind-port-80", lambda: (socket.socket().bind(("0.0.0.0", 80)), ("escaped", "bound :80"))[1]),
        ("connect-host-loopback-sshd", lambda: connect("127.0.0.1", ssh_port)),
        ("connect-node-sshd-via-bridge", lambda: connect(gw, ssh_port)),
        ("connect-host-sshd-22", lambda: connect(gw, 22)),
        # the node's secrets
        ("read-node-config", lambda: read_file(ctx["config"])),
        ("read-default-config", lambda: read_file("/etc/gearshift/gearshift.toml")),
        ("read-node-host-key", lambda: read_file(root + "/ssh/ssh_host_ed25519_key")),
        ("read-system-host-key", lambda: read_file("/etc/ssh/ssh_host_ed25519_key")),
        ("read-shadow", lambda: read_file("/etc/shadow")),
        ("read-other-gear-env", lambda: read_file(ctx["victim_env"])),
        # exhaustion (each stops at the profile's limit)
        ("open-100k-files", open_files),
        ("fork-bomb", fork_bomb),
        ("memory-bomb", memory_bomb),
        ("disk-fill", disk_bomb(int(ctx["quota_bytes"]))),
        ("inode-fill", inode_bomb(int(ctx["inodes"]))),
        ("tmp-fill", tmp_bomb),
        ("bandwidth-flood", lambda: flood(gw, int(ctx["bandwidth_kbit"]))),
    ]
    only = ctx.get("only", "").split(",") if ctx.get("only") else None
    for name, fn in attacks:
        if only is None or name in only:
            attempt(name, fn)
    print("DONE %d" % len(attacks), flush=True)


def watch(marker, caller_marker):
    """The break-2 attack: every process that appears in the gear is grabbed with pidfd_open and
    its descriptors 0-63 taken with pidfd_getfd; its command line and environment are read too.
    Anything of root's is reported: a non-socket, non-pipe descriptor owned by root, a file
    holding MARKER (the content of root's stdin file), or CALLER_MARKER (which only the root
    CLI's own argv and environment carry, never the command it runs) in a command line or an
    environment."""
    me = os.getpid()
    seen, roots, procs = set(), [], 0
    print("watching", flush=True)
    while True:
        r, _, _ = select.select([0], [], [], 0)
        if r and not os.read(0, 4096):
            break
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) in seen or int(d) == me:
                continue
            pid = int(d)
            seen.add(pid)
            procs += 1
            for what in ("cmdline", "environ"):
                try:
                    with open("/proc/%d/%s" % (pid, what), "rb") as f:
                        if caller_marker.encode() in f.read():
                            roots.append("pid %d's %s carries the root CLI's" % (pid, what))
                except OSError:
                    pass
            try:
                examine_fds(pid, marker, roots)
            finally:
                # The test's commands wait on this mark: the watch provably looked at them.
                try:
                    open("/tmp/watched-%d" % pid, "w").close()
                except OSError:
                    pass
    outcome = "escaped" if roots else "nothing-of-roots"
    detail = "; ".join(roots) if roots else "%d processes seen, none root's" % procs
    report("pidfd-getfd-root-started", outcome, detail)


def examine_fds(pid, marker, roots):
    """Takes pid's descriptors 0-63 with pidfd_getfd; appends anything of root's to roots."""
    pfd, err = sys_("pidfd_open", pid, 0)
    if err:
        return
    try:
        for target in range(64):
            fd, err = sys_("pidfd_getfd", pfd, target, 0)
            if err:
                continue
            try:
                st = os.fstat(fd)
                link = os.readlink("/proc/self/fd/%d" % fd)
                kind = stat.S_IFMT(st.st_mode)
                if kind == stat.S_IFREG:
                    if marker.encode() in os.pread(fd, 4096, 0):
                        roots.append("pid %d fd %d (%s) holds the marker" % (pid, target, link))
                if st.st_uid == 0 and kind not in (stat.S_IFSOCK, stat.S_IFIFO):
                    roots.append("pid %d fd %d is root's %s" % (pid, target, link))
            except OSError:
                pass
            finally:
                os.close(fd)
    finally:
        os.close(pfd)


def hook(ctx):
    """What a hostile build hook tries, as the gear's uid during a push."""
    root = ctx["data_root"]
    attempt("read-node-config", lambda: read_file(ctx["config"]))
    attempt("read-node-host-key", lambda: read_file(root + "/ssh/ssh_host_ed25519_key"))
    attempt("connect-daemon-socket", lambda: (socket.socket(socket.AF_UNIX).connect(root + "/run/daemon.sock"), ("escaped", "connected"))[1])
    attempt("list-gears-dir", lambda: listdir(root + "/gears"))
    # the host's /tmp is not the gear's: the test checks that the host has no such file
    attempt("write-host-tmp", lambda: (write_file(ctx["host_mark"]), ("contained", "written to the gear's own /tmp"))[1])


if __name__ == "__main__":
    if sys.argv[1] == "battery":
        battery(dict(a.split("=", 1) for a in sys.argv[2:]))
    elif sys.argv[1] == "hook":
        hook(dict(a.split("=", 1) for a in sys.argv[2:]))
    elif sys.argv[1] == "watch":
        watch(sys.argv[2], sys.argv[3])
