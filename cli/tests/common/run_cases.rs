//! The behaviours of `nodeos-vm run` that every backend must show, written once and run both
//! on this host (tests/run.rs) and inside the KVM box (tests/kvm_box/).
//!
//! A case is a `sh` script; in it `$RUN` is `nodeos-vm run` with the backend, kernel and image
//! options, `$FIXTURE` a fresh copy of tests/fixtures/node-project, and `$WEB` the address of
//! an HTTP server on the host's loopback (`127.0.0.1:PORT`, reached from a guest with
//! `--net user,host-loopback` as `10.0.2.2:PORT`) that serves `/hello` and a tiny npm registry
//! (`greeter`, `hello-cli`, `stamper`, and a project locked to them, `/ci-app.tgz`;
//! tests/common/web.rs). `$IPROUTE`, when set, is iproute2's `ip` (a busybox shell runs its
//! own applet for a plain `ip`). The scripts run in a fresh folder of their own.
//!
//! The `user_*` cases keep users' disks in `./data` (NODEOS_VM_DATA); `${RUN%% run *}` is the
//! nodeos-vm binary and `${RUN#* run}` the backend and image options.

pub struct RunOutcome {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub struct RunCase {
    pub name: &'static str,
    pub script: &'static str,
    /// Piped to the script's stdin.
    pub stdin: &'static str,
    /// Needs `--net` and the web server.
    pub net: bool,
    /// Creates a TAP interface: needs root (skipped elsewhere, saying so).
    pub root: bool,
    pub check: fn(&RunOutcome) -> Result<(), String>,
}

/// The page `/hello` of the test web server.
pub const HELLO: &str = "hello from the host";

fn expect(o: &RunOutcome, status: i32, stdout: &str) -> Result<(), String> {
    if o.status == Some(status) && o.stdout == stdout {
        Ok(())
    } else {
        Err(format!(
            "expected status {status} and stdout {stdout:?}; got {:?}, stdout {:?}, stderr {:?}",
            o.status, o.stdout, o.stderr
        ))
    }
}

fn explain(o: &RunOutcome) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        o.stdout.chars().take(2000).collect::<String>(),
        o.stderr
    )
}

