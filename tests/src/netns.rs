//! Network namespaces made by the test: a private "task" host, the "gateway"
//! and an "internet" host with a TCP server that answers with the source
//! address it sees. Traffic only ever flows between these namespaces.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::Run;

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name.
    pub name: String,
}

fn ip(args: &[&str]) {
    let r = Run::of(Command::new("ip").args(args));
    assert_eq!(
        r.code,
        0,
        "ip {}: {} (are iproute2 installed and the test run as root?)",
        args.join(" "),
        r.stderr
    );
}

impl Netns {
    /// Creates `fossa-<pid>-<tag>` with loopback up.
    pub fn new(tag: &str) -> Self {
        let name = format!("fossa-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// Names the network namespace of process `pid` (a container's) as
    /// `fossa-<pid>-<tag>`; dropping it removes only the name.
    pub fn attach(tag: &str, pid: u32) -> Self {
        let name = format!("fossa-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "attach", &name, &pid.to_string()]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// A command running `program` inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// A command running `program` in the namespace's network only: unlike
    /// `ip netns exec` it keeps this mount namespace, so /sys/fs/cgroup stays
    /// (dockerd needs it).
    pub fn enter(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg(program);
        c
    }

    /// Runs iptables inside the namespace and returns its stdout; panics on failure.
    pub fn iptables(&self, args: &[&str]) -> String {
        Run::of(self.cmd("iptables").args(args)).ok().stdout
    }

    /// `iptables-save` without packet counters or comments, for byte-for-byte comparisons.
    pub fn ruleset(&self) -> String {
        let out = Run::of(self.cmd("iptables-save")).ok().stdout;
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                if l.starts_with(':') {
                    l.rsplit_once(' ').map(|(a, _)| a).unwrap_or(l)
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Private task host 192.168.2.10 → gateway (192.168.2.1 | 203.0.113.1) → internet host 203.0.113.2.
#[derive(Debug)]
pub struct NatLab {
    /// The private task host.
    pub task: Netns,
    /// The gateway, where the agent runs.
    pub gw: Netns,
    /// The internet host.
    pub inet: Netns,
    server: Child,
    extra: Vec<Child>,
    sink: bool,
}

/// The internet host's address.
pub const INTERNET: &str = "203.0.113.2";
/// The gateway's outer address, which NAT must rewrite sources to.
pub const GATEWAY_OUTER: &str = "203.0.113.1";
/// The private subnet of the task host.
pub const PRIVATE_CIDR: &str = "192.168.2.0/24";

pub(crate) const SERVER: &str = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',8080))\ns.listen(64)\nwhile True:\n c,a=s.accept()\n c.sendall(a[0].encode())\n c.close()\n";
const PROBE: &str = "import socket,sys\ns=socket.create_connection((sys.argv[1],8080),timeout=2)\nprint(s.recv(100).decode())\n";

impl NatLab {
    /// Builds the three hosts and starts the TCP server.
    pub fn new(tag: &str) -> Self {
        let task = Netns::new(&format!("{tag}-t"));
        let gw = Netns::new(&format!("{tag}-g"));
        let inet = Netns::new(&format!("{tag}-i"));
        ip(&[
            "link", "add", "task0", "netns", &task.name, "type", "veth", "peer", "name", "gwin",
            "netns", &gw.name,
        ]);
        ip(&[
            "link", "add", "gwout", "netns", &gw.name, "type", "veth", "peer", "name", "inet0",
            "netns", &inet.name,
        ]);
        ip(&[
            "-n",
            &task.name,
            "addr",
            "add",
            "192.168.2.10/24",
            "dev",
            "task0",
        ]);
        ip(&[
            "-n",
            &gw.name,
            "addr",
            "add",
            "192.168.2.1/24",
            "dev",
            "gwin",
        ]);
        ip(&[
            "-n",
            &gw.name,
            "addr",
            "add",
            "203.0.113.1/24",
            "dev",
            "gwout",
        ]);
        ip(&[
            "-n",
            &inet.name,
            "addr",
            "add",
            "203.0.113.2/24",
            "dev",
            "inet0",
        ]);
        for (ns, dev) in [
            (&task, "task0"),
            (&gw, "gwin"),
            (&gw, "gwout"),
            (&inet, "inet0"),
        ] {
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        ip(&[
            "-n",
            &task.name,
            "route",
            "add",
            "default",
            "via",
            "192.168.2.1",
        ]);
        ip(&["-n", &gw.name, "route", "add", "default", "via", INTERNET]);
        let server = inet
            .cmd("python3")
            .args(["-c", SERVER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 for the test server");
        let lab = NatLab {
            task,
            gw,
            inet,
            server,
            extra: Vec::new(),
            sink: false,
        };
        crate::eventually_blocking("the test server answering", Duration::from_secs(10), || {
            lab.probe_from(&lab.gw)
        });
        lab
    }

    fn probe_from(&self, ns: &Netns) -> Result<String, String> {
        let r = Run::of(ns.cmd("python3").args(["-c", PROBE, INTERNET]));
        if r.code == 0 {
            Ok(r.stdout.trim().to_owned())
        } else {
            Err(r.stderr.lines().last().unwrap_or("").to_owned())
        }
    }

    /// Sends `bytes` zero bytes from the task host to a sink on the
    /// internet host's port 9100 (started on first use), through the gateway.
    pub fn send_bytes(&mut self, bytes: u64) -> Result<(), String> {
        if !self.sink {
            self.sink = true;
            let child = self
                .inet
                .cmd("socat")
                .args(["-u", "TCP-LISTEN:9100,reuseaddr,fork", "OPEN:/dev/null"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat for a sink");
            self.extra.push(child);
            wait_listening(Some(&self.inet), 9100);
        }
        let r = Run::of(self.task.cmd("sh").args([
            "-c",
            &format!(
                "head -c {bytes} /dev/zero | socat -u - TCP:{INTERNET}:9100,connect-timeout=3"
            ),
        ]));
        if r.code == 0 {
            Ok(())
        } else {
            Err(r.stderr.trim().to_owned())
        }
    }

    /// Connects from the task host to the internet host; returns the source address the server saw.
    pub fn probe(&self) -> Result<String, String> {
        self.probe_from(&self.task)
    }

    /// Starts a TCP server in `ns` on `addr:port` that answers with the
    /// client's address; ends with the lab.
    pub fn listen(&mut self, ns: Which, addr: &str, port: u16) {
        let code = SERVER.replace("('0.0.0.0',8080)", &format!("('{addr}',{port})"));
        let ns = self.ns(ns);
        let child = ns
            .cmd("python3")
            .args(["-c", &code])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 for a test server");
        wait_listening(Some(ns), port);
        self.extra.push(child);
    }

    /// Connects from `ns` to `addr:port` (1 s timeout); the address the server saw.
    pub fn connect(&self, ns: Which, addr: &str, port: u16) -> Result<String, String> {
        let probe = PROBE.replace(
            "(sys.argv[1],8080),timeout=2",
            &format!("('{addr}',{port}),timeout=1"),
        );
        let r = Run::of(self.ns(ns).cmd("python3").args(["-c", &probe]));
        if r.code == 0 {
            Ok(r.stdout.trim().to_owned())
        } else {
            Err(r.stderr.lines().last().unwrap_or("").to_owned())
        }
    }

    /// [`NatLab::connect`] as user `uid` (group `uid`, no other group),
    /// as an unprivileged process on that host would.
    pub fn connect_as(&self, ns: Which, uid: u32, addr: &str, port: u16) -> Result<String, String> {
        let probe = PROBE.replace(
            "(sys.argv[1],8080),timeout=2",
            &format!("('{addr}',{port}),timeout=1"),
        );
        let id = uid.to_string();
        let r = Run::of(self.ns(ns).cmd("setpriv").args([
            "--reuid",
            &id,
            "--regid",
            &id,
            "--clear-groups",
            // The system's own, not a user's shim the other user cannot read.
            "/usr/bin/python3",
            "-c",
            &probe,
        ]));
        if r.code == 0 {
            Ok(r.stdout.trim().to_owned())
        } else {
            Err(r.stderr.lines().last().unwrap_or("").to_owned())
        }
    }

    /// Gives the internet host one more address (`169.254.169.254`, where
    /// a stand-in metadata service answers), routed through the gateway.
    pub fn internet_address(&self, addr: &str) {
        ip(&[
            "-n",
            &self.inet.name,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "inet0",
        ]);
    }

    fn ns(&self, which: Which) -> &Netns {
        match which {
            Which::Task => &self.task,
            Which::Gateway => &self.gw,
            Which::Internet => &self.inet,
        }
    }

    /// Creates the gateway's filter and nat tables (an untouched table is
    /// absent from iptables-save, and merely listing it does not create it).
    pub fn touch_tables(&self) {
        for table in ["filter", "nat"] {
            self.gw.iptables(&["-t", table, "-N", "FOSSA-TEST-TOUCH"]);
            self.gw.iptables(&["-t", table, "-X", "FOSSA-TEST-TOUCH"]);
        }
    }

    /// Makes the gateway look like a Docker host: FORWARD policy DROP and a DOCKER-USER chain.
    pub fn dockerize(&self) {
        self.gw.iptables(&["-N", "DOCKER-USER"]);
        self.gw.iptables(&["-A", "DOCKER-USER", "-j", "RETURN"]);
        self.gw.iptables(&["-I", "FORWARD", "-j", "DOCKER-USER"]);
        self.gw.iptables(&["-P", "FORWARD", "DROP"]);
    }
}

/// One of the lab's hosts.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    /// The private task host (192.168.2.10).
    Task,
    /// The gateway (192.168.2.1 inside, 203.0.113.1 outside).
    Gateway,
    /// The internet host (203.0.113.2).
    Internet,
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for c in std::iter::once(&mut self.server).chain(self.extra.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP forwarder between the test's own network namespace and one it
/// made, on one loopback port number on both sides (socat, a process per
/// connection); stops on drop.
#[derive(Debug)]
pub struct Forward {
    child: Child,
}

impl Forward {
    /// `127.0.0.1:port` here reaches `127.0.0.1:port` inside `ns`.
    pub fn into_ns(ns: &Netns, port: u16) -> Forward {
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!(
                "EXEC:ip netns exec {} socat STDIO TCP\\:127.0.0.1\\:{port}",
                ns.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed");
        let f = Forward { child };
        wait_listening(None, port);
        f
    }

    /// `127.0.0.1:port` inside `ns` reaches `127.0.0.1:port` here.
    pub fn out_of_ns(ns: &Netns, port: u16) -> Forward {
        let child = ns
            .cmd("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!(
                "EXEC:nsenter --net=/proc/{}/ns/net socat STDIO TCP\\:127.0.0.1\\:{port}",
                std::process::id()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed");
        let f = Forward { child };
        wait_listening(Some(ns), port);
        f
    }
}

/// Waits until something listens on TCP `port` in `ns` (or on this host).
pub fn wait_listening(ns: Option<&Netns>, port: u16) {
    let what = format!("a listener on port {port}");
    crate::eventually_blocking(&what, Duration::from_secs(10), || {
        let mut ss = match ns {
            Some(ns) => ns.cmd("ss"),
            None => Command::new("ss"),
        };
        let listening = !Run::of(ss.args(["-ltnH", &format!("sport = :{port}")]))
            .stdout
            .trim()
            .is_empty();
        crate::holds(listening, || "nothing listening")
    });
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
