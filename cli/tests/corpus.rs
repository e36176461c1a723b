//! The real-project corpus (tests/corpus/, tests/common/corpus.rs): every project's `npm test`
//! on this host and in a microVM with `nodeos-vm run -v DIR:/app -w /app -- npm test`, on the
//! backend `auto` picks here (or `NODEOS_VM_TEST_BACKEND`), one VM per project as a user runs
//! it. Same exit status and pass/fail counts required. The KVM box runs a subset on our VMM
//! (tests/kvm_box/x86_64.rs); benches/src/bin/corpus.rs prints the table of all three.

mod common;

use common::corpus::{self, counts, parse, Reporter};

fn corpus_project(name: &str) {
    let project = corpus::project(name);
    let (kernel, rootfs) = common::artifacts();
    let dir = tempfile::tempdir().unwrap();
    let host = corpus::on_host(&corpus::prepare(project, &dir.path().join("host")));
    let run = [
        common::BIN,
        "run",
        "--backend",
        &common::backend(),
        "--kernel",
    ]
    .map(String::from)
    .into_iter()
    .chain([
        kernel.display().to_string(),
        "--rootfs".into(),
        rootfs.display().to_string(),
    ])
    .collect::<Vec<_>>();
    let vm = corpus::in_vm(&run, &corpus::prepare(project, &dir.path().join("vm")));
    eprintln!(
        "{name}: host {:?} in {:.1?}, VM {:?} in {:.1?}",
        host.counts(project.reporter),
        host.elapsed,
        vm.counts(project.reporter),
        vm.elapsed
    );
    if let Err(why) = corpus::compare(project, &host, &vm, "in the VM") {
        panic!("{why}");
    }
}

/// One `#[test]` per project of `corpus::PROJECTS`.
macro_rules! corpus_tests {
    ($($name:ident = $dir:literal),*) => {$(
        #[test]
        fn $name() {
            corpus_project($dir);
        }
    )*
        #[test]
        fn every_project_has_a_test() {
            let tested = [$($dir),*];
            for p in corpus::PROJECTS {
                assert!(tested.contains(&p.name), "corpus project {} has no test", p.name);
            }
        }
    };
}

corpus_tests!(
    mocha = "mocha",
    tape = "tape",
    node_test = "node-test",
    esm = "esm",
    scripts = "scripts",
    typescript = "typescript",
    vitest = "vitest",
    jest = "jest"
);

/// Each runner's summary, as the runners print it (colours too), and no counts where a
/// runner never ran.
#[test]
fn parses_each_reporter() {
    let cases = [
        (
            Reporter::Mocha,
            "  5 passing (29ms)\n  1 failing\n\n  1) x\n",
            counts(5, 1),
        ),
        (
            Reporter::Mocha,
            "  3 passing (2ms)\n  1 pending\n",
            counts(3, 0),
        ),
        (
            Reporter::Tap,
            "# tests 7\n# pass  6\n# fail  1\n",
            counts(6, 1),
        ),
        (
            Reporter::Tap,
            "# tests 6\n# pass 5\n# fail 0\n# skipped 1\n",
            counts(5, 0),
        ),
        (
            Reporter::Tap,
            "1..2\n# tests 2\n# pass  2\n\n# ok\n",
            counts(2, 0),
        ),
        (
            Reporter::Vitest,
            " Test Files  1 failed (1)\n      Tests  1 failed | 5 passed (6)\n",
            counts(5, 1),
        ),
        (
            Reporter::Vitest,
            "\u{1b}[2m      Tests \u{1b}[22m 4 passed (4)\n",
            counts(4, 0),
        ),
        (
            Reporter::Jest,
            "Tests:       1 failed, 5 passed, 6 total\n",
            counts(5, 1),
        ),
        (
            Reporter::Jest,
            "Tests:       6 passed, 6 total\n",
            counts(6, 0),
        ),
    ];
    for (reporter, text, want) in cases {
        assert_eq!(parse(reporter, text), Some(want), "{reporter:?}: {text:?}");
    }
    assert_eq!(parse(Reporter::Tap, "sh: 1: tape: not found\n"), None);
    assert_eq!(
        parse(Reporter::Jest, "No tests found, exiting with code 1\n"),
        None
    );
}