pub const RUN_CASES: &[RunCase] = &[
    RunCase {
        name: "exit_codes_and_signals",
        script: "for c in 0 1 3; do $RUN -- node -e \"process.exit($c)\"; echo \"status $?\"; done
                 $RUN -- node -e 'process.kill(process.pid, \"SIGTERM\")'; echo \"status $?\"",
        stdin: "",
        net: false,
        root: false,
        check: |o| expect(o, 0, "status 0\nstatus 1\nstatus 3\nstatus 143\n"),
    },
    RunCase {
        name: "stdout_and_stderr_apart_and_in_order",
        script: "$RUN -- node -e 'for (let i = 0; i < 300; i++) { process.stdout.write(`out ${i}\\n`); process.stderr.write(`err ${i}\\n`) }'",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            let want = |tag: &str| (0..300).map(|i| format!("{tag} {i}\n")).collect::<String>();
            if o.status == Some(0) && o.stdout == want("out") && o.stderr == want("err") {
                Ok(())
            } else {
                Err(explain(o))
            }
        },
    },
    RunCase {
        name: "ten_megabytes_of_output",
        script: "$RUN -- node -e 'const b = Buffer.alloc(1 << 20, 97); for (let i = 0; i < 10; i++) { process.stdout.write(b); process.stderr.write(\"e\") }' | wc -c",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            if o.status == Some(0) && o.stdout.trim() == "10485760" && o.stderr == "eeeeeeeeee" {
                Ok(())
            } else {
                Err(explain(o))
            }
        },
    },
    RunCase {
        name: "out_of_memory_is_said",
        // Buffers live outside V8's heap, whose own limit is never reached: each is filled, so
        // that its pages are the guest's, until the guest's kernel has none left to give.
        script: "$RUN -- node -e 'const kept = []; for (;;) kept.push(Buffer.alloc(16 << 20, 1))'; echo \"status $?\"",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            let said = "nodeos-vm: the guest ran out of memory: its kernel killed process ";
            if o.stdout == "status 137\n" && o.stderr.contains(said) && o.stderr.contains("--memory") {
                Ok(())
            } else {
                Err(explain(o))
            }
        },
    },
    RunCase {
        name: "stdin_piped_in",
        script: "$RUN -i -- node -e 'let n = 0; process.stdin.on(\"data\", d => n += d.length).on(\"end\", () => console.log(n))'
                 printf 'one\\ntwo\\n' | $RUN -i -- node -e 'process.stdin.pipe(process.stdout)'
                 $RUN -- node -e 'process.stdin.on(\"data\", () => {}).on(\"end\", () => console.log(\"no input\"))'",
        stdin: "0123456789",
        net: false,
        root: false,
        check: |o| expect(o, 0, "10\none\ntwo\nno input\n"),
    },
    RunCase {
        name: "timeout_kills_the_command",
        script: "$RUN --timeout 2s -- node -e 'require(\"child_process\").spawn(\"node\", [\"-e\", \"setInterval(() => {}, 1000)\"], {stdio: \"inherit\"}); setInterval(() => {}, 1000)'",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            if o.status == Some(124) && o.stderr.contains("timed out after 2s") {
                Ok(())
            } else {
                Err(explain(o))
            }
        },
    },
    RunCase {
        name: "command_not_found",
        script: "$RUN -- no-such-command; echo \"status $?\"",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            if o.stdout == "status 127\n" && o.stderr.contains("no-such-command") {
                Ok(())
            } else {
                Err(explain(o))
            }
        },
    },
    RunCase {
        name: "volume_is_visible_and_host_files_unchanged",
        script: "before=$(cat $FIXTURE/package.json $FIXTURE/lib/invoice.js | md5sum)
                 $RUN -v $FIXTURE:/app -w /app -- node -e '
                   const fs = require(\"fs\");
                   console.log(JSON.parse(fs.readFileSync(\"package.json\")).name);
                   fs.writeFileSync(\"package.json\", \"rewritten\");
                   fs.unlinkSync(\"lib/invoice.js\");
                   fs.writeFileSync(\"new-file\", \"x\");
                   console.log(fs.readFileSync(\"package.json\", \"utf8\"), fs.existsSync(\"lib/invoice.js\"))'
                 after=$(cat $FIXTURE/package.json $FIXTURE/lib/invoice.js | md5sum)
                 [ \"$before\" = \"$after\" ] && [ ! -e $FIXTURE/new-file ] && echo host unchanged
                 touch -d '2001-09-09 01:46:40' $FIXTURE
                 inside=$($RUN -v $FIXTURE:/app -- node -e '
                   const fs = require(\"fs\"), top = fs.statSync(\"/app\");
                   console.log(fs.readdirSync(\"/app\").sort().join(\",\"),
                     (top.mode & 0o7777).toString(8), Math.floor(top.mtimeMs / 1000))')
                 outside=\"$(ls -A $FIXTURE | LC_ALL=C sort | paste -sd, -) $(stat -c '%a %Y' $FIXTURE)\"
                 [ \"$inside\" = \"$outside\" ] && echo same top folder || echo \"inside: $inside; outside: $outside\"",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            expect(
                o,
                0,
                "fixture-invoices\nrewritten false\nhost unchanged\nsame top folder\n",
            )
        },
    },
    RunCase {
        name: "read_only_and_read_write_volumes",
        script: "$RUN -v $FIXTURE:/app:ro -- node -e 'try { require(\"fs\").writeFileSync(\"/app/x\", \"1\") } catch (e) { console.log(e.code) }'
                 $RUN -v $FIXTURE:/app:rw -- node -e 'const fs = require(\"fs\"); fs.writeFileSync(\"/app/out.txt\", \"from the guest\"); fs.rmSync(\"/app/lib/format.js\")'
                 cat $FIXTURE/out.txt; echo; [ -e $FIXTURE/lib/format.js ] || echo deleted",
        stdin: "",
        net: false,
        root: false,
        check: |o| expect(o, 0, "EROFS\nfrom the guest\ndeleted\n"),
    },
    RunCase {
        name: "rw_volume_copy_back_is_checked",
        script: "echo canary > canary
                 $RUN -v $FIXTURE:/app:rw -- node -e '
                   const fs = require(\"fs\");
                   const fd = fs.openSync(\"/app/sparse\", \"w\");
                   fs.ftruncateSync(fd, 8 * 2 ** 30);
                   fs.writeSync(fd, Buffer.alloc(4096, 7), 0, 4096, 2 ** 30);
                   fs.closeSync(fd);
                   fs.symlinkSync(\"/etc/passwd\", \"/app/passwd\");
                   fs.symlinkSync(\"../../canary\", \"/app/lib/up\");
                   fs.symlinkSync(\"../package.json\", \"/app/lib/pkg\");
                   fs.writeFileSync(\"/app/out.txt\", \"from the guest\");
                   process.exit(3)'
                 echo \"status $?\"
                 set -- $(stat -c '%s %b' $FIXTURE/sparse); echo \"sparse $1\"; [ \"$2\" -le 64 ] && echo 'holes kept'
                 n=$(dd if=$FIXTURE/sparse bs=4096 skip=262144 count=1 2>/dev/null | tr -d '\\007' | wc -c); echo other bytes $n
                 [ -L $FIXTURE/passwd ] || echo 'passwd refused'
                 [ -L $FIXTURE/lib/up ] || echo 'up refused'
                 readlink $FIXTURE/lib/pkg
                 cat canary $FIXTURE/out.txt",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            expect(
                o,
                0,
                "status 3\nsparse 8589934592\nholes kept\nother bytes 0\npasswd refused\nup refused\n../package.json\ncanary\nfrom the guest",
            )?;
            for refusal in [
                "/passwd: the guest's symlink to \"/etc/passwd\" was not copied back: its target is absolute; left as it was",
                "/lib/up: the guest's symlink to \"../../canary\" was not copied back: its target leads out of the volume; left as it was",
            ] {
                if !o.stderr.contains(refusal) {
                    return Err(format!("no {refusal:?} on stderr\n{}", explain(o)));
                }
            }
            Ok(())
        },
    },
    RunCase {
        name: "rw_volume_leaves_git_alone",
        script: "mkdir -p $FIXTURE/.git/hooks && printf '[core]\\n' > $FIXTURE/.git/config
                 for mode in rw rw,git; do
                   $RUN -v $FIXTURE:/app:$mode -- node -e '
                     const fs = require(\"fs\");
                     fs.writeFileSync(\"/app/.git/hooks/pre-commit\", \"touch /tmp/owned\", { mode: 0o755 });
                     fs.appendFileSync(\"/app/.git/config\", \"\\tpager = sh /app/evil.sh\\n\");
                     fs.writeFileSync(\"/app/out.txt\", process.argv[1])' $mode
                   echo \"$mode: status $?\"; ls $FIXTURE/.git/hooks; grep -c pager $FIXTURE/.git/config; cat $FIXTURE/out.txt; echo
                 done",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            expect(
                o,
                0,
                "rw: status 0\n0\nrw\nrw,git: status 0\npre-commit\n1\nrw,git\n",
            )?;
            let refusal = "/node-project: the guest's 2 changes under .git were not copied back: .git/config, .git/hooks/pre-commit; left as it was";
            if o.stderr.matches(refusal).count() == 1 {
                Ok(())
            } else {
                Err(format!("no {refusal:?} on stderr, once\n{}", explain(o)))
            }
        },
    },
    RunCase {
        name: "npm_test_of_a_node_project",
        script: "$RUN -v $FIXTURE:/app -w /app -- npm test > out 2>&1; echo \"status $?\"; grep '^# pass\\|^# fail' out
                 $RUN -v $FIXTURE:/app -w /app -e FIXTURE_FAIL=1 -- npm test > out 2>&1; echo \"status $?\"; grep '^# pass\\|^# fail' out",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            expect(
                o,
                0,
                "status 0\n# pass 6\n# fail 0\nstatus 1\n# pass 5\n# fail 1\n",
            )
        },
    },
    RunCase {
        name: "no_network_without_net",
        script: "$RUN -- node -e '
                   console.log(Object.keys(require(\"os\").networkInterfaces()).join());
                   require(\"net\").connect(80, \"10.0.2.2\").on(\"error\", e => console.log(e.code))'",
        stdin: "",
        net: false,
        root: false,
        check: |o| expect(o, 0, "lo\nENETUNREACH\n"),
    },
    RunCase {
        name: "host_loopback_is_opt_in",
        script: "$RUN --net -- node -e '
                   const start = Date.now();
                   require(\"net\").connect(process.argv[1], \"10.0.2.2\")
                     .on(\"connect\", () => console.log(\"connected to the host loopback\"))
                     .on(\"error\", e => console.log(e.code, Date.now() - start < 3000 ? \"at once\" : `after ${Date.now() - start} ms`))' ${WEB#*:}
                 for net in user,host-loopback user,host-loopback=${WEB#*:}; do
                   $RUN --net $net -- node -e 'fetch(`http://10.0.2.2:${process.argv[1]}/hello`).then(r => r.text()).then(console.log)' ${WEB#*:}
                 done",
        stdin: "",
        net: true,
        root: false,
        check: |o| expect(o, 0, &format!("ECONNREFUSED at once\n{HELLO}\n{HELLO}\n")),
    },
    RunCase {
        name: "guest_env_is_not_on_the_kernel_command_line",
        script: "export npm_config_registry=http://me:s3cret@127.0.0.1:${WEB#*:}/ XDG_RUNTIME_DIR=$PWD/run; mkdir -p run
                 SHOW='console.log(String(process.env.npm_config_registry).replace(/:[0-9]+[/]/, \":PORT/\"),
                   require(\"fs\").readFileSync(\"/proc/cmdline\", \"utf8\").includes(\"s3cret\") ? \"on /proc/cmdline\" : \"not on /proc/cmdline\")'
                 $RUN --net -- node -e \"$SHOW\"
                 VM=${RUN%% run *}
                 echo \"$SHOW\" | $VM start ${RUN#* run} --net
                 id=$($VM start ${RUN#* run} --net --detach) || exit 1
                 $VM exec $id -- node -e \"$SHOW\"; $VM stop $id >/dev/null",
        stdin: "",
        net: true,
        root: false,
        check: |o| {
            let seen = "http://me:s3cret@10.0.2.2:PORT/ not on /proc/cmdline\n";
            // run's command, the REPL (and the value of its line), a detached VM's exec.
            expect(o, 0, &format!("{seen}{seen}undefined\n{seen}"))
        },
    },
    RunCase {
        name: "npm_install_from_the_host_loopback",
        script: "$RUN --net user,host-loopback -w /home/node -- sh -c \"npm install --no-audit --no-fund --loglevel=error http://10.0.2.2:${WEB#*:}/greeter.tgz > /dev/null && node -e 'console.log(require(\\\"greeter\\\")(\\\"npm\\\"))'\"",
        stdin: "",
        net: true,
        root: false,
        check: |o| expect(o, 0, "hello, npm\n"),
    },
    RunCase {
        name: "tap_network",
        script: "ip=${IPROUTE:-ip}
                 $ip tuntap add nvtap0 mode tap && $ip addr add 10.0.2.2/24 dev nvtap0 && $ip link set nvtap0 up || exit 1
                 mkdir www && printf 'hello over tap' > www/t
                 busybox httpd -f -p 10.0.2.2:8081 -h www & web=$!
                 $RUN --net tap:nvtap0 -- node -e 'fetch(\"http://10.0.2.2:8081/t\").then(r => r.text()).then(console.log)'; s=$?
                 kill $web; $ip link del nvtap0; exit $s",
        stdin: "",
        net: true,
        root: true,
        check: |o| expect(o, 0, "hello over tap\n"),
    },
    RunCase {
        name: "user_layer_persists_and_is_private",
        script: "export NODEOS_VM_DATA=$PWD/data
                 $RUN --user alice -- node -e 'fs.mkdirSync(\"/home/node/notes\"); fs.writeFileSync(\"/home/node/notes/a\", \"kept\")' || exit 1
                 $RUN --user alice -- node -e 'console.log(fs.readFileSync(\"/home/node/notes/a\", \"utf8\"))'
                 $RUN --user bob -- node -e 'console.log(\"bob sees\", fs.existsSync(\"/home/node/notes\"))'
                 $RUN -- node -e 'console.log(\"no user sees\", fs.existsSync(\"/home/node/notes\"))'
                 ${RUN%% run *} users ls | sed -n 's/^\\([a-z]*\\) .* idle .*/\\1 idle/p'
                 ${RUN%% run *} users rm bob </dev/null; echo \"rm without --yes: $?\"
                 ${RUN%% run *} users rm --yes bob; echo \"bob left: $(${RUN%% run *} users ls | grep -c '^bob ')\"",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            expect(
                o,
                0,
                "kept\nbob sees false\nno user sees false\nalice idle\nbob idle\nrm without --yes: 125\nbob left: 0\n",
            )?;
            if o.stderr.contains("add --yes") {
                Ok(())
            } else {
                Err(explain(o))
            }
        },
    },
    RunCase {
        name: "user_disk_full_is_enospc_and_grows",
        script: "export NODEOS_VM_DATA=$PWD/data
                 $RUN --user dora --disk-size 32M -- node -e 'try { fs.writeFileSync(\"/home/node/big\", Buffer.alloc(64 << 20)) } catch (e) { console.log(e.code) }'
                 echo \"status $?\"
                 $RUN --user dora -- node -e 'fs.rmSync(\"/home/node/big\", { force: true }); fs.writeFileSync(\"/home/node/small\", \"ok\"); console.log(fs.readFileSync(\"/home/node/small\", \"utf8\"))'
                 $RUN --user dora --disk-size 96M -- node -e 'fs.writeFileSync(\"/home/node/big\", Buffer.alloc(64 << 20)); console.log(\"grown\", fs.statSync(\"/home/node/big\").size, fs.readFileSync(\"/home/node/small\", \"utf8\"))'
                 stat -c %s data/users/dora/disk.ext4",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            expect(
                o,
                0,
                "ENOSPC\nstatus 0\nok\ngrown 67108864 ok\n100663296\n",
            )
        },
    },
    RunCase {
        name: "user_vm_killed_keeps_synced_data",
        script: "export NODEOS_VM_DATA=$PWD/data XDG_RUNTIME_DIR=$PWD/run; mkdir -p run
                 VM=${RUN%% run *}; START=\"$VM start ${RUN#* run}\"
                 id=$($START --detach --user gus) || exit 1
                 $RUN --user gus -- node -e 1; echo \"second VM: $?\"
                 $VM exec $id -- node -e 'const fd = fs.openSync(\"/home/node/synced\", \"w\"); fs.writeSync(fd, \"durable\"); fs.fsyncSync(fd)' || exit 1
                 $VM exec $id -- node -e 'for (let i = 0; ; i++) fs.writeFileSync(`/home/node/f${i % 64}`, Buffer.alloc(65536, i))' 2>/dev/null & writer=$!
                 sleep 3
                 kill -9 $(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p' run/nodeos-vm/vms/$id/state.json); wait $writer
                 debugfs -R features data/users/gus/disk.ext4 2>/dev/null | grep -o needs_recovery
                 $RUN --user gus -- node -e 'console.log(fs.readFileSync(\"/home/node/synced\", \"utf8\"))'
                 e2fsck -fn data/users/gus/disk.ext4 >/dev/null 2>&1; echo \"fsck $?\"",
        stdin: "",
        net: false,
        root: false,
        check: |o| {
            expect(o, 0, "second VM: 125\nneeds_recovery\ndurable\nfsck 0\n")?;
            if o.stderr.contains("already has a VM running") {
                Ok(())
            } else {
                Err(explain(o))
            }
        },
    },
    RunCase {
        name: "npm_global_install_is_per_user",
        script: "export NODEOS_VM_DATA=$PWD/data NPM_CONFIG_REGISTRY=http://$WEB/
                 $RUN --user erin --net -- npm install -g --no-audit --no-fund --loglevel=error hello-cli >/dev/null; echo \"installed $?\"
                 $RUN --user erin -- hello-cli from erin
                 $RUN --user erin --net -w /home/node -- sh -c 'npm install --no-audit --no-fund --loglevel=error greeter >/dev/null && node -e \"console.log(require(\\\"greeter\\\")(\\\"registry\\\"))\"'
                 $RUN --user frank -- hello-cli; echo \"frank: $?\"",
        stdin: "",
        net: true,
        root: false,
        check: |o| expect(o, 0, "installed 0\nhello from a global bin from erin\nhello, registry\nfrank: 127\n"),
    },
    RunCase {
        name: "package_json_idioms",
        // The twelve idioms of tests/shell/idioms.sh in a project folder, in one VM.
        script: concat!(
            "mkdir project && cat > project/idioms.sh <<'IDIOMS'\n",
            include_str!("../shell/idioms.sh"),
            "IDIOMS\n$RUN -v \"$PWD/project:/app\" -w /app -- sh idioms.sh"
        ),
        stdin: "",
        net: false,
        root: false,
        check: |o| expect(o, 0, include_str!("../shell/idioms.out")),
    },
    RunCase {
        name: "npm_ci_of_a_lockfile_with_an_install_script",
        script: "busybox wget -qO- http://$WEB/ci-app.tgz | tar -xz && mv package app || exit 1
                 export NPM_CONFIG_REGISTRY=http://$WEB/
                 $RUN --net -v $PWD/app:/app:rw -w /app -- npm ci --no-audit --no-fund --loglevel=error >/dev/null; echo \"npm ci: $?\"
                 ls app/node_modules; readlink app/node_modules/.bin/hello-cli
                 $RUN -v $PWD/app:/app -w /app -- npm test >out 2>&1; echo \"npm test: $?\"; grep '^hello\\|^# pass\\|^# fail' out",
        stdin: "",
        net: true,
        root: false,
        check: |o| {
            expect(
                o,
                0,
                "npm ci: 0\ngreeter\nhello-cli\nstamper\n../hello-cli/cli.js\nnpm test: 0\nhello from a global bin in ci\n# pass 2\n# fail 0\n",
            )
        },
    },
];

pub fn run_case(name: &str) -> &'static RunCase {
    RUN_CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no run case {name}"))
}

/// The test's web server (tests/common/web.rs), started once.
fn web() -> &'static str {
    static WEB: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    WEB.get_or_init(super::web::serve)
}

/// Runs the case `name` on this host with `run` (`nodeos-vm run` and its backend, kernel and
/// image options) as its `$RUN`; panics with the check's complaint.
pub fn run_here(name: &str, run: &str) {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let case = run_case(name);
    // SAFETY: geteuid has no preconditions.
    if case.root && unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: {name} creates a TAP interface, which needs root");
        return;
    }
    // The scripts' host side: busybox's wget and httpd.
    super::host_program("busybox", "busybox-static");
    let dir = tempfile::tempdir().unwrap();
    let fixture = super::fixture_copy(dir.path());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(case.script)
        .current_dir(dir.path())
        .env("RUN", run)
        .env("FIXTURE", &fixture)
        .env("WEB", web())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(case.stdin.as_bytes()).unwrap();
    drop(stdin);
    let _watchdog = super::Watchdog::for_group(child.id(), super::BOOT_LIMIT * 2);
    let out = child.wait_with_output().unwrap();
    let outcome = RunOutcome {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if let Err(why) = (case.check)(&outcome) {
        panic!("{name}: {why}");
    }
}
